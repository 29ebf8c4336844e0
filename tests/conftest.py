"""Shared fixtures: the real-server lab, started once per test session.

The lab (``tests/lab/up.sh``) runs real daemons from Debian packages on loopback addresses only.
When it is already running (a developer's machine), the session reuses it and leaves it running;
otherwise it starts it and stops it at the end. ``PORTPROOF_NO_LAB=1`` skips lab tests.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

LAB_DIR = Path(__file__).parent / "lab"
LAB_STATE = Path(os.environ.get("LAB_STATE", "/tmp/portproof-lab"))
IP1 = "127.0.0.1"
IP2 = "127.0.0.2"


def _lab_running() -> bool:
    pid_file = LAB_STATE / "run" / "pids" / "samba.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    return Path(f"/proc/{pid}").exists()


class Lab:
    """Addresses of the lab hosts (see tests/lab/up.sh for what runs where)."""

    ip1 = IP1
    ip2 = IP2


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """The running lab; starts it (once) when needed."""
    if os.environ.get("PORTPROOF_NO_LAB"):
        pytest.skip("PORTPROOF_NO_LAB is set")
    started = False
    if not _lab_running():
        env = dict(os.environ, LAB_STATE=str(LAB_STATE))
        proc = subprocess.run(
            ["bash", str(LAB_DIR / "up.sh")], env=env, capture_output=True, text=True, timeout=900
        )
        if proc.returncode != 0:
            pytest.fail(f"lab failed to start:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        started = True
    yield Lab()
    if started and not os.environ.get("PORTPROOF_KEEP_LAB"):
        subprocess.run(
            ["bash", str(LAB_DIR / "down.sh")],
            env=dict(os.environ, LAB_STATE=str(LAB_STATE)),
            capture_output=True,
            timeout=300,
        )
