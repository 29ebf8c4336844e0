"""Small hostile TCP servers on 127.0.0.1 for the reliability suite.

Each server runs its own asyncio loop in a daemon thread and listens on an ephemeral port of
127.0.0.1 only. A scenario is a coroutine ``handler(reader, writer)``; every loop in a handler is
bounded in count and time (``MAX_SECONDS``) so a server never outlives its test by much, and
``stop()`` cancels the handlers that are still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from scanner.registry import Registry

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

#: no handler runs longer than this (hard bound on every loop below)
MAX_SECONDS = 30.0
LOOPBACK = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]


class FakeServer:
    """One asyncio TCP server on 127.0.0.1:<ephemeral> running ``handler`` per connection."""

    def __init__(self, handler: Handler, ssl_ctx: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_ctx = ssl_ctx
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.connections = 0
        self._ready = threading.Event()
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, LOOPBACK, 0, ssl=self.ssl_ctx,
                                                  ssl_handshake_timeout=5.0 if self.ssl_ctx else None)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            async with asyncio.timeout(MAX_SECONDS):
                await self.handler(reader, writer)
        except (TimeoutError, OSError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # cancelled by stop(), or the scanner hung up: both are normal here
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    def start(self) -> FakeServer:
        """Start the thread; return once the port is bound."""
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake server did not start")
        return self

    def stop(self) -> None:
        """Close the listener and cancel running handlers; join the thread."""

        async def _shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.sleep(0)

        if self.loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(_shutdown(), self.loop)
            with contextlib.suppress(Exception):
                fut.result(5)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


# ---------------------------------------------------------------------------------- scenarios
async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept and never speak (but keep reading so the client's writes do not block)."""
    deadline = time.monotonic() + MAX_SECONDS
    while time.monotonic() < deadline:
        data = await reader.read(65536)
        if not data:
            return


async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Speak one byte a second, forever (bounded by MAX_SECONDS): an SMTP-looking greeting."""
    text = b"220 drip.example ESMTP slowly " + b"x" * 200
    for i in range(int(MAX_SECONDS)):
        writer.write(text[i % len(text) : i % len(text) + 1])
        await writer.drain()
        await asyncio.sleep(1.0)


async def endless_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Greet like SMTP, then send one line that never ends (up to 64 MB, 64 KB chunks)."""
    writer.write(b"220 ")
    chunk = b"A" * 65536
    for _ in range(1024):
        writer.write(chunk)
        await writer.drain()


async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send 10 MB of newline-rich garbage as fast as the client reads."""
    chunk = (b"\x00\xff garbage \x1b[2J line\n" * 2800)[:65536]
    for _ in range(160):  # 160 x 64 KiB = 10 MiB
        writer.write(chunk)
        await writer.drain()


async def smtp_flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A valid SMTP greeting, then 10 MB of continuation lines of an EHLO reply."""
    writer.write(b"220 flood.example ESMTP ready\r\n")
    await reader.readline()
    line = b"250-" + b"F" * 60 + b"\r\n"
    chunk = line * (65536 // len(line))
    for _ in range(160):
        writer.write(chunk)
        await writer.drain()


async def smtp_multiline_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A multi-line SMTP greeting that never ends: one ``220-`` line every 10 ms."""
    for i in range(int(MAX_SECONDS * 100)):
        writer.write(b"220-still greeting, line %d\r\n" % i)
        await writer.drain()
        await asyncio.sleep(0.01)


async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Close right after accept."""
    writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def reset_mid_reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Start a multi-line SMTP greeting, then send a TCP RST in the middle of it."""
    writer.write(b"220-reset.example ESMTP\r\n220-half a rep")
    await writer.drain()
    await asyncio.sleep(0.2)
    _reset(writer)


async def reset_after_ehlo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Greet properly, then RST halfway through the EHLO reply (a partial result must be kept)."""
    writer.write(b"220 half.example ESMTP Postfix (Debian/GNU)\r\n")
    await reader.readline()
    writer.write(b"250-half.example\r\n250-PIPELI")
    await writer.drain()
    await asyncio.sleep(0.2)
    _reset(writer)


#: a greeting built to attack a terminal: colours, cursor moves, a clear screen, an OSC title,
#: NUL, invalid UTF-8, a bidi override and a fake second result row
EVIL_GREETING = (
    b"220 evil\x1b[31mRED\x1b[0m \x1b[2J\x1b[H\x1b]0;owned\x07 nul\x00 bad\xff\xfe utf8 "
    b"\xe2\x80\xae rtl \r\n"
)
EVIL_FAKE_ROW = b"\r25/tcp  open  smtp  FAKE confirmed\x1b[K\n"


async def evil_text(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A greeting full of escapes, then a fake result line; no protocol follows."""
    writer.write(b"\x1b[2J\x1b[1;1H\x00\xff\xfe" + b"\x1b]0;pwned\x07" + EVIL_FAKE_ROW + b"\x9b31m\x07 tail")
    await writer.drain()
    await silent(reader, writer)


async def evil_smtp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A real-looking SMTP server whose every text carries terminal escapes (it *is* identified)."""
    writer.write(EVIL_GREETING)
    await reader.readline()
    writer.write(b"250-evil\x1b[5m.example \xe2\x80\xae\xe2\x80\xa8\xe2\x81\xa6 rtl\r\n"
                 b"250-X-\x1b]8;;http://x\x07LINK\x00\r\n250 SIZE 1\r\n")
    await writer.drain()
    await reader.readline()
    writer.write(b"221 bye\x1b[?25l\r\n")
    await writer.drain()


async def tls_garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Say nothing until the client speaks (a ClientHello), then answer with garbage and close."""
    data = await reader.read(65536)
    if data:
        writer.write(b"\x15\x03\x01\x40\x00" + os.urandom(600) + b"HTTP/1.0 400 nonsense\r\n\r\n")
        await writer.drain()
    await asyncio.sleep(0.2)


def tls_hello_hang(hello_seen: threading.Event) -> Handler:
    """Accept, read the client's first bytes, set ``hello_seen`` when they are a TLS handshake
    record (a ClientHello: ``16 03 0x``), and never answer: the client hangs in its handshake."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(65536)
        if data[:1] == b"\x16" and data[1:2] == b"\x03":
            hello_seen.set()
        await silent(reader, writer)

    return handler


def tls_context_for(cert: Path, key: Path) -> ssl.SSLContext:
    """A server TLS context with the given PEM files."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def make_self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate (cryptography) for the TLS scenarios."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hostile\x1b[31m.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def pop3_good(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A well-behaved little POP3 server: the neighbour port that must stay unaffected."""
    writer.write(b"+OK Dovecot (Debian) ready.\r\n")
    await writer.drain()
    for _ in range(10):
        line = await reader.readline()
        if not line:
            return
        cmd = line.strip().upper()
        if cmd == b"CAPA":
            writer.write(b"+OK\r\nTOP\r\nUIDL\r\nUSER\r\nIMPLEMENTATION Dovecot\r\n.\r\n")
        elif cmd == b"QUIT":
            writer.write(b"+OK Logging out.\r\n")
            await writer.drain()
            return
        else:
            writer.write(b"-ERR unknown\r\n")
        await writer.drain()


def ber_huge_length(reader_writer_first: bytes = b"") -> Handler:
    """An LDAP-ish reply: SEQUENCE with a 4-byte BER length of 2^31, then some content."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"\x30\x84\x80\x00\x00\x00\x02\x01\x01\x61" + b"\x00" * 2000)
        await writer.drain()
        await silent(reader, writer)

    return handler


async def dns_compression_loop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """DNS over TCP: every query answered with a reply whose answer name points to itself."""
    for _ in range(20):
        try:
            head = await reader.readexactly(2)
            query = await reader.readexactly(struct.unpack("!H", head)[0])
        except asyncio.IncompleteReadError:
            return
        qid = query[:2]
        # header: id, flags QR|AA, 1 question, 1 answer; question copied; answer name = ptr to itself
        qend = 12
        while qend < len(query) and query[qend] != 0:
            qend += query[qend] + 1
        question = query[12 : qend + 5]
        ans_off = 12 + len(question)
        answer = struct.pack("!H", 0xC000 | ans_off) + struct.pack("!HHIH", 1, 1, 60, 4) + b"\x7f\x00\x00\x01"
        msg = qid + b"\x84\x00\x00\x01\x00\x01\x00\x00\x00\x00" + question + answer
        writer.write(struct.pack("!H", len(msg)) + msg)
        await writer.drain()


async def dcerpc_frag_lies(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer an RPC bind with a bind_ack header whose frag_length says 65535, then stall."""
    await reader.read(65536)
    hdr = struct.pack("<BBBB4sHHI", 5, 0, 12, 3, b"\x10\x00\x00\x00", 65535, 0, 1)
    writer.write(hdr + b"\xb8\x10\xb8\x10" + b"\x00" * 100)
    await writer.drain()
    await silent(reader, writer)


async def dcerpc_frag_short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A bind_ack whose frag_length (8) is shorter than the 16-byte PDU header."""
    await reader.read(65536)
    hdr = struct.pack("<BBBB4sHHI", 5, 0, 12, 3, b"\x10\x00\x00\x00", 8, 0, 1)
    writer.write(hdr + b"\x00" * 64)
    await writer.drain()
    await silent(reader, writer)


def tpkt_length(length: int) -> Handler:
    """Answer anything with a TPKT header claiming ``length`` bytes (0 or 70,000)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"\x03\x00" + struct.pack("!H", length & 0xFFFF) + b"\x02\xf0\x80" + b"\x00" * 64)
        await writer.drain()
        await silent(reader, writer)

    return handler


# ---------------------------------------------------------------------------------- UDP
#: datagrams a UDP server answers in all (later ones are read and dropped): bounds every flood
MAX_UDP_QUERIES = 100
#: replies sent for one query by the flooding scenarios
FLOOD_REPLIES = 500
#: the largest UDP payload over IPv4 (65535 - 20 - 8)
UDP_MAX_PAYLOAD = 65507
#: the replies one query gets: ``(server, query) -> [(datagram, from_socket or None)]``
UDPHandler = Callable[["FakeUDPServer", bytes], list[tuple[bytes, "socket.socket | None"]]]


class FakeUDPServer:
    """A UDP server on 127.0.0.1:<ephemeral>; ``handler`` turns each query into reply datagrams.

    A reply tagged with a socket is sent from that socket instead (another port, or 127.0.0.2):
    the "reply from somewhere else" scenario. Runs in a daemon thread like :class:`FakeServer`.
    """

    def __init__(self, handler: UDPHandler) -> None:
        self.handler = handler
        self.port = 0
        self.queries = 0
        self.sent = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        #: other sources on loopback only: another port of 127.0.0.1, and 127.0.0.2
        self.elsewhere: list[socket.socket] = []
        for addr in (LOOPBACK, "127.0.0.2"):
            alt = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            alt.bind((addr, 0))
            self.elsewhere.append(alt)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        deadline = time.monotonic() + MAX_SECONDS * 4
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                data, peer = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.queries += 1
            if self.queries > MAX_UDP_QUERIES:
                continue
            for reply, via in self.handler(self, data)[:FLOOD_REPLIES]:
                with contextlib.suppress(OSError):  # a full socket buffer drops the rest, as on a wire
                    (via or self.sock).sendto(reply, peer)
                    self.sent += 1

    def start(self) -> FakeUDPServer:
        """Start serving; the port is bound already."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and close every socket."""
        self._stop.set()
        self._thread.join(5)
        for s in (self.sock, *self.elsewhere):
            s.close()


def _question_end(query: bytes) -> int:
    """Offset just past the question of a DNS query (name labels, type, class); bounded."""
    pos = 12
    for _ in range(128):
        if pos >= len(query) or query[pos] == 0:
            break
        pos += query[pos] + 1
    return min(pos + 5, len(query))


def dns_reply_to(query: bytes, qid: int | None = None, answer: bytes = b"") -> bytes:
    """A well-formed DNS response to ``query`` (question copied, QR|AA, NOERROR), with ``qid``
    instead of the query's id when given, and ``answer`` appended as the answer section."""
    if len(query) < 12:
        return b""
    ident = query[:2] if qid is None else struct.pack("!H", qid & 0xFFFF)
    ancount = 1 if answer else 0
    return ident + struct.pack("!HHHHH", 0x8400, 1, ancount, 0, 0) + query[12:_question_end(query)] + answer


#: an LDAP searchResDone (success) with message id 7: the answer to somebody else's CLDAP request
CLDAP_OTHER_ID = bytes.fromhex("300c02010765070a010004000400")


def is_ldap(query: bytes) -> bool:
    """A CLDAP request starts with a BER SEQUENCE; a DNS query's first byte is an id byte."""
    return query[:1] == b"\x30"


def udp_silent(srv: FakeUDPServer, query: bytes) -> list[tuple[bytes, socket.socket | None]]:
    """Read every datagram, answer none."""
    return []


def udp_garbage(srv: FakeUDPServer, query: bytes) -> list[tuple[bytes, socket.socket | None]]:
    """Three datagrams of random bytes per query (one 1 byte long, one 11: shorter than a DNS header)."""
    return [(os.urandom(n), None) for n in (1, 11, 300)]


def udp_wrong_id_flood(srv: FakeUDPServer, query: bytes) -> list[tuple[bytes, socket.socket | None]]:
    """:data:`FLOOD_REPLIES` well-formed replies per query, none with the query's id."""
    if is_ldap(query):
        return [(CLDAP_OTHER_ID, None)] * FLOOD_REPLIES
    qid = struct.unpack("!H", query[:2])[0] if len(query) >= 2 else 0
    return [(dns_reply_to(query, (qid + 1 + i) % 0x10000 or 1), None) for i in range(FLOOD_REPLIES)]


def udp_oversize(srv: FakeUDPServer, query: bytes) -> list[tuple[bytes, socket.socket | None]]:
    """One datagram of the largest UDP size: a reply header with the right id (DNS) or an LDAP
    SEQUENCE (CLDAP), then junk to 65,507 bytes."""
    if is_ldap(query):
        body = b"\x02\x01\x01\x65\x84" + struct.pack("!I", UDP_MAX_PAYLOAD - 16)
        head = b"\x30\x84" + struct.pack("!I", UDP_MAX_PAYLOAD - 6) + body
    else:
        head = dns_reply_to(query)
    return [(head + b"\xee" * (UDP_MAX_PAYLOAD - len(head)), None)]


def udp_reply_from_elsewhere(srv: FakeUDPServer, query: bytes) -> list[tuple[bytes, socket.socket | None]]:
    """Correct answers (right id, right question), sent from another port of 127.0.0.1 and from
    127.0.0.2: the scanner's connected socket must not take them."""
    if is_ldap(query):
        reply = bytes.fromhex("300c02010165070a010004000400")  # searchResDone, message id 1
    else:
        reply = dns_reply_to(query)
    return [(reply, alt) for alt in srv.elsewhere]


# ---------------------------------------------------------------------------------- helpers
def run_cli(args: list[str], timeout: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m scanner.cli ARGS`` from the repo root; return the completed process."""
    full_env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="", COLUMNS="200", **(env or {}))
    full_env.pop("NO_COLOR")
    return subprocess.run([sys.executable, "-m", "scanner.cli", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout, errors="surrogateescape")


def raw_control_bytes(text: str) -> list[str]:
    """Control characters a terminal would act on (ESC, C0 except \\n, DEL, C1, bidi overrides)."""
    bad = []
    for ch in text:
        cp = ord(ch)
        if ch == "\n":
            continue
        if cp < 0x20 or cp == 0x7F or 0x80 <= cp < 0xA0 or cp in (0x202E, 0x202D, 0x2066, 0x2067, 0x2068):
            bad.append(repr(ch))
        if 0xDC80 <= cp <= 0xDCFF:  # a raw undecodable byte surfaced through surrogateescape
            bad.append(repr(ch))
    return bad


def full_registry() -> Registry:
    """The installed probes, loaded strictly: a probe that fails to import or validate raises
    (the hostile suites fail; they never run quietly with fewer probes)."""
    from scanner.registry import load_registry

    return load_registry(strict=True)
