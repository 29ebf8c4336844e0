"""Hostile servers against the kerberos and kpasswd probes (TCP and UDP, 127.0.0.1 only).

Each scenario is a small server that answers the probe's request badly: a length prefix cut
short, one announcing 2 GiB or with the reserved top bit (RFC 4120 7.2.2), a valid prefix around
garbage ASN.1, a real KRB-ERROR dripped one byte a second, a datagram of junk or of 60 KiB. For
every one the port ends with a clear status (``io-timeout``, ``no-match``, ``protocol-error``)
within the port's time limit, no ``probe-bug``, and no service claimed from bytes that are not
Kerberos.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import hostile_kit as hk
import pytest

from scanner.engine import scan_sync

REGISTRY = hk.full_registry()
LOADED = {p.name for p in REGISTRY.probes}
OPTS: dict[str, Any] = dict(connect_timeout=2.0, read_timeout=1.5, greeting_wait=1.0, port_timeout=8.0,
                            udp_timeout=0.5)
SLACK = 3.0

#: the lab Samba KDC's KRB-ERROR for an unknown principal (tests/probes/test_kerberos.py)
KRB_ERROR = bytes.fromhex(
    "7e819e30819ba003020105a10302011ea411180f32303236313230383033333631325aa505020302a6d6a603020106a712"
    "1b104c41422e4558414d504c452e54455354a821301fa003020101a11830161b14706f727470726f6f662d3632643832633037"
    "6364a9121b104c41422e4558414d504c452e54455354aa253023a003020102a11c301a1b066b72627467741b104c41422e45"
    "58414d504c452e54455354"
)


def _answer(reply: bytes, then_silent: bool = True) -> hk.Handler:
    """Read the request, write ``reply``, then stay silent (bounded) or close."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(reply)
        await writer.drain()
        if then_silent:
            await hk.silent(reader, writer)

    return handler


async def _drip_krb_error(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A real KRB-ERROR with its TCP prefix, one byte a second (bounded by MAX_SECONDS)."""
    await reader.read(65536)
    msg = struct.pack(">I", len(KRB_ERROR)) + KRB_ERROR
    for i in range(min(len(msg), int(hk.MAX_SECONDS))):
        writer.write(msg[i : i + 1])
        await writer.drain()
        await asyncio.sleep(1.0)


@dataclass(frozen=True)
class Case:
    """One hostile TCP behaviour, the probe meeting it, the statuses that tell it honestly."""

    name: str
    handler: hk.Handler
    probe: str
    statuses: frozenset[str]


def _cases() -> list[Case]:
    out = []
    for probe in ("kerberos", "kpasswd"):
        out += [
            Case("truncated-prefix", _answer(b"\x00\x00"), probe, frozenset({"io-timeout"})),
            Case("truncated-prefix-close", _answer(b"\x00\x00\x00", then_silent=False), probe,
                 frozenset({"closed-early"})),
            Case("oversized-prefix", _answer(b"\x7f\xff\xff\xff\x7e\x82" + b"\x00" * 2000), probe,
                 frozenset({"no-match", "protocol-error"})),
            Case("reserved-bit-prefix", _answer(b"\x80\x00\x00\x20" + b"\x7e" * 32), probe,
                 frozenset({"no-match", "protocol-error"})),
            Case("garbage-asn1", _answer(struct.pack(">I", 40) + b"\x7e\x26" + bytes(range(38))), probe,
                 frozenset({"no-match", "protocol-error"})),
            Case("prefix-longer-than-sent", _answer(struct.pack(">I", 60000) + b"\x7e\x82\xea\x5c" + b"\x00" * 100),
                 probe, frozenset({"io-timeout", "no-match", "protocol-error"})),
        ]
    out.append(Case("drip-one-byte-a-second", _drip_krb_error, "kerberos", frozenset({"io-timeout"})))
    return out


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[f"{c.probe}-{c.name}" for c in CASES])
def test_hostile_kerberos_tcp(case: Case, serve: Callable[..., hk.FakeServer]) -> None:
    """Clear status, in time, no probe-bug, no service claimed from non-Kerberos bytes."""
    assert case.probe in LOADED, f"probe {case.probe} not loaded"
    srv = serve(case.handler)
    t0 = time.monotonic()
    (res,) = scan_sync(["127.0.0.1"], ports=f"T:{srv.port}", registry=REGISTRY, probes=(case.probe,), **OPTS)
    elapsed = time.monotonic() - t0
    assert srv.connections >= 1
    assert elapsed < OPTS["port_timeout"] + SLACK, f"took {elapsed:.1f} s"
    statuses = {a.status for a in res.attempts}
    assert "probe-bug" not in statuses, [(a.probe, a.error, a.traceback) for a in res.attempts]
    assert statuses & case.statuses, (statuses, res.attempts)
    assert res.state == "open" and res.service is None and res.verdict == "unidentified", (
        res.state, res.service, res.verdict, res.attempts)


def _udp_junk(srv: hk.FakeUDPServer, query: bytes) -> list[tuple[bytes, socket.socket | None]]:
    # starts like a KRB-ERROR, then garbage
    return [(b"\x7e\x10" + bytes(range(16)), None)]


def _udp_oversize(srv: hk.FakeUDPServer, query: bytes) -> list[tuple[bytes, socket.socket | None]]:
    return [(b"\x7e\x83\x00\xff\xf0" + b"\x30" * 60000, None)]


def _udp_kpasswd_wrong_length(srv: hk.FakeUDPServer, query: bytes) -> list[tuple[bytes, socket.socket | None]]:
    # a kpasswd header whose length lies, around a real KRB-ERROR
    return [(struct.pack(">HHH", 9999, 1, 0) + KRB_ERROR, None)]


UDP_CASES = [
    (_udp_junk, "kerberos"),
    (_udp_oversize, "kerberos"),
    (_udp_junk, "kpasswd"),
    (_udp_kpasswd_wrong_length, "kpasswd"),
    (hk.udp_silent, "kerberos"),
    (hk.udp_silent, "kpasswd"),
]


@pytest.mark.parametrize("handler,probe", UDP_CASES, ids=[f"{p}-{h.__name__}" for h, p in UDP_CASES])
def test_hostile_kerberos_udp(handler: hk.UDPHandler, probe: str, serve_udp: Callable[..., hk.FakeUDPServer]) -> None:
    """Junk, oversized and lying datagrams: unidentified with a clear status; silence: open|filtered."""
    srv = serve_udp(handler)
    t0 = time.monotonic()
    (res,) = scan_sync(["127.0.0.1"], ports=f"U:{srv.port}", registry=REGISTRY, probes=(probe,), **OPTS)
    elapsed = time.monotonic() - t0
    assert srv.queries >= 1
    assert elapsed < 5.0, f"UDP port took {elapsed:.1f} s"
    statuses = {a.status for a in res.attempts}
    assert "probe-bug" not in statuses, [(a.probe, a.error, a.traceback) for a in res.attempts]
    assert res.service is None
    if handler is hk.udp_silent:
        assert res.state == "open|filtered" and statuses == {"io-timeout"}, (res.state, statuses)
    else:
        assert res.state == "open" and statuses & {"no-match", "protocol-error"}, (res.state, statuses)
