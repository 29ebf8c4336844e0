"""Registry behaviour with fake entry points (nothing installed): broken, invalid, duplicate plugins.

Like flake8's tests: build ``importlib.metadata.EntryPoint`` objects bound to a fake distribution
and hand them to :func:`scanner.registry.load_registry` instead of the installed ones.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import Distribution, EntryPoint
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
    for name in [m for m in sys.modules if m.startswith("portproof_fake_eps")]:
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


def test_duplicate_of_a_builtin_name_is_refused() -> None:
    """A plugin may not take over a built-in probe's name (built-ins load through the same group)."""
    from importlib.metadata import entry_points

    builtin = [e for e in entry_points(group=GROUP) if e.name == "smtp"]
    assert builtin, "the built-in smtp probe is not registered through the entry-point group"
    import portproof_fake_eps.good as good

    class Impostor(good.FakeGoodProbe):
        name = "smtp"

    good.Impostor = Impostor  # type: ignore[attr-defined]
    impostor = ep("zz_smtp", "portproof_fake_eps.good:Impostor", "portproof-impostor")
    reg = load_registry(eps=[*builtin, impostor])
    assert [i.distribution for i in reg.infos] == ["portproof"]
    assert reg.errors[0].distribution.startswith("portproof-impostor")


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
