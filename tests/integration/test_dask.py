"""``--scheduler`` (scanner/shard.py) on a real local Dask cluster against the real lab.

The cluster is started here the usual way: one ``dask scheduler`` process and two ``dask worker``
processes (``--no-nanny``: each worker is its own process, so killing it loses the worker for real),
all bound to 127.0.0.1 without dashboards, with a marker in their environment so that none is left
behind (killed by PID). Every wait is bounded. Records are compared as in test_jobs.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from tests.integration import test_jobs
from tests.integration.test_jobs import (
    LAB_PORTS,
    LAB_RANGE,
    SCAN_LIMIT,
    assert_same_records,
    by_key,
    fingerprint,
    jsonl,
    key,
    lab_scan,
    sort_key,
)

distributed = pytest.importorskip("distributed", reason="the cluster extra: pip install 'portproof[cluster]'")

#: the marker fixture of test_jobs.py (processes left behind are found and killed)
marker = test_jobs.marker
START_LIMIT = 90.0
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Cluster:
    """A local Dask cluster: the scheduler's address and the worker processes by name."""

    address: str
    workers: dict[str, subprocess.Popen[bytes]]
    scheduler: subprocess.Popen[bytes]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


@pytest.fixture()
def cluster(marker: str, tmp_path: Path) -> Iterator[Cluster]:
    """``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1 (2 threads each)."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, PORTPROOF_TEST_MARK=marker)
    logs = tmp_path / "dask-logs"
    logs.mkdir()
    procs: list[subprocess.Popen[bytes]] = []
    handles = []

    def log(name: str) -> BinaryIO:
        handles.append(open(logs / f"{name}.log", "wb"))  # closed in the finally below
        return handles[-1]

    # cwd: the client's (the repository), so every process sees the same installed metadata (a
    # worker that loads other probes than the client refuses its shards, see RegistryArgs.expect)
    try:
        sched = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--no-dashboard"],
            stdout=subprocess.DEVNULL, stderr=log("scheduler"), env=env, cwd=REPO)
        procs.append(sched)
        workers = {}
        for name in ("w1", "w2"):
            w = subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", address, "--host", "127.0.0.1",
                 "--no-dashboard", "--no-nanny", "--nthreads", "2", "--name", name,
                 "--local-directory", str(tmp_path / name)],
                stdout=subprocess.DEVNULL, stderr=log(name), env=env, cwd=REPO)
            procs.append(w)
            workers[name] = w
        client = None
        deadline = time.monotonic() + START_LIMIT
        while time.monotonic() < deadline:
            assert all(p.poll() is None for p in procs), "a cluster process died: " + "; ".join(
                f.name + ": " + f.read_text()[-500:] for f in logs.iterdir())
            try:
                if client is None:
                    client = distributed.Client(address, timeout=5, set_as_default=False)
                if len(client.scheduler_info()["workers"]) == 2:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        else:
            pytest.fail("the Dask cluster did not come up in time")
        if client is not None:
            client.close()
        yield Cluster(address, workers, sched)
    finally:
        _stop(procs[1:])
        _stop(procs[:1])
        for h in handles:
            h.close()


@pytest.mark.lab
def test_dask_cluster_same_records_as_local(lab: object, cluster: Cluster, marker: str) -> None:
    local = lab_scan(marker, "--jobs", "1")
    remote = lab_scan(marker, "--scheduler", cluster.address)
    assert len(remote) == LAB_PORTS
    assert_same_records(remote, local)
    keys = [key(r) for r in remote]
    assert keys == sorted(keys, key=sort_key)


@pytest.mark.lab
def test_killed_worker_loses_no_port_and_duplicates_none(lab: object, cluster: Cluster, marker: str) -> None:
    """SIGKILL one worker while it scans a shard: the scheduler runs that shard elsewhere; the
    output still holds every port once, with the records of a local scan."""
    local = lab_scan(marker, "--jobs", "1")
    env = dict(os.environ, PORTPROOF_TEST_MARK=marker)
    scan = subprocess.Popen([sys.executable, "-m", "scanner.cli", LAB_RANGE, "-n", "-o", "jsonl", "--no-progress",
                             "--scheduler", cluster.address], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    client = distributed.Client(cluster.address, timeout=10, set_as_default=False)
    victim = cluster.workers["w1"]
    killed_with: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and scan.poll() is None:
            info = client.scheduler_info()["workers"]
            addr = next((a for a, w in info.items() if w.get("name") == "w1"), None)
            busy = client.processing(workers=[addr]).get(addr, ()) if addr else ()
            shards = [k for k in busy if "portproof-scan" in str(k)]
            if shards:
                assert info[addr].get("pid") in (None, victim.pid)
                victim.send_signal(signal.SIGKILL)
                killed_with = [str(k) for k in shards]
                break
            time.sleep(0.05)
        assert killed_with, "worker w1 never got a shard to scan"
        victim.wait(timeout=10)
        stdout, stderr = scan.communicate(timeout=SCAN_LIMIT)
    finally:
        client.close()
        if scan.poll() is None:
            scan.kill()
            scan.communicate(timeout=10)
    assert scan.returncode == 0, stderr[-3000:]
    got = jsonl(stdout)
    assert len(got) == LAB_PORTS
    by_key(got)  # each port once
    assert_same_records(got, local)


@pytest.mark.lab
def test_dask_record_one_capture_per_shard(lab: object, cluster: Cluster, marker: str, tmp_path: Path) -> None:
    cap = tmp_path / "caps" / "scan.pcapng"
    cap.parent.mkdir()
    proc = fingerprint(marker, "127.0.0.1", "127.0.0.2", "-p", "25,389", "-n", "-o", "jsonl", "--no-progress",
                       "--scheduler", cluster.address, "--record", str(cap))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(os.listdir(cap.parent)) == ["scan.shard00000.pcapng", "scan.shard00001.pcapng"]
    replay = fingerprint(marker, "replay", str(cap.parent), "-o", "jsonl")
    assert replay.returncode == 0, replay.stderr[-2000:]
    live, seen = by_key(jsonl(proc.stdout)), by_key(jsonl(replay.stdout))
    for k in [("127.0.0.1", 25, "tcp"), ("127.0.0.2", 389, "tcp")]:
        assert live[k]["product"] and seen[k]["product"] == live[k]["product"], k


def test_dask_replay_same_as_local(cluster: Cluster, marker: str) -> None:
    """``replay --scheduler``: the bundled captures, one task per file, as the local replay."""
    local = fingerprint(marker, "replay", str(REPO / "pcaps"), "-o", "jsonl")
    remote = fingerprint(marker, "replay", str(REPO / "pcaps"), "-o", "jsonl", "--scheduler", cluster.address)
    assert local.returncode == 0 and remote.returncode == 0, (local.stderr[-1500:], remote.stderr[-1500:])
    a, b = jsonl(local.stdout), jsonl(remote.stdout)
    assert len(a) >= 10
    assert [key(r) for r in b] == [key(r) for r in a]

    def timeless(r: dict[str, Any]) -> dict[str, Any]:  # a replay has no other clock of its own
        return {k: [{f: v for f, v in a.items() if f != "elapsed_ms"} for a in x] if k == "attempts" else x
                for k, x in r.items() if k != "elapsed"}

    pairs = [(timeless(x), timeless(y)) for x, y in zip(a, b, strict=True)]
    differ = [(key(x), k) for x, y in pairs for k in x if x[k] != y.get(k)]
    assert not differ, differ[:10]


def test_scheduler_without_dask_says_how_to_install(marker: str, tmp_path: Path) -> None:
    """Without the extra, ``--scheduler`` names the install command (no traffic is sent)."""
    fake = tmp_path / "nodask" / "distributed"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('distributed is not installed (test)')\n")
    env = dict(os.environ, PORTPROOF_TEST_MARK=marker,
               PYTHONPATH=os.pathsep.join([str(fake.parent), os.environ.get("PYTHONPATH", "")]))
    for args in (["127.0.0.1", "127.0.0.2", "-p", "25"], ["replay", str(REPO / "pcaps")]):
        proc = subprocess.run([sys.executable, "-m", "scanner.cli", *args, "--scheduler", "tcp://127.0.0.1:9"],
                              capture_output=True, text=True, timeout=60, env=env)
        assert proc.returncode == 1, proc.stderr
        assert "pip install 'portproof[cluster]'" in proc.stderr
        assert "Traceback" not in proc.stderr
