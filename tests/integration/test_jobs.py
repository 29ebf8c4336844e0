"""``--jobs N`` (scanner/shard.py) against the real lab, plus the shard planner and the merge order.

The lab scan is 127.0.0.1-127.0.0.8 on the default profile (22 ports each: 176 records). Records are
compared without what changes from one run to the next by itself, whatever the number of processes:
timings (``elapsed``, the attempts), the servers' clocks (LDAP ``currentTime``, NTLM timestamps),
the association group a DCE/RPC server assigns in its bind_ack, and the raw first bytes of a port
whose concurrent probes race to be answered first (``banner``; the identification stays compared).
Every scan runs in a subprocess with a time limit; processes left behind are found by a marker in
their environment and killed by PID.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scanner.results import ScanResult
from scanner.shard import OrderedMerge, Shard, capture_part_path, plan_shards
from scanner.targets import Target

LAB_RANGE = "127.0.0.1-8"
LAB_PORTS = 176  # 8 hosts x the 22 entries of the default profile
#: keys whose values are clocks (the servers' or ours)
CLOCKS = frozenset({"elapsed", "elapsed_ms", "timestamp", "current_time", "currentTime"})
SCAN_LIMIT = 240.0


def normalise(record: dict[str, Any]) -> dict[str, Any]:
    """A record without what changes between two identical runs (module doc)."""

    def strip(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in CLOCKS}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    r = strip(record)
    r.pop("attempts", None)
    details = r.get("details") or {}
    details.pop("banner", None)
    details.pop("banner_hex", None)
    for ev in r.get("evidence") or []:
        if ev.get("source") == "DCE/RPC bind_ack":
            ev["value"] = "<bind_ack: assoc_group differs per association>"
    return r


def key(record: dict[str, Any]) -> tuple[str, int, str]:
    """(address, port, transport) of a record."""
    return (record["address"], int(record["port"]), record["transport"])


def by_key(records: list[dict[str, Any]]) -> dict[tuple[str, int, str], dict[str, Any]]:
    """Records by key; a key twice fails the test (a duplicated port)."""
    out: dict[tuple[str, int, str], dict[str, Any]] = {}
    for r in records:
        assert key(r) not in out, f"duplicate record for {key(r)}"
        out[key(r)] = r
    return out


def sort_key(k: tuple[str, int, str]) -> tuple[int, int, str]:
    """The merge order of scanner/shard.py (address, port, transport) for IPv4 keys."""
    a, b, c, d = (int(x) for x in k[0].split("."))
    return ((a << 24) | (b << 16) | (c << 8) | d, k[1], k[2])


@pytest.fixture()
def marker() -> Iterator[str]:
    """A marker in the environment of every process a test starts; the leftovers are killed."""
    mark = uuid.uuid4().hex
    yield mark
    leftover = processes_with(mark)
    for pid in leftover:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not leftover, f"processes left behind: {leftover}"


def processes_with(mark: str) -> list[int]:
    """PIDs whose environment holds ``PORTPROOF_TEST_MARK=mark`` (not this process)."""
    needle = f"PORTPROOF_TEST_MARK={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            found.append(int(entry.name))
    return found


def fingerprint(mark: str, *args: str, timeout: float = SCAN_LIMIT) -> subprocess.CompletedProcess[str]:
    """``fingerprint ARGS`` in a subprocess (this interpreter), bounded in time."""
    env = dict(os.environ, PORTPROOF_TEST_MARK=mark)
    return subprocess.run([sys.executable, "-m", "scanner.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def jsonl(text: str) -> list[dict[str, Any]]:
    """The records of a JSON-lines output (split on newlines only: a record's text may hold U+0085
    or U+2028, which ``str.splitlines`` would also split on)."""
    return [json.loads(line) for line in text.split("\n") if line.strip()]


def lab_scan(mark: str, *extra: str) -> list[dict[str, Any]]:
    """The lab scan's records (asserting a clean exit)."""
    proc = fingerprint(mark, LAB_RANGE, "-n", "-o", "jsonl", "--no-progress", *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return jsonl(proc.stdout)


def assert_same_records(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    """Same ports, each once, with the same normalised record."""
    g, w = by_key(got), by_key(want)
    assert set(g) == set(w), (sorted(set(w) - set(g))[:10], sorted(set(g) - set(w))[:10])
    differ = [k for k in w if normalise(g[k]) != normalise(w[k])]
    assert not differ, [(k, normalise(g[k]), normalise(w[k])) for k in differ[:2]]


# ------------------------------------------------------------------ the lab
@pytest.mark.lab
def test_jobs_2_same_records_as_jobs_1(lab: object, marker: str) -> None:
    one = lab_scan(marker, "--jobs", "1")
    two = lab_scan(marker, "--jobs", "2")
    assert len(one) == LAB_PORTS and len(two) == LAB_PORTS
    assert_same_records(two, one)
    # the merge order: sorted by address, port, transport (the table's order)
    keys = [key(r) for r in two]
    assert keys == sorted(keys, key=sort_key)
    # the lab answers: this is a real comparison, not of 176 closed ports
    assert sum(1 for r in two if r["verdict"] == "confirmed") >= 20


@pytest.mark.lab
def test_jobs_json_document_identical_to_jobs_1(lab: object, marker: str) -> None:
    """The JSON document lists the same records in the same order at --jobs 1 and 2."""
    docs = []
    for n in ("1", "2"):
        proc = fingerprint(marker, LAB_RANGE, "-n", "-o", "json", "--no-progress", "--jobs", n,
                           "-p", "25,110,143,389,53,U:53")
        assert proc.returncode == 0, proc.stderr[-3000:]
        docs.append(json.loads(proc.stdout)["results"])
    assert [key(r) for r in docs[0]] == [key(r) for r in docs[1]]
    assert [normalise(r) for r in docs[0]] == [normalise(r) for r in docs[1]]


@pytest.mark.lab
def test_resume_across_processes(lab: object, marker: str, tmp_path: Path) -> None:
    """``--resume`` with --jobs 2: the ports already in the file are skipped, the others appended."""
    full = lab_scan(marker, "--jobs", "2", "-p", "25,389,53,U:53")
    assert len(full) == 32
    done = [r for r in full if r["address"] in ("127.0.0.1", "127.0.0.4", "127.0.0.6")]
    done = done[:-1]  # and one port of 127.0.0.6 left to do: a host split between runs
    resume = tmp_path / "scan.jsonl"
    resume.write_text("".join(json.dumps(r) + "\n" for r in done))
    proc = fingerprint(marker, LAB_RANGE, "-n", "-o", "jsonl", "--no-progress", "--jobs", "2",
                       "-p", "25,389,53,U:53", "--resume", str(resume))
    assert proc.returncode == 0, proc.stderr[-3000:]
    new = jsonl(proc.stdout)
    assert {key(r) for r in new} == {key(r) for r in full} - {key(r) for r in done}
    assert_same_records(jsonl(resume.read_text()), full)


@pytest.mark.lab
def test_interrupt_writes_every_finished_port_once(lab: object, marker: str, tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) mid-scan: one summary, exit 130, each finished port written once, no process
    left; the resume file then completes the scan to the same records as an uninterrupted one."""
    out = tmp_path / "scan.jsonl"
    env = dict(os.environ, PORTPROOF_TEST_MARK=marker)
    cmd = [sys.executable, "-m", "scanner.cli", LAB_RANGE, "-n", "-o", "jsonl", "--no-progress", "--jobs", "2",
           "--resume", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        # interrupt once the processes have written something: mid-scan, not before it started
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and out.stat().st_size > 0:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the scan ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 130, stderr[-2000:]
    got = jsonl(stdout)
    assert 0 < len(got) < LAB_PORTS
    by_key(got)  # no port twice
    assert stderr.count("interrupted:") == 1
    assert f"interrupted: {len(got)} of {LAB_PORTS} ports scanned" in stderr
    assert {key(r) for r in jsonl(out.read_text())} == {key(r) for r in got}
    assert not processes_with(marker)
    # --resume completes it
    rest = fingerprint(marker, LAB_RANGE, "-n", "-o", "jsonl", "--no-progress", "--jobs", "2", "--resume", str(out))
    assert rest.returncode == 0, rest.stderr[-2000:]
    assert len(by_key(jsonl(out.read_text()))) == LAB_PORTS


@pytest.mark.lab
def test_record_joins_one_capture_per_process(lab: object, marker: str, tmp_path: Path) -> None:
    """``--record FILE`` with --jobs 2: one pcapng file (a section per process) that replays to the
    services of both processes' hosts; the per-process parts are gone."""
    cap = tmp_path / "scan.pcapng"
    proc = fingerprint(marker, "127.0.0.1", "127.0.0.2", "-p", "25,389", "-n", "-o", "jsonl", "--no-progress",
                       "--jobs", "2", "--record", str(cap))
    assert proc.returncode == 0, proc.stderr[-2000:]
    live = {key(r): r for r in jsonl(proc.stdout)}
    assert sorted(os.listdir(tmp_path)) == ["scan.pcapng"]
    assert cap.read_bytes().count(bytes.fromhex("0a0d0d0a")) >= 2  # two Section Header Blocks
    replay = fingerprint(marker, "replay", str(cap), "-o", "jsonl")
    assert replay.returncode == 0, replay.stderr[-2000:]
    seen = {key(r): r for r in jsonl(replay.stdout)}
    for k in [("127.0.0.1", 25, "tcp"), ("127.0.0.1", 389, "tcp"), ("127.0.0.2", 389, "tcp")]:
        assert live[k]["product"] and seen[k]["product"] == live[k]["product"], k


# ------------------------------------------------------------------ units (no network)
def _targets(n: int) -> list[Target]:
    return [Target(spec=f"10.0.0.{i}", address=f"10.0.0.{i}") for i in range(n, 0, -1)]


def test_plan_shards_whole_hosts_in_address_order() -> None:
    ts = [*_targets(20), Target(spec="dup", address="10.0.0.3")]  # the same host given twice
    skip = frozenset({("10.0.0.3", 25, "tcp"), ("10.0.0.9", 25, "tcp"), ("192.0.2.1", 25, "tcp")})
    shards = plan_shards(ts, entries=5, slots=4, slot_concurrency=2, skip=skip)
    flat = [t.address for s in shards for t in s.targets]
    hosts = list(dict.fromkeys(flat))
    assert hosts == [f"10.0.0.{i}" for i in range(1, 21)]
    assert flat.count("10.0.0.3") == 2
    owner = {t.address: s.index for s in shards for t in s.targets}
    assert len({owner["10.0.0.3"]}) == 1
    assert [s.index for s in shards] == list(range(len(shards)))
    assert len(shards) >= 8  # at least two per slot when the hosts allow it
    assert sum(len(s.skip) for s in shards) == 2  # a skipped port outside the scan is ignored
    assert ("10.0.0.9", 25, "tcp") in shards[owner["10.0.0.9"]].skip


def test_ordered_merge_writes_in_shard_order_once() -> None:
    out: list[int] = []

    def rec(port: int) -> ScanResult:
        return ScanResult(target="t", address="10.0.0.1", port=port, transport="tcp", state="open", verdict="confirmed",
                          reason="")

    merge = OrderedMerge(lambda r: out.append(r.port))
    assert merge.add(2, [rec(5)])
    assert merge.add(0, [rec(1), rec(2)])
    assert out == [1, 2]
    assert not merge.add(0, [rec(1)])  # a shard run twice (lost worker) is written once
    assert merge.add(1, [rec(3)])
    assert out == [1, 2, 3, 5]
    merge.flush({4: [rec(9)], 3: [rec(7)]})
    assert out == [1, 2, 3, 5, 7, 9]


def test_capture_part_path() -> None:
    assert capture_part_path("/x/scan.pcapng", "job2") == "/x/scan.job2.pcapng"
    assert capture_part_path("scan", "shard00003") == "scan.shard00003"
    assert capture_part_path(".hidden", "job1") == ".hidden.job1"
    assert Shard(0, tuple(_targets(2)), frozenset({("10.0.0.1", 25, "tcp")})).items(3) == 5
