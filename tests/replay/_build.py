"""Helpers for the replay tests: wrap IP packets in link layers and write small captures."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

from scanner.replay.pcapwriter import PcapWriter

ETH_HDR = b"\x02\x00\x00\x00\x00\x01" + b"\x02\x00\x00\x00\x00\x02"


def eth(ip: bytes, vlans: tuple[int, ...] = ()) -> bytes:
    """Ethernet frame (with 802.1Q/802.1ad tags) around an IP packet."""
    etype = 0x0800 if ip[0] >> 4 == 4 else 0x86DD
    out = ETH_HDR
    for i, vid in enumerate(vlans):
        tpid = 0x88A8 if i == 0 and len(vlans) > 1 else 0x8100
        out += struct.pack("!HH", tpid, vid)
    return out + struct.pack("!H", etype) + ip


def sll(ip: bytes) -> bytes:
    """Linux cooked capture v1 header around an IP packet."""
    etype = 0x0800 if ip[0] >> 4 == 4 else 0x86DD
    return struct.pack("!HHH8sH", 0, 1, 6, b"\x02\x00\x00\x00\x00\x01\x00\x00", etype) + ip


def sll2(ip: bytes) -> bytes:
    """Linux cooked capture v2 header around an IP packet."""
    etype = 0x0800 if ip[0] >> 4 == 4 else 0x86DD
    return struct.pack("!HHIHBB8s", etype, 0, 1, 1, 0, 6, b"\x02\x00\x00\x00\x00\x01\x00\x00") + ip


def null(ip: bytes, big_endian: bool = False) -> bytes:
    """BSD loopback header (address family) around an IP packet."""
    af = 2 if ip[0] >> 4 == 4 else 30
    return struct.pack(">I" if big_endian else "<I", af) + ip


def write_pcap(path: Path, frames: Iterable[bytes], linktype: int = 101, t0: float = 1_700_000_000.0) -> Path:
    """Write ``frames`` (already wrapped for ``linktype``) as a classic pcap."""
    with PcapWriter(path, linktype=linktype) as w:
        for i, frame in enumerate(frames):
            w.write(frame, t0 + i * 0.001)
    return path


def write_pcapng(path: Path, frames: Iterable[bytes], linktype: int = 1) -> Path:
    """Write ``frames`` as a minimal pcapng (one SHB, one IDB, EPBs)."""

    def block(btype: int, body: bytes) -> bytes:
        body += b"\x00" * (-len(body) % 4)
        n = 12 + len(body)
        return struct.pack("<II", btype, n) + body + struct.pack("<I", n)

    out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    out += block(1, struct.pack("<HHI", linktype, 0, 262144))
    for i, frame in enumerate(frames):
        ts = 1_700_000_000_000_000 + i
        out += block(6, struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(frame), len(frame)) + frame)
    path.write_bytes(out)
    return path
