"""``fingerprint probes new NAME``: the generated package installs, is listed, and its tests pass."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scanner.registry import load_registry
from scanner.scaffold import ScaffoldError, render, write_plugin
from scanner.testing import assert_probe_contract

from .helpers import Venv, clean_env


def test_render_lists_the_package_files() -> None:
    files = render("demo")
    assert set(files) == {"pyproject.toml", "README.md", "portproof_demo/__init__.py", "portproof_demo/probe.py",
                          "tests/test_demo.py"}
    entry = '[project.entry-points."portproof.probes"]\ndemo = "portproof_demo.probe:DemoProbe"'
    assert entry in files["pyproject.toml"]
    assert files["portproof_demo/probe.py"].startswith('"""Demo probe')


@pytest.mark.parametrize("bad", ["", "Demo", "1abc", "a-b", "a b", "x" * 25, "demo;rm"])
def test_bad_names_are_refused(bad: str) -> None:
    with pytest.raises(ScaffoldError):
        render(bad)


def test_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ScaffoldError, match="not empty"):
        write_plugin("demo", tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("name", ["multi_word", "x" * 24])
def test_generated_code_is_lint_clean_and_passes_the_contract(tmp_path: Path, name: str) -> None:
    """ruff (with the generated configuration, our rules) finds nothing; the probe passes the contract."""
    write_plugin(name, tmp_path / "pkg")
    if shutil.which("ruff"):
        proc = subprocess.run(["ruff", "check", "."], cwd=tmp_path / "pkg", capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stdout
    reg = load_registry(plugin_paths=[str(tmp_path / f"pkg/portproof_{name}/probe.py")])
    probe = reg.get(name)
    assert probe is not None, reg.errors
    assert type(probe).__name__ == ("MultiWordProbe" if name == "multi_word" else "X" + "x" * 23 + "Probe")
    assert_probe_contract(probe)


def test_cli_new_then_pip_install_then_listed_and_tests_pass(tmp_path: Path) -> None:
    """The issue's "done when": probes new demo + pip install ./demo + fingerprint probes lists demo."""
    proc = subprocess.run([sys.executable, "-m", "scanner.cli", "probes", "new", "demo"],  # default: ./demo
                          cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "pip install ./demo" in proc.stdout
    again = subprocess.run([sys.executable, "-m", "scanner.cli", "probes", "new", "demo", "--dir", "demo"],
                           cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "not empty" in again.stderr

    env = Venv(tmp_path / "venv")
    env.pip_install(tmp_path / "demo")
    listing = env.probes_json()
    rows = {r["name"]: r for r in listing["probes"]}
    assert rows["demo"]["distribution"] == "portproof-demo" and rows["demo"]["version"] == "0.1.0"
    assert rows["demo"]["builtin"] is False
    assert rows["smtp"]["builtin"] is True  # the built-ins are still there
    assert not listing["errors"]
    # outside the venv the demo probe does not exist: the venv's own entry point found it
    assert load_registry().get("demo") is None

    # the generated tests, run from a copy so that the installed package (not the source) is imported
    shutil.copytree(tmp_path / "demo/tests", tmp_path / "copied-tests")
    where = env.run("-c", "import portproof_demo; print(portproof_demo.__file__)", cwd=tmp_path).stdout
    assert str(tmp_path / "venv") in where
    result = env.run("-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "copied-tests"), cwd=tmp_path,
                     check=False)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "6 passed" in result.stdout
