#!/usr/bin/env python3
"""Benchmark: ``fingerprint --jobs 1`` against ``--jobs N`` (and a local Dask cluster) on many targets.

    sudo python bench/jobs_scale.py [--targets 4096] [--jobs 2] [--rounds 2] [--concurrency 512] [--dask]

The servers and the network namespace are bench/scale.py's (imported, not copied): Postfix, Dovecot,
nginx and Unbound bound to the wildcard address inside ``ip netns add ppjobs-PID``, whose ``lo`` makes
all of 127.0.0.0/8 local to it and invisible from outside; the namespace and every process in it
are removed at the end, even on failure or Ctrl-C. Targets 127.1.0.1 ... on ``--ports``.

Each round runs ``--jobs 1`` then ``--jobs N`` (alternating, so a load that comes and goes on the
machine hits both alike); with ``--dask`` also a cluster of one ``dask scheduler`` and N
``dask worker`` processes (``--nthreads 1`` each) inside the namespace. Prints services/s, CPU
seconds (the processes and all their children), the speed-up over ``--jobs 1`` of the same round,
and whether each run named the same service, product, version and verdict on every port as the
``--jobs 1`` run of round 1. The machine's load average is printed before each run: on a shared
machine the figures are only as good as the load allowed, and the table says so.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Measured, fingerprint_cmd, machine, need_root, run_measured, table
from scale import FIRST, SERVICES, Namespace, _interrupt, fingerprint_counts, ready, start_servers, write_configs


@dataclass
class Run:
    """One measured scan."""

    what: str
    round: int
    m: Measured
    right: int
    records: int
    notes: str
    load: str
    #: CPU seconds the machine left idle during the run (all cores): near 0, the run was starved
    idle: float = 0.0
    #: ports whose identification differs from the first --jobs 1 run
    differ: int = 0

    @property
    def rate(self) -> float:
        return self.right / self.m.wall if self.m.wall else 0.0


def identities(path: Path) -> dict[tuple[str, int, str], tuple[Any, ...]]:
    """What each port was found to be (no timings): the comparison between runs."""
    out: dict[tuple[str, int, str], tuple[Any, ...]] = {}
    with path.open() as fh:
        for line in fh:
            if line.strip():
                r = json.loads(line)
                out[(r["address"], r["port"], r["transport"])] = (r["state"], r["service"], r["product"],
                                                                  r["version"], r["verdict"])
    return out


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def idle_seconds() -> float:
    """CPU seconds all cores have been idle since boot (/proc/stat: idle + iowait)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")


def start_dask(ns: Namespace, workers: int, port: int = 8786) -> str:
    """A scheduler and ``workers`` single-threaded workers inside the namespace; their address."""
    address = f"tcp://127.0.0.1:{port}"
    ns.start("dask-scheduler", sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
             "--port", str(port), "--no-dashboard")
    for i in range(workers):
        ns.start(f"dask-worker-{i}", sys.executable, "-m", "distributed.cli.dask_worker", address, "--host",
                 "127.0.0.1", "--no-dashboard", "--no-nanny", "--nthreads", "1", "--local-directory",
                 str(ns.work / f"dask-{i}"))
    probe = ("import sys, time, distributed\n"
             "c = distributed.Client(sys.argv[1], timeout=30)\n"
             "t = time.monotonic() + 60\n"
             "while len(c.scheduler_info()['workers']) < int(sys.argv[2]) and time.monotonic() < t:\n"
             "    time.sleep(0.2)\n"
             "sys.exit(0 if len(c.scheduler_info()['workers']) >= int(sys.argv[2]) else 1)\n")
    ok = subprocess.run(ns.cmd(sys.executable, "-c", probe, address, str(workers)), timeout=120,
                        capture_output=True)
    if ok.returncode != 0:
        raise RuntimeError(f"the Dask cluster did not come up: {ok.stderr.decode(errors='replace')[-500:]}")
    return address


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 0 when every run completed and named the same services."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--targets", type=int, default=4096, help="targets (default %(default)s)")
    ap.add_argument("--jobs", type=int, default=2, help="processes of the parallel run (default %(default)s)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of (--jobs 1, --jobs N) (default %(default)s)")
    ap.add_argument("--concurrency", type=int, default=512, help="connections at once, in total")
    ap.add_argument("--ports", default="T:25,80,110,143,U:53", help="ports (default %(default)s)")
    ap.add_argument("--dask", action="store_true", help="also a local Dask cluster of --jobs workers")
    ap.add_argument("--out", type=Path, default=Path("/tmp/portproof-bench/jobs"))
    ap.add_argument("--timeout", type=float, default=1800.0, help="per run, seconds")
    args = ap.parse_args(argv)
    need_root()
    wanted: list[tuple[int, str]] = []
    proto = "tcp"
    for item in args.ports.split(","):
        item = item.strip()
        if item[:2].upper() in ("T:", "U:"):
            proto = "tcp" if item[0].upper() == "T" else "udp"
            item = item[2:]
        if int(item) not in SERVICES or SERVICES[int(item)][0] != proto:
            sys.exit(f"no scale server for {proto}/{item}: choose among {SERVICES}")
        wanted.append((int(item), proto))
    spec = ",".join(f"{'T' if t == 'tcp' else 'U'}:{p}" for p, t in wanted)
    expected = {(p, t): SERVICES[p][1] for p, t in wanted}
    args.out.mkdir(parents=True, exist_ok=True)
    fp = fingerprint_cmd()
    ns = Namespace(f"ppjobs-{os.getpid()}", Path(f"/tmp/ppjobs-{os.getpid()}"))
    ns.work.mkdir(parents=True, exist_ok=True)
    prev_term = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM leaves through the clean-up below
    runs: list[Run] = []
    ok = True
    try:
        ns.create()
        write_configs(ns, args.concurrency)
        start_servers(ns, [p for p, _ in wanted])
        ready(ns, spec)
        scheduler = start_dask(ns, args.jobs) if args.dask else None
        tf = ns.work / "targets.txt"
        tf.write_text("".join(f"{FIRST + i}\n" for i in range(args.targets)))
        print(f"[bench] {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  {machine()}", flush=True)
        print(f"[bench] namespace {ns.name}; {args.targets} targets x {spec}; concurrency {args.concurrency}",
              flush=True)
        baseline: dict[tuple[str, int, str], tuple[Any, ...]] | None = None
        for rnd in range(1, args.rounds + 1):
            contenders = [("--jobs 1", ["--jobs", "1"]), (f"--jobs {args.jobs}", ["--jobs", str(args.jobs)])]
            if scheduler:
                contenders.append((f"dask x{args.jobs}", ["--scheduler", scheduler]))
            for what, extra in contenders:
                out = args.out / f"{what.replace(' ', '').replace('-', '')}-r{rnd}.jsonl"
                cmd = ns.cmd(*fp, "-n", "--no-progress", "-o", "jsonl", "-p", spec, "--concurrency",
                             str(args.concurrency), "-iL", str(tf), *extra)
                load, idle = load_average(), idle_seconds()
                print(f"[bench] load {load}  $ {' '.join(cmd)}", flush=True)
                m = run_measured(cmd, stdout=out, stderr=out.with_suffix(".stderr"), timeout=args.timeout)
                records, right, _failed, notes = fingerprint_counts(out, expected)
                run = Run(what, rnd, m, right, records, notes, load, idle_seconds() - idle)
                found = identities(out)
                if baseline is None:
                    baseline = found
                else:
                    run.differ = sum(1 for k in set(baseline) | set(found) if baseline.get(k) != found.get(k))
                ok = ok and m.returncode == 0 and run.differ == 0
                runs.append(run)
    except KeyboardInterrupt:
        print("[bench] interrupted", flush=True)
        ok = False
    finally:
        ns.destroy()
        signal.signal(signal.SIGTERM, prev_term)
    rows = []
    for r in runs:
        base = next((b for b in runs if b.round == r.round and b.what == "--jobs 1"), None)
        speed = f"{r.rate / base.rate:.2f}x" if base and base.rate else "-"
        cpu = r.m.user + r.m.system
        rows.append([r.round, r.what, f"{r.m.wall:.1f}", f"{r.rate:,.0f}", speed, f"{cpu:.1f}",
                     f"{1000 * cpu / r.right:.2f}" if r.right else "-", f"{r.right}/{r.records}", r.differ,
                     r.load, f"{r.idle:.1f}", r.notes[:60]])
    print(table(["round", "run", "wall s", "services/s", "vs --jobs 1", "CPU s", "CPU ms/service",
                 "identified", "differ", "load before", "idle CPU s", "notes"], rows))
    print(f"[bench] {os.cpu_count()} cores. CPU s: the fingerprint process and its children (for Dask the "
          "client only: the workers are not its children). Load before and idle CPU during each run say how "
          "much of the machine the run had: near-zero idle means other work (and the servers, on the same "
          "cores) set the pace, not the number of processes.", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
