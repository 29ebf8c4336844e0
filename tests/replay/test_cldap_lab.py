"""CLDAP (LDAP over UDP) against the lab's real Samba AD DC (its cldap server on 127.0.0.1:389/udp),
live through the engine and recorded, then replayed: the replay pairs the request and the answer
datagrams by LDAP message id and the ldap probe's UDP dialogue reads the same rootDSE."""

from __future__ import annotations

import socket
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from probes.ldap import LDAPProbe, build_root_dse_request
from scanner.registry import GROUP, load_registry
from scanner.replay import replay_paths
from scanner.replay.pcapwriter import PcapRecorder

pytestmark = pytest.mark.lab


def _cldap_answers(address: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2.0)
        try:
            s.sendto(build_root_dse_request(1), (address, 389))
            return bool(s.recv(65535))
        except OSError:
            return False


def test_cldap_rootdse_live_and_replayed(lab: object, tmp_path: Path) -> None:
    from scanner.engine import scan_sync

    if not _cldap_answers("127.0.0.1"):
        pytest.fail("no CLDAP answer on 127.0.0.1:389/udp (Samba's cldap server not running)")
    reg = load_registry(eps=[EntryPoint(name="ldap", value="probes.ldap:LDAPProbe", group=GROUP)])
    path = tmp_path / "cldap.pcap"
    rec = PcapRecorder(path)
    try:
        (live,) = scan_sync(["127.0.0.1"], ports="U:389", registry=reg, recorder=rec)
    finally:
        rec.close()
    assert live.transport == "udp" and live.service == "ldap", [(a.probe, a.status, a.error) for a in live.attempts]
    assert live.details["cldap"] is True
    assert live.product == "Samba AD DC" and live.version
    assert "lab.example.test" in (live.extrainfo or "")

    (replayed,) = replay_paths([str(path)], [LDAPProbe()]).results
    assert (replayed.transport, replayed.service, replayed.verdict) == ("udp", "ldap", "identified")
    assert (replayed.product, replayed.version) == (live.product, live.version)
    assert replayed.details["replay"]["paired"] == 1
