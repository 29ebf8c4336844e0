"""Registry behaviour with fake entry points (nothing installed): broken, invalid, duplicate plugins.

Like flake8's tests: build ``importlib.metadata.EntryPoint`` objects bound to a fake distribution
and hand them to :func:`scanner.registry.load_registry` instead of the installed ones.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import Distribution, EntryPoint, distributions, entry_points
from pathlib import Path

import pytest

from scanner.registry import GROUP, PluginError, load_registry

from .helpers import DATA, REPO, clean_env


class FakeDist(Distribution):
    """A distribution that exists only in memory (name and version for the error reports)."""

    def __init__(self, name: str, version: str) -> None:
        self._meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"

    def read_text(self, filename: str) -> str | None:
        return self._meta if filename in ("METADATA", "PKG-INFO") else None

    def locate_file(self, path: str | Path) -> Path:  # type: ignore[override]
        return Path("/nonexistent") / path


def ep(name: str, value: str, dist: str = "portproof-fake", version: str = "1.2.3") -> EntryPoint:
    """An entry point of our group, as if installed by ``dist``."""
    return EntryPoint(name, value, GROUP)._for(FakeDist(dist, version))  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def fake_modules(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make tests/plugins/data/fake_eps importable; forget its modules afterwards."""
    monkeypatch.syspath_prepend(str(DATA / "fake_eps"))
    monkeypatch.delenv("PORTPROOF_PLUGIN_PATH", raising=False)
    yield
    for name in [m for m in sys.modules if m.startswith(("portproof_fake_eps", "aaa_evil"))]:
        del sys.modules[name]


GOOD = "portproof_fake_eps.good:FakeGoodProbe"


def test_good_plugin_loads_with_its_distribution() -> None:
    reg = load_registry(eps=[ep("fakegood", GOOD, "portproof-fakegood", "0.3")])
    assert not reg.errors
    (info,) = reg.infos
    assert (info.probe.name, info.distribution, info.version, info.builtin) == ("fakegood", "portproof-fakegood",
                                                                              "0.3", False)


def test_broken_import_is_reported_with_distribution_and_skipped() -> None:
    reg = load_registry(eps=[ep("broken", "portproof_fake_eps.broken:X", "portproof-broken", "9.9"),
                             ep("fakegood", GOOD)])
    assert [p.name for p in reg.probes] == ["fakegood"]
    (err,) = reg.errors
    assert err.distribution == "portproof-broken 9.9"
    assert err.entry_point == "broken = portproof_fake_eps.broken:X"
    assert "RuntimeError: this plugin is broken on purpose" in err.error
    assert "broken.py" in err.traceback


def test_strict_mode_makes_a_broken_plugin_fatal() -> None:
    with pytest.raises(PluginError, match=r"portproof-broken 9\.9"):
        load_registry(strict=True, eps=[ep("fakegood", GOOD),
                                        ep("broken", "portproof_fake_eps.broken:X", "portproof-broken", "9.9")])


def test_duplicate_name_keeps_the_first_and_reports_the_second() -> None:
    reg = load_registry(eps=[ep("fakegood", GOOD, "dist-a"),
                             ep("fakegood2", "portproof_fake_eps.good:SecondGoodProbe", "dist-b")])
    assert [i.distribution for i in reg.infos] == ["dist-a"]
    (err,) = reg.errors
    assert err.distribution.startswith("dist-b") and "already registered" in err.error


EVIL = DATA / "evil-dist"  # a real (unpacked) distribution "aaa-evil": smtp = aaa_evil:Evil, aaa = aaa_evil:Evil


def _evil_eps() -> list[EntryPoint]:
    """The impostor's entry points, read by importlib.metadata from its own dist-info."""
    (dist,) = distributions(path=[str(EVIL)])
    assert dist.metadata["Name"] == "aaa-evil"
    return sorted(dist.entry_points.select(group=GROUP), key=lambda e: e.name)


def _builtin_eps() -> list[EntryPoint]:
    builtin = [e for e in entry_points(group=GROUP) if e.dist is not None and e.dist.metadata["Name"] == "portproof"]
    assert {"smtp", "pop3", "imap"} <= {e.name for e in builtin}, "built-ins are not registered through the group"
    return builtin


@pytest.mark.parametrize("order", ["impostor_first", "impostor_last"])
def test_builtin_wins_over_an_impostor_that_sorts_first(monkeypatch: pytest.MonkeyPatch, order: str) -> None:
    """``smtp = aaa_evil:Evil`` and ``aaa = aaa_evil:Evil`` (probe name ``smtp``) from the
    distribution ``aaa-evil``: both sort before the built-in's ``smtp`` entry point, whatever order
    they are found in; the built-in keeps the name and both are reported with their distribution."""
    monkeypatch.syspath_prepend(str(EVIL))
    evil, builtin = _evil_eps(), _builtin_eps()
    assert [e.name for e in evil] == ["aaa", "smtp"] and min(e.name for e in evil) < min(e.name for e in builtin)
    reg = load_registry(eps=[*evil, *builtin] if order == "impostor_first" else [*builtin, *evil])
    smtp = next(i for i in reg.infos if i.probe.name == "smtp")
    assert (smtp.distribution, smtp.builtin, smtp.origin) == ("portproof", True, "probes.smtp:SMTPProbe")
    assert type(smtp.probe).__module__ == "probes.smtp"
    assert sorted(i.probe.name for i in reg.infos) == sorted(e.name for e in builtin)
    errors = {e.entry_point: e for e in reg.errors}
    assert set(errors) == {"aaa = aaa_evil:Evil", "smtp = aaa_evil:Evil"}
    for err in errors.values():
        assert err.distribution == "aaa-evil 6.6.6"
        assert "'smtp' is built in (portproof); a plugin cannot replace it" in err.error


def test_builtin_name_stays_reserved_when_the_builtin_fails_to_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """A built-in that cannot load leaves its name to nobody: the impostor is still refused."""
    monkeypatch.syspath_prepend(str(EVIL))
    broken_builtin = ep("smtp", "portproof_fake_eps.broken:X", "portproof", "0.1.0")
    reg = load_registry(eps=[*_evil_eps(), broken_builtin])
    assert reg.get("smtp") is None and not reg.infos
    assert sorted(e.distribution for e in reg.errors) == ["aaa-evil 6.6.6", "aaa-evil 6.6.6", "portproof 0.1.0"]


def test_strict_plugins_makes_the_impostor_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EVIL))
    with pytest.raises(PluginError, match=r"from aaa-evil 6\.6\.6 failed: .*'smtp' is built in"):
        load_registry(strict=True, eps=[*_evil_eps(), *_builtin_eps()])


def test_cli_reports_the_impostor_distribution_and_keeps_the_builtin() -> None:
    """The impostor installed for real (its dist-info on the path): ``fingerprint probes``."""
    env = clean_env(PYTHONPATH=str(EVIL))
    proc = subprocess.run([sys.executable, "-m", "scanner.cli", "probes", "--json"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    smtp = next(r for r in out["probes"] if r["name"] == "smtp")
    assert smtp["distribution"] == "portproof" and smtp["builtin"] is True
    assert sorted((e["entry_point"], e["distribution"]) for e in out["errors"]) == [
        ("aaa = aaa_evil:Evil", "aaa-evil 6.6.6"), ("smtp = aaa_evil:Evil", "aaa-evil 6.6.6")]
    table = subprocess.run([sys.executable, "-m", "scanner.cli", "probes"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=60)
    assert "plugin skipped: smtp = aaa_evil:Evil from aaa-evil 6.6.6" in table.stderr
    strict = subprocess.run([sys.executable, "-m", "scanner.cli", "probes", "--strict-plugins"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert strict.returncode == 1 and "aaa-evil 6.6.6" in strict.stderr and "built in" in strict.stderr


def test_invalid_facts_are_reported() -> None:
    reg = load_registry(eps=[ep("invalid", "portproof_fake_eps.invalid:InvalidFactsProbe")])
    assert not reg.probes
    error = reg.errors[0].error
    for fragment in ("name 'Bad Name'", "services must be", "ports must be", "rarity must be"):
        assert fragment in error


def test_entry_point_to_a_non_probe_is_reported() -> None:
    reg = load_registry(eps=[ep("np", "portproof_fake_eps.invalid:not_a_probe")])
    assert not reg.probes and "not a Probe" in reg.errors[0].error


def test_missing_module_is_reported() -> None:
    reg = load_registry(eps=[ep("gone", "portproof_fake_eps.nowhere:P", "portproof-gone", "1")])
    assert reg.errors[0].distribution == "portproof-gone 1"
    assert "ModuleNotFoundError" in reg.errors[0].error


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scanner.cli", *args], cwd=REPO, env=clean_env(),
                          capture_output=True, text=True, timeout=60)


def test_cli_local_broken_plugin_is_reported_and_skipped() -> None:
    """``--plugin-path`` to a file that raises at import: listed as skipped, built-ins still listed."""
    proc = _cli("probes", "--plugin-path", str(DATA / "broken_import.py"))
    assert proc.returncode == 0, proc.stderr
    assert "plugin skipped" in proc.stderr and "broken_import.py" in proc.stderr and "ImportError" in proc.stderr
    assert "smtp" in proc.stdout


def test_cli_strict_plugins_is_fatal() -> None:
    proc = _cli("probes", "--strict-plugins", "--plugin-path", str(DATA / "broken_import.py"))
    assert proc.returncode == 1 and "broken_import.py" in proc.stderr


def test_cli_require_probes() -> None:
    assert _cli("probes", "--require-probes", "smtp,pop3").returncode == 0
    proc = _cli("probes", "--require-probes", "smtp,nosuchprobe")
    assert proc.returncode == 1 and "nosuchprobe" in proc.stderr


def test_cli_local_plugin_loads_without_packaging() -> None:
    """``PORTPROOF_PLUGIN_PATH`` loads a probe module from a file during development."""
    local = REPO / "examples/redis-probe/portproof_redis/probe.py"
    proc = subprocess.run([sys.executable, "-m", "scanner.cli", "probes", "--json"], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env=clean_env(PORTPROOF_PLUGIN_PATH=str(local)))
    assert proc.returncode == 0, proc.stderr

    rows = {r["name"]: r for r in json.loads(proc.stdout)["probes"]}
    assert rows["redis"]["builtin"] is False and rows["redis"]["distribution"].startswith("local:")
