"""Services we have no probe of our own for, named by the service database on the real daemons the lab
runs (tests/lab/extra.d/ftp.sh: Debian's vsftpd on 127.0.0.11:21; ssh.sh: Debian's OpenSSH on :22).

The expected versions are read from dpkg at run time (the package installed by the lab), not written
here: the test holds for whatever Debian 12 point release the machine has.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

HOST = "127.0.0.11"


def _deb_version(pkg: str) -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True, timeout=30)
    v = out.stdout.strip()
    assert v, f"{pkg} is not installed (tests/lab/up.sh installs it)"
    return v.split(":", 1)[-1]  # drop the epoch


@pytest.fixture(scope="module")
def results(lab: object) -> dict[int, dict[str, object]]:
    out = subprocess.run([sys.executable, "-m", "scanner.cli", HOST, "-p", "21,22", "-o", "jsonl", "--no-progress"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode in (0, 1), out.stderr
    return {r["port"]: r for r in map(json.loads, out.stdout.splitlines())}


@pytest.mark.lab
def test_vsftpd_named_with_version(results: dict[int, dict[str, object]]) -> None:
    r = results[21]
    upstream = _deb_version("vsftpd").split("-")[0]  # 3.0.3-13+b2 -> 3.0.3
    assert r["state"] == "open" and r["service"] == "ftp"
    assert r["product"] == "vsftpd" and r["version"] == upstream
    assert str(r["rule"]).startswith("nmap-service-probes:")
    assert r["verdict"] == "identified"  # no expectation on -p ports outside the profile


@pytest.mark.lab
def test_openssh_named_with_version(results: dict[int, dict[str, object]]) -> None:
    r = results[22]
    deb = _deb_version("openssh-server")  # 9.2p1-2+deb12u10
    upstream = deb.split("-")[0]
    assert r["state"] == "open" and r["service"] == "ssh"
    assert r["product"] == "OpenSSH"
    assert re.match(re.escape(upstream) + r"\b", str(r["version"])), r["version"]
    assert str(r["rule"]).startswith("nmap-service-probes:")
