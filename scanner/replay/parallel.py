"""Parallel replay: files, and (optionally) the flows of big files hashed by endpoint, over processes.

Each job is one file, or (``split_bytes``) one shard of a big file: the shard's process reads the
whole file and keeps only the flows whose :func:`~scanner.replay.shard_of` is its own, so every
flow of a server endpoint is replayed, cut off and reconnected in one process. The parent merges
the shards of a file (:func:`~scanner.replay.merge_endpoints`) and hands the results on file by
file, in the order of the files and sorted within a file: the output is the same as with one
process.

Processes are started with ``spawn`` (safe with threads, the same on every platform): the probes
travel pickled (by reference to their modules), the service database is loaded again in each
process from its path. Progress comes back over a queue, at most twice a second per job.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from scanner.api import Probe
from scanner.breadth import DatabaseHandle
from scanner.replay import (
    PROGRESS_EVERY,
    FlowLimits,
    ReplayProgress,
    ReplayReport,
    _Endpoint,
    _FileReplay,
    _size,
    file_results,
    merge_endpoints,
)
from scanner.replay.identify import Identifier
from scanner.replay.keylog import KeyLog
from scanner.results import ScanResult

__all__ = ["SPLIT_BYTES", "plan", "replay_files"]

#: by default no file is split into shards: every shard reads and 5-tuple-decodes the whole file
#: (about 1 us a packet), which is most of what the fast path costs, so two shards cost about
#: twice the CPU of one process and were slower on the 2-core bench machine (bench/replay_speed.py);
#: splitting pays only where identification dominates (many distinct endpoints)
SPLIT_BYTES: int | None = None
#: below this much capture in all, one process does it all (starting processes costs ~1 s)
MIN_PARALLEL_BYTES = 8 * 1024 * 1024

Job = tuple[int, str, int, int]  # file number, path, shard, shards

# per worker process: set by _init
_identifier: Identifier | None = None
_limits: FlowLimits | None = None
_queue: Any = None


def plan(files: Sequence[str], jobs: int, split_bytes: int | None = SPLIT_BYTES) -> list[Job]:
    """The jobs for ``files``: files of ``split_bytes`` or more (None: none) in ``jobs`` shards;
    biggest first so that the long jobs start early."""
    out: list[Job] = []
    for i, path in enumerate(files):
        n = jobs if jobs > 1 and split_bytes is not None and _size(path) >= split_bytes else 1
        out.extend((i, path, s, n) for s in range(n))
    out.sort(key=lambda j: -_size(j[1]) // j[3])
    return out


def _init(probes: bytes, limits: FlowLimits, db: tuple[str | None, bool], tls_keys: KeyLog | None, q: Any) -> None:
    """Worker start: the identifier every job of this process uses."""
    global _identifier, _limits, _queue
    _identifier = Identifier(pickle.loads(probes), service_db=DatabaseHandle(*db), tls_keys=tls_keys)
    _limits = limits
    _queue = q


def _run_job(job: Job) -> tuple[int, int, dict[tuple[bytes, int, str], _Endpoint], ReplayReport, int]:
    """One file or shard, in a worker: its endpoints, counters and the records it read."""
    index, path, shard, shards = job
    assert _identifier is not None and _limits is not None
    report = ReplayReport()
    last = [0.0]

    def progress(pos: int, packets: int, endpoints: int) -> None:
        now = time.monotonic()
        if _queue is not None and now - last[0] >= PROGRESS_EVERY:
            last[0] = now
            _queue.put((index, shard, pos, packets, endpoints))

    fr = _FileReplay(path, _identifier, _limits, report, shard, shards, progress)
    fr.run()
    return index, shard, fr.endpoints, report, fr.packets_read


def replay_files(
    files: Sequence[str],
    probes: Sequence[Probe],
    on_result: Callable[[ScanResult], None] | None,
    limits: FlowLimits,
    service_db: DatabaseHandle | None,
    tls_keys: KeyLog | None,
    jobs: int,
    progress: Callable[[ReplayProgress], None] | None,
    split_bytes: int | None = None,
) -> ReplayReport | None:
    """Replay ``files`` over ``jobs`` processes (0: one per core); None when one process is
    better (one core, little capture) or the probes cannot be sent to another process (a plugin
    loaded from a path that process cannot import), and the caller replays them itself."""
    jobs = jobs if jobs > 0 else (os.cpu_count() or 1)
    sizes = [_size(f) for f in files]
    split = SPLIT_BYTES if split_bytes is None else split_bytes
    if jobs <= 1 or (split_bytes is None and sum(sizes) < MIN_PARALLEL_BYTES):
        return None
    if split is None and len(files) == 1:
        return None  # one file, not split: nothing to do in parallel
    try:
        blob = pickle.dumps(list(probes))
        pickle.loads(blob)
    except Exception:  # a probe object pickle cannot carry: replay in this process
        return None
    todo = plan(files, jobs, split)
    shards_of = {i: n for i, _, _, n in todo}
    workers = min(jobs, len(todo))
    db = (service_db.path, service_db.enabled) if service_db is not None else (None, True)
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue() if progress is not None else None
    report = ReplayReport(jobs=workers)
    parts: dict[int, dict[int, tuple[dict[tuple[bytes, int, str], _Endpoint], ReplayReport]]] = {}
    seen: dict[tuple[int, int], tuple[int, int, int]] = {}
    finished_jobs: set[tuple[int, int]] = set()
    total = sum(sizes)
    next_file = 0
    last_call = 0.0

    def tell(force: bool = False) -> None:
        nonlocal last_call
        now = time.monotonic()
        if progress is None or (not force and now - last_call < PROGRESS_EVERY):
            return
        last_call = now
        done_b = packets = 0.0
        endpoints = 0
        for (i, _), (pos, pk, ep) in seen.items():
            n = shards_of[i]
            done_b += min(pos, sizes[i]) / n  # every shard reads the whole file
            packets += pk / n
            endpoints += ep
        progress(ReplayProgress(round(done_b), total, round(packets), endpoints))

    def drain() -> None:
        if q is None:
            return
        for _ in range(10000):
            try:
                i, s, pos, pk, ep = q.get_nowait()
            except queue.Empty:
                return
            if (i, s) not in finished_jobs:  # a late report of a job already done
                seen[(i, s)] = (pos, pk, ep)

    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init,
                             initargs=(blob, limits, db, tls_keys, q)) as pool:
        pending: set[Future[Any]] = {pool.submit(_run_job, j) for j in todo}
        try:
            while pending:
                finished, pending = wait(pending, timeout=PROGRESS_EVERY, return_when=FIRST_COMPLETED)
                for fut in finished:
                    i, s, endpoints, part, read = fut.result()
                    parts.setdefault(i, {})[s] = (endpoints, part)
                    seen[(i, s)] = (sizes[i], read, len(endpoints))
                    finished_jobs.add((i, s))
                drain()
                tell()
                # hand on the files whose every shard is done, in file order
                while next_file < len(files) and len(parts.get(next_file, {})) == shards_of[next_file]:
                    _finish(files[next_file], parts.pop(next_file), report, on_result)
                    next_file += 1
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
    tell(force=True)
    return report


def _finish(
    path: str,
    shards: dict[int, tuple[dict[tuple[bytes, int, str], _Endpoint], ReplayReport]],
    report: ReplayReport,
    on_result: Callable[[ScanResult], None] | None,
) -> None:
    """Merge the shards of one file into ``report`` and hand its results on."""
    order = sorted(shards)
    for s in order:
        report.absorb(shards[s][1])
    report.files += 1
    merged = merge_endpoints([shards[s][0] for s in order])
    for res in file_results(path, merged):
        report.results.append(res)
        if on_result is not None:
            on_result(res)
