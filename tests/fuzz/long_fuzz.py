#!/usr/bin/env python3
"""A long fuzz run, for a person to start and leave running for minutes.

    python tests/fuzz/long_fuzz.py --minutes 10            # every target, round robin
    python tests/fuzz/long_fuzz.py --minutes 2 --only dns  # targets whose name contains "dns"
    python tests/fuzz/long_fuzz.py --list

Same targets as the CI property tests (``fuzz_targets.py``) but far more inputs: each iteration
takes a real seed (or random bytes), applies a random stack of mutations (bit flips, byte
overwrites, truncation, splicing two seeds, duplication, extreme length fields) and checks that
the target returns or raises its allowed exception, within a time bound. A failure is printed
with the target name, the exception and the input as hex (and written to ``--crash-dir``);
the run keeps going and the exit code is 1 if anything failed. Seeded (``--seed``), so a run can
be repeated exactly.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fuzz_targets import Target, build_targets

EXTREMES = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\x00\x00", b"\xff\xff", b"\x80\x00\x00\x00",
            b"\xff\xff\xff\xff", b"\x84\x80\x00\x00\x00", b"\xc0\x0c", b"\r\n", b"\n", b".\r\n",
            b"{99999999}\r\n", b"\x1b[2J", b"\xe2\x80\xae"]
LENGTHS = [0, 1, 7, 0x7F, 0x80, 0xFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF]


def mutate(rng: random.Random, seeds: list[bytes]) -> bytes:
    """One fuzz input: a mutated seed (90 %) or random bytes."""
    usable = [s for s in seeds if s]
    if not usable or rng.random() < 0.1:
        return rng.randbytes(rng.randint(0, 4096))
    buf = bytearray(rng.choice(usable))
    for _ in range(rng.randint(1, 8)):
        op = rng.randint(0, 7)
        pos = rng.randint(0, max(0, len(buf) - 1))
        if op == 0 and buf:
            buf[pos] ^= 1 << rng.randint(0, 7)
        elif op == 1 and buf:
            buf[pos] = rng.randint(0, 255)
        elif op == 2:
            del buf[rng.randint(0, len(buf)):]
        elif op == 3:
            buf[pos:pos] = rng.choice(EXTREMES)
        elif op == 4 and buf:
            end = min(len(buf), pos + rng.randint(1, 128))
            buf[pos:pos] = buf[pos:end] * rng.randint(1, 8)
        elif op == 5 and len(buf) > pos + 4:
            width = rng.choice([1, 2, 4])
            value = rng.choice(LENGTHS) & ((1 << (8 * width)) - 1)
            buf[pos:pos + width] = value.to_bytes(width, rng.choice(["big", "little"]))
        elif op == 6:
            other = rng.choice(usable)
            cut = rng.randint(0, len(other))
            buf = buf[:pos] + bytearray(other[cut:])
        elif op == 7 and buf:
            del buf[pos:pos + rng.randint(1, 16)]
    return bytes(buf[:131072])


def check(target: Target, data: bytes, bound: float) -> str | None:
    """None when the target behaved; else a description of the failure."""
    t0 = time.monotonic()
    try:
        result = target.fn(data)
    except target.ok:
        result = None
    except Exception:
        return traceback.format_exc(limit=6)
    elapsed = time.monotonic() - t0
    if elapsed > bound:
        return f"took {elapsed:.2f} s (bound {bound} s)"
    if ".frame" in target.name and result is not None and not (isinstance(result, int) and 0 < result <= len(data)):
        return f"framer returned {result!r} for {len(data)} bytes"
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the fuzz loop; exit 1 when any target misbehaved."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=5.0, help="how long to run (default 5)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--only", default="", help="only targets whose name contains this")
    p.add_argument("--skip", action="append", default=[], help="skip targets whose name contains this")
    p.add_argument("--bound", type=float, default=2.0, help="seconds one call may take (default 2)")
    p.add_argument("--max-failures", type=int, default=50, help="stop after this many failures")
    p.add_argument("--crash-dir", type=Path, default=None, help="write failing inputs here")
    p.add_argument("--list", action="store_true", help="list the targets and exit")
    args = p.parse_args(argv)
    targets = [t for t in build_targets() if args.only in t.name and not any(k in t.name for k in args.skip)]
    if args.list or not targets:
        for t in targets:
            print(f"{t.name:40} {len([s for s in t.seeds if s])} seed(s)")
        return 0 if targets else 2
    rng = random.Random(args.seed)
    deadline = time.monotonic() + args.minutes * 60
    counts = dict.fromkeys((t.name for t in targets), 0)
    failures = 0
    seen: set[tuple[str, str]] = set()
    last_report = time.monotonic()
    i = 0
    while time.monotonic() < deadline and failures < args.max_failures:
        target = targets[i % len(targets)]
        i += 1
        data = mutate(rng, target.seeds)
        problem = check(target, data, args.bound)
        counts[target.name] += 1
        if problem is not None:
            key = (target.name, re.sub(r"\d+", "N", problem.strip().splitlines()[-1][:200]))
            if key in seen:
                continue
            seen.add(key)
            failures += 1
            print(f"\n=== FAILURE in {target.name}: {key[1]}\n{problem}\ninput ({len(data)} bytes): "
                  f"{data[:512].hex()}{'...' if len(data) > 512 else ''}", flush=True)
            if args.crash_dir is not None:
                args.crash_dir.mkdir(parents=True, exist_ok=True)
                (args.crash_dir / f"{target.name}-{failures}.bin").write_bytes(data)
        if time.monotonic() - last_report > 30:
            last_report = time.monotonic()
            print(f"[{i} inputs, {failures} distinct failure(s)]", flush=True)
    print(f"\n{i} inputs over {len(targets)} targets, {failures} distinct failure(s)")
    for name, n in counts.items():
        print(f"  {name:40} {n}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
