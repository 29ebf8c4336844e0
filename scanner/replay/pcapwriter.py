"""Write conversations as a valid capture: synthesised IPv4/IPv6 + TCP/UDP packets (``--record``).

Written by hand (a few struct calls) rather than with scapy: recording runs inside a live scan,
where importing scapy would cost a second of start-up, and the packets are simple. Link type RAW
(101, bare IP packets), so IPv4 and IPv6 flows share one file. :class:`PcapWriter` writes classic
pcap; :class:`PcapNgWriter` writes pcapng, which can also hold Decryption Secrets Blocks (TLS keys).

TCP flows get a handshake, sequence and acknowledgement numbers that follow the bytes, data split
into segments of at most :data:`MSS` bytes, and the RST the engine closes with. Checksums are
correct, so tshark and Wireshark read the file without complaint.

TLS: the engine sees the decrypted stream only. When the engine announces a handshake on a raw
transport (``tls_starting``), :class:`PcapRecorder` taps that transport and records the real bytes
on the wire from then on (the records as encrypted by OpenSSL), and it records the session secrets
OpenSSL logs for the connection (:mod:`scanner.replay.keylog`, kept in memory only) as a Decryption
Secrets Block placed before the first packet that needs them. Wireshark and ``fingerprint replay``
then decrypt the recording. When no tap was possible (a caller that only calls ``tls_started``), a
synthesised handshake holding the session's facts is written instead: a ClientHello, then the
ServerHello (negotiated version, cipher suite, ALPN) and, up to TLS 1.2, the server's Certificate;
the application bytes are then not written, since they were encrypted on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import struct
import threading
import time
import weakref
from typing import Any, BinaryIO

from scanner.api import TLSFacts

__all__ = [
    "MSS",
    "PcapNgWriter",
    "PcapRecorder",
    "PcapWriter",
    "TCPConversation",
    "ip_packet",
    "tcp_packet",
    "udp_packet",
]

LINKTYPE_RAW = 101
SNAPLEN = 262144
MSS = 1460

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ip_packet(src: str, dst: str, proto: int, l4: bytes, ident: int = 0) -> bytes:
    """Wrap a transport segment (its checksum still zero) into an IPv4 or IPv6 packet.

    The transport checksum (at offset 16 for TCP, 6 for UDP) is computed here, over the pseudo
    header of the IP version used.
    """
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version != d.version:
        raise ValueError("source and destination are of different IP versions")
    csum_at = 16 if proto == 6 else 6
    if s.version == 4:
        pseudo = s.packed + d.packed + struct.pack("!BBH", 0, proto, len(l4))
    else:
        pseudo = s.packed + d.packed + struct.pack("!IxxxB", len(l4), proto)
    csum = _checksum(pseudo + l4)
    if proto == 17 and csum == 0:
        csum = 0xFFFF
    l4 = l4[:csum_at] + struct.pack("!H", csum) + l4[csum_at + 2 :]
    if s.version == 4:
        # version/ihl, tos, total length, id, flags (DF), ttl, proto, checksum, src, dst
        hdr = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), ident & 0xFFFF, 0x4000, 64, proto, 0, s.packed, d.packed
        )
        hdr = hdr[:10] + struct.pack("!H", _checksum(hdr)) + hdr[12:]
        return hdr + l4
    # version/class/label, payload length, next header, hop limit, src, dst
    return struct.pack("!IHBB16s16s", 0x60000000, len(l4), proto, 64, s.packed, d.packed) + l4


def tcp_packet(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    payload: bytes = b"",
    window: int = 65535,
) -> bytes:
    """A whole IP packet carrying one TCP segment (no options)."""
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq % (1 << 32), ack % (1 << 32), 5 << 4, flags, window, 0, 0)
    return ip_packet(src, dst, 6, seg + payload)


def udp_packet(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """A whole IP packet carrying one UDP datagram."""
    return ip_packet(src, dst, 17, struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)


class PcapWriter:
    """A classic pcap file (microsecond timestamps, link type RAW) written packet by packet."""

    def __init__(self, target: str | os.PathLike[str] | BinaryIO, linktype: int = LINKTYPE_RAW) -> None:
        if isinstance(target, (str, os.PathLike)):
            self.f: BinaryIO = open(target, "wb")
            self._own = True
        else:
            self.f, self._own = target, False
        self.f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, linktype))
        self.packets = 0

    def write(self, packet: bytes, ts: float | None = None) -> None:
        """Append one packet (bytes of the link layer, here a bare IP packet)."""
        ts = time.time() if ts is None else ts
        sec = int(ts)
        usec = min(999_999, round((ts - sec) * 1e6))
        data = packet[:SNAPLEN]
        self.f.write(struct.pack("<IIII", sec, usec, len(data), len(packet)) + data)
        self.packets += 1

    def close(self) -> None:
        """Flush, and close the file if this writer opened it."""
        self.f.flush()
        if self._own:
            self.f.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PcapNgWriter(PcapWriter):
    """A pcapng file (one section, one interface of link type RAW, microsecond timestamps)
    written block by block; :meth:`write_secrets` adds a Decryption Secrets Block."""

    def __init__(self, target: str | os.PathLike[str] | BinaryIO, linktype: int = LINKTYPE_RAW) -> None:
        if isinstance(target, (str, os.PathLike)):
            self.f = open(target, "wb")
            self._own = True
        else:
            self.f, self._own = target, False
        # Section Header Block: type, length, byte-order magic, version 1.0, section length
        # unknown (-1), no options, length again
        self.f.write(struct.pack("<IIIHHqI", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28))
        # Interface Description Block: type, length, link type, reserved, snap length, no options
        # (no if_tsresol: the default resolution is microseconds), length again
        self.f.write(struct.pack("<IIHHII", 1, 20, linktype, 0, SNAPLEN, 20))
        self.packets = 0
        self.secrets = 0

    def write(self, packet: bytes, ts: float | None = None) -> None:
        """Append one packet as an Enhanced Packet Block (interface 0)."""
        ts = time.time() if ts is None else ts
        usec = round(ts * 1e6)
        data = packet[:SNAPLEN]
        pad = b"\x00" * (-len(data) % 4)
        total = 32 + len(data) + len(pad)
        # type, length, interface id, timestamp (high, low 32 bits), captured and original
        # lengths, packet bytes padded to 32 bits, length again
        self.f.write(
            struct.pack("<IIIIIII", 6, total, 0, usec >> 32, usec & 0xFFFFFFFF, len(data), len(packet))
            + data
            + pad
            + struct.pack("<I", total)
        )
        self.packets += 1

    def write_secrets(self, keylog_text: bytes) -> None:
        """Append a Decryption Secrets Block holding NSS key log lines (TLS session secrets)."""
        from scanner.replay.keylog import dsb_block

        if keylog_text:
            self.f.write(dsb_block(keylog_text))
            self.secrets += 1

    def __enter__(self) -> PcapNgWriter:
        return self


class TCPConversation:
    """One TCP connection written to a :class:`PcapWriter`, sequence numbers kept right."""

    def __init__(
        self,
        writer: PcapWriter,
        client: tuple[str, int],
        server: tuple[str, int],
        isn: tuple[int, int] = (1000, 5000),
        ts: float | None = None,
    ) -> None:
        self.w = writer
        self.client, self.server = client, server
        self.cseq, self.sseq = isn
        self.closed = False
        self._handshake(ts)

    def _pkt(self, from_client: bool, flags: int, payload: bytes = b"", ts: float | None = None) -> None:
        if from_client:
            (src, sport), (dst, dport), seq, ack = self.client, self.server, self.cseq, self.sseq
        else:
            (src, sport), (dst, dport), seq, ack = self.server, self.client, self.sseq, self.cseq
        self.w.write(tcp_packet(src, dst, sport, dport, seq, ack if flags & ACK else 0, flags, payload), ts)

    def _handshake(self, ts: float | None) -> None:
        self._pkt(True, SYN, ts=ts)
        self.cseq += 1
        self._pkt(False, SYN | ACK, ts=ts)
        self.sseq += 1
        self._pkt(True, ACK, ts=ts)

    def send(self, from_client: bool, data: bytes, ts: float | None = None) -> None:
        """Write ``data`` from one side, in MSS-sized segments, each acknowledged by the peer."""
        if self.closed:
            return
        for i in range(0, len(data), MSS):
            chunk = data[i : i + MSS]
            self._pkt(from_client, PSH | ACK, chunk, ts)
            if from_client:
                self.cseq += len(chunk)
            else:
                self.sseq += len(chunk)
            self._pkt(not from_client, ACK, ts=ts)

    def close(self, reset: bool = True, ts: float | None = None) -> None:
        """End the connection: a client RST (what the engine's abort sends) or a FIN exchange."""
        if self.closed:
            return
        if reset:
            self._pkt(True, RST | ACK, ts=ts)
        else:
            self._pkt(True, FIN | ACK, ts=ts)
            self.cseq += 1
            self._pkt(False, FIN | ACK, ts=ts)
            self.sseq += 1
            self._pkt(True, ACK, ts=ts)
        self.closed = True


# ----------------------------------------------------------------------------- TLS synthesis

_TLS_VERSION_CODES = {"SSLv3": 0x0300, "TLSv1": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
_cipher_codes: dict[str, int] | None = None


def _cipher_code(name: str) -> int:
    """The IANA code of a cipher suite given by its OpenSSL or IANA name (0 when unknown)."""
    global _cipher_codes
    if _cipher_codes is None:
        import ssl

        codes: dict[str, int] = {}
        try:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.set_ciphers("ALL:@SECLEVEL=0")
            for c in ctx.get_ciphers():
                codes[c["name"]] = c["id"] & 0xFFFF
        except (ssl.SSLError, KeyError):
            pass
        _cipher_codes = codes
    return _cipher_codes.get(name, 0)


def _record(content_type: int, body: bytes) -> bytes:
    out = b""
    for i in range(0, max(len(body), 1), 16384):
        chunk = body[i : i + 16384]
        out += struct.pack("!BHH", content_type, 0x0303, len(chunk)) + chunk
    return out


def _handshake(htype: int, body: bytes) -> bytes:
    return struct.pack("!B", htype) + len(body).to_bytes(3, "big") + body


def synthesize_client_hello() -> bytes:
    """A minimal ClientHello record (TLS 1.2 layout; the real one is not visible to the engine)."""
    body = struct.pack("!H", 0x0303) + b"\x00" * 32 + b"\x00" + struct.pack("!HH", 2, 0x002F) + b"\x01\x00"
    return _record(22, _handshake(1, body))


def synthesize_server_handshake(facts: TLSFacts) -> bytes:
    """ServerHello (+ Certificate up to TLS 1.2) records carrying the session's real facts."""
    version = _TLS_VERSION_CODES.get(facts.version, 0x0303)
    exts = b""
    if version == 0x0304:
        exts += struct.pack("!HHH", 43, 2, 0x0304)  # supported_versions: the real version
    if facts.alpn:
        name = facts.alpn.encode()[:255]
        lst = struct.pack("!B", len(name)) + name
        exts += struct.pack("!HH", 16, len(lst) + 2) + struct.pack("!H", len(lst)) + lst
    legacy = min(version, 0x0303)
    body = struct.pack("!H", legacy) + b"\x00" * 32 + b"\x00" + struct.pack("!H", _cipher_code(facts.cipher)) + b"\x00"
    body += struct.pack("!H", len(exts)) + exts
    msgs = _handshake(2, body)
    if version <= 0x0303 and facts.certificate_der:
        der = facts.certificate_der
        chain = len(der).to_bytes(3, "big") + der
        msgs += _handshake(11, len(chain).to_bytes(3, "big") + chain)
    return _record(22, msgs)


# ----------------------------------------------------------------------------- the recorder


class PcapRecorder:
    """Records a live scan's conversations into a pcapng file (the engine's ``recorder`` interface).

    The engine calls ``opened``/``opened_udp`` when it connects, ``client``/``server`` with the
    bytes it writes and reads, ``tls_starting`` with the raw transport just before a TLS handshake
    (the recorder then taps the wire, see the module doc), ``tls_started`` after it and ``closed``
    when it aborts. :attr:`tls_context` is the client context the engine must use for the
    handshakes so that their secrets are logged (``keep_keys=False``: no key log, no context).
    """

    def __init__(self, path: str | os.PathLike[str], keep_keys: bool = True) -> None:
        from scanner.replay.keylog import KeyLogCapture

        self.writer: PcapWriter = PcapNgWriter(path)
        self._lock = threading.Lock()
        self._tcp: weakref.WeakKeyDictionary[Any, TCPConversation] = weakref.WeakKeyDictionary()
        self._udp: weakref.WeakKeyDictionary[Any, tuple[tuple[str, int], tuple[str, int]]] = weakref.WeakKeyDictionary()
        self._tls: weakref.WeakSet[Any] = weakref.WeakSet()
        #: tapped connections: outgoing wire bytes held back while incoming bytes are processed
        self._wire: weakref.WeakKeyDictionary[Any, _WireState] = weakref.WeakKeyDictionary()
        self._isn = 1000
        self._keys: KeyLogCapture | None = KeyLogCapture() if keep_keys else None
        self._ctx: Any = None

    @property
    def tls_context(self) -> Any:
        """The engine's client TLS context with OpenSSL's key log pointed at our in-memory log
        (None when keys are not kept: the engine then uses its own)."""
        if self._keys is None:
            return None
        if self._ctx is None:
            from scanner.engine import _tls_context

            self._ctx = _tls_context(keylog_filename=self._keys.path)
        return self._ctx

    @staticmethod
    def _local(extra: Any, address: str) -> tuple[str, int]:
        sock = extra("sockname") if callable(extra) else None
        if isinstance(sock, tuple) and len(sock) >= 2:
            return str(sock[0]).split("%")[0], int(sock[1])
        return ("::1" if ":" in address else "127.0.0.1"), 40000

    def opened(self, conn: Any, writer: Any, address: str, port: int) -> None:
        """A TCP connection to ``address:port`` was established."""
        local = self._local(writer.get_extra_info, address)
        with self._lock:
            self._isn = (self._isn + 100_003) % (1 << 32)
            self._tcp[conn] = TCPConversation(self.writer, local, (address, port), (self._isn, self._isn * 7 + 1))

    def opened_udp(self, conn: Any, address: str, port: int) -> None:
        """A UDP socket was connected to ``address:port``."""
        transport = getattr(conn, "transport", None)
        extra = transport.get_extra_info if transport is not None else None
        with self._lock:
            self._udp[conn] = (self._local(extra, address), (address, port))

    def _data(self, conn: Any, from_client: bool, data: bytes) -> None:
        with self._lock:
            tcp = self._tcp.get(conn)
            if tcp is not None:
                if conn not in self._tls:
                    tcp.send(from_client, data)
                return
            udp = self._udp.get(conn)
            if udp is not None:
                (c, cp), (s, sp) = udp
                pkt = udp_packet(c, s, cp, sp, data) if from_client else udp_packet(s, c, sp, cp, data)
                self.writer.write(pkt)

    def client(self, conn: Any, data: bytes) -> None:
        """The scanner wrote ``data``."""
        self._data(conn, True, data)

    def server(self, conn: Any, data: bytes) -> None:
        """The scanner read ``data``."""
        self._data(conn, False, data)

    # ------------------------------------------------------------------ TLS on the wire
    def tls_starting(self, conn: Any, transport: Any) -> None:
        """``conn`` is about to start TLS over the raw ``transport``: record its wire bytes.

        asyncio gives no hook on the bytes under its TLS layer, so the raw transport's ``write``
        (what the TLS layer sends) and ``set_protocol`` (through which ``loop.start_tls``
        installs its TLS protocol, which the transport then feeds) are wrapped on this one
        transport object. Plaintext calls for ``conn`` are ignored from here on.
        """
        if self._keys is None or not hasattr(transport, "set_protocol") or not hasattr(transport, "write"):
            return
        with self._lock:
            if conn not in self._tcp or conn in self._tls:
                return
        orig_write = transport.write
        orig_set_protocol = transport.set_protocol

        def write(data: bytes | bytearray | memoryview) -> None:
            self._wire_out(conn, bytes(data))
            orig_write(data)

        def set_protocol(protocol: Any) -> None:
            buffered = isinstance(protocol, asyncio.BufferedProtocol)  # asyncio's SSLProtocol is
            orig_set_protocol((_TapBufferedProtocol if buffered else _TapProtocol)(protocol, self, conn))

        try:
            transport.write = write
            transport.set_protocol = set_protocol
        except AttributeError:  # a transport of C type (uvloop): the synthesised handshake, then
            with contextlib.suppress(AttributeError):
                del transport.write
            return
        with self._lock:
            self._tls.add(conn)
            self._wire[conn] = _WireState()

    def _secrets(self) -> None:
        """Write the key log lines logged since the last packet (called with the lock held)."""
        if self._keys is not None and isinstance(self.writer, PcapNgWriter):
            text = self._keys.drain()
            if text:
                self.writer.write_secrets(text)

    def _wire_out(self, conn: Any, data: bytes) -> None:
        with self._lock:
            st = self._wire.get(conn)
            tcp = self._tcp.get(conn)
            if st is None or tcp is None:
                return
            if st.inside:
                st.held.append(data)  # sent while the server's bytes are processed: after them
                return
            self._secrets()
            tcp.send(True, data)

    def _wire_in(self, conn: Any, data: bytes, processed: bool) -> None:
        """Server bytes: ``processed`` False just before OpenSSL reads them, True just after."""
        with self._lock:
            st = self._wire.get(conn)
            tcp = self._tcp.get(conn)
            if st is None or tcp is None:
                return
            if not processed:
                st.inside = True
                return
            st.inside = False
            # the secrets OpenSSL derived from these bytes go before them, so that a reader
            # that decrypts as it reads (Wireshark in one pass) has them in time
            self._secrets()
            tcp.send(False, data)
            held, st.held = st.held, []
            for out in held:
                tcp.send(True, out)

    def tls_started(self, conn: Any) -> None:
        """The connection is now TLS: unless its wire is tapped, write the synthesised handshake;
        then stop writing plaintext payload."""
        facts = getattr(conn, "facts", None)
        with self._lock:
            tcp = self._tcp.get(conn)
            if tcp is None or conn in self._tls:
                return
            tcp.send(True, synthesize_client_hello())
            if isinstance(facts, TLSFacts):
                tcp.send(False, synthesize_server_handshake(facts))
            self._tls.add(conn)

    def closed(self, conn: Any) -> None:
        """The engine closed (reset) the connection."""
        with self._lock:
            self._secrets()
            tcp = self._tcp.pop(conn, None)
            if tcp is not None:
                tcp.close(reset=True)

    def close(self) -> None:
        """Close the file (connections still open are left as they are); forget the secrets."""
        with self._lock:
            self._secrets()
            self.writer.close()
            if self._ctx is not None:
                with contextlib.suppress(Exception):
                    self._ctx.keylog_filename = None  # OpenSSL closes its handle on the log
            if self._keys is not None:
                self._keys.close()


class _WireState:
    """Per tapped connection: whether server bytes are being processed, and what was sent meanwhile."""

    __slots__ = ("held", "inside")

    def __init__(self) -> None:
        self.inside = False
        self.held: list[bytes] = []


class _TapProtocol(asyncio.Protocol):
    """Sits between a raw transport and asyncio's TLS protocol and shows the recorder every
    byte the transport delivers (before and after the TLS protocol processes it)."""

    def __init__(self, inner: Any, recorder: PcapRecorder, conn: Any) -> None:
        self.inner = inner
        self.recorder = recorder
        self.conn = conn
        self._buf: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.recorder._wire_in(self.conn, bytes(data), False)
        try:
            self.inner.data_received(data)
        finally:
            self.recorder._wire_in(self.conn, bytes(data), True)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class _TapBufferedProtocol(_TapProtocol, asyncio.BufferedProtocol):
    """:class:`_TapProtocol` for a buffered inner protocol (the transport fills its buffer)."""

    def get_buffer(self, sizehint: int) -> Any:
        self._buf = self.inner.get_buffer(sizehint)
        return self._buf

    def buffer_updated(self, nbytes: int) -> None:
        data = bytes(memoryview(self._buf)[:nbytes]) if self._buf is not None else b""
        self.recorder._wire_in(self.conn, data, False)
        try:
            self.inner.buffer_updated(nbytes)
        finally:
            self.recorder._wire_in(self.conn, data, True)
