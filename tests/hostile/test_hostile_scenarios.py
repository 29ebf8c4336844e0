"""Hostile servers against the engine and every probe that can meet them.

Each scenario starts one small asyncio server on 127.0.0.1 (see ``hostile_kit``) next to a
well-behaved POP3 neighbour, scans both ports in one ``scan_sync`` call, and asserts that:

* the scan finishes within its limits (port time limit + a small margin);
* the hostile port's result says what happened (attempt statuses, verdict, the first bytes kept in
  ``details.banner``) and no probe blew up (no ``probe-bug``);
* memory stays bounded while the server floods (tracemalloc peak);
* the neighbour port is identified as usual (one bad port does not affect another).
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hostile_kit as hk
import pytest

from scanner.engine import scan_sync
from scanner.profile import PortEntry, Profile
from scanner.results import ScanResult

REGISTRY = hk.full_registry()
LOADED = {p.name for p in REGISTRY.probes}

#: scan options shared by every scenario (short, so the suite stays quick)
OPTS: dict[str, Any] = dict(connect_timeout=2.0, read_timeout=1.5, greeting_wait=1.0, tls_timeout=1.5,
                            port_timeout=12.0, udp_timeout=0.5)
#: slack on top of the port time limit (scheduling, TLS teardown)
SLACK = 3.0
#: a flood of 10 MB must not grow the traced heap past this
MEM_CAP = 8 * 1024 * 1024


def _softmatch_only(r: ScanResult) -> None:
    assert r.service == "smtp" and r.product is None and r.confidence <= 3, r
    assert r.probe == "servicedb" and (r.rule or "").startswith("nmap-service-probes:"), r


@dataclass
class Scenario:
    """One hostile behaviour, the probes that can meet it, and what the result must say."""

    name: str
    handler: hk.Handler
    probes: tuple[str, ...]
    #: attempt statuses on the hostile port: at least one of these must appear
    statuses: set[str]
    verdict: str = "unidentified"
    #: the banner kept must start with these bytes (as text), when given
    banner: str | None = None
    #: extra check on the result
    check: Callable[[ScanResult], None] | None = None
    tls_server: bool = False
    #: profile entry for the hostile port: (service, implicit TLS) when the port expects one
    expect: tuple[str, bool] | None = None
    memory: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _partial_smtp(r: ScanResult) -> None:
    assert r.service == "smtp" and r.details.get("partial") is True, r.details
    assert r.details.get("os_hint") == "Debian/GNU"


def _no_greeting_wait(r: ScanResult) -> None:
    # every client-first probe got its own io-timeout; none hung the port
    assert {a.probe for a in r.attempts if a.status == "io-timeout"} >= {"ldap"} & LOADED


def _kept_exact(r: ScanResult) -> None:
    raw = bytes.fromhex(r.details["banner_hex"])
    assert raw.startswith(b"\x1b[2J\x1b[1;1H\x00\xff\xfe"), raw[:20]
    assert b"FAKE confirmed" in raw


def _tls_ok_then_silent(r: ScanResult) -> None:
    att = [a for a in r.attempts if a.tls]
    assert att and all(a.status != "tls-error" for a in att), r.attempts


SCENARIOS = [
    Scenario("accept-never-speak", hk.silent, ("smtp", "imap", "pop3", "nntp"), {"io-timeout"}),
    Scenario("accept-never-speak-client-first", hk.silent, ("ldap", "msrpc", "tsap", "http", "dns"),
             {"io-timeout", "total-timeout"}, check=_no_greeting_wait, extra={"port_timeout": 20.0}),
    Scenario("one-byte-a-second", hk.drip, ("smtp", "imap", "pop3", "nntp"), set(), banner="2"),
    Scenario("endless-line", hk.endless_line, ("smtp",), {"no-match", "protocol-error", "io-timeout"},
             banner="220 AAAA", memory=True),
    Scenario("ten-megabytes", hk.flood, ("smtp", "imap", "pop3", "nntp", "ldap", "http"), set(),
             banner="\x00\xff garbage \x1b[2J", memory=True),
    Scenario("ten-megabytes-of-ehlo", hk.smtp_flood, ("smtp",), {"protocol-error", "no-match"},
             verdict="identified", memory=True),
    Scenario("smtp-multiline-never-ends", hk.smtp_multiline_forever, ("smtp",),
             {"io-timeout", "protocol-error", "no-match"}, banner="220-still greeting"),
    Scenario("close-at-once", hk.close_at_once, ("smtp", "imap", "pop3", "nntp"), {"closed-early"}),
    Scenario("close-at-once-client-first", hk.close_at_once, ("ldap", "msrpc", "tsap", "http", "dns"),
             {"closed-early"}),
    # our SMTP probe needs a whole reply; the service database's softmatch still names the service
    # from the partial greeting, at a guess's confidence and with no product (scanner.breadth)
    Scenario("reset-mid-greeting", hk.reset_mid_reply, ("smtp",), {"closed-early"}, verdict="identified",
             banner="220-reset.example", check=_softmatch_only),
    Scenario("reset-mid-ehlo", hk.reset_after_ehlo, ("smtp",), {"closed-early"}, verdict="identified",
             check=_partial_smtp),
    Scenario("escapes-and-fake-line", hk.evil_text, ("smtp", "imap", "pop3", "nntp"), set(),
             banner="\x1b[2J", check=_kept_exact),
    Scenario("tls-hello-answered-with-garbage", hk.tls_garbage, ("smtp",), {"tls-error"},
             expect=("smtp", True)),
    Scenario("tls-then-silence", hk.silent, ("smtp",), {"io-timeout"}, tls_server=True,
             expect=("smtp", True), check=_tls_ok_then_silent),
    Scenario("ber-length-2-31", hk.ber_huge_length(), ("ldap",), {"no-match", "protocol-error"},
             banner="0\x84\x80\x00\x00\x00"),
    Scenario("dns-compression-loop", hk.dns_compression_loop, ("dns",), {"no-match", "protocol-error"}),
    Scenario("dcerpc-frag-length-too-long", hk.dcerpc_frag_lies, ("msrpc",), {"io-timeout", "protocol-error"}),
    Scenario("dcerpc-frag-length-too-short", hk.dcerpc_frag_short, ("msrpc",), {"no-match", "protocol-error"}),
    Scenario("tpkt-length-0", hk.tpkt_length(0), ("tsap",), {"no-match", "protocol-error"}),
    # a TPKT length is 16 bits: 70,000 cannot be encoded; 65,535 (the largest) and 70,000 mod 2^16
    Scenario("tpkt-length-65535", hk.tpkt_length(65535), ("tsap",), {"io-timeout", "protocol-error"}),
    Scenario("tpkt-length-70000-mod-65536", hk.tpkt_length(70000), ("tsap",),
             {"io-timeout", "protocol-error", "no-match"}),
]


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_hostile_scenario(sc: Scenario, serve: Callable[..., hk.FakeServer], tmp_path: Path) -> None:
    """The hostile port reports honestly, in time, in bounded memory; the neighbour is unaffected."""
    missing = [p for p in sc.probes if p not in LOADED]
    assert not missing, f"probe(s) {', '.join(missing)} not loaded"
    probes = tuple(p for p in sc.probes if p in LOADED)
    bad = serve(sc.handler, tmp_path if sc.tls_server else None)
    good = serve(hk.pop3_good)
    entries = (
        PortEntry(bad.port, "tcp", sc.expect[0] if sc.expect else None, sc.expect[1] if sc.expect else False),
        PortEntry(good.port, "tcp", "pop3", False, "pop3"),
    )
    profile = Profile("hostile", "hostile scenario", entries)
    opts = dict(OPTS, **sc.extra)
    if sc.memory:
        tracemalloc.start()
    t0 = time.monotonic()
    try:
        results = scan_sync(["127.0.0.1"], profile=profile, registry=REGISTRY,
                            probes=(*probes, "pop3"), **opts)
    finally:
        peak = tracemalloc.get_traced_memory()[1] if sc.memory else 0
        if sc.memory:
            tracemalloc.stop()
    elapsed = time.monotonic() - t0
    by_port = {r.port: r for r in results}
    hostile, neighbour = by_port[bad.port], by_port[good.port]

    assert elapsed < opts["port_timeout"] + SLACK, f"scan took {elapsed:.1f} s"
    assert hostile.elapsed <= opts["port_timeout"] + 0.5
    assert bad.connections >= 1, "the scan never connected to the hostile server"
    statuses = {a.status for a in hostile.attempts}
    assert "probe-bug" not in statuses, [(a.probe, a.error, a.traceback) for a in hostile.attempts]
    assert hostile.verdict != "error", hostile.reason
    if sc.statuses:
        assert statuses & sc.statuses, f"statuses {statuses}, wanted one of {sc.statuses}: {hostile.attempts}"
    if sc.verdict == "identified":
        assert hostile.service is not None and hostile.verdict in ("identified", "confirmed", "unexpected")
    else:
        assert hostile.verdict == sc.verdict, (hostile.verdict, hostile.service, hostile.attempts)
        assert hostile.service is None
    if sc.banner is not None:
        banner = hostile.details.get("banner", "")
        assert isinstance(banner, str) and banner.startswith(sc.banner), repr(banner[:60])
        assert len(banner) <= 4096
    if sc.check is not None:
        sc.check(hostile)
    if sc.memory:
        assert peak < MEM_CAP, f"traced memory peak {peak / 1e6:.1f} MB"

    assert neighbour.verdict == "confirmed", (neighbour.verdict, neighbour.reason, neighbour.attempts)
    assert neighbour.product == "Dovecot"


def test_many_hostile_ports_at_once(serve: Callable[..., hk.FakeServer]) -> None:
    """Every hostile server in one scan, beside the neighbour: per-port limits hold in parallel."""
    handlers = [hk.silent, hk.drip, hk.flood, hk.endless_line, hk.smtp_multiline_forever, hk.close_at_once,
                hk.reset_mid_reply, hk.evil_text, hk.smtp_flood]
    bad = [serve(h) for h in handlers]
    good = serve(hk.pop3_good)
    ports = ",".join(f"T:{s.port}" for s in [*bad, good])
    t0 = time.monotonic()
    results = scan_sync(["127.0.0.1"], ports=ports, registry=REGISTRY, probes=("smtp", "imap", "pop3", "nntp"),
                        **OPTS)
    elapsed = time.monotonic() - t0
    assert len(results) == len(handlers) + 1
    assert elapsed < OPTS["port_timeout"] + SLACK
    by_port = {r.port: r for r in results}
    assert by_port[good.port].service == "pop3" and by_port[good.port].product == "Dovecot"
    for s in bad:
        r = by_port[s.port]
        assert r.state == "open" and r.verdict in ("unidentified", "identified"), (r.port, r.verdict)
        assert all(a.status != "probe-bug" for a in r.attempts)


def test_probe_bug_becomes_result_not_crash(serve: Callable[..., hk.FakeServer]) -> None:
    """A probe that raises inside its dialogue becomes a probe-bug attempt with the traceback."""
    from scanner.api import Probe, ProbeContext, Recv
    from scanner.registry import ProbeInfo, Registry
    from scanner.textproto import frame_line

    class Broken(Probe):
        name = "broken"
        services = ("smtp",)
        ports = ()
        server_first = True
        rarity = 1

        def match(self, greeting: bytes) -> bool:
            return True

        def dialogue(self, ctx: ProbeContext):
            line = yield Recv(frame_line)
            return {"not": "a finding"}[line.decode()]  # KeyError on purpose

    reg = Registry(infos=[ProbeInfo(Broken(), "test", "", False, "test"),
                          *[i for i in REGISTRY.infos if i.probe.name == "pop3"]])
    bad, good = serve(hk.evil_smtp), serve(hk.pop3_good)
    results = scan_sync(["127.0.0.1"], ports=f"T:{bad.port},T:{good.port}", registry=reg, **OPTS)
    by_port = {r.port: r for r in results}
    bugs = [a for a in by_port[bad.port].attempts if a.status == "probe-bug"]
    assert bugs and bugs[0].probe == "broken" and bugs[0].traceback and "KeyError" in bugs[0].traceback
    assert by_port[good.port].service == "pop3"
