"""Hostile SMB servers against the smb probe, through the engine (``scan_sync``).

Each scenario is a small asyncio server on 127.0.0.1 (``hostile_kit.FakeServer``): a lying or
huge NetBIOS length, a truncated NEGOTIATE response, a garbage NTLM CHALLENGE after a real
NEGOTIATE (the lab Samba's, from ``tests/probes/data``), endless keepalives, a close after the
NEGOTIATE. The scan must finish within its limits with a clear status, no ``probe-bug``, and keep
what the bytes proved.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hostile_kit as hk
import pytest

from scanner.engine import scan_sync
from scanner.profile import PortEntry, Profile
from scanner.results import ScanResult

REGISTRY = hk.full_registry()
OPTS: dict[str, Any] = dict(connect_timeout=2.0, read_timeout=1.5, greeting_wait=1.0, port_timeout=10.0)
SLACK = 3.0
FIXTURE = Path(__file__).resolve().parents[1] / "probes" / "data" / "smb-samba-4.17-dc-445.bin"


def _lab_replies() -> tuple[bytes, bytes]:
    """The lab Samba's NEGOTIATE and SESSION_SETUP responses (NetBIOS frames)."""
    data = FIXTURE.read_bytes()
    n = 4 + int.from_bytes(data[1:4], "big")
    return data[:n], data[n:]


def _frame(payload: bytes) -> bytes:
    return b"\x00" + len(payload).to_bytes(3, "big") + payload


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, replies: list[bytes]) -> None:
    """Answer each request with the next reply, then read until the client leaves."""
    for reply in replies:
        if not await reader.read(65536):
            return
        writer.write(reply)
        await writer.drain()
    await hk.silent(reader, writer)


def _replies(*replies: bytes) -> hk.Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _answer(reader, writer, list(replies))

    return handler


def _garbage_challenge() -> bytes:
    _neg, setup = _lab_replies()
    payload = bytearray(setup[4:])
    at = payload.find(b"NTLMSSP\x00\x02")
    payload[at + 12 : at + 20] = struct.pack("<HHI", 0xFFFF, 0xFFFF, 0x7FFFFFFF)  # TargetName past the end
    return _frame(bytes(payload))


def _truncated_negotiate() -> bytes:
    neg, _setup = _lab_replies()
    return _frame(neg[4 : 4 + 64 + 30])  # a whole frame whose NEGOTIATE body stops mid-field


async def _keepalives(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(65536)
    for _ in range(200):
        writer.write(b"\x85\x00\x00\x00")
        await writer.drain()
        await asyncio.sleep(0.01)


async def _close_after_negotiate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(65536)
    writer.write(_lab_replies()[0])
    await writer.drain()
    await reader.read(65536)
    writer.close()


@dataclass
class Case:
    name: str
    handler: hk.Handler
    statuses: set[str]
    check: Callable[[ScanResult], None] | None = None


def _unidentified(r: ScanResult) -> None:
    assert r.service is None and r.verdict == "unidentified", (r.service, r.verdict)


def _samba_kept(error_part: str) -> Callable[[ScanResult], None]:
    def check(r: ScanResult) -> None:
        assert r.service == "smb" and r.product == "Samba smbd", (r.service, r.product)
        assert r.details["dialect"] == "3.1.1"
        assert error_part in r.details["ntlm_error"], r.details.get("ntlm_error")
        assert "ntlm" not in r.details

    return check


CASES = [
    Case("netbios-length-huge", _replies(b"\x00\xff\xff\xf0" + b"\xfeSMB" + b"\x00" * 200),
         {"no-match", "protocol-error"}, _unidentified),
    Case("netbios-length-lies", _replies(b"\x00\x00\xf0\x00" + b"\xfeSMB" + b"\x00" * 100),
         {"io-timeout"}, _unidentified),
    Case("truncated-negotiate", _replies(_truncated_negotiate()), {"no-match", "protocol-error"}, _unidentified),
    Case("garbage-challenge", _replies(_lab_replies()[0], _garbage_challenge()), {"success"},
         _samba_kept("run past")),
    Case("close-after-negotiate", _close_after_negotiate, {"success"}, _samba_kept("RecvClosed")),
    Case("endless-keepalives", _keepalives, {"no-match", "protocol-error"}, _unidentified),
    Case("close-at-once", hk.close_at_once, {"closed-early"}, _unidentified),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_smb(case: Case, serve: Callable[..., hk.FakeServer]) -> None:
    assert "smb" in {p.name for p in REGISTRY.probes}, "the smb probe is not installed"
    bad = serve(case.handler)
    profile = Profile("hostile-smb", "hostile SMB", (PortEntry(bad.port, "tcp", "smb", False, "smb"),))
    t0 = time.monotonic()
    (r,) = scan_sync(["127.0.0.1"], profile=profile, registry=REGISTRY, probes=("smb",), **OPTS)
    elapsed = time.monotonic() - t0
    assert elapsed < OPTS["port_timeout"] + SLACK, f"scan took {elapsed:.1f} s"
    statuses = {a.status for a in r.attempts}
    assert "probe-bug" not in statuses, [(a.probe, a.error, a.traceback) for a in r.attempts]
    assert statuses & case.statuses, (statuses, [(a.status, a.error) for a in r.attempts])
    assert r.verdict != "error", r.reason
    if case.check is not None:
        case.check(r)
