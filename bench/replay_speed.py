"""Speed and peak memory of the pcap replay on large captures, beside tshark.

Builds large classic pcaps in /tmp/portproof-bench by merging the public corpus's Ethernet pcap
files many times over (timestamps shifted so the copies follow each other, client ports shifted per
copy so every copy is a new set of flows; the server endpoints stay the same, as in a long capture
of one network), by default one of about 210 MB (``--sizes 200``: MiB) and one of 1 GiB. Then, for
each file, in the same run, each in its own process:

* our replay with one process (``replay_paths(..., jobs=1)``),
* our replay with the default of ``fingerprint replay`` (``jobs=0``: one process per core, which
  for one file means one process: files are not split by default),
* our replay with the file split by endpoint over one process per core (``--split-mb 1``),
* ``tshark -r FILE -q -z conv,tcp`` (TCP conversation table),
* a full tshark dissection (``tshark -r FILE -V`` to /dev/null; first file only, ``--no-full``
  skips it),

and prints wall time, CPU time (user + system, the process and its children), packets per second
of wall and of CPU time, and peak memory: the peak of the sum of the RSS of the process and all
its children, sampled every 50 ms (for one process that is its peak RSS). CPU time is the number
to compare when the machine is busy with other work; wall time is what a user waits.

    python bench/replay_speed.py [--sizes 200,1024] [--corpus DIR] [--keep] [--no-full]
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import subprocess
import sys
import threading
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


def _tree_rss_kib(root: int) -> int:
    """The summed RSS (KiB) of ``root`` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/status") as f:
                ppid = vm = 0
                for line in f:
                    if line.startswith("PPid:"):
                        ppid = int(line.split()[1])
                    elif line.startswith("VmRSS:"):
                        vm = int(line.split()[1])
        except OSError:
            continue
        children.setdefault(ppid, []).append(int(d))
        rss[int(d)] = vm
    total, todo = 0, [root]
    for _ in range(10000):
        if not todo:
            break
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


def run(cmd: list[str], stdout: int | None = subprocess.DEVNULL) -> tuple[float, float, int, str]:
    """Run ``cmd``; return wall seconds, CPU seconds (process and children), the peak of the
    summed RSS (KiB) of the process tree, and its stdout."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE if stdout is None else stdout, stderr=subprocess.DEVNULL)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], _tree_rss_kib(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = proc.stdout.read().decode() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed with {proc.returncode}")
    # wait4's usage covers the process and the children it waited for (our worker processes)
    return wall, usage.ru_utime + usage.ru_stime, max(peak[0], usage.ru_maxrss), out


OURS = """
import sys
sys.path.insert(0, {repo!r})
from scanner.registry import load_probes
from scanner.replay import replay_paths
if __name__ == "__main__":
    r = replay_paths([{path!r}], list(load_probes()), jobs={jobs}, split_bytes={split})
    print(r.packets, len(r.results), r.flows, r.evicted_flows, r.jobs)
"""


def main() -> int:
    ap = argparse.ArgumentParser(description="replay speed and memory vs tshark")
    ap.add_argument("--sizes", default="200,1024", help="capture sizes to build, MiB, comma-separated")
    ap.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    ap.add_argument("--keep", action="store_true", help="keep the merged captures in /tmp")
    ap.add_argument("--no-full", action="store_true", help="skip the full tshark dissection")
    args = ap.parse_args()
    tshark = shutil.which("tshark")
    if not tshark:
        print("tshark not installed: only our replay is measured")
    for n, size_mb in enumerate(int(x) for x in args.sizes.split(",")):
        t0 = time.perf_counter()
        path, packets = build(Path(args.corpus), size_mb)
        size = path.stat().st_size
        print(f"\n== {path} ({size / 1e6:.0f} MB, {packets} packets, built in {time.perf_counter() - t0:.1f} s)")
        rows = []
        ours = [
            (1, None, "portproof replay --jobs 1"),
            (0, None, f"portproof replay (default --jobs 0, {os.cpu_count()} cores)"),
            (0, 1, "portproof replay --jobs 0 --split-mb 1"),
        ]
        for jobs, split, name in ours:
            script = OURS.format(repo=str(REPO), path=str(path), jobs=jobs, split=split and split << 20)
            wall, cpu, rss, out = run([sys.executable, "-c", script], stdout=None)
            got = out.split()
            print(f"{name}: packets {got[0]}, endpoints {got[1]}, flows {got[2]}, flushed early {got[3]}, "
                  f"processes {got[4]}")
            rows.append((name, wall, cpu, rss))
        if tshark:
            wall, cpu, rss, _ = run([tshark, "-r", str(path), "-q", "-z", "conv,tcp"])
            rows.append(("tshark -q -z conv,tcp", wall, cpu, rss))
            if not args.no_full and n == 0:
                wall, cpu, rss, _ = run([tshark, "-r", str(path), "-V"])
                rows.append(("tshark -V (full dissection)", wall, cpu, rss))
        print(f"\n{'tool':40} {'wall s':>7} {'cpu s':>7} {'pkts/s wall':>12} {'pkts/s cpu':>11} {'peak MB':>8}")
        for name, wall, cpu, rss in rows:
            print(f"{name:40} {wall:7.2f} {cpu:7.2f} {packets / wall:12.0f} {packets / cpu:11.0f} {rss / 1024:8.1f}")
        if tshark:
            conv = next(r for r in rows if r[0].startswith("tshark -q"))
            for r in rows[: len(ours)]:
                print(f"{r[0]}: {conv[1] / r[1]:.2f}x tshark conv's speed (wall), {conv[2] / r[2]:.2f}x (cpu)")
        if not args.keep:
            path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
