"""Stream the records of a pcap or pcapng file, one at a time, with scapy's raw readers.

scapy's ``RawPcapReader`` (which hands pcapng files to ``RawPcapNgReader``) never loads a file
whole. It is lenient with damage, though: a truncated or corrupt record ends its iteration
silently, and a corrupt classic-pcap record header is returned as a garbage packet. This module adds
the checks that turn those cases into a :class:`ReadError` naming the file and the record, after
every good record before it was delivered.

Classic pcap records are not read with ``RawPcapReader._read_packet`` (two ``read`` calls and a
named tuple per record, about 1.6 us): scapy opens the file and checks its header, then
:meth:`CaptureReader._iter_pcap` cuts the records out of 1 MiB blocks read from scapy's own file
object (gzip included) with one ``struct.unpack_from`` each, about three times faster; an
uncompressed classic pcap with a sound header is opened without scapy at all (:class:`_PlainPcap`:
importing ``scapy.utils`` costs more start-up than the header is worth). scapy has no
faster reader for either format. pcapng stays block by block with ``RawPcapNgReader``: its blocks
need scapy's option parsing (interfaces, time resolution, Decryption Secrets Blocks).
:meth:`CaptureReader.records` yields plain tuples for the replay's hot loop;
iterating the reader yields :class:`Record` s.
"""

from __future__ import annotations

import functools
import logging
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_RECORD", "CaptureReader", "ReadError", "Record"]

#: largest record we accept: 256 KiB (tcpdump's default snap length is 262144)
MAX_RECORD = 262144
#: a snap length above this is absurd (the header is damaged); records are then capped anyway
MAX_SNAPLEN = 16 * 1024 * 1024
#: non-fatal problems listed one by one per file (damaged packets, skipped blocks); the rest are
#: counted in one closing line, so a capture of garbage cannot flood stderr
MAX_NOTES = 20
#: the pcapng block types of the specification (draft-ietf-opsawg-pcapng): scapy decodes some and
#: skips the others; a type outside this set is reported once as "unknown" (then skipped, as the
#: format requires)
PCAPNG_BLOCK_TYPES = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0xBAD, 0x40000BAD, 0x80000001})
#: first 4 bytes of the formats read here: classic pcap (both byte orders, us and ns), pcapng, gzip
_PCAP_MAGICS = {"a1b2c3d4", "d4c3b2a1", "a1b23c4d", "4d3cb2a1", "a1b2cd34", "34cdb2a1"}
_PCAP_HEADER = 24


@dataclass(frozen=True, slots=True)
class Record:
    """One captured packet: its number in the file (1-based), time, link type and bytes."""

    index: int
    ts: float | None
    linktype: int
    data: bytes
    wirelen: int


@dataclass(frozen=True, slots=True)
class ReadError:
    """A problem with the file itself: which file, which record (0 = the file header), what."""

    file: str
    record: int
    message: str
    #: True when reading stopped there (the records after it were not read)
    fatal: bool = True

    def __str__(self) -> str:
        where = "file header" if self.record == 0 else f"record {self.record}"
        return f"{self.file}: {where}: {self.message}"


class CaptureReader:
    """Iterate the :class:`Record` s of one capture file; problems land in :attr:`errors`.

    Iteration never raises for a damaged file: it stops and appends a :class:`ReadError`.
    """

    def __init__(self, path: str, on_secrets: Callable[[bytes], object] | None = None) -> None:
        self.path = path
        #: called with the NSS key log text of each pcapng Decryption Secrets Block (TLS keys)
        self.on_secrets = on_secrets
        self.errors: list[ReadError] = []
        #: records delivered so far
        self.count = 0
        #: bytes of the file read so far (about: classic pcap advances by blocks of :data:`CHUNK`)
        self.position = 0
        self.format = "?"
        #: non-fatal notes not listed because :data:`MAX_NOTES` was reached
        self.unlisted = 0
        self._notes = 0

    def _error(self, record: int, message: str, fatal: bool = True) -> None:
        self.errors.append(ReadError(self.path, record, message, fatal))

    def note(self, record: int, message: str) -> None:
        """A non-fatal problem with one record (a damaged packet): listed up to :data:`MAX_NOTES`
        times per file, counted after that."""
        if self._notes >= MAX_NOTES:
            self.unlisted += 1
            return
        self._notes += 1
        self._error(record, message, fatal=False)

    def __iter__(self) -> Iterator[Record]:
        for ts, linktype, data, wirelen in self._records():
            yield Record(self.count, ts, linktype, data, wirelen)

    def records(self) -> Iterator[tuple[float | None, int, bytes, int]]:
        """The records as ``(ts, linktype, data, wire length)`` tuples, for the replay's hot loop
        (no :class:`Record` per packet); the current record's number is :attr:`count`."""
        return self._records()

    def _records(self) -> Iterator[tuple[float | None, int, bytes, int]]:
        plain = _PlainPcap.open(self.path)
        if plain is not None:
            # an uncompressed classic pcap with a sound header: no scapy needed (importing
            # scapy.utils costs ~0.13 s of a replay's start-up)
            self.format = "pcap"
            try:
                yield from self._iter_pcap(plain, plain.size)
            finally:
                plain.close()
                if self.unlisted:
                    self._error(self.count + 1, f"{self.unlisted} more damaged record(s) not listed", fatal=False)
                    self.unlisted = 0
            return
        from scapy.error import Scapy_Exception
        from scapy.utils import RawPcapNgReader, RawPcapReader

        log = logging.getLogger("scapy.runtime")
        old_level = log.level
        log.setLevel(logging.ERROR)  # scapy warns about every damaged record; we report them once
        try:
            try:
                size = os.path.getsize(self.path)
                reader: Any = RawPcapReader(self.path)
            except OSError as exc:
                self._error(0, f"cannot open: {exc.strerror or exc}")
                return
            except (Scapy_Exception, EOFError, ValueError) as exc:
                self._error(0, _header_problem(self.path, size, exc))
                return
            try:
                if isinstance(reader, RawPcapNgReader):
                    self.format = "pcapng"
                    yield from self._iter_pcapng(reader, size)
                else:
                    self.format = "pcap"
                    yield from self._iter_pcap(reader, size)
            finally:
                reader.close()
                if self.unlisted:
                    self._error(self.count + 1, f"{self.unlisted} more damaged record(s) not listed", fatal=False)
                    self.unlisted = 0
        finally:
            log.setLevel(old_level)

    def _iter_pcap(self, reader: Any, size: int) -> Iterator[tuple[float | None, int, bytes, int]]:
        snaplen = reader.snaplen
        linktype = reader.linktype
        if snaplen == 0 or snaplen > MAX_SNAPLEN:
            self._error(0, f"absurd snap length {snaplen}; records capped at {MAX_RECORD}", fatal=False)
            snaplen = MAX_RECORD
        limit = max(snaplen, MAX_RECORD) if snaplen <= MAX_SNAPLEN else MAX_RECORD
        frac = 1e9 if reader.nano else 1e6
        gz = not hasattr(reader.f, "peek") or type(reader.f).__name__ == "GzipFile"
        f = reader.f
        # record header: ts seconds(4) ts micro/nanoseconds(4) captured length(4) wire length(4),
        # in the byte order of the file header
        unpack = struct.Struct(reader.endian + "IIII").unpack_from
        buf = b""
        blen = pos = 0
        base = f.tell()  # file offset of buf[0]
        eof = False
        count = self.count
        while True:
            if blen - pos < 16 and not eof:
                buf, base, eof = _refill(f, buf, pos, base, 16)
                blen, pos = len(buf), 0
                self.position = base
            start = base + pos
            if blen - pos < 16:
                if not gz and start < size:
                    self._error(count + 1, f"truncated record header ({size - start} bytes left at offset {start})")
                return
            sec, usec, caplen, wirelen = unpack(buf, pos)
            if caplen > limit or usec >= frac or caplen > wirelen + 65536:
                self._error(
                    count + 1,
                    f"corrupt record header at offset {start} (captured length {caplen}, "
                    f"wire length {wirelen}, sub-second field {usec}); reading stopped",
                )
                return
            pos += 16
            end = pos + caplen
            if end > blen:
                if not eof:
                    buf, base, eof = _refill(f, buf, pos - 16, base, 16 + caplen)
                    blen, pos, end = len(buf), 16, 16 + caplen
                if end > blen:
                    have = min(blen - pos, MAX_RECORD)
                    self._error(count + 1, f"truncated record at offset {start}: {have} of {caplen} bytes present")
                    return
            data = buf[pos:end] if caplen <= MAX_RECORD else buf[pos : pos + MAX_RECORD]
            pos = end
            count += 1
            self.count = count
            yield sec + usec / frac, linktype, data, wirelen

    def _iter_pcapng(self, reader: Any, size: int) -> Iterator[tuple[float | None, int, bytes, int]]:
        # scapy looks a block's type up with ``in``; this dict notes the types it does not know
        seen = _BlockTypes(reader.blocktypes)
        reader.blocktypes = seen
        # Decryption Secrets Blocks: the TLS key log goes to ``on_secrets`` (scapy's own handler
        # would change its global TLS configuration instead)
        seen[10] = functools.partial(_secrets_block, reader, self.on_secrets)
        # one block per call (not scapy's _read_packet loop) so the offset of a bad block is known
        for _ in range(1 << 62):
            start = self.position = reader.f.tell()
            try:
                res = reader._read_block(size=MAX_RECORD)
            except EOFError:
                if start < size:
                    self._error(self.count + 1, f"corrupt or truncated block at offset {start}; reading stopped")
                return
            except Exception as exc:
                self._error(self.count + 1, f"unreadable block at offset {start}: {exc}")
                return
            if res is None:
                if seen.unknown is not None:
                    if seen.unknown not in seen.reported:
                        seen.reported.add(seen.unknown)
                        self.note(self.count + 1, f"pcapng block of unknown type {seen.unknown:#010x} at offset "
                                                  f"{start} skipped (the records around it were read)")
                    seen.unknown = None
                continue
            data, meta = res
            index = self.count + 1
            ts: float | None = None
            if meta.tshigh is not None and meta.tslow is not None and meta.tsresol:
                ts = ((meta.tshigh << 32) | meta.tslow) / meta.tsresol
            self.count = index
            yield ts, meta.linktype, data, meta.wirelen


#: bytes read from the file at once by the classic-pcap reader
CHUNK = 1 << 20

#: the classic pcap magics (first 4 bytes as stored) that scapy's RawPcapReader accepts:
#: byte order and whether the sub-second field counts nanoseconds
_PLAIN_MAGICS = {
    b"\xa1\xb2\xc3\xd4": (">", False),
    b"\xd4\xc3\xb2\xa1": ("<", False),
    b"\xa1\xb2\x3c\x4d": (">", True),
    b"\x4d\x3c\xb2\xa1": ("<", True),
}


class _PlainPcap:
    """The file header of an uncompressed classic pcap, read without scapy: the attributes of
    scapy's ``RawPcapReader`` that :meth:`CaptureReader._iter_pcap` uses (``f`` positioned after
    the header). Anything else (gzip, pcapng, a damaged or short header) is left to scapy, whose
    errors :func:`_header_problem` explains."""

    def __init__(self, f: Any, size: int, endian: str, nano: bool, snaplen: int, linktype: int) -> None:
        self.f = f
        self.size = size
        self.endian = endian
        self.nano = nano
        self.snaplen = snaplen
        self.linktype = linktype

    @classmethod
    def open(cls, path: str) -> _PlainPcap | None:
        """The reader of ``path`` when it is an uncompressed classic pcap, else None."""
        try:
            f = open(path, "rb")  # closed by close(), or below
        except OSError:
            return None
        try:
            # magic(4) version major(2) minor(2) thiszone(4) sigfigs(4) snaplen(4) linktype(4)
            head = f.read(_PCAP_HEADER)
            kind = _PLAIN_MAGICS.get(head[:4]) if len(head) == _PCAP_HEADER else None
            if kind is not None:
                endian, nano = kind
                snaplen, linktype = struct.unpack_from(endian + "II", head, 16)
                return cls(f, os.fstat(f.fileno()).st_size, endian, nano, snaplen, linktype)
        except OSError:
            pass
        f.close()
        return None

    def close(self) -> None:
        """Close the file."""
        self.f.close()


def _refill(f: Any, buf: bytes, pos: int, base: int, need: int) -> tuple[bytes, int, bool]:
    """Keep ``buf[pos:]`` and read on until ``need`` bytes are there or the file ends.

    Returns the new buffer, the file offset of its first byte and whether the file ended. A read
    error (a damaged gzip stream) ends the file, as it does for scapy's reader.
    """
    rest = buf[pos:]
    base += pos
    parts = [rest]
    have = len(rest)
    eof = False
    while have < need:
        try:
            more = f.read(max(CHUNK, need - have))
        except (OSError, EOFError, OverflowError, zlib.error):
            more = b""
        if not more:
            eof = True
            break
        parts.append(more)
        have += len(more)
    return b"".join(parts), base, eof


def _secrets_block(reader: Any, on_secrets: Callable[[bytes], object] | None, block: bytes, _size: int) -> None:
    """scapy's block handler for a DSB: hand its TLS key log to ``on_secrets``; no packet."""
    from scanner.replay.keylog import parse_dsb

    text = parse_dsb(block, reader.endian)
    if text and on_secrets is not None:
        on_secrets(text)


class _BlockTypes(dict[int, Any]):
    """scapy's table of pcapng block readers, noting a lookup of a type the format does not define."""

    def __init__(self, table: dict[int, Any]) -> None:
        super().__init__(table)
        self.unknown: int | None = None
        self.reported: set[int] = set()

    def __contains__(self, key: object) -> bool:
        found = super().__contains__(key)
        if not found and isinstance(key, int) and key not in PCAPNG_BLOCK_TYPES:
            self.unknown = key
        return found


def _header_problem(path: str, size: int, exc: Exception) -> str:
    """What is wrong with a file whose header scapy refused: cut short, or not a capture at all."""
    magic = _first_bytes(path)
    if magic[6:] in _PCAP_MAGICS and size < _PCAP_HEADER:
        return f"truncated file header: {size} of {_PCAP_HEADER} bytes of a pcap header present ({magic})"
    if magic[6:] == "0a0d0d0a":
        return f"damaged or truncated pcapng section header ({size} bytes in the file): {exc}"
    return f"not a pcap or pcapng file ({magic}): {exc}"


def _first_bytes(path: str) -> str:
    """The first 4 bytes of a file, in hex, for the "wrong magic" message."""
    try:
        with open(path, "rb") as f:
            return "magic " + f.read(4).hex()
    except OSError:
        return "unreadable"
