"""The probe registry: every probe, built-in or third-party, comes through one entry-point group.

Done as flake8/pluggy do it: find the entry points of group ``portproof.probes`` without importing
them, sort them for determinism, load each inside a guard that names the distribution that failed,
validate the declared facts, and register the built-ins through the very same group (our own
``pyproject.toml``), so one code path serves everyone. Built-ins always win a name: they load
first, and a plugin that claims a built-in's name is refused and reported with its distribution
(fatal under ``--strict-plugins``).

``PORTPROOF_PLUGIN_PATH`` (or ``--plugin-path``) also loads probe modules from local files during
development, without packaging: each ``*.py`` file (or a file given directly) is imported and every
:class:`~scanner.api.Probe` subclass with a ``name`` defined in it is registered.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from scanner.api import Probe

__all__ = ["GROUP", "LoadError", "ProbeInfo", "Registry", "load_probes", "load_registry", "validate_probe"]

GROUP = "portproof.probes"
BUILTIN_DIST = "portproof"
_NAME_OK = set("abcdefghijklmnopqrstuvwxyz0123456789_-")


class PluginError(Exception):
    """A plugin failed to load or validate (raised only in strict mode)."""


@dataclass(frozen=True)
class LoadError:
    """A probe that could not be loaded: which entry point, which distribution, why."""

    entry_point: str
    distribution: str
    error: str
    traceback: str = ""


@dataclass(frozen=True)
class ProbeInfo:
    """A loaded probe and where it came from."""

    probe: Probe
    distribution: str
    version: str
    builtin: bool
    origin: str  # the entry point value, or the file path


@dataclass
class Registry:
    """Loaded probes (sorted by name) and the plugins that failed."""

    infos: list[ProbeInfo] = field(default_factory=list)
    errors: list[LoadError] = field(default_factory=list)

    @property
    def probes(self) -> list[Probe]:
        """The probe instances, sorted by name."""
        return [i.probe for i in self.infos]

    def get(self, name: str) -> Probe | None:
        """The probe called ``name``, if loaded."""
        for info in self.infos:
            if info.probe.name == name:
                return info.probe
        return None

    def select(self, include: Iterable[str] = (), exclude: Iterable[str] = ()) -> Registry:
        """A registry restricted to ``include`` (when given) minus ``exclude``."""
        inc, exc = set(include), set(exclude)
        infos = [i for i in self.infos if (not inc or i.probe.name in inc) and i.probe.name not in exc]
        return Registry(infos=infos, errors=list(self.errors))


def validate_probe(probe: Probe) -> list[str]:
    """Check a probe's declared facts; return the problems found (empty when valid)."""
    problems: list[str] = []
    name = getattr(probe, "name", "")
    if not isinstance(name, str) or not name or not set(name) <= _NAME_OK:
        problems.append(f"name {name!r} must be a non-empty lowercase identifier")
    services = getattr(probe, "services", ())
    if not isinstance(services, tuple) or not services or not all(isinstance(s, str) and s for s in services):
        problems.append("services must be a non-empty tuple of service names")
    transports = getattr(probe, "transports", ())
    if not isinstance(transports, tuple) or not transports or not set(transports) <= {"tcp", "udp"}:
        problems.append("transports must be a non-empty tuple of 'tcp'/'udp'")
    for attr in ("ports", "tls_ports"):
        ports = getattr(probe, attr, ())
        if not isinstance(ports, tuple) or not all(
            isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in ports
        ):
            problems.append(f"{attr} must be a tuple of port numbers 1..65535")
    rarity = getattr(probe, "rarity", None)
    if not isinstance(rarity, int) or isinstance(rarity, bool) or not 1 <= rarity <= 9:
        problems.append("rarity must be an int 1..9")
    if not isinstance(getattr(probe, "server_first", None), bool):
        problems.append("server_first must be a bool")
    dialogue = getattr(type(probe), "dialogue", None)
    if dialogue is None or dialogue is Probe.dialogue or not inspect.isgeneratorfunction(dialogue):
        problems.append("dialogue must be a generator method overriding Probe.dialogue")
    return problems


def _instantiate(obj: object) -> Probe:
    if inspect.isclass(obj) and issubclass(obj, Probe):
        return obj()
    if isinstance(obj, Probe):
        return obj
    raise TypeError(f"entry point gives {obj!r}, not a Probe subclass or instance")


def _dist_of(ep: EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return ("unknown", "")
    return (dist.metadata["Name"] or "unknown", dist.version or "")


def _is_builtin(ep: EntryPoint) -> bool:
    return _dist_of(ep)[0] == BUILTIN_DIST


def _conflict(name: str, owners: dict[str, str]) -> PluginError:
    """The error for a probe name that is taken; it names who holds it."""
    owner = owners[name]
    if owner == BUILTIN_DIST:
        return PluginError(f"a probe named {name!r} is built in ({BUILTIN_DIST}); a plugin cannot replace it")
    return PluginError(f"a probe named {name!r} is already registered by {owner}")


def _load_entry_points(eps: Iterable[EntryPoint], reg: Registry, strict: bool) -> None:
    # Built-ins load first, whatever their names sort like, so a plugin can never take a built-in's
    # name (``smtp = aaa_evil:Evil`` from another distribution is refused, not preferred). The
    # built-ins' entry-point names are reserved up front: even a built-in that fails to load leaves
    # its name to nobody else.
    eps = sorted(eps, key=lambda e: (not _is_builtin(e), e.name, e.value))
    owners: dict[str, str] = {i.probe.name: i.distribution for i in reg.infos}
    reserved = {e.name for e in eps if _is_builtin(e)}
    for ep in eps:
        dist, version = _dist_of(ep)
        builtin = dist == BUILTIN_DIST
        try:
            if not builtin and ep.name in reserved:
                owners.setdefault(ep.name, BUILTIN_DIST)
                raise _conflict(ep.name, owners)
            probe = _instantiate(ep.load())
            problems = validate_probe(probe)
            if problems:
                raise PluginError("; ".join(problems))
            if not builtin and probe.name in reserved:
                owners.setdefault(probe.name, BUILTIN_DIST)
            if probe.name in owners:
                raise _conflict(probe.name, owners)
        except Exception as exc:  # a broken plugin must never stop the others
            err = LoadError(
                entry_point=f"{ep.name} = {ep.value}",
                distribution=f"{dist} {version}".strip(),
                error=f"{type(exc).__name__}: {exc}",
                traceback=traceback.format_exc(),
            )
            if strict:
                raise PluginError(f"plugin {err.entry_point} from {err.distribution} failed: {err.error}") from exc
            reg.errors.append(err)
            continue
        owners[probe.name] = dist
        reg.infos.append(ProbeInfo(probe=probe, distribution=dist, version=version, builtin=builtin, origin=ep.value))


def _load_paths(paths: Iterable[str], reg: Registry, strict: bool) -> None:
    owners: dict[str, str] = {i.probe.name: i.distribution for i in reg.infos}
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        files.extend(sorted(p.glob("*.py")) if p.is_dir() else [p])
    for path in files:
        if path.name.startswith("_"):
            continue
        try:
            mod_name = f"portproof_local_{path.stem}"
            spec = importlib.util.spec_from_file_location(mod_name, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot import {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            spec.loader.exec_module(module)
            found = [
                obj
                for obj in vars(module).values()
                if inspect.isclass(obj) and issubclass(obj, Probe) and obj is not Probe
                and obj.__module__ == mod_name and obj.name
            ]
            for cls in sorted(found, key=lambda c: c.name):
                probe = cls()
                problems = validate_probe(probe)
                if problems:
                    raise PluginError(f"{cls.__name__}: " + "; ".join(problems))
                if probe.name in owners:
                    raise _conflict(probe.name, owners)
                owners[probe.name] = f"local:{path}"
                reg.infos.append(ProbeInfo(probe, f"local:{path}", "", False, str(path)))
        except Exception as exc:
            err = LoadError(str(path), f"local:{path}", f"{type(exc).__name__}: {exc}", traceback.format_exc())
            if strict:
                raise PluginError(f"local plugin {path} failed: {err.error}") from exc
            reg.errors.append(err)


def load_registry(
    *,
    strict: bool = False,
    plugin_paths: Iterable[str] = (),
    eps: Iterable[EntryPoint] | None = None,
) -> Registry:
    """Find, load and validate every probe.

    ``eps`` replaces the installed entry points (tests build fake ones). ``plugin_paths`` adds
    local files or folders; ``PORTPROOF_PLUGIN_PATH`` (``os.pathsep``-separated) adds more.
    """
    reg = Registry()
    found = entry_points(group=GROUP) if eps is None else list(eps)
    _load_entry_points(found, reg, strict)
    paths = list(plugin_paths)
    env = os.environ.get("PORTPROOF_PLUGIN_PATH", "")
    paths += [p for p in env.split(os.pathsep) if p]
    if paths:
        _load_paths(paths, reg, strict)
    reg.infos.sort(key=lambda i: i.probe.name)
    return reg


def load_probes(strict: bool = False) -> list[Probe]:
    """Shortcut: the loaded probe instances, sorted by name."""
    return load_registry(strict=strict).probes
