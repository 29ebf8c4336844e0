"""Hostile UDP servers against the DNS probe and the LDAP probe's CLDAP dialogue.

Each scenario is a small UDP server on an ephemeral port of 127.0.0.1 (``hostile_kit``), scanned
with ``U:<port>`` and one probe, through ``scan_sync`` and through the CLI. For every one: the port
finishes within its bounds (``UDP_TRIES`` sends x ``udp_timeout`` plus the bounded reads of
unmatched replies), its state and attempt statuses say what happened, and no probe reports a
``probe-bug``.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import hostile_kit as hk
import pytest

from scanner.engine import scan_sync

REGISTRY = hk.full_registry()
LOADED = {p.name for p in REGISTRY.probes}
OPTS: dict[str, Any] = dict(connect_timeout=2.0, read_timeout=1.5, udp_timeout=0.5, port_timeout=10.0)
#: a UDP port's whole scan: two sends of the first query, each waited for, plus reading the
#: bounded number of unmatched replies; generous for a loaded machine
UDP_BOUND = 5.0


@dataclass(frozen=True)
class UDPCase:
    """One hostile UDP behaviour met by one probe, and the honest result it must give."""

    handler: hk.UDPHandler
    probe: str
    state: str
    verdict: str
    statuses: frozenset[str]
    #: the banner (first reply bytes) must be kept
    banner: bool = False


def _cases() -> list[UDPCase]:
    out = []
    for probe in ("dns", "ldap"):
        out += [
            # nothing ever comes back: open|filtered, as nmap says for a silent UDP port
            UDPCase(hk.udp_silent, probe, "open|filtered", "filtered", frozenset({"io-timeout"})),
            # correct answers from another port / 127.0.0.2 never reach a connected socket
            UDPCase(hk.udp_reply_from_elsewhere, probe, "open|filtered", "filtered", frozenset({"io-timeout"})),
            UDPCase(hk.udp_garbage, probe, "open", "unidentified", frozenset({"no-match"}), banner=True),
            UDPCase(hk.udp_wrong_id_flood, probe, "open", "unidentified", frozenset({"no-match"}), banner=True),
            UDPCase(hk.udp_oversize, probe, "open", "unidentified", frozenset({"no-match", "protocol-error"}),
                    banner=True),
        ]
    return out


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[f"{c.probe}-{c.handler.__name__}" for c in CASES])
def test_hostile_udp(case: UDPCase, serve_udp: Callable[..., hk.FakeUDPServer]) -> None:
    """The hostile UDP port is reported honestly, quickly, without a probe-bug."""
    assert case.probe in LOADED, f"probe {case.probe} not loaded"
    srv = serve_udp(case.handler)
    t0 = time.monotonic()
    (res,) = scan_sync(["127.0.0.1"], ports=f"U:{srv.port}", registry=REGISTRY, probes=(case.probe,), **OPTS)
    elapsed = time.monotonic() - t0
    assert srv.queries >= 1, "the scanner never sent a datagram"
    assert elapsed < UDP_BOUND, f"UDP port took {elapsed:.1f} s"
    statuses = {a.status for a in res.attempts}
    assert "probe-bug" not in statuses, [(a.probe, a.error, a.traceback) for a in res.attempts]
    assert statuses & case.statuses, (statuses, res.attempts)
    assert (res.state, res.verdict, res.service) == (case.state, case.verdict, None), (
        res.state, res.verdict, res.service, res.attempts)
    if case.banner:
        assert res.details.get("banner_hex"), res.details
        assert len(bytes.fromhex(res.details["banner_hex"])) <= 512
    if case.handler is hk.udp_reply_from_elsewhere:
        assert srv.sent >= 2, "the scenario did not send its replies from elsewhere"
    if case.handler is hk.udp_wrong_id_flood and case.probe == "dns":
        # the probe says why it gave up: replies with other ids were read and ignored
        assert any("ignored reply id" in (a.error or "") or "no reply matched" in (a.error or "")
                   for a in res.attempts), res.attempts


def test_closed_udp_port(serve_udp: Callable[..., hk.FakeUDPServer]) -> None:
    """No server at all: ICMP port unreachable makes the port closed at once."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    t0 = time.monotonic()
    (res,) = scan_sync(["127.0.0.1"], ports=f"U:{port}", registry=REGISTRY, probes=("dns", "ldap"), **OPTS)
    assert time.monotonic() - t0 < UDP_BOUND
    assert res.state == "closed" and res.verdict == "closed", (res.state, res.attempts)


def test_every_udp_scenario_in_one_cli_scan(serve_udp: Callable[..., hk.FakeUDPServer]) -> None:
    """The CLI, ``-p U:a,U:b,...`` with both UDP probes: one honest JSON line per port, in time."""
    handlers = [hk.udp_silent, hk.udp_reply_from_elsewhere, hk.udp_garbage, hk.udp_wrong_id_flood,
                hk.udp_oversize]
    servers = {serve_udp(h).port: h.__name__ for h in handlers}
    ports = ",".join(f"U:{p}" for p in servers)
    t0 = time.monotonic()
    proc = hk.run_cli(["127.0.0.1", "-n", "-p", ports, "--probe", "dns", "--probe", "ldap", "-o", "jsonl",
                       "--no-progress", "--udp-timeout", "0.5", "--port-timeout", "10"], timeout=60)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert elapsed < 2 * UDP_BOUND + 5, f"CLI took {elapsed:.1f} s"
    records = {r["port"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert set(records) == set(servers)
    for port, name in servers.items():
        r = records[port]
        assert r["transport"] == "udp" and r["service"] is None, (name, r)
        assert all(a["status"] != "probe-bug" for a in r["attempts"]), (name, r["attempts"])
        want = "open|filtered" if name in ("udp_silent", "udp_reply_from_elsewhere") else "open"
        assert r["state"] == want, (name, r["state"], r["attempts"])
        # both probes were tried on every port, each to an honest end
        assert {a["probe"] for a in r["attempts"]} >= {"dns", "ldap"}, (name, r["attempts"])
