"""The scan engine: connections, timeouts, TLS, scheduling; probes only speak through dialogues.

Per TCP port the engine:

1. connects (implicit TLS first on ports the profile or a hinted probe marks as TLS);
2. reads the greeting once and offers it to every server-speaks-first probe's ``match`` (no new
   connection per banner probe), hinted probes first; each matched probe runs its dialogue;
3. then runs the client-speaks-first probes hinted for the port (the first on the same,
   still-clean connection);
4. then, unless ``fast``, the other client-first probes whose rarity is within ``intensity``
   (only when the server said nothing: a greeting that no probe knows is kept as the banner);
5. then, once the port has shown it speaks (a greeting, bytes or a close in reply to a request),
   the installed service database's own probes (nmap's, see ``scanner.dbprobes``): those its file
   hints for the port right before our unhinted ones, the others after them;
6. and, if nothing matched on a plain connection, tries a TLS handshake and repeats 2-5 inside.

UDP ports run the UDP probes hinted for the port (all UDP probes unless ``fast``) on a connected
socket, so an ICMP port-unreachable reports ``closed`` at once instead of a timeout; nmap's UDP
probes hinted for a port none of ours is hinted for go out beside ours, the rest only once the port
answered and nothing named it.

Every read is framed by the probe's framer and bounded (size and time); every port has a total
time limit; a probe that raises an unexpected exception becomes a ``probe-bug`` attempt with its
traceback, never a crashed scan.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import os
import random
import resource
import socket
import ssl
import struct
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from scanner.api import (
    Finding,
    Probe,
    ProbeContext,
    RecvClosed,
    TLSFacts,
    TLSFailed,
)
from scanner.breadth import DatabaseHandle
from scanner.dbprobes import NmapLane, nmap_probe
from scanner.profile import PortEntry, Profile, load_profile, parse_ports
from scanner.registry import Registry, load_registry
from scanner.results import Attempt, EvidenceItem, ScanResult, Status, TLSInfo
from scanner.runner import Done, DoReconnect, DoStartTLS, NeedData, Runner, SendBytes, try_match
from scanner.targets import Target, expand_targets
from scanner.textproto import decode_text

__all__ = ["ScanOptions", "Scanner", "scan", "scan_sync"]

#: bytes of the greeting offered to matchers and kept as the banner
GREETING_CAP = 4096
BANNER_KEEP = 512
#: datagrams buffered per UDP socket
UDP_QUEUE = 64
#: nmap's UDP probes sent at once on one UDP port (each on its own socket), and most such windows
UDP_WINDOW = 4
UDP_WINDOWS = 5


@dataclass
class ScanOptions:
    """Knobs of a scan (the CLI maps its flags onto these)."""

    connect_timeout: float = 3.0
    read_timeout: float = 5.0
    #: how long to wait for a greeting when the port's hinted probe is server-first (or unknown)
    greeting_wait: float = 3.0
    #: how long to wait for a greeting when the port's hinted probes are client-first
    short_wait: float = 0.25
    #: total time for one port, all attempts included
    port_timeout: float = 60.0
    #: read timeout for the slow lane (probes not hinted for the port): a port that is silent to
    #: its own protocol's probe should not cost every other probe the full read timeout
    slow_read_timeout: float = 2.0
    tls_timeout: float = 5.0
    udp_timeout: float = 1.0
    #: connections in flight at once (all hosts)
    concurrency: int = 256
    #: ports of one host scanned at once
    per_host: int = 16
    #: new connections per second (0 = no limit)
    rate: float = 0.0
    fast: bool = False
    intensity: int = 7
    #: only these probes (``--probe``); empty = all
    probes: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    seed: int = 0
    client_name: str = "portproof.invalid"
    resolve: bool = True
    #: write conversations for ``--record`` (set by the CLI)
    recorder: Any = None
    #: keep every result in memory for ``run``'s return value; False when results are streamed
    #: (``-o jsonl``) so memory stays flat over millions of ports
    keep_results: bool = True
    #: the service database file (nmap-service-probes) read at run time; None: the default
    #: (``PORTPROOF_SERVICE_DB``, then Debian's ``/usr/share/nmap/nmap-service-probes``)
    service_db: str | None = None
    #: False: only portproof's own rules name products (``--no-service-db``)
    use_service_db: bool = True
    #: send the service database's own probes once ours failed on a port that speaks
    #: (``--no-nmap-probes`` turns it off; so does ``--no-service-db``; see scanner.dbprobes)
    nmap_probes: bool = True
    #: seconds the database's probes may spend on one port, all layers together
    nmap_budget: float = 10.0


@dataclass
class _Outcome:
    """The state of one port while it is being scanned (so a total timeout keeps what is known)."""

    state: str = "unknown"
    finding: Finding | None = None
    probe: str | None = None
    tls: TLSInfo | None = None
    banner: bytes = b""
    attempts: list[Attempt] = field(default_factory=list)
    error: str | None = None
    #: what the server sent on connect before any request (the service database's NULL probe)
    greeting: bytes = b""
    #: tagged replies of every dialogue on the port (``Recv(tag=...)``), first per tag
    responses: dict[str, bytes] = field(default_factory=dict)
    #: seconds spent on the service database's probes (``ScanOptions.nmap_budget``)
    nmap_spent: float = 0.0


class _ConnectFailed(Exception):
    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status


def _tls_context(keylog_filename: str | None = None) -> ssl.SSLContext:
    """A client context that talks to anything (we report certificates, we do not trust them).

    ``keylog_filename``: where OpenSSL logs each session's secrets (``--record`` only: the
    recorder's in-memory key log, see :mod:`scanner.replay.keylog`)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with contextlib.suppress(ValueError, ssl.SSLError):
        ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    with contextlib.suppress(ssl.SSLError):
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    if keylog_filename is not None:
        ctx.keylog_filename = keylog_filename
    return ctx


def tls_info_from(obj: ssl.SSLObject | ssl.SSLSocket | None, mode: str) -> tuple[TLSInfo, TLSFacts]:
    """TLS facts of an established connection, for the result and for the dialogue."""
    from scanner.certs import cert_facts

    if obj is None:
        info = TLSInfo(mode=mode, error="no TLS object")  # type: ignore[arg-type]
        return info, TLSFacts(version="?", cipher="?")
    der = obj.getpeercert(binary_form=True)
    cipher = obj.cipher()
    version = obj.version() or "?"
    alpn = obj.selected_alpn_protocol()
    cert = None
    err = None
    if der:
        try:
            cert = cert_facts(der)
        except Exception as exc:
            err = f"certificate not parsed: {exc}"
    info = TLSInfo(
        mode=mode,  # type: ignore[arg-type]
        version=version,
        cipher=cipher[0] if cipher else None,
        alpn=alpn,
        certificate=cert,
        error=err,
    )
    return info, TLSFacts(version=version, cipher=cipher[0] if cipher else "?", certificate_der=der, alpn=alpn)


#: a reply arriving in reads smaller than this (twice in a row, the message still incomplete) is
#: read at most every DRIP_PAUSE s: a peer dripping one byte per millisecond then costs one wake-up
#: per ten bytes, not one per byte (at most DRIP_PAUSE s later than it could have been framed)
DRIP_PIECE = 256
DRIP_PAUSE = 0.01
#: bytes a connection buffers ahead of the dialogue before it stops reading from the socket
#: (what ``asyncio.open_connection(limit=1 << 20)`` allowed: twice the limit)
READ_AHEAD = 2 << 20


async def _feed(runner: Runner, waiting: object, data: bytes) -> None:
    """Report received bytes to the runner; for a ``Recv(offload=True)`` step from a worker thread,
    so a heavy decode (the dialogue runs inside ``receive_data``) does not stall the event loop.
    The runner is only ever touched by this one connection's task, one call at a time."""
    if isinstance(waiting, NeedData) and waiting.offload:
        await asyncio.to_thread(runner.receive_data, data)
    else:
        runner.receive_data(data)


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Wakeable:
    """One reader waiting for a protocol callback, with one future and one timer per wait (not a
    task per wait as ``asyncio.wait_for`` makes)."""

    _waiter: asyncio.Future[None] | None = None

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _sleep(self, timeout: float) -> None:
        """Return when :meth:`_wake` is called or after ``timeout`` s, whichever comes first."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._waiter = fut
        handle = loop.call_later(timeout, _expire, fut)
        try:
            await fut
        finally:
            handle.cancel()
            self._waiter = None


class _TCPConn(_Wakeable, asyncio.Protocol):
    """One TCP connection with a receive buffer shared by successive framed reads.

    A bare :class:`asyncio.Protocol` rather than asyncio streams: a read that must wait costs one
    future and one timer handle, not a ``StreamReader`` future plus the task ``asyncio.wait_for``
    wraps around it (the engine makes several reads per port, so this is measurable at scale).
    Bytes arrive in ``incoming`` (the socket side, as a ``StreamReader`` buffer was); the engine
    moves them into ``buf`` when it reads, which is when ``seen`` and the recorder see them.
    """

    def __init__(self, recorder: Any) -> None:
        self.transport: asyncio.Transport | None = None
        self.incoming = bytearray()
        self.buf = bytearray()
        self.seen = bytearray()  # the first bytes ever received (banner)
        self.tls: TLSInfo | None = None
        self.facts: TLSFacts | None = None
        self.recorder = recorder
        self.closed = False
        self._eof = False
        self._lost = False
        self._exc: BaseException | None = None
        self._paused = False
        self._over_ssl = False
        #: consecutive small reads that left the same Recv incomplete (a dripping peer)
        self._trickle = 0

    # ---------------------------------------------------------------- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # called again with the TLS transport once a STARTTLS/implicit TLS handshake is done
        self._over_ssl = transport.get_extra_info("sslcontext") is not None

    def data_received(self, data: bytes) -> None:
        self.incoming += data
        if not self._paused and len(self.incoming) > READ_AHEAD and self.transport is not None:
            with contextlib.suppress(Exception):
                self.transport.pause_reading()
                self._paused = True
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        # keep a plain half-closed connection writable (as StreamReaderProtocol does); TLS closes
        return not self._over_ssl

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if exc is not None:
            self._exc = exc
        else:
            self._eof = True
        self._wake()

    # ---------------------------------------------------------------- reads
    async def _read(self, n: int, timeout: float) -> bytes:
        """Up to ``n`` bytes; b"" at EOF; TimeoutError after ``timeout`` s without bytes; the
        connection's error once every byte received before it has been read."""
        if not self.incoming and self._exc is None and not self._eof:
            if timeout <= 0:
                raise TimeoutError
            await self._sleep(timeout)
            if not self.incoming and self._exc is None and not self._eof:
                raise TimeoutError
        incoming = self.incoming
        if incoming:
            if len(incoming) <= n:
                data = bytes(incoming)
                incoming.clear()
            else:
                data = bytes(incoming[:n])
                del incoming[:n]
            if self._paused and len(incoming) <= READ_AHEAD // 2 and self.transport is not None:
                self._paused = False
                with contextlib.suppress(Exception):
                    self.transport.resume_reading()
            return data
        if self._exc is not None:
            raise self._exc
        return b""

    def _got(self, data: bytes) -> None:
        self.buf += data
        self._note(data)

    def _note(self, data: bytes) -> None:
        """Keep the first bytes as the banner and hand ``data`` to the recorder."""
        if len(self.seen) < BANNER_KEEP:
            self.seen += data[: BANNER_KEEP - len(self.seen)]
        if self.recorder is not None:
            self.recorder.server(self, data)

    async def read_some(self, wait: float, cap: int = GREETING_CAP) -> bytes:
        """Wait up to ``wait`` s for the first bytes (a greeting); a short grace for the rest."""
        if not self.buf:
            try:
                data = await self._read(cap, wait)
            except (TimeoutError, OSError, ssl.SSLError):
                return b""
            if not data:
                self.closed = True
                return b""
            self._got(data)
            # multi-packet greetings: a brief grace for the rest of the first reply
            with contextlib.suppress(TimeoutError, OSError, ssl.SSLError):
                while len(self.buf) < cap and not self.buf.endswith(b"\n"):
                    more = await self._read(cap - len(self.buf), 0.05)
                    if not more:
                        break
                    self._got(more)
        return bytes(self.buf[:cap])

    async def send(self, data: bytes) -> None:
        if self.recorder is not None:
            self.recorder.client(self, data)
        if self._exc is not None:
            raise RecvClosed(f"send failed: {self._exc}")
        if self._lost or self.transport is None or self.transport.is_closing():
            raise RecvClosed("send failed: Connection lost")
        try:
            self.transport.write(data)
        except (OSError, ssl.SSLError, RuntimeError) as exc:
            raise RecvClosed(f"send failed: {exc}") from exc

    async def pump(self, runner: Runner, remaining: float) -> None:
        """Wait up to ``remaining`` s for bytes and report what happened to ``runner`` (which
        buffers and frames them)."""
        if self.closed:
            runner.peer_closed()
            return
        if remaining <= 0:
            runner.timed_out()
            return
        waiting = runner.next_request()
        if self._trickle >= 2 and len(self.incoming) < DRIP_PIECE and not self._eof and self._exc is None:
            # the peer drips this reply in tiny pieces: let the kernel gather them for a moment
            # (reading paused) rather than wake, read and frame once per byte; a reply that
            # comes whole never waits here
            pause = min(DRIP_PAUSE, remaining)
            transport = self.transport
            hold = transport is not None and not self._paused and not transport.is_closing()
            if hold:
                with contextlib.suppress(Exception):
                    transport.pause_reading()  # type: ignore[union-attr]
            try:
                await asyncio.sleep(pause)
            finally:
                if hold and not self._paused:
                    with contextlib.suppress(Exception):
                        transport.resume_reading()  # type: ignore[union-attr]
            remaining -= pause
        try:
            data = await self._read(65536, remaining)
        except TimeoutError:
            runner.timed_out()
            return
        except (OSError, ssl.SSLError) as exc:
            self.closed = True
            runner.peer_closed(f"connection error: {exc}")
            return
        if not data:
            self.closed = True
            runner.peer_closed()
            return
        self._note(data)
        await _feed(runner, waiting, data)
        small = len(data) < DRIP_PIECE and runner.next_request() == waiting  # still the same Recv
        self._trickle = self._trickle + 1 if small else 0

    async def start_tls(self, server_name: str | None, timeout: float, mode: str) -> TLSFacts:
        if self.buf or self.incoming:
            # bytes after the STARTTLS reply would be injected plaintext: refuse (CVE-2011-0411 style)
            early = bytes(self.buf[:256] or self.incoming[:256])
            raise TLSFailed("plaintext bytes received before the TLS handshake", early)
        if self.transport is None or self._lost:
            self.closed = True
            raise TLSFailed("TLS handshake failed: the connection is closed")
        loop = asyncio.get_running_loop()
        context = _TLS_CONTEXT
        if self.recorder is not None:
            # --record: the recorder's context logs the session secrets, and the recorder taps
            # the raw transport to write the encrypted bytes as they were on the wire
            context = getattr(self.recorder, "tls_context", None) or _TLS_CONTEXT
            starting = getattr(self.recorder, "tls_starting", None)
            if starting is not None:
                starting(self, self.transport)
        try:
            async with asyncio.timeout(timeout + 1):
                new = await loop.start_tls(self.transport, self, context, server_hostname=server_name,
                                           ssl_handshake_timeout=timeout)
        except (TimeoutError, OSError, ssl.SSLError, ConnectionError, RuntimeError) as exc:
            self.closed = True
            raise TLSFailed(f"TLS handshake failed: {type(exc).__name__}: {exc}") from exc
        if new is None:
            self.closed = True
            raise TLSFailed("TLS handshake failed: no transport")
        self.transport = new
        obj = new.get_extra_info("ssl_object")
        self.tls, self.facts = tls_info_from(obj, mode)
        if self.recorder is not None:
            self.recorder.tls_started(self)
        return self.facts

    def abort(self) -> None:
        """Close without leaving TIME_WAIT behind (SO_LINGER 0: the kernel sends RST)."""
        transport = self.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(Exception):
                transport.abort()
        if self.recorder is not None:
            self.recorder.closed(self)


_TLS_CONTEXT = _tls_context()


class _UDPProto(_Wakeable, asyncio.DatagramProtocol):
    """Queues datagrams (at most :data:`UDP_QUEUE`) and wakes the one reader waiting for them."""

    def __init__(self) -> None:
        self.queue: collections.deque[bytes] = collections.deque()
        self.refused = False

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(self.queue) < UDP_QUEUE:
            self.queue.append(data)
            self._wake()

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) == errno.ECONNREFUSED:
            self.refused = True
            self._wake()


class _UDPConn:
    """A connected UDP socket: one Recv is one datagram."""

    def __init__(self, transport: asyncio.DatagramTransport, proto: _UDPProto, recorder: Any) -> None:
        self.transport = transport
        self.proto = proto
        self.seen = bytearray()
        self.answered = False
        self.recorder = recorder

    async def send(self, data: bytes) -> None:
        if self.recorder is not None:
            self.recorder.client(self, data)
        self.transport.sendto(data)

    async def pump(self, runner: Runner, wait: float) -> None:
        """Wait up to ``wait`` s for one datagram and report it (or the silence) to ``runner``."""
        proto = self.proto
        if not proto.queue and not proto.refused and wait > 0:
            await proto._sleep(wait)
        if proto.queue:
            data = proto.queue.popleft()
            self.answered = True
            if len(self.seen) < BANNER_KEEP:
                self.seen += data[: BANNER_KEEP - len(self.seen)]
            if self.recorder is not None:
                self.recorder.server(self, data)
            await _feed(runner, runner.next_request(), data)
        elif proto.refused:
            runner.refused()
        else:
            runner.timed_out()

    def abort(self) -> None:
        self.transport.close()


class _SeededRandom(random.Random):
    """``random.Random(seed)`` that seeds itself on first use.

    Seeding from a string costs a SHA-512 and a 624-word Mersenne Twister initialisation (about
    7 us); most dialogues never draw a number, so the engine gives every context one of these. The
    numbers drawn are exactly those of ``random.Random(seed)``: every method of ``Random`` draws
    through ``random``, ``getrandbits`` or ``randbytes``, and those seed first.
    """

    def __init__(self, seed: str) -> None:  # no super().__init__: that would seed now
        self._pending: str | None = seed
        self.gauss_next = None

    def _seed_now(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            super().seed(pending)

    def seed(self, a: Any = None, version: int = 2) -> None:
        """Seed explicitly (the pending seed is dropped)."""
        self._pending = None
        super().seed(a, version)

    def random(self) -> float:
        """As :meth:`random.Random.random`."""
        if self._pending is not None:
            self._seed_now()
        return super().random()

    def getrandbits(self, k: int) -> int:
        """As :meth:`random.Random.getrandbits`."""
        if self._pending is not None:
            self._seed_now()
        return super().getrandbits(k)

    def randbytes(self, n: int) -> bytes:
        """As :meth:`random.Random.randbytes`."""
        if self._pending is not None:
            self._seed_now()
        return super().randbytes(n)

    def getstate(self) -> tuple[Any, ...]:
        """As :meth:`random.Random.getstate`."""
        if self._pending is not None:
            self._seed_now()
        return super().getstate()

    def setstate(self, state: tuple[Any, ...]) -> None:
        """As :meth:`random.Random.setstate`."""
        self._pending = None
        super().setstate(state)


class _RateLimiter:
    """A token bucket for new connections."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.next = 0.0
        self.lock = asyncio.Lock()

    async def acquire(self) -> None:
        if self.rate <= 0:
            return
        async with self.lock:
            loop = asyncio.get_running_loop()
            now = loop.time()
            if self.next > now:
                await asyncio.sleep(self.next - now)
            self.next = max(now, self.next) + 1.0 / self.rate


def _raise_nofile(wanted: int) -> int:
    """Raise the soft descriptor limit toward ``wanted``; return the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
    return soft


class Scanner:
    """Runs a scan of targets x ports with a registry of probes; results go to ``on_result``."""

    def __init__(
        self,
        registry: Registry,
        options: ScanOptions | None = None,
        on_result: Callable[[ScanResult], None] | None = None,
    ) -> None:
        self.options = options or ScanOptions()
        reg = registry.select(self.options.probes, self.options.exclude)
        self.probes: list[Probe] = reg.probes
        self.on_result = on_result
        self.host_facts: dict[str, dict[str, Any]] = {}
        self.notes: list[str] = []
        self.done = 0
        self.total = 0
        # per-port plans, keyed by what they depend on (see _hinted, _others, _server_first)
        self._hinted_cache: dict[tuple[int, str, str | None], list[Probe]] = {}
        self._others_cache: dict[tuple[str, frozenset[str]], list[Probe]] = {}
        self._server_first_cache: dict[frozenset[str], list[Probe]] = {}
        #: the service database behind our probes, loaded on first need (see scanner.breadth)
        self.service_db = DatabaseHandle(self.options.service_db, self.options.use_service_db)

    # ------------------------------------------------------------------ planning
    def _hinted(self, port: int, transport: str, entry: PortEntry) -> list[Probe]:
        """Probes hinted for the port (port hints, the profile's probe, or forced with --probe).

        The plan depends only on (port, transport, the profile's probe), so it is made once per
        such key and reused for every target (callers do not modify the list).
        """
        key = (port, transport, entry.probe)
        plan = self._hinted_cache.get(key)
        if plan is None:
            out = []
            for p in self.probes:
                if transport not in p.transports:
                    continue
                if port in p.ports or port in p.tls_ports or (entry.probe and entry.probe == p.name):
                    out.append(p)
                elif self.options.probes and p.name in self.options.probes:
                    out.append(p)
            plan = self._hinted_cache[key] = sorted(out, key=lambda p: (p.rarity, p.name))
        return plan

    def _others(self, transport: str, exclude: Iterable[Probe]) -> list[Probe]:
        ex = frozenset(p.name for p in exclude)
        key = (transport, ex)
        plan = self._others_cache.get(key)
        if plan is None:
            out = [
                p
                for p in self.probes
                if transport in p.transports and p.name not in ex and p.rarity <= self.options.intensity
            ]
            plan = self._others_cache[key] = sorted(out, key=lambda p: (p.rarity, p.name))
        return plan

    def _server_first(self, hinted: list[Probe]) -> list[Probe]:
        """TCP server-speaks-first probes in the order their matchers see a greeting: the hinted
        ones first, then by rarity and name (made once per set of hinted probes)."""
        names = frozenset(p.name for p in hinted)
        plan = self._server_first_cache.get(names)
        if plan is None:
            plan = [p for p in self.probes if p.server_first and "tcp" in p.transports]
            plan.sort(key=lambda p: (p.name not in names, p.rarity, p.name))
            self._server_first_cache[names] = plan
        return plan

    # ------------------------------------------------------------------ connections
    async def _open_tcp(self, address: str, port: int, tls: bool, server_name: str | None) -> _TCPConn:
        opts = self.options
        await self._rate.acquire()
        loop = asyncio.get_running_loop()
        recorder = opts.recorder
        # An aborted transport releases its descriptor in the loop's next iteration; create_connection
        # makes its socket at once. Yield once first, so a worker that has just aborted a connection
        # does not hold two descriptors (512 workers: up to 1,024 open instead of 512).
        await asyncio.sleep(0)
        try:
            async with asyncio.timeout(opts.connect_timeout):
                transport, conn = await loop.create_connection(lambda: _TCPConn(recorder), address, port)
        except TimeoutError:
            raise _ConnectFailed("connection-timeout", "connect timed out") from None
        except ConnectionRefusedError:
            raise _ConnectFailed("connection-refused", "connection refused") from None
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                raise _ConnectFailed("connection-error", f"local limit: {exc.strerror}") from exc
            if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
                raise _ConnectFailed("connection-timeout", f"unreachable: {exc.strerror}") from exc
            raise _ConnectFailed("connection-error", f"{exc.strerror or exc}") from exc
        if recorder is not None:
            recorder.opened(conn, transport, address, port)
        if tls:
            try:
                await conn.start_tls(server_name, opts.tls_timeout, "implicit")
            except TLSFailed:
                conn.abort()
                raise
        return conn

    def _ctx(
        self, target: Target, port: int, transport: str, conn: _TCPConn | _UDPConn, out: _Outcome | None = None
    ) -> ProbeContext:
        """The context of one dialogue; its ``responses`` is the port's own dict (first reply per tag
        over all dialogues of the port, for the service database)."""
        facts = conn.facts if isinstance(conn, _TCPConn) else None
        return ProbeContext(
            responses=out.responses if out is not None else {},
            address=target.address,
            port=port,
            transport=transport,  # type: ignore[arg-type]
            hostname=target.hostname,
            tls=facts,
            implicit_tls=facts is not None,
            rng=_SeededRandom(f"{self.options.seed}:{target.address}:{port}"),
            host_facts=self.host_facts.setdefault(target.address, {}),
            client_name=self.options.client_name,
            fast=self.options.fast,
        )

    # ------------------------------------------------------------------ dialogue driver
    async def _drive(
        self,
        probe: Probe,
        conn: _TCPConn | _UDPConn,
        ctx: ProbeContext,
        out: _Outcome,
        tls: bool,
        box: list[_TCPConn] | None = None,
        reopen: Callable[[], Awaitable[_TCPConn | None]] | None = None,
        read_timeout: float | None = None,
    ) -> Finding | None:
        """Run one probe's dialogue over ``conn``; record the attempt; return its finding.

        The dialogue itself is driven by :class:`scanner.runner.Runner` (budgets, framing, partial
        results, statuses); this adapter only carries out its requests on the connection. On a
        ``Reconnect`` the connection is replaced through ``reopen``; the connection in use at the
        end is left in ``box[0]`` for the caller.
        """
        t0 = time.monotonic()
        opts = self.options
        udp = isinstance(conn, _UDPConn)
        runner = Runner(probe, ctx, can_reconnect=not udp and reopen is not None and box is not None)
        if isinstance(conn, _TCPConn):
            # the greeting read before the dialogue: the runner's receive buffer starts with it
            runner.receive_data(bytes(conn.buf))
            conn.buf.clear()
            if conn.closed:
                runner.peer_closed()
        default_wait = opts.udp_timeout if udp else (read_timeout or opts.read_timeout)
        loop = asyncio.get_running_loop()
        recv_no, deadline = -1, 0.0
        while True:
            req = runner.next_request()
            if isinstance(req, Done):
                break
            if isinstance(req, SendBytes):
                try:
                    await conn.send(req.data)
                except RecvClosed as exc:
                    runner.send_failed(str(exc))
                else:
                    runner.sent()
            elif isinstance(req, NeedData):
                if req.recv != recv_no:  # a new Recv step: its time limit starts now
                    recv_no = req.recv
                    deadline = loop.time() + (req.timeout if req.timeout is not None else default_wait)
                await conn.pump(runner, deadline - loop.time())
            elif isinstance(req, DoStartTLS) and isinstance(conn, _TCPConn):
                try:
                    facts = await conn.start_tls(req.server_name, opts.tls_timeout, "starttls")
                except TLSFailed as exc:
                    runner.tls_failed(str(exc))
                else:
                    runner.tls_started(facts)
            elif isinstance(req, DoReconnect) and isinstance(conn, _TCPConn) and reopen is not None and box:
                conn.abort()
                fresh = await reopen()
                if fresh is None:
                    runner.reconnect_failed("reconnect failed")
                else:
                    conn = box[0] = fresh
                    runner.reconnected(fresh.facts)
                    runner.receive_data(bytes(fresh.buf))
                    fresh.buf.clear()
            else:  # the runner never asks this of a connection that cannot do it
                raise RuntimeError(f"runner request {req!r} on {type(conn).__name__}")
        result = runner.outcome
        if isinstance(conn, _TCPConn):
            conn.buf[:0] = runner.buffered  # bytes left unread stay with the connection
        if result.status == "connection-refused":
            out.state = "closed"
        out.attempts.append(
            Attempt(
                probe=probe.name,
                status=result.status,
                tls=tls,
                elapsed_ms=round((time.monotonic() - t0) * 1000, 1),
                error=result.error[:300] if result.error else None,
                traceback=result.traceback,
            )
        )
        return None if result.status == "connection-refused" else result.finding

    # ------------------------------------------------------------------ TCP
    async def _tcp_layer(
        self, target: Target, entry: PortEntry, tls: bool, out: _Outcome, lanes: list[NmapLane] | None = None
    ) -> bool:
        """Try every applicable probe on one layer (plain or implicit TLS). True when identified.
        The layer's state of nmap's probes goes to ``lanes`` (their remaining ones run after every
        layer, see :meth:`_scan_tcp`)."""
        opts = self.options
        port = entry.port
        hinted = self._hinted(port, "tcp", entry)
        try:
            conn = await self._open_tcp(target.address, port, tls, target.hostname)
        except _ConnectFailed as exc:
            out.attempts.append(Attempt(probe="connect", status=exc.status, tls=tls, error=str(exc)))
            if exc.status == "connection-refused":
                out.state = "closed"
            elif exc.status == "connection-timeout" and out.state == "unknown":
                out.state = "filtered"
            elif out.state == "unknown":
                out.error = str(exc)
            return False
        except TLSFailed as exc:
            out.state = "open"
            out.attempts.append(Attempt(probe="tls", status="tls-error", tls=True, error=str(exc)[:300]))
            return False
        out.state = "open"
        server_first_hint = any(p.server_first for p in hinted)
        wait = opts.greeting_wait if (server_first_hint or not hinted) else opts.short_wait
        t_greet = time.monotonic()
        greeting = await conn.read_some(wait)
        # nmap's probes, after ours, once the port has shown it speaks (scanner.dbprobes)
        lane = self._nmap_lane(port, "tcp", tls)
        if lane is not None:
            lane.greeting(greeting, conn.closed, time.monotonic() - t_greet)
            if lanes is not None:
                lanes.append(lane)
        if greeting and not out.banner:
            out.banner = greeting[:BANNER_KEEP]
        if greeting and not out.greeting:
            out.greeting = greeting
        dirty = False
        tried: set[str] = lane.ours if lane is not None else set()
        try:
            if greeting:
                for probe in self._server_first(hinted):
                    ok, tb = try_match(probe, greeting)
                    if tb is not None:
                        out.attempts.append(
                            Attempt(probe=probe.name, status="probe-bug", tls=tls, error="match() raised",
                                    traceback=tb)
                        )
                        continue
                    if not ok:
                        continue
                    tried.add(probe.name)
                    if dirty:
                        conn.abort()
                        fresh = await self._reopen(target, port, tls, out)
                        if fresh is None:
                            return False
                        conn = fresh
                    ok, conn = await self._run(probe, conn, target, entry, tls, out)
                    if ok:
                        return True
                    dirty = True
            candidates = [p for p in hinted if not p.server_first and p.name not in tried]
            if not opts.fast and not greeting:
                candidates += [p for p in self._others("tcp", hinted) if not p.server_first]
            for probe in candidates:
                slow = probe not in hinted
                if slow and lane is not None and lane.spoke and not lane.hinted_done:
                    # the probes nmap's file hints for this port go before our unhinted guesses
                    if await self._nmap_tcp(lane, target, entry, out, hinted_only=True):
                        return True
                if dirty or (greeting and probe is not candidates[0]):
                    conn.abort()
                    fresh = await self._reopen(target, port, tls, out)
                    if fresh is None:
                        return False
                    conn = fresh
                timeout = min(opts.read_timeout, opts.slow_read_timeout) if slow else None
                tried.add(probe.name)
                found, conn = await self._run(probe, conn, target, entry, tls, out, read_timeout=timeout)
                if found:
                    return True
                dirty = True
                if lane is not None and (conn.seen or conn.closed):
                    lane.spoke = True  # bytes in reply, or a close: the port speaks
            if not greeting and not dirty and not opts.fast:
                # a slow greeter on a port we had no server-first hint for: one more, longer look
                more = await conn.read_some(opts.greeting_wait)
                if more:
                    out.banner = more[:BANNER_KEEP]
                    out.greeting = out.greeting or more
            if not greeting and not dirty and not conn.seen:
                # no probe ran on this connection: say what the port did (silent, or closed at once)
                out.attempts.append(Attempt(
                    probe="greeting", status="closed-early" if conn.closed else "io-timeout", tls=tls,
                    error="peer closed without sending anything" if conn.closed else "no bytes from the server"))
            if not out.banner and conn.seen:
                out.banner = bytes(conn.seen)
        finally:
            conn.abort()
        return False

    def _nmap_lane(self, port: int, transport: str, tls: bool) -> NmapLane | None:
        """The state of nmap's probes on one port and layer, or None when they are off: with
        ``--fast`` (hinted probes only), ``--probe`` (only the probes named), ``--no-nmap-probes``
        or ``--no-service-db``."""
        opts = self.options
        if opts.fast or opts.probes or not opts.nmap_probes or not self.service_db.enabled:
            return None
        return NmapLane(self.service_db, transport, port, tls=tls, intensity=opts.intensity)

    async def _nmap_tcp(
        self, lane: NmapLane, target: Target, entry: PortEntry, out: _Outcome, *, hinted_only: bool
    ) -> bool:
        """Send nmap's probes (those hinted for the port; with ``hinted_only`` False, then the
        others), each on a fresh connection; True when one named the service. Our probes keep
        precedence: when the database names a service one of ours reports and that probe has not
        run on this layer, ours runs first and, if it identifies the port, its finding stands."""
        opts = self.options
        tls, tried = lane.tls, lane.ours
        for dbp, on_port in lane.next_probes(hinted_only):
            left = opts.nmap_budget - out.nmap_spent
            if left <= 0:
                lane.done = True
                break
            wait = min(left, lane.wait(dbp, on_port, opts.read_timeout, opts.slow_read_timeout))
            db = lane.database()
            conn = await self._reopen(target, entry.port, tls, out) if db is not None else None
            if db is None or conn is None:
                return False
            t0 = time.monotonic()
            try:
                probe = nmap_probe(db, dbp, tls=tls, wait=wait)
                finding = await self._drive(probe, conn, self._ctx(target, entry.port, "tcp", conn, out), out, tls)
                if conn.seen and not out.banner:
                    out.banner = bytes(conn.seen)
                info = conn.tls
            finally:
                conn.abort()
                out.nmap_spent += time.monotonic() - t0
            kind = lane.take(finding)
            if kind == "hard" and finding is not None:
                for ours in self._deferred("tcp", finding.service, tried):
                    tried.add(ours.name)
                    fresh = await self._reopen(target, entry.port, tls, out)
                    if fresh is None:
                        break
                    slow_timeout = min(opts.read_timeout, opts.slow_read_timeout)
                    ok, fresh = await self._run(ours, fresh, target, entry, tls, out, read_timeout=slow_timeout)
                    fresh.abort()
                    if ok:
                        return True
                out.finding, out.probe, out.tls = finding, probe.name, info
                return True
            if kind == "tls":
                break  # a TLS layer: nmap's probes belong inside it (the engine's TLS layer)
        if not hinted_only and lane.soft_finding is not None and out.finding is None:
            # only a softmatch: the service is named, at low confidence, with no product
            out.finding, out.probe = lane.soft_finding, f"nmap:{lane.soft_finding.details.get('nmap_probe')}"
        return False

    def _deferred(self, transport: str, service: str, tried: set[str]) -> list[Probe]:
        """Our client-first probes that report ``service`` and have not run yet on this layer."""
        return [p for p in self.probes if transport in p.transports and not p.server_first
                and service in p.services and p.name not in tried]

    async def _reopen(self, target: Target, port: int, tls: bool, out: _Outcome) -> _TCPConn | None:
        try:
            return await self._open_tcp(target.address, port, tls, target.hostname)
        except (_ConnectFailed, TLSFailed) as exc:
            status: Status = exc.status if isinstance(exc, _ConnectFailed) else "tls-error"
            out.attempts.append(Attempt(probe="connect", status=status, tls=tls, error=str(exc)[:300]))
            return None

    async def _run(
        self,
        probe: Probe,
        conn: _TCPConn,
        target: Target,
        entry: PortEntry,
        tls: bool,
        out: _Outcome,
        read_timeout: float | None = None,
    ) -> tuple[bool, _TCPConn]:
        """Drive ``probe`` on ``conn``; return whether it identified the service, and the
        connection in use at the end (a dialogue may have reconnected)."""
        ctx = self._ctx(target, entry.port, "tcp", conn, out)
        box = [conn]

        async def reopen() -> _TCPConn | None:
            return await self._reopen(target, entry.port, tls, out)

        finding = await self._drive(
            probe, conn, ctx, out, tls, box=box, reopen=reopen, read_timeout=read_timeout
        )
        conn = box[0]
        if finding is None:
            if conn.seen and not out.banner:
                out.banner = bytes(conn.seen)
            return False, conn
        out.finding = finding
        out.probe = probe.name
        out.tls = conn.tls
        if finding.host_facts:
            self.host_facts.setdefault(target.address, {}).update(finding.host_facts)
        return True, conn

    async def _scan_tcp(self, target: Target, entry: PortEntry, out: _Outcome) -> None:
        hinted = self._hinted(entry.port, "tcp", entry)
        tls_first = entry.tls or any(entry.port in p.tls_ports for p in hinted)
        layers = [True, False] if tls_first else [False]
        if not self.options.fast and not tls_first:
            layers.append(True)
        lanes: list[NmapLane] = []
        for tls in layers:
            if await self._tcp_layer(target, entry, tls, out, lanes):
                return
            if out.state in ("closed", "filtered"):
                return
            if out.state == "unknown" and out.error:
                return
        # nmap's remaining probes, in the layer the service lives in: inside TLS when a handshake
        # succeeded (nmap too reruns its probes inside SSL once it sees SSL), else plain
        lane = next((la for la in lanes if la.tls), None) or next(iter(lanes), None)
        if lane is not None and lane.spoke:
            await self._nmap_tcp(lane, target, entry, out, hinted_only=False)

    # ------------------------------------------------------------------ UDP
    async def _scan_udp(self, target: Target, entry: PortEntry, out: _Outcome) -> None:
        hinted = self._hinted(entry.port, "udp", entry)
        probes = list(hinted)
        if not self.options.fast:
            probes += self._others("udp", hinted)
        lane = self._nmap_lane(entry.port, "udp", False)
        # on a port none of ours is hinted for, nmap's probes hinted for it go out beside ours (at
        # once, sharing ours' waits), so a port silent to everything costs no more than before;
        # ours keep precedence. Elsewhere they wait until ours failed on a port that answered.
        early = None
        if lane is not None and not hinted:
            early = asyncio.create_task(self._nmap_udp(lane, target, entry, out, hinted_only=True))
        try:
            if not probes and early is None:
                out.state = "unknown"
                out.error = "no UDP probe applies to this port"
                return
            answered = False
            for probe in probes:
                got = await self._udp_attempt(probe, target, entry, out)
                if got is None:
                    return
                finding, heard, refused = got
                answered = answered or heard
                if out.state == "closed" or refused:
                    out.state = "closed"
                    return
                if finding is not None:
                    out.state = "open"
                    out.finding = finding
                    out.probe = probe.name
                    if finding.host_facts:
                        self.host_facts.setdefault(target.address, {}).update(finding.host_facts)
                    return
            if lane is not None:
                best: Finding | None = None
                if early is not None:
                    best, heard = await early
                    answered = answered or heard
                if best is None and answered and out.state != "closed":
                    # the port answers but nothing named it: nmap's probes (hinted, then rarity <= intensity)
                    best, heard = await self._nmap_udp(lane, target, entry, out, hinted_only=False)
                if best is not None and out.state != "closed":
                    out.state = "open"
                    out.finding, out.probe = best, f"nmap:{best.details.get('nmap_probe')}"
                    return
            if out.state == "closed":
                return
            out.state = "open" if answered else "open|filtered"
        finally:
            if early is not None and not early.done():
                early.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await early

    async def _udp_attempt(
        self, probe: Probe, target: Target, entry: PortEntry, out: _Outcome, *, fatal: bool = True
    ) -> tuple[Finding | None, bool, bool] | None:
        """Drive ``probe`` on a fresh connected UDP socket: (finding, a datagram came back, the port
        answered port-unreachable); None when no socket could be made (recorded; with ``fatal``
        it is also the port's error)."""
        await self._rate.acquire()
        loop = asyncio.get_running_loop()
        try:
            transport, proto = await loop.create_datagram_endpoint(
                _UDPProto, remote_addr=(target.address, entry.port)
            )
        except OSError as exc:
            out.attempts.append(Attempt(probe=probe.name, status="connection-error", error=str(exc)))
            if fatal:
                out.error = str(exc)
            return None
        conn = _UDPConn(transport, proto, self.options.recorder)
        if self.options.recorder is not None:
            self.options.recorder.opened_udp(conn, target.address, entry.port)
        try:
            ctx = self._ctx(target, entry.port, "udp", conn, out)
            finding = await self._drive(probe, conn, ctx, out, False)
        finally:
            conn.abort()
        if conn.seen and not out.banner:
            out.banner = bytes(conn.seen)
        return finding, conn.answered, proto.refused

    async def _nmap_udp(
        self, lane: NmapLane | None, target: Target, entry: PortEntry, out: _Outcome, *, hinted_only: bool
    ) -> tuple[Finding | None, bool]:
        """nmap's UDP probes for the port, :data:`UDP_WINDOW` at a time on their own sockets, each
        window one wait long: (the finding of a hard match, else of a softmatch, or None; whether
        any datagram came back)."""
        opts = self.options
        answered = False
        if lane is None:
            return None, False
        wait = opts.udp_timeout
        for _window in range(UDP_WINDOWS):
            db = lane.database()
            batch = []
            for dbp, _on_port in lane.next_probes(hinted_only):
                batch.append(dbp)
                if len(batch) >= UDP_WINDOW:
                    break
            if db is None or not batch or out.nmap_spent >= opts.nmap_budget:
                break
            t0 = time.monotonic()
            got = await asyncio.gather(
                *(self._udp_attempt(nmap_probe(db, dbp, tls=False, wait=wait), target, entry, out, fatal=False)
                  for dbp in batch)
            )
            out.nmap_spent += time.monotonic() - t0
            for item in got:
                if item is None:
                    continue
                finding, heard, refused = item
                answered = answered or heard
                if refused:
                    out.state = "closed"
                    return None, answered
                if lane.take(finding) == "hard":
                    return finding, answered
            if lane.done:
                break
        return lane.soft_finding, answered

    # ------------------------------------------------------------------ one port
    async def scan_port(self, target: Target, entry: PortEntry) -> ScanResult:
        """Scan one port of one target and return its result (never raises for network trouble)."""
        out = _Outcome()
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(self.options.port_timeout):
                if entry.transport == "udp":
                    await self._scan_udp(target, entry, out)
                else:
                    await self._scan_tcp(target, entry, out)
        except TimeoutError:
            out.attempts.append(Attempt(probe="port", status="total-timeout",
                                        error=f"port time limit of {self.options.port_timeout} s reached"))
        except Exception as exc:  # an engine bug must not kill the scan either
            out.attempts.append(Attempt(probe="engine", status="probe-bug", error=f"{type(exc).__name__}: {exc}",
                                        traceback=traceback.format_exc()))
            out.error = f"internal error: {type(exc).__name__}: {exc}"
        self._refine(out)
        return build_result(target, entry, out, time.monotonic() - t0)

    def _refine(self, out: _Outcome) -> None:
        """Let the service database complete what our probes found (scanner.breadth.refine)."""
        if out.state not in ("open", "unknown", "open|filtered"):
            return
        f = out.finding
        tls = out.tls is not None if f is not None else False
        try:
            refined = self.service_db.refine(f, greeting=out.greeting, responses=out.responses, tls=tls)
        except Exception as exc:  # the database layer must never cost us a result
            out.attempts.append(Attempt(probe="servicedb", status="probe-bug", error=f"{type(exc).__name__}: {exc}",
                                        traceback=traceback.format_exc()))
            return
        if refined is not None and f is None:
            out.finding, out.probe = refined, "servicedb"
            if out.state != "open":
                out.state = "open"

    # ------------------------------------------------------------------ many
    async def run(
        self, targets: list[Target], entries: list[PortEntry], skip: frozenset[tuple[str, int, str]] = frozenset()
    ) -> list[ScanResult]:
        """Scan every target on every port entry; results also go to ``on_result`` as they come.

        ``skip`` holds (address, port, transport) triples already scanned (``--resume``).
        """
        opts = self.options
        self._rate = _RateLimiter(opts.rate)
        limit = _raise_nofile(opts.concurrency + 128)
        workers = max(1, min(opts.concurrency, limit - 64))
        if workers < opts.concurrency:
            self.notes.append(
                f"open-file limit is {limit}: running {workers} connections at once instead of {opts.concurrency}"
            )
        host_sem: dict[str, asyncio.Semaphore] = {}
        # A host's UDP ports start once its TCP ports are done, so the facts TCP probes find (the
        # AD domain from LDAP) reach the UDP ones (DNS). Every TCP item comes before every UDP item
        # in the queue, so a worker waiting here only waits for items already being scanned.
        ordered = sorted(entries, key=lambda e: e.transport == "udp")
        todo = [(t, e) for e in ordered for t in targets if (t.address, e.port, e.transport) not in skip]
        tcp_left: dict[str, int] = {}
        # items left per host: a host's semaphore, event and (when results are streamed) facts are
        # dropped once its last port is done, so memory does not grow with the number of targets
        host_left: dict[str, int] = {}
        for tgt, ent in todo:
            host_left[tgt.address] = host_left.get(tgt.address, 0) + 1
            if ent.transport == "tcp":
                tcp_left[tgt.address] = tcp_left.get(tgt.address, 0) + 1
        tcp_done: dict[str, asyncio.Event] = {}
        items = iter(todo)
        self.total = len(todo)
        results: list[ScanResult] = []
        per_host = opts.per_host

        async def worker() -> None:
            for target, entry in items:
                address = target.address
                if entry.transport == "udp" and tcp_left.get(address, 0) > 0:
                    event = tcp_done.get(address)
                    if event is None:
                        event = tcp_done[address] = asyncio.Event()
                    await event.wait()
                sem = host_sem.get(address)
                if sem is None:
                    sem = host_sem[address] = asyncio.Semaphore(per_host)
                async with sem:
                    res = await self.scan_port(target, entry)
                if entry.transport == "tcp":
                    tcp_left[address] -= 1
                    if tcp_left[address] == 0:
                        event = tcp_done.pop(address, None)
                        if event is not None:
                            event.set()
                host_left[address] -= 1
                if host_left[address] == 0:
                    del host_left[address]
                    host_sem.pop(address, None)
                    tcp_left.pop(address, None)
                    if not opts.keep_results:
                        self.host_facts.pop(address, None)
                if opts.keep_results:
                    results.append(res)
                self.done += 1
                if self.on_result is not None:
                    self.on_result(res)

        tasks = [asyncio.create_task(worker()) for _ in range(min(workers, max(1, self.total)))]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
        return results

    _rate: _RateLimiter = _RateLimiter(0)


def _verdict(entry: PortEntry, out: _Outcome) -> tuple[str, str]:
    f = out.finding
    if out.state == "closed":
        return "closed", "the port refused the connection"
    if out.state in ("filtered", "open|filtered"):
        return "filtered", "no answer"
    if f is None:
        if out.state == "unknown":
            return "error", out.error or "the port could not be scanned"
        if any(a.status == "probe-bug" for a in out.attempts) and not out.banner:
            return "error", "a probe failed (probe-bug); see attempts"
        if out.banner:
            return "unidentified", "open; bytes seen but no probe recognised them"
        return "unidentified", "open; no probe got an answer it recognised"
    tls_mode = out.tls.mode if out.tls else None
    if entry.service is None:
        return "identified", f"{f.service} found; the profile has no expectation for this port"
    if f.service == entry.service:
        if entry.tls and tls_mode != "implicit":
            return "unexpected", f"{f.service} answers, but without the implicit TLS the profile expects"
        if not entry.tls and tls_mode == "implicit":
            return "unexpected", f"{f.service} answers inside implicit TLS, the profile expects plain"
        return "confirmed", f"{f.service} answers as the profile expects"
    return "unexpected", f"expected {entry.service}, found {f.service}"


def build_result(target: Target, entry: PortEntry, out: _Outcome, elapsed: float) -> ScanResult:
    """Assemble the :class:`ScanResult` of one port from what the scan learned."""
    verdict, reason = _verdict(entry, out)
    f = out.finding
    details: dict[str, Any] = dict(f.details) if f else {}
    if out.banner and (f is None or "banner" not in details):
        details.setdefault("banner", decode_text(out.banner))
        details.setdefault("banner_hex", out.banner.hex())
    if out.error:
        details.setdefault("error", out.error)
    status_bad = [a for a in out.attempts if a.probe == (out.probe or "") and a.status != "success"]
    if f is not None and status_bad:
        details.setdefault("partial", True)
    state = out.state if out.state != "unknown" or f is None else "open"
    return ScanResult(
        target=target.spec,
        address=target.address,
        port=entry.port,
        transport=entry.transport,  # type: ignore[arg-type]
        state=state,  # type: ignore[arg-type]
        service=f.service if f else None,
        tls=out.tls if f else None,
        product=f.product if f else None,
        version=f.version if f else None,
        expected=entry.service,
        expected_tls=entry.tls if entry.service else None,
        verdict=verdict,  # type: ignore[arg-type]
        confidence=max(0, min(10, f.confidence)) if f else 0,
        evidence=[EvidenceItem(e.source, e.value) for e in f.evidence] if f else [],
        details=details,
        attempts=out.attempts,
        extrainfo=f.extrainfo if f else None,
        reason=reason,
        probe=out.probe,
        rule=f.rule if f else None,
        elapsed=round(elapsed, 3),
    )


def apply_profile(result: ScanResult, profile: Profile) -> ScanResult:
    """Give a result (from a pcap replay) the profile's expectation for its port, and the verdict."""
    entry = profile.lookup(result.port, result.transport)
    if entry is None or result.state not in ("open",):
        return result
    out = _Outcome(state=result.state, tls=result.tls)
    if result.service:
        out.finding = Finding(service=result.service)
    else:
        out.banner = b"?" if result.details.get("banner") else b""
    verdict, reason = _verdict(entry, out)
    return msgspec.structs.replace(
        result, expected=entry.service, expected_tls=entry.tls, verdict=verdict,
        reason=reason if result.verdict in ("identified", "unidentified") else result.reason,
    )


def _new_loop(recording: bool = False) -> asyncio.AbstractEventLoop:
    # recording (--record) taps the raw transport under TLS (scanner.replay.pcapwriter): asyncio's
    # own transports allow that, uvloop's (C types) do not
    if recording or os.environ.get("PORTPROOF_NO_UVLOOP"):
        return asyncio.new_event_loop()
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def scan(
    targets: list[str],
    ports: str | None = None,
    *,
    profile: Profile | None = None,
    registry: Registry | None = None,
    options: ScanOptions | None = None,
    on_result: Callable[[ScanResult], None] | None = None,
) -> list[ScanResult]:
    """Scan ``targets`` on ``ports`` (an nmap-style list; the profile's ports when None)."""
    options = options or ScanOptions()
    profile = profile or load_profile()
    entries = parse_ports(ports, profile) if ports else list(profile.entries)
    expanded = expand_targets(targets, resolve=options.resolve)
    scanner = Scanner(registry or load_registry(), options, on_result)
    return await scanner.run(expanded, entries)


def scan_sync(
    targets: list[str],
    ports: str | None = None,
    *,
    profile: Profile | None = None,
    registry: Registry | None = None,
    on_result: Callable[[ScanResult], None] | None = None,
    **option_kw: Any,
) -> list[ScanResult]:
    """Blocking :func:`scan`; keyword options map onto :class:`ScanOptions` (e.g. ``fast=True``)."""
    options = ScanOptions(**option_kw)
    with asyncio.Runner(loop_factory=lambda: _new_loop(options.recorder is not None)) as runner:
        return runner.run(
            scan(targets, ports, profile=profile, registry=registry, options=options, on_result=on_result)
        )
