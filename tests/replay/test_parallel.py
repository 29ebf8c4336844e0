"""Parallel replay: the same results, in the same order, with one process or several."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from scanner.registry import load_probes
from scanner.replay import ReplayProgress, ReplayReport, _Endpoint, merge_endpoints, replay_paths, shard_of
from scanner.replay.parallel import plan
from scanner.results import ScanResult

REPO = Path(__file__).resolve().parents[2]
CAPTURES = [str(REPO / "tests" / "data" / "pcaps-public"), str(REPO / "pcaps")]


def _view(report: ReplayReport) -> list[tuple[object, ...]]:
    """Everything a user sees of each result, in order (the elapsed time aside)."""
    out: list[tuple[object, ...]] = []
    for r in report.results:
        src = r.source
        assert src is not None
        out.append((r.address, r.port, r.transport, r.service, r.product, r.version, r.verdict, r.confidence,
                    r.reason, src.file, src.flows, src.packets, src.first_seen, src.last_seen))
    return out


def test_jobs_give_the_results_of_one_process_in_the_same_order() -> None:
    probes = list(load_probes())
    one = replay_paths(CAPTURES, probes, jobs=1)
    calls: list[ReplayProgress] = []
    # split_bytes=0: every file in two shards, so that the flows of each are hashed by endpoint
    two = replay_paths(CAPTURES, probes, jobs=2, split_bytes=0, progress=calls.append)
    assert two.jobs == 2
    assert _view(two) == _view(one) and len(one.results) > 60
    for name in ("files", "packets", "decoded", "flows", "fragments_reassembled", "fragments_dropped"):
        assert getattr(two, name) == getattr(one, name), name
    assert two.unknown == one.unknown
    assert [str(e) for e in two.errors] == [str(e) for e in one.errors] and one.errors
    assert calls and calls[-1].done_bytes == calls[-1].total_bytes and calls[-1].packets == one.packets
    # whole files over the processes (a split threshold no file reaches: the parallel path all the same)
    files = replay_paths(CAPTURES, probes, jobs=2, split_bytes=1 << 40)
    assert files.jobs == 2 and _view(files) == _view(one)


def test_cli_jobs_output_is_identical(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))

    def run(*extra: str) -> list[dict[str, Any]]:
        proc = subprocess.run([sys.executable, "-m", "scanner.cli", "replay", *CAPTURES, "-o", "jsonl", *extra],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr and "\x1b" not in proc.stderr  # no progress bar off a terminal
        recs = [json.loads(line) for line in proc.stdout.splitlines()]
        for r in recs:  # times differ from run to run
            r.pop("elapsed", None)
            for a in r.get("attempts") or []:
                a.pop("elapsed_ms", None)
        return recs

    # --split-mb 1: the parallel path even for this small corpus (files under 1 MiB whole, the
    # bigger ones split by endpoint)
    assert run("--jobs", "2", "--split-mb", "1") == run("--jobs", "1")


@given(st.binary(min_size=4, max_size=4), st.integers(1, 1023), st.binary(min_size=4, max_size=4),
       st.integers(1024, 65535), st.integers(2, 8))
def test_both_directions_of_a_flow_land_in_the_same_shard(
    server: bytes, sport: int, client: bytes, cport: int, shards: int
) -> None:
    s = shard_of(server, sport, client, cport, shards)
    assert s == shard_of(client, cport, server, sport, shards)
    assert 0 <= s < shards
    # the server's shard does not depend on the client
    assert s == shard_of(server, sport, b"\x0a\x00\x00\x01", 50000, shards)


def test_merge_adds_counts_and_keeps_the_best_result_lower_shard_first() -> None:
    key = (b"\xc0\x00\x02\x19", 25, "tcp")

    def res(conf: int, product: str) -> ScanResult:
        return ScanResult(target="192.0.2.25", address="192.0.2.25", port=25, transport="tcp", state="open",
                          service="smtp", verdict="identified", confidence=conf, product=product)

    a = {key: _Endpoint(best=res(8, "A"), flows=2, packets=10, first=5.0, last=6.0)}
    b = {key: _Endpoint(best=res(8, "B"), flows=1, packets=4, first=1.0, last=9.0)}
    merged = merge_endpoints([a, b])[key]
    assert (merged.flows, merged.packets, merged.first, merged.last) == (3, 14, 1.0, 9.0)
    assert merged.best is not None and merged.best.product == "A"  # a tie: the lower shard's
    c = {key: _Endpoint(best=res(10, "C"), flows=1, packets=1)}
    best = merge_endpoints([{key: _Endpoint(best=res(8, "A"))}, c])[key].best
    assert best is not None and best.product == "C"


def test_plan_splits_only_big_files(tmp_path: Path) -> None:
    small, big = tmp_path / "small.pcap", tmp_path / "big.pcap"
    small.write_bytes(b"x" * 10)
    big.write_bytes(b"x" * 1000)
    jobs = plan([str(small), str(big)], 3, split_bytes=100)
    assert sorted((i, s, n) for i, _, s, n in jobs) == [(0, 0, 1), (1, 0, 3), (1, 1, 3), (1, 2, 3)]
    assert jobs[0][0] == 1  # the big file's shards first
