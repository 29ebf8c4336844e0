"""Broken captures through the ``fingerprint replay`` CLI: one test per kind of damage.

Every damaged file is built from two real lab recordings in ``pcaps/`` (Postfix on 25, then
Dovecot POP3 on 110: 18 + 18 records), rewritten record by record with
:class:`~scanner.replay.pcapwriter.PcapWriter` or ``_build.write_pcapng``; the damage is put at
record 19, the first POP3 record. The CLI runs in a subprocess. Each test checks:

* stderr names the file and the record (or "file header") and says what is wrong;
* what was found before the damage is printed (the SMTP result);
* the exit code is non-zero only when not one record could be read.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from scanner.replay.pcapwriter import PcapWriter
from scanner.replay.reader import CaptureReader
from tests.replay._build import eth, write_pcapng

REPO = Path(__file__).resolve().parents[2]
SMTP, POP3 = REPO / "pcaps" / "smtp-postfix.pcap", REPO / "pcaps" / "pop3-dovecot.pcap"
#: the first POP3 record of the combined capture: where the damage goes
DAMAGED = 19
LINKTYPE_RAW = 101
PCAP_HEADER = 24
RECORD_HEADER = 16


@dataclass
class Replay:
    """What one ``fingerprint replay FILE -o jsonl`` run printed."""

    code: int
    services: dict[int, str | None]
    stderr: str
    stdout: str


def replay(*paths: Path, fmt: str = "jsonl") -> Replay:
    """Run the CLI on ``paths``; return exit code, service per server port, stderr."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "scanner.cli", "replay", *map(str, paths), "-o", fmt],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    services: dict[int, str | None] = {}
    if fmt == "jsonl":
        for line in proc.stdout.splitlines():
            rec = json.loads(line)
            services[rec["port"]] = rec["service"]
    assert "Traceback" not in proc.stderr, proc.stderr
    return Replay(proc.returncode, services, proc.stderr, proc.stdout)


def frames() -> list[bytes]:
    """The 36 raw-IP packets of the two lab recordings, in order (SMTP first)."""
    out = [r.data for r in CaptureReader(str(SMTP))] + [r.data for r in CaptureReader(str(POP3))]
    assert len(out) == 2 * (DAMAGED - 1)
    return out


def write_pcap(path: Path, packets: Sequence[bytes], linktype: int = LINKTYPE_RAW) -> bytes:
    """A classic pcap of ``packets``; returns its bytes."""
    with PcapWriter(path, linktype=linktype) as w:
        for i, pkt in enumerate(packets):
            w.write(pkt, 1_700_000_000 + i * 0.001)
    return path.read_bytes()


def record_offsets(data: bytes) -> list[int]:
    """Offset of every record header of a classic (little-endian) pcap."""
    offs, pos = [], PCAP_HEADER
    while pos + RECORD_HEADER <= len(data):
        offs.append(pos)
        pos += RECORD_HEADER + struct.unpack_from("<I", data, pos + 8)[0]
    return offs


def block_offsets(data: bytes) -> list[int]:
    """Offset of every pcapng block (SHB, IDB, then one EPB per packet)."""
    offs, pos = [], 0
    while pos + 8 <= len(data):
        offs.append(pos)
        pos += struct.unpack_from("<I", data, pos + 4)[0]
    return offs


@pytest.fixture
def base(tmp_path: Path) -> tuple[Path, bytes]:
    """The undamaged combined capture, checked to give both services."""
    path = tmp_path / "base.pcap"
    data = write_pcap(path, frames())
    return path, data


def damaged(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def assert_kept_before(r: Replay, path: Path, record: int | str, *words: str) -> None:
    """Reading stopped at the damage: SMTP (before it) printed, exit 0, stderr names file + record."""
    assert r.code == 0, r.stderr
    assert r.services.get(25) == "smtp", r.services
    where = record if isinstance(record, str) else f"record {record}"
    line = next((ln for ln in r.stderr.splitlines() if str(path) in ln and where in ln), None)
    assert line is not None, f"no error naming {path} and {where}: {r.stderr!r}"
    for w in words:
        assert w in line, (w, line)


def test_undamaged_base_gives_both(base: tuple[Path, bytes]) -> None:
    """Control: the combined capture without damage gives SMTP and POP3, no error."""
    r = replay(base[0])
    assert r.code == 0 and r.services == {25: "smtp", 110: "pop3"} and r.stderr == ""


def test_truncated_in_the_file_header(tmp_path: Path, base: tuple[Path, bytes]) -> None:
    """13 of 24 header bytes: nothing read, exit 1, "truncated file header"."""
    path = damaged(tmp_path, "cut-header.pcap", base[1][:13])
    r = replay(path)
    assert r.code != 0 and r.services == {}
    assert f"{path}: file header: truncated file header: 13 of 24 bytes" in r.stderr, r.stderr


def test_truncated_in_a_record_header(tmp_path: Path, base: tuple[Path, bytes]) -> None:
    offs = record_offsets(base[1])
    path = damaged(tmp_path, "cut-rechdr.pcap", base[1][: offs[DAMAGED - 1] + 7])
    r = replay(path)
    assert_kept_before(r, path, DAMAGED, "truncated record header")
    assert 110 not in r.services


def test_truncated_in_a_record(tmp_path: Path, base: tuple[Path, bytes]) -> None:
    offs = record_offsets(base[1])
    path = damaged(tmp_path, "cut-record.pcap", base[1][: offs[DAMAGED - 1] + RECORD_HEADER + 10])
    r = replay(path)
    assert_kept_before(r, path, DAMAGED, "truncated record", "10 of")


@pytest.mark.parametrize("field", ["caplen", "subsecond"])
def test_corrupt_record_header(tmp_path: Path, base: tuple[Path, bytes], field: str) -> None:
    """A record header with an absurd captured length, or a microsecond field of 5 000 000."""
    data = bytearray(base[1])
    off = record_offsets(base[1])[DAMAGED - 1]
    if field == "caplen":
        struct.pack_into("<II", data, off + 8, 0x7FFFFFFF, 0x7FFFFFFF)
    else:
        struct.pack_into("<I", data, off + 4, 5_000_000)
    path = damaged(tmp_path, f"corrupt-{field}.pcap", bytes(data))
    r = replay(path)
    assert_kept_before(r, path, DAMAGED, "corrupt record header")
    assert 110 not in r.services


@pytest.mark.parametrize("snaplen", [0, 2**32 - 1])
def test_absurd_snaplen(tmp_path: Path, base: tuple[Path, bytes], snaplen: int) -> None:
    """Snap length 0 or 2^32-1 in the file header: said on stderr, every record still read."""
    data = bytearray(base[1])
    struct.pack_into("<I", data, 16, snaplen)
    path = damaged(tmp_path, f"snaplen-{snaplen}.pcap", bytes(data))
    r = replay(path)
    assert r.code == 0 and r.services == {25: "smtp", 110: "pop3"}
    assert f"{path}: file header: absurd snap length {snaplen}" in r.stderr, r.stderr


def test_wrong_magic(tmp_path: Path, base: tuple[Path, bytes]) -> None:
    """Not a capture: nothing read, exit 1, the magic shown."""
    path = damaged(tmp_path, "wrong-magic.pcap", b"\x0a\x0d\x0d\xff" + base[1][4:])
    r = replay(path)
    assert r.code != 0 and r.services == {} and r.stdout.strip() == ""
    assert f"{path}: file header: not a pcap or pcapng file (magic 0a0d0dff)" in r.stderr, r.stderr


def test_wrong_magic_beside_a_good_file(tmp_path: Path, base: tuple[Path, bytes]) -> None:
    """One unreadable file among good ones: the good one's results, the error, exit 0."""
    bad = damaged(tmp_path, "zz-bad.pcap", b"GIF89a" + b"\x00" * 60)
    r = replay(base[0], bad)
    assert r.code == 0 and r.services == {25: "smtp", 110: "pop3"}
    assert f"{bad}: file header: not a pcap" in r.stderr


def test_first_record_corrupt_means_nothing_read(tmp_path: Path, base: tuple[Path, bytes]) -> None:
    """Damage at record 1: not one record read, so the exit code is non-zero."""
    data = bytearray(base[1])
    struct.pack_into("<I", data, PCAP_HEADER + 8, 0x7FFFFFFF)
    path = damaged(tmp_path, "bad-first.pcap", bytes(data))
    r = replay(path)
    assert r.code != 0 and r.services == {}
    assert f"{path}: record 1: corrupt record header" in r.stderr, r.stderr


def test_pcapng_unknown_block_type(tmp_path: Path) -> None:
    """A block of an undefined type between two records: skipped (the format says so), noted with
    the record it precedes, every record read."""
    ng = write_pcapng(tmp_path / "base.pcapng", frames(), linktype=LINKTYPE_RAW).read_bytes()
    offs = block_offsets(ng)
    at = offs[2 + DAMAGED - 1]  # SHB, IDB, then EPB of record 1..
    body = b"mystery!"
    unknown = struct.pack("<II", 0x0BADF00D, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))
    path = damaged(tmp_path, "unknown-block.pcapng", ng[:at] + unknown + ng[at:])
    r = replay(path)
    assert r.code == 0 and r.services == {25: "smtp", 110: "pop3"}, r.stderr
    assert f"{path}: record {DAMAGED}: pcapng block of unknown type 0x0badf00d at offset {at} skipped" in r.stderr


@pytest.mark.parametrize("how", ["cut", "length"])
def test_pcapng_truncated_block(tmp_path: Path, how: str) -> None:
    """An EPB cut short (end of file inside it), or whose length field runs past the end."""
    ng = bytearray(write_pcapng(tmp_path / "base.pcapng", frames(), linktype=LINKTYPE_RAW).read_bytes())
    at = block_offsets(bytes(ng))[2 + DAMAGED - 1]
    if how == "cut":
        data = bytes(ng[: at + 30])
    else:
        struct.pack_into("<I", ng, at + 4, 0x7FFFFFF0)
        data = bytes(ng)
    path = damaged(tmp_path, f"block-{how}.pcapng", data)
    r = replay(path)
    assert_kept_before(r, path, DAMAGED, "truncated block", f"offset {at}")
    assert 110 not in r.services


def _short_header_packets() -> list[bytes]:
    """Records 19-21: shorter than their IP/TCP headers claim; then the POP3 records, whole."""
    pkts = frames()
    syn = pkts[DAMAGED - 1]
    ip_claims_more = syn[:12]  # 12 bytes of a 20-byte IPv4 header
    tcp_offset_lies = bytearray(pkts[DAMAGED + 2])
    tcp_offset_lies[20 + 12] = 0xF0  # TCP data offset 60 bytes, on a packet with less
    tcp_cut = pkts[DAMAGED + 2][:24]  # IPv4 header + 4 bytes of TCP
    return [*pkts[: DAMAGED - 1], ip_claims_more, bytes(tcp_offset_lies), tcp_cut, *pkts[DAMAGED - 1 :]]


def _eth_garbage_frames() -> list[bytes]:
    """Ethernet: records 19-21 claim IPv4 (ethertype 0x0800) and carry garbage."""
    pkts = frames()
    ipv4 = b"\x02" * 12 + b"\x08\x00"  # MACs, ethertype IPv4
    garbage = [
        ipv4 + b"\xde\xad\xbe\xef\x00\x11\x22\x33",  # 8 bytes: short IPv4 header
        ipv4 + b"\xf5" + os.urandom(39),  # version nibble 15
        ipv4 + b"\x4f" + b"\x00" * 29,  # IHL 60 bytes in a 30-byte packet
    ]
    return [*map(eth, pkts[: DAMAGED - 1]), *garbage, *map(eth, pkts[DAMAGED - 1 :])]


PACKET_DAMAGE = {
    "short-headers": (_short_header_packets, LINKTYPE_RAW),
    "ethernet-ipv4-garbage": (_eth_garbage_frames, 1),
}


@pytest.mark.parametrize("kind", sorted(PACKET_DAMAGE))
def test_damaged_packets_are_skipped_and_the_rest_read(tmp_path: Path, kind: str) -> None:
    """Damaged packets are skipped: every service before *and after* them is still found."""
    build, linktype = PACKET_DAMAGE[kind]
    path = tmp_path / f"{kind}.pcap"
    write_pcap(path, build(), linktype)
    r = replay(path)
    assert r.code == 0 and r.services == {25: "smtp", 110: "pop3"}, r.stderr


@pytest.mark.parametrize("kind", sorted(PACKET_DAMAGE))
def test_damaged_packets_are_named_by_record(tmp_path: Path, kind: str) -> None:
    """Each damaged packet is named on stderr with the file and its record number."""
    build, linktype = PACKET_DAMAGE[kind]
    path = tmp_path / f"{kind}.pcap"
    write_pcap(path, build(), linktype)
    r = replay(path)
    for rec in (DAMAGED, DAMAGED + 1, DAMAGED + 2):
        assert f"{path}: record {rec}: damaged packet" in r.stderr, r.stderr


def test_table_output_keeps_partial_results(tmp_path: Path, base: tuple[Path, bytes]) -> None:
    """The table renderer also prints what was read before the damage, and the error."""
    offs = record_offsets(base[1])
    path = damaged(tmp_path, "cut.pcap", base[1][: offs[DAMAGED - 1] + 20])
    r = replay(path, fmt="table")
    assert r.code == 0 and "smtp" in r.stdout and "Postfix" in r.stdout
    assert "pop3" not in r.stdout
    assert f"record {DAMAGED}" in r.stderr
