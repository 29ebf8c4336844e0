"""Speed and peak memory of the pcap replay on a large capture, beside tshark.

Builds a large classic pcap in /tmp by merging the public corpus's Ethernet pcap files many times
over (timestamps shifted so the copies follow each other, client ports shifted per copy so every
copy is a new set of flows), then runs, each in its own process, in the same run:

* our replay (``scanner.replay.replay_paths`` with the registered probes),
* ``tshark -r FILE -q -z conv,tcp`` (TCP conversation table),
* a full tshark dissection (``tshark -r FILE -V`` to /dev/null),

and prints packets per second, wall time and peak RSS of each, with the ratios to ours.

    python bench/replay_speed.py [--size-mb 1024] [--corpus DIR] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO / "tests" / "data" / "pcaps-public"
OUT = Path("/tmp/portproof-bench")


def _records(path: Path) -> tuple[int, list[tuple[float, bytes]]] | None:
    """(linktype, [(ts, frame)]) of a small classic pcap, or None for pcapng/other."""
    data = path.read_bytes()
    if data[:4] != b"\xd4\xc3\xb2\xa1":
        return None
    linktype = struct.unpack_from("<I", data, 20)[0]
    out, pos = [], 24
    while pos + 16 <= len(data):
        sec, usec, caplen, _ = struct.unpack_from("<IIII", data, pos)
        if caplen > 262144 or pos + 16 + caplen > len(data):
            break
        out.append((sec + usec / 1e6, data[pos + 16 : pos + 16 + caplen]))
        pos += 16 + caplen
    return linktype, out


def _shift_ports(frame: bytes, delta: int) -> bytes:
    """Shift the ephemeral (> 1023) TCP/UDP port of an Ethernet/IPv4 frame by ``delta``."""
    off = 14
    etype = struct.unpack_from("!H", frame, 12)[0]
    while etype == 0x8100 and off + 4 <= len(frame):
        etype = struct.unpack_from("!H", frame, off + 2)[0]
        off += 4
    if etype != 0x0800 or len(frame) < off + 24:
        return frame
    ihl = (frame[off] & 0x0F) * 4
    proto = frame[off + 9]
    l4 = off + ihl
    if proto not in (6, 17) or len(frame) < l4 + 4:
        return frame
    sport, dport = struct.unpack_from("!HH", frame, l4)
    if sport > 1023 and sport > dport:
        sport = 1024 + (sport - 1024 + delta) % 64000
    elif dport > 1023:
        dport = 1024 + (dport - 1024 + delta) % 64000
    b = bytearray(frame)
    struct.pack_into("!HH", b, l4, sport, dport)
    return bytes(b)


def build(corpus: Path, size_mb: int) -> tuple[Path, int]:
    """Write the merged capture; return its path and packet count."""
    OUT.mkdir(parents=True, exist_ok=True)
    target = OUT / f"merged-{size_mb}MB.pcap"
    sources = []
    for f in sorted(corpus.glob("*.pcap")):
        got = _records(f)
        if got and got[0] == 1 and got[1]:
            sources.append(got[1])
    if not sources:
        raise SystemExit(f"no Ethernet pcap files in {corpus}")
    limit = size_mb * 1024 * 1024
    count = 0
    with target.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        written, copy, t = 24, 0, 1_600_000_000.0
        while written < limit:
            copy += 1
            for recs in sources:
                t0 = recs[0][0]
                for ts, frame in recs:
                    frame = _shift_ports(frame, copy * 7)
                    stamp = t + min(max(0.0, ts - t0), 3600.0)
                    sec = int(stamp)
                    out.write(struct.pack("<IIII", sec, int((stamp - sec) * 1e6), len(frame), len(frame)) + frame)
                    written += 16 + len(frame)
                    count += 1
                t += min(max(1.0, recs[-1][0] - t0), 3600.0) + 1.0
    return target, count


def run(cmd: list[str], stdout: int | None = subprocess.DEVNULL) -> tuple[float, int, str]:
    """Run ``cmd``; return wall seconds, peak RSS (KiB) of that process, and its stdout."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE if stdout is None else stdout, stderr=subprocess.DEVNULL)
    out = proc.stdout.read().decode() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed with {proc.returncode}")
    return wall, usage.ru_maxrss, out


OURS = """
import sys, time
sys.path.insert(0, {repo!r})
from scanner.registry import load_probes
from scanner.replay import replay_paths
r = replay_paths([{path!r}], list(load_probes()))
print(r.packets, len(r.results), r.flows, r.evicted_flows)
"""


def main() -> int:
    ap = argparse.ArgumentParser(description="replay speed and memory vs tshark")
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    ap.add_argument("--keep", action="store_true", help="keep the merged capture in /tmp")
    ap.add_argument("--no-full", action="store_true", help="skip the full tshark dissection")
    args = ap.parse_args()
    t0 = time.perf_counter()
    path, packets = build(Path(args.corpus), args.size_mb)
    size = path.stat().st_size
    print(f"built {path} ({size / 1e6:.0f} MB, {packets} packets) in {time.perf_counter() - t0:.1f} s")
    rows = []
    wall, rss, out = run([sys.executable, "-c", OURS.format(repo=str(REPO), path=str(path))], stdout=None)
    got = out.split()
    print(f"replay: packets {got[0]}, endpoints {got[1]}, flows {got[2]}, flushed early {got[3]}")
    rows.append(("portproof replay", wall, rss))
    tshark = shutil.which("tshark")
    if tshark:
        wall, rss, _ = run([tshark, "-r", str(path), "-q", "-z", "conv,tcp"])
        rows.append(("tshark -q -z conv,tcp", wall, rss))
        if not args.no_full:
            wall, rss, _ = run([tshark, "-r", str(path), "-V"])
            rows.append(("tshark -V (full dissection)", wall, rss))
    else:
        print("tshark not installed: only our replay was measured")
    ours_wall, ours_rss = rows[0][1], rows[0][2]
    print(f"\n{'tool':32} {'wall s':>9} {'pkts/s':>11} {'peak MB':>9} {'time/ours':>10} {'mem/ours':>9}")
    for name, wall, rss in rows:
        print(
            f"{name:32} {wall:9.2f} {packets / wall:11.0f} {rss / 1024:9.1f} "
            f"{wall / ours_wall:10.2f} {rss / ours_rss:9.2f}"
        )
    if not args.keep:
        path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
