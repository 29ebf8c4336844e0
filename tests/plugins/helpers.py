"""Shared by the plugin tests: paths, loading test modules from files, fresh virtual environments."""

from __future__ import annotations

import importlib.util
import json
import os
import site
import subprocess
import sys
import venv
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
EXAMPLE = REPO / "examples" / "redis-probe"
PIP_TIMEOUT = 600


def load_file(path: Path, name: str | None = None) -> ModuleType:
    """Import a test module from a file (registered in sys.modules so its source can be checked)."""
    mod_name = name or f"portproof_test_{path.stem}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    return module


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: no PYTHONPATH (the venv must find things itself)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PORTPROOF_PLUGIN_PATH", "VIRTUAL_ENV")}
    env.update(extra)
    return env


def parent_site_dirs() -> list[str]:
    """The site-packages folders of the interpreter running the tests, in its own order: the
    system interpreter's, or a virtual environment's (and the base ones when that venv was made
    with ``--system-site-packages``), plus the user site when enabled."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


class Venv:
    """A fresh virtual environment that sees the portproof (and dependencies) running the tests.

    ``system_site_packages`` would show the *base* interpreter's site-packages, which is not where
    portproof is when the tests run inside a virtual environment. Instead a ``.pth`` file in the new
    venv calls :func:`site.addsitedir` on the running interpreter's site folders (so their own
    ``.pth`` files, such as an editable install's finder, are processed too). They come after the
    new venv's own site-packages: what is installed here wins."""

    def __init__(self, root: Path) -> None:
        if os.environ.get("PORTPROOF_NO_VENV"):
            pytest.skip("PORTPROOF_NO_VENV is set")
        self.root = root
        venv.EnvBuilder(system_site_packages=False, with_pip=True, clear=True).create(root)
        self.python = str(root / "bin" / "python")
        own = subprocess.run([self.python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, timeout=60, check=True, env=clean_env()).stdout.strip()
        self.site_packages = Path(own)
        lines = [f"import site; site.addsitedir({d!r})" for d in parent_site_dirs()]
        (self.site_packages / "_portproof_parent_site.pth").write_text("\n".join(lines) + "\n")

    def run(self, *args: str, cwd: Path | None = None, timeout: float = 120, check: bool = True,
            **env: str) -> subprocess.CompletedProcess[str]:
        """Run the venv's python with ``args``."""
        proc = subprocess.run([self.python, *args], cwd=cwd, env=clean_env(**env), capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            pytest.fail(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def pip_install(self, *paths: Path) -> None:
        """``pip install`` local project folders (build dependencies come from PyPI through pip)."""
        self.run("-m", "pip", "install", "--no-input", "--disable-pip-version-check", "-q",
                 *map(str, paths), timeout=PIP_TIMEOUT)

    def fingerprint(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The ``fingerprint`` command as this venv sees it."""
        return self.run("-m", "scanner.cli", *args, check=check)

    def probes_json(self, *args: str) -> dict[str, Any]:
        """``fingerprint probes --json``, parsed."""
        out: dict[str, Any] = json.loads(self.fingerprint("probes", "--json", *args).stdout)
        return out
