#!/usr/bin/env python3
"""Benchmark 3: the CLI's fixed cost (start-up), against the interpreter's own.

    python bench/startup.py [--runs N]

Times, each N times (median and min reported), in the same invocation:

* ``python -c pass`` (the floor: the interpreter alone, with site-packages);
* ``python -c "import scanner.cli"`` (the CLI module's own imports);
* ``fingerprint --help``;
* ``fingerprint -n --no-progress -p T:1 127.0.0.1`` (a one-port scan of a closed port: the
  registry, the probes and the engine are loaded, one connection is refused);
* the same ``--help`` through the ``fingerprint`` found on PATH when it differs (a pyenv shim costs
  a bash start of its own).

Then lists the modules a one-port scan imports that are known to be heavy (scapy's layers,
cryptography, rich): they must be lazy. Aim: under 0.3 s for ``--help``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, fingerprint_cmd, machine, run_measured, table

HEAVY = ("scapy", "cryptography", "rich", "ldap3", "dns", "msgspec", "uvloop", "ssl", "asyncio", "certifi",
         "impacket")


def closed_port() -> int:
    """A TCP port on 127.0.0.1 that refuses connections now (1 unless something listens there)."""
    for port in (1, 9, 7, 13):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                continue
        except ConnectionRefusedError:
            return port
        except OSError:
            continue
    sys.exit("no closed port found on 127.0.0.1 among 1, 9, 7, 13")


def heavy_imports(cmd_args: list[str] | None) -> dict[str, float]:
    """Cumulative import time (ms) of the heavy packages a CLI run imports (-X importtime).

    ``None`` measures ``python -c pass`` itself (what site and .pth files import before any CLI code).
    """
    code = "pass" if cmd_args is None else "import sys; from scanner.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code, *(cmd_args or [])], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    found: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line.split("|")
        if len(parts) < 3:
            continue
        top = parts[2].strip()
        if top in HEAVY and top not in found:  # first import is where the package is really loaded
            try:
                found[top] = int(parts[1]) / 1000
            except ValueError:
                pass
    return found


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 1 when ``--help`` misses the 0.3 s aim."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--runs", type=int, default=15, help="runs of each command (default %(default)s)")
    args = ap.parse_args(argv)
    runs = max(3, min(args.runs, 200))
    fp = fingerprint_cmd()
    port = closed_port()
    cases: list[tuple[str, list[str]]] = [
        ("python -c pass", [sys.executable, "-c", "pass"]),
        ("python -c 'import scanner.cli'", [sys.executable, "-c", "import scanner.cli"]),
        ("fingerprint --help", [*fp, "--help"]),
        (f"fingerprint -p T:{port} 127.0.0.1 (closed)", [*fp, "-n", "--no-progress", "-p", f"T:{port}", "127.0.0.1"]),
    ]
    on_path = shutil.which("fingerprint")
    if on_path and Path(on_path).resolve() != Path(fp[0]).resolve():
        cases.append((f"{on_path} --help (PATH)", [on_path, "--help"]))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    print(f"[bench] {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  {machine()}")
    print(f"[bench] fingerprint = {' '.join(fp)}; {runs} runs each, interleaved")
    walls: dict[str, list[float]] = {name: [] for name, _ in cases}
    rss: dict[str, int] = {}
    codes: dict[str, set[int]] = {name: set() for name, _ in cases}
    for _ in range(runs):  # interleaved, so machine noise hits every case alike
        for name, cmd in cases:
            m = run_measured(cmd, timeout=60, env=env, cwd=REPO)
            walls[name].append(m.wall)
            rss[name] = max(rss.get(name, 0), m.maxrss_kib)
            codes[name].add(m.returncode)
    floor = statistics.median(walls[cases[0][0]])
    rows = []
    for name, _ in cases:
        med = statistics.median(walls[name])
        rows.append([name, f"{med * 1000:.0f}", f"{min(walls[name]) * 1000:.0f}", f"{(med - floor) * 1000:.0f}",
                     f"{med / floor:.1f}x", f"{rss[name] / 1024:.0f}", ",".join(map(str, sorted(codes[name])))])
    print()
    print(table(["command", "median ms", "min ms", "over python ms", "ratio", "RSS MiB", "exit"], rows))
    help_med = statistics.median(walls[cases[2][0]])
    floor_imports = heavy_imports(None)
    if floor_imports:
        print(f"(already imported by python -c pass, via site/.pth files: {', '.join(sorted(floor_imports))})")
    print(f"\n--help: {help_med * 1000:.0f} ms median (aim < 300 ms): {'OK' if help_med < 0.3 else 'MISSED'}")
    for label, cli_args in (("--help", ["--help"]), ("one closed port", ["-n", "--no-progress", "-p", f"T:{port}",
                                                                          "127.0.0.1"])):
        heavy = {k: v for k, v in heavy_imports(cli_args).items() if k not in floor_imports}
        shown = ", ".join(f"{k} {v:.0f} ms" for k, v in sorted(heavy.items(), key=lambda kv: -kv[1])) or "none"
        print(f"heavy top-level imports during {label}: {shown}")
    return 0 if help_med < 0.3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
