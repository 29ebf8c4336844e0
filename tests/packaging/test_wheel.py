"""The package as a user gets it: build the wheel, install it (not editable) into a fresh venv, run it.

An editable install (the README's first command) imports straight from the source tree, so it
hides a subpackage that the wheel forgets; these tests do not. The wheel is built by pip from a
copy of the repository (no build files are left in the checkout); the venv sees the dependencies
of the interpreter that runs the tests (tests/plugins/helpers.Venv) but never the source tree: the
wheel is installed into the venv itself and every command runs from an empty temporary folder.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.plugins.helpers import PIP_TIMEOUT, REPO, Venv, clean_env

#: what the copy for the build leaves out (caches, earlier builds, the VCS)
IGNORE = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", "build", "dist", ".venv", ".mypy_cache",
                                ".ruff_cache", ".pytest_cache", ".hypothesis")


@dataclass
class Installed:
    """The built wheel and the venv it is installed in."""

    wheel: Path
    venv: Venv
    cwd: Path

    def fingerprint(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The venv's ``fingerprint`` console script, run from the empty folder."""
        return subprocess.run([str(self.venv.root / "bin" / "fingerprint"), *args], cwd=self.cwd, env=clean_env(),
                              capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """Build the wheel with pip from a copy of the repository and install it into a fresh venv."""
    root = tmp_path_factory.mktemp("wheel")
    src, out, cwd = root / "src", root / "dist", root / "cwd"
    shutil.copytree(REPO, src, ignore=IGNORE)
    cwd.mkdir()
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-input",
                           "--disable-pip-version-check", "-q", "-w", str(out), str(src)],
                          cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=PIP_TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (wheel,) = out.glob("portproof-*.whl")
    venv = Venv(root / "venv")
    # --ignore-installed: the running interpreter's portproof (often an editable install of this
    # very tree) is visible to the venv's pip and must not count as "already satisfied"
    venv.run("-m", "pip", "install", "--no-input", "--disable-pip-version-check", "-q", "--no-deps",
             "--ignore-installed", str(wheel), cwd=cwd, timeout=PIP_TIMEOUT)
    yield Installed(wheel, venv, cwd)


def _source_files() -> set[str]:
    """Every file the wheel must carry: the modules of every package under scanner/ and probes/
    (whatever its depth), the profiles, the schema and the py.typed marker."""
    want: set[str] = set()
    for top in ("scanner", "probes"):
        for path in (REPO / top).rglob("*.py"):
            if "__pycache__" not in path.parts:
                want.add(path.relative_to(REPO).as_posix())
    for pattern in ("profiles/*.toml", "data/*.json", "py.typed"):
        want.update(p.relative_to(REPO).as_posix() for p in (REPO / "scanner").glob(pattern))
    return want


def test_wheel_carries_every_subpackage_and_the_package_data(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    want = _source_files()
    assert {"scanner/replay/__init__.py", "scanner/profiles/exchange-ad.toml", "scanner/data/result.schema.json",
            "scanner/py.typed"} <= want
    missing = sorted(want - names)
    assert not missing, f"the wheel forgets {missing}"
    assert not [n for n in names if n.startswith(("tests/", "bench/", "examples/", "pcaps/"))]


def test_installed_from_the_wheel_not_from_the_source_tree(installed: Installed) -> None:
    code = ("import json, scanner, scanner.replay, probes.smtp; from importlib.metadata import distribution, "
            "entry_points; d = distribution('portproof'); "
            "eps = {e.name: str(e.dist.locate_file('')) for e in entry_points(group='portproof.probes')}; "
            "print(json.dumps([scanner.__file__, scanner.replay.__file__, probes.smtp.__file__, "
            "str(d.locate_file('')), d.read_text('direct_url.json'), eps['smtp']]))")
    out = json.loads(installed.venv.run("-c", code, cwd=installed.cwd).stdout)
    *files, direct_url, smtp_dist = out
    for f in [*files, smtp_dist]:
        assert f.startswith(str(installed.venv.site_packages)), f
        assert not f.startswith(str(REPO))
    assert '"editable": true' not in (direct_url or "") and installed.wheel.name in (direct_url or "")


def test_replay_of_a_bundled_capture(installed: Installed) -> None:
    """``fingerprint replay`` (scanner.replay, forgotten by the old package list) on a lab capture."""
    proc = installed.fingerprint("replay", str(REPO / "pcaps" / "ldap-samba.pcap"), "-o", "json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc: dict[str, Any] = json.loads(proc.stdout)
    (res,) = doc["results"]
    assert (res["address"], res["port"], res["transport"]) == ("127.0.0.1", 389, "tcp")
    assert (res["service"], res["verdict"]) == ("ldap", "confirmed")
    assert res["product"] == "Samba AD DC" and res["version"].startswith("4.")
    assert res["source"]["file"].endswith("ldap-samba.pcap") and res["source"]["packets"] > 0


@pytest.mark.lab
def test_scan_of_a_lab_port(installed: Installed, lab: object) -> None:
    """``fingerprint 127.0.0.1 -p 25`` from the wheel: the lab's Postfix, its profile, its schema."""
    proc = installed.fingerprint("127.0.0.1", "-p", "25", "-n", "-o", "json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (res,) = json.loads(proc.stdout)["results"]
    assert (res["address"], res["port"], res["state"]) == ("127.0.0.1", 25, "open")
    assert (res["service"], res["product"], res["expected"], res["verdict"]) == ("smtp", "Postfix", "smtp",
                                                                                  "confirmed")
    schema = json.loads(installed.fingerprint("schema").stdout)
    assert "verdict" in json.dumps(schema)
