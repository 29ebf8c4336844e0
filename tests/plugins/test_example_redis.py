"""The example third-party plugin (examples/redis-probe), installed with pip into a fresh venv.

Discovered by ``fingerprint probes`` there (next to a deliberately broken plugin, which is reported
with its distribution's name and skipped), its own tests run there with our test kit, and it
identifies the real Debian redis-server of the lab (tests/lab/extra.d/redis.sh, 127.0.0.1:6379).
No file of scanner/ or probes/ knows about Redis.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanner.engine import scan_sync
from scanner.registry import load_registry

from .helpers import DATA, EXAMPLE, REPO, Venv

REDIS = ("127.0.0.1", 6379)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Venv]:
    """A fresh venv with the Redis example and the broken plugin installed (from copies: no build
    files are left in the repository)."""
    root = tmp_path_factory.mktemp("redis-venv")
    for src, name in ((EXAMPLE, "redis-probe"), (DATA / "broken-plugin", "broken-plugin")):
        shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    venv = Venv(root / "venv")
    venv.pip_install(root / "redis-probe", root / "broken-plugin")
    yield venv


def _redis_listening() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=2):
            return True
    except OSError:
        return False


def _redis_server_version() -> str:
    """The version of the installed redis-server binary, as it reports it (not our code)."""
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout
    m = re.search(r"\bv=([\d.]+)", out)
    assert m, out
    return m.group(1)


def test_discovered_with_distribution_and_broken_plugin_skipped(env: Venv) -> None:
    listing = env.probes_json()
    rows = {r["name"]: r for r in listing["probes"]}
    assert rows["redis"]["distribution"] == "portproof-redis" and rows["redis"]["version"] == "0.1.0"
    assert rows["redis"]["builtin"] is False and rows["redis"]["ports"] == [6379]
    assert {"smtp", "pop3", "imap", "nntp"} <= set(rows)  # built-ins unaffected by the broken plugin
    (err,) = listing["errors"]
    assert err["distribution"] == "portproof-broken 0.0.1"
    assert err["entry_point"] == "broken = portproof_broken.probe:BrokenProbe"
    assert "ImportError" in err["error"] and "DoesNotExist" in err["error"]
    table = env.fingerprint("probes")
    assert "plugin skipped: broken = portproof_broken.probe:BrokenProbe from portproof-broken 0.0.1" in table.stderr


def test_strict_plugins_stops_on_the_broken_plugin(env: Venv) -> None:
    proc = env.fingerprint("probes", "--strict-plugins", check=False)
    assert proc.returncode == 1 and "portproof-broken 0.0.1" in proc.stderr


def test_contract_over_every_probe_registered_in_the_venv(env: Venv) -> None:
    """Our CI contract test, run where the third-party probe is registered too."""
    proc = env.run("-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "registered_probe_passes",
                   str(REPO / "tests/plugins/test_contract.py"), cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "[redis]" in env.run("-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider", "-k",
                                "registered_probe_passes", str(REPO / "tests/plugins/test_contract.py"),
                                cwd=REPO).stdout


def test_example_own_tests_pass_in_the_venv(env: Venv, tmp_path: Path) -> None:
    """The plugin's tests, run from a copy so the installed package is the one imported."""
    shutil.copytree(EXAMPLE / "tests", tmp_path / "tests")
    where = env.run("-c", "import portproof_redis; print(portproof_redis.__file__)", cwd=tmp_path).stdout
    assert str(env.root) in where
    proc = env.run("-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "tests"), cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert re.search(r"\b2\d passed", proc.stdout), proc.stdout[-500:]


@pytest.mark.lab
def test_identifies_the_real_redis_server(env: Venv, lab: object) -> None:
    """``fingerprint 127.0.0.1 -p 6379`` from the venv: Redis, with the version the binary reports."""
    if not _redis_listening():
        pytest.fail("no redis-server on 127.0.0.1:6379 (tests/lab/extra.d/redis.sh; see the lab logs)")
    proc = env.fingerprint("127.0.0.1", "-p", "T:6379", "-o", "json", "--require-probes", "redis", "--no-progress")
    doc = json.loads(proc.stdout)
    results = doc["results"] if isinstance(doc, dict) else doc
    (res,) = results
    assert (res["service"], res["product"], res["version"]) == ("redis", "Redis", _redis_server_version())
    assert res["probe"] == "redis" and res["state"] == "open" and res["verdict"] == "identified"
    assert res["details"]["auth_required"] is False and res["details"]["redis_mode"] == "standalone"
    assert any(a["probe"] == "redis" and a["status"] == "success" for a in res["attempts"])


@pytest.mark.lab
def test_scan_sync_with_the_plugin_from_its_file(lab: object) -> None:
    """In-process, loaded with plugin_paths (the development mode): the engine drives it the same way."""
    if not _redis_listening():
        pytest.fail("no redis-server on 127.0.0.1:6379 (tests/lab/extra.d/redis.sh; see the lab logs)")
    reg = load_registry(plugin_paths=[str(EXAMPLE / "portproof_redis/probe.py")])
    assert not reg.errors, reg.errors
    (res,) = scan_sync(["127.0.0.1"], "T:6379", registry=reg, fast=True)
    assert (res.service, res.product, res.version) == ("redis", "Redis", _redis_server_version())
