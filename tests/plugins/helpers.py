"""Shared by the plugin tests: paths, loading test modules from files, fresh virtual environments."""

from __future__ import annotations

import importlib.util
import json
import os
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


class Venv:
    """A fresh virtual environment that also sees the system site-packages (where portproof is)."""

    def __init__(self, root: Path) -> None:
        if os.environ.get("PORTPROOF_NO_VENV"):
            pytest.skip("PORTPROOF_NO_VENV is set")
        self.root = root
        venv.EnvBuilder(system_site_packages=True, with_pip=True, clear=True).create(root)
        self.python = str(root / "bin" / "python")

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
