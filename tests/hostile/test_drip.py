"""Servers that drip their replies one byte per millisecond (needs the lab for the neighbour port).

Framing used to be quadratic: the engine re-framed the whole buffer on every read, so a reply
dripped one byte at a time cost 12 s of CPU for 14 KB of SMTP, 8 s for 10 KB of IMAP and 80 s for
24 KB of chunked HTTP, all on the one event loop that serves every other connection. With the
runner's resumable framers each byte is looked at a bounded number of times.

The scenario servers run in a child process (this file run as a script), so the CPU time measured
here, ``time.process_time()`` of the test process, is the scanner's alone: it must stay under 10%
of the scan's wall time, and a real lab port scanned in the same command (127.0.0.1:25, Postfix)
must finish in about the time it takes alone.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.lab

HERE = Path(__file__).resolve().parent
#: seconds between two dripped bytes
GAP = 0.001
#: size of each dripped reply (bytes): ~9 s of drip at one byte per millisecond
DRIP_SIZE = 8000
#: the lab neighbour scanned in the same command
LAB_PORT = 25


# ------------------------------------------------------------------------------ the servers


async def _drip(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Write ``data`` one byte per :data:`GAP` s, one TCP segment per byte (TCP_NODELAY)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(len(data)):
        writer.write(data[i : i + 1])
        await writer.drain()
        await asyncio.sleep(GAP)


def smtp_greeting() -> bytes:
    """A multi-line SMTP greeting of about :data:`DRIP_SIZE` bytes."""
    line = b"220-drip.example multi-line greeting, padded " + b"." * 16 + b"\r\n"
    return line * (DRIP_SIZE // len(line)) + b"220 drip.example ESMTP ready\r\n"


async def smtp_multiline_drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """SMTP: the greeting dripped, then every command answered at once."""
    await _drip(writer, smtp_greeting())
    for _ in range(20):
        line = await reader.readline()
        if not line:
            return
        if line.upper().startswith(b"QUIT"):
            writer.write(b"221 bye\r\n")
            await writer.drain()
            return
        writer.write(b"250 drip.example\r\n")
        await writer.drain()


def imap_literal_reply(tag: bytes) -> bytes:
    """An untagged FETCH with a :data:`DRIP_SIZE`-byte literal, then the tagged OK."""
    return (b"* CAPABILITY IMAP4rev1 ID\r\n* 1 FETCH (BODY[] {%d}\r\n" % DRIP_SIZE + b"x" * DRIP_SIZE
            + b")\r\n" + tag + b" OK CAPABILITY completed\r\n")


async def imap_literal_drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """IMAP: the greeting at once, the CAPABILITY reply (with a big literal) dripped."""
    writer.write(b"* OK drip.example IMAP4rev1 ready\r\n")
    await writer.drain()
    for _ in range(20):
        line = await reader.readline()
        if not line:
            return
        tag, _, command = line.strip().partition(b" ")
        if command.upper().startswith(b"CAPABILITY"):
            await _drip(writer, imap_literal_reply(tag))
        elif command.upper().startswith(b"LOGOUT"):
            writer.write(b"* BYE\r\n" + tag + b" OK LOGOUT completed\r\n")
            await writer.drain()
            return
        else:
            writer.write(tag + b" OK done\r\n")
            await writer.drain()


def http_chunked_reply() -> bytes:
    """A chunked HTTP response of about :data:`DRIP_SIZE` body bytes, in 100-byte chunks."""
    head = b"HTTP/1.1 200 OK\r\nServer: drip/1.0\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    chunk = b"64\r\n" + b"c" * 100 + b"\r\n"
    return head + chunk * (DRIP_SIZE // 100) + b"0\r\n\r\n"


async def http_chunked_drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """HTTP: a GET gets the chunked response dripped; anything else is hung up on."""
    first = await reader.read(4096)
    if not first.startswith(b"GET "):
        return
    await _drip(writer, http_chunked_reply())


def _ber(tag: int, value: bytes) -> bytes:
    n = len(value)
    length = bytes([n]) if n < 0x80 else bytes([0x82]) + n.to_bytes(2, "big")
    return bytes([tag]) + length + value


def ldap_root_dse(message_id: int) -> tuple[bytes, bytes]:
    """A rootDSE searchResEntry of about :data:`DRIP_SIZE` bytes and its searchResDone."""
    mid = _ber(0x02, bytes([message_id]))
    controls = b"".join(_ber(0x04, b"1.2.840.113556.1.4.%d" % (800 + i)) for i in range(DRIP_SIZE // 24))

    def attr(name: bytes, values: bytes) -> bytes:
        return _ber(0x30, _ber(0x04, name) + _ber(0x31, values))

    attrs = (attr(b"vendorName", _ber(0x04, b"Drip Directory")) + attr(b"supportedLDAPVersion", _ber(0x04, b"3"))
             + attr(b"supportedControl", controls))
    entry = _ber(0x30, mid + _ber(0x64, _ber(0x04, b"") + _ber(0x30, attrs)))
    done = _ber(0x30, mid + _ber(0x65, _ber(0x0A, b"\x00") + _ber(0x04, b"") + _ber(0x04, b"")))
    return entry, done


async def ldap_ber_drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """LDAP: a BER request gets a rootDSE dripped, then searchResDone at once; else hung up on."""
    first = await reader.read(4096)
    if first[:1] != b"\x30" or len(first) < 5:
        return
    # LDAPMessage: 30 len [02 len id]: the id is one byte for our requests
    at = 2 + (first[1] & 0x7F if first[1] & 0x80 else 0)
    entry, done = ldap_root_dse(first[at + 2] if first[at : at + 2] == b"\x02\x01" else 1)
    await _drip(writer, entry)
    writer.write(done)
    await writer.drain()
    await reader.read(4096)


SCENARIOS = {
    "smtp": smtp_multiline_drip,
    "imap": imap_literal_drip,
    "http": http_chunked_drip,
    "ldap": ldap_ber_drip,
}


def serve_forever() -> None:
    """Script mode: start every scenario, print ``{service: port}``, run until stdin closes."""
    sys.path.insert(0, str(HERE))
    import hostile_kit as hk

    servers = {name: hk.FakeServer(handler).start() for name, handler in SCENARIOS.items()}
    print(json.dumps({name: srv.port for name, srv in servers.items()}), flush=True)
    try:
        sys.stdin.read()  # the test closes our stdin when done (or dies: EOF as well)
    finally:
        for srv in servers.values():
            srv.stop()


# ------------------------------------------------------------------------------ the test


@pytest.fixture
def drip_servers() -> Iterator[dict[str, int]]:
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "serve"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ports: dict[str, int] = json.loads(proc.stdout.readline())
        yield ports
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


OPTS: dict[str, Any] = dict(read_timeout=30.0, greeting_wait=3.0, port_timeout=60.0, use_service_db=False,
                            probes=("smtp", "imap", "http", "ldap"))


def test_drip_costs_little_cpu_and_does_not_slow_the_neighbour(lab: Any, drip_servers: dict[str, int]) -> None:
    from probes.ldap import parse_ldap_message
    from scanner.engine import scan_sync

    # import-time and first-use costs are not the scan's: warm them up (pyasn1 and h11 load lazily)
    parse_ldap_message(ldap_root_dse(1)[1])
    alone = scan_sync([lab.ip1], f"T:{LAB_PORT}", **OPTS)
    (usual,) = alone
    assert usual.service == "smtp", (usual.verdict, usual.attempts)

    ports = ",".join(f"T:{p}" for p in [LAB_PORT, *drip_servers.values()])
    cpu0, wall0 = time.process_time(), time.monotonic()
    results = scan_sync([lab.ip1], ports, **OPTS)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    by_port = {r.port: r for r in results}
    print(f"drip scan: wall {wall:.2f} s, CPU {cpu:.2f} s ({100 * cpu / wall:.1f}%); "
          f"port {LAB_PORT}: {by_port[LAB_PORT].elapsed:.3f} s in the drip scan, {usual.elapsed:.3f} s alone")
    for service, port in drip_servers.items():
        r = by_port[port]
        assert r.service == service, (service, r.verdict, r.reason, r.attempts)
        assert all(a.status != "probe-bug" for a in r.attempts), r.attempts
    assert wall > DRIP_SIZE * GAP  # the drips really took their time
    assert cpu < 0.10 * wall, f"CPU {cpu:.2f} s over a wall time of {wall:.2f} s"
    neighbour = by_port[LAB_PORT]
    assert neighbour.service == "smtp" and neighbour.product == usual.product
    assert neighbour.elapsed <= max(2 * usual.elapsed, usual.elapsed + 1.0), (neighbour.elapsed, usual.elapsed)


if __name__ == "__main__" and sys.argv[1:] == ["serve"]:
    serve_forever()
