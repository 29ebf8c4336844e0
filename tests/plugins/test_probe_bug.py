"""A plugin that raises never stops a scan: its attempt says ``probe-bug`` with the traceback.

Against the lab's real Dovecot (127.0.0.1:110 POP3, 143 IMAP): the raising plugin
(data/raising_probe.py) claims every greeting and runs first, then the built-in probes still
identify both ports. A plugin that raises at import (data/broken_import.py) is skipped.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from scanner.engine import scan_sync
from scanner.registry import load_registry

from .helpers import DATA, REPO, clean_env

pytestmark = pytest.mark.lab


def test_raising_dialogue_gives_probe_bug_and_the_scan_goes_on(lab: object) -> None:
    reg = load_registry(plugin_paths=[str(DATA / "raising_probe.py")])
    assert reg.get("a_raiser") is not None, reg.errors
    results = {r.port: r for r in scan_sync(["127.0.0.1"], "T:110,T:143", registry=reg, fast=True)}
    assert set(results) == {110, 143}
    for port, service in ((110, "pop3"), (143, "imap")):
        res = results[port]
        assert res.service == service and res.verdict == "confirmed", (res.verdict, res.reason, res.attempts)
        bugs = [a for a in res.attempts if a.probe == "a_raiser"]
        assert bugs and bugs[0].status == "probe-bug"
        assert bugs[0].error is not None and "KeyError" in bugs[0].error
        assert bugs[0].traceback is not None and "raising_probe.py" in bugs[0].traceback
        assert "return table[line]" in bugs[0].traceback


def _scan_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scanner.cli", "127.0.0.1", "-p", "T:110", "--fast", "--no-progress",
                           "-o", "json", *args], cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=120)


def _attempts(proc: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    doc = json.loads(proc.stdout)
    (res,) = doc["results"] if isinstance(doc, dict) else doc
    assert res["service"] == "pop3"
    return [a for a in res["attempts"] if a["probe"] == "a_raiser"]


def test_cli_keeps_the_traceback_only_with_verbose(lab: object) -> None:
    raising = str(DATA / "raising_probe.py")
    verbose = _scan_cli("--plugin-path", raising, "-v")
    assert verbose.returncode == 0, verbose.stderr
    (bug,) = _attempts(verbose)
    assert bug["status"] == "probe-bug" and "KeyError" in str(bug["traceback"])
    quiet = _scan_cli("--plugin-path", raising)
    (bug,) = _attempts(quiet)
    assert bug["status"] == "probe-bug" and "traceback" not in bug


def test_plugin_raising_at_import_is_skipped_and_the_scan_runs(lab: object) -> None:
    proc = _scan_cli("--plugin-path", str(DATA / "broken_import.py"))
    assert proc.returncode == 0, proc.stderr
    assert "plugin skipped" in proc.stderr and "broken_import.py" in proc.stderr
    assert _attempts(proc) == []  # pop3 identified the port (checked in _attempts)
