"""Sharded scans: every core of one machine (``--jobs N``) and many machines (``--scheduler``, Dask).

A scan is cut into **shards** of whole hosts (a host's ports all go to one shard, so the per-host
limit and the host facts one probe leaves for another, such as the AD domain LDAP finds for DNS,
stay true). Each shard is scanned by the very same :class:`scanner.engine.Scanner`; only where it
runs changes:

* ``--jobs N`` (:func:`scan_local`): N spawned engine processes (``multiprocessing`` with the
  ``spawn`` start method, so nothing depends on what ``fork`` would copy). The parent hands shards
  out as processes have room (a process works on :data:`LANES` shards at once, each lane a
  Scanner with its share of ``--concurrency`` and ``--rate``), and each process sends a shard's
  records back once the shard is complete, plus progress counts as ports finish.
* ``--scheduler ADDRESS`` (:func:`scan_dask`): one Dask task per shard on an existing
  ``dask scheduler`` / ``dask worker`` cluster, collected with ``as_completed``. A worker that is
  lost mid-shard has its shard run again elsewhere by the scheduler; because a shard's records are
  taken only from a completed task (and :class:`OrderedMerge` drops a shard index seen twice), no
  port is lost and none is written twice.

**Order of the records** (one writer, :class:`OrderedMerge`): hosts sorted by address (IPv4 before
IPv6, numerically), cut into consecutive shards; each shard's records sorted by address, port and
transport (:func:`scanner.output.sort_results`); shards written in index order. The stream is thus
sorted by address, port, transport, which is the order of the table and of ``-oX`` at any
``--jobs``, and the same for every N and for a Dask cluster. ``-o jsonl`` with ``--jobs 1`` streams
in completion order instead (no reordering buffer: that path is the single-process engine as before).
The reordering buffer is bounded: no shard is handed out more than :data:`WINDOW` shards ahead of
the first one not yet written.

``--record FILE``: each local process writes ``FILE`` with ``.jobK`` before the suffix and the
parent joins them into ``FILE`` at the end (pcapng sections one after another, a valid pcapng file);
on Dask each shard writes ``FILE`` with ``.shardNNNNN`` on the worker that ran it (the worker's own
file system; a shard run again after a lost worker writes its file again where it runs).

Replays of many files go the same way on Dask (:func:`replay_dask`): one task per file calling
:func:`scanner.replay.replay_paths`, results in file order.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import pickle
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from typing import Any

import msgspec

from scanner.engine import Scanner, ScanOptions, _new_loop
from scanner.profile import PortEntry
from scanner.results import ScanResult
from scanner.targets import Target

__all__ = [
    "DASK_MISSING",
    "LANES",
    "PORTS_PER_JOB",
    "WINDOW",
    "OrderedMerge",
    "RegistryArgs",
    "ReplayJob",
    "ScanJob",
    "Shard",
    "ShardError",
    "ShardedOutcome",
    "capture_part_path",
    "default_jobs",
    "host_count",
    "plan_shards",
    "replay_dask",
    "run_shard_task",
    "scan_dask",
    "scan_local",
]

#: shards one local process scans at once (each with 1/LANES of the process's concurrency): while
#: one shard waits on its slowest port, the others keep the connections busy
LANES = 4
#: how far ahead of the first unwritten shard shards are handed out, per lane in the whole run
WINDOW = 4
#: items of a shard, in multiples of its lane's concurrency (large enough that a lane's slowest
#: ports overlap the rest, small enough that records come back often and the buffer stays small)
SHARD_ITEMS_PER_SLOT = 4
#: seconds between progress messages of a local process
TICK_EVERY = 0.2
#: seconds a process gets to finish after "stop" or "abort" before it is terminated
STOP_GRACE = 10.0

DASK_MISSING = ("--scheduler needs Dask's distributed scheduler, an optional extra: "
                "pip install 'portproof[cluster]' (or pip install 'dask[distributed]')")

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(list[ScanResult])


class ShardError(RuntimeError):
    """A sharded run could not be carried out (no process left, no cluster, a shard failed)."""


@dataclass(frozen=True)
class RegistryArgs:
    """How each process loads the probe registry (the CLI's plugin options)."""

    strict: bool = False
    plugin_paths: tuple[str, ...] = ()
    #: the names of the probes the client loaded: a worker that loads others (another portproof
    #: version, a plugin missing) refuses the shard rather than answer differently
    expect: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScanJob:
    """What every shard of one scan shares (sent once to each process, or with each Dask task)."""

    options: ScanOptions
    entries: tuple[PortEntry, ...]
    registry: RegistryArgs = RegistryArgs()
    #: ``--record FILE``: the base name of the captures (see :func:`capture_part_path`)
    record: str | None = None


@dataclass(frozen=True)
class Shard:
    """Whole hosts scanned together; ``skip`` holds their ports already done (``--resume``)."""

    index: int
    targets: tuple[Target, ...]
    skip: frozenset[tuple[str, int, str]] = frozenset()

    def items(self, entries: int) -> int:
        """Ports this shard scans."""
        return len(self.targets) * entries - len(self.skip)


@dataclass
class ShardedOutcome:
    """How a sharded run ended (the records themselves went to ``on_result``)."""

    interrupted: bool = False
    #: engine notes (open-file limit ...), each once
    notes: list[str] = field(default_factory=list)
    #: shards that failed for good (their ports are missing from the output)
    errors: list[str] = field(default_factory=list)
    shards: int = 0
    #: processes or Dask threads that ran the shards
    workers: int = 0


#: ports per process below which the default ``--jobs`` does not start another process (starting
#: one costs about half a second of CPU: a small scan is done sooner in one)
PORTS_PER_JOB = 256


def default_jobs(ports: int | None = None) -> int:
    """The default of ``--jobs``: the cores this process may run on, and (given the number of
    ports of the scan) no more than one process per :data:`PORTS_PER_JOB` ports."""
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        cores = max(1, os.cpu_count() or 1)
    return cores if ports is None else max(1, min(cores, ports // PORTS_PER_JOB))


def host_count(targets: Iterable[Target]) -> int:
    """Distinct addresses among ``targets`` (more processes than hosts would have nothing to do)."""
    return len({t.address for t in targets})


def _host_key(address: str) -> tuple[bool, int, str]:
    # the prefix of scanner.output.sort_results's key: IPv4 first, numerically, then IPv6
    try:
        number = int(ipaddress.ip_address(address))
    except ValueError:
        number = 0
    return (":" in address, number, address)


def plan_shards(
    targets: Sequence[Target], entries: int, slots: int, slot_concurrency: int,
    skip: frozenset[tuple[str, int, str]] = frozenset(),
) -> list[Shard]:
    """Cut ``targets`` into shards of whole hosts, in address order.

    ``slots``: shards scanned at once in the whole run (processes x lanes, or Dask threads);
    ``slot_concurrency``: connections each of them may hold. A shard gets about
    :data:`SHARD_ITEMS_PER_SLOT` x ``slot_concurrency`` ports, and there are at least two shards per
    slot when the hosts allow it (so a slot that finishes early finds more work).
    """
    hosts: dict[str, list[Target]] = {}
    for t in targets:
        hosts.setdefault(t.address, []).append(t)
    order = sorted(hosts, key=_host_key)
    per_items = max(1, -(-SHARD_ITEMS_PER_SLOT * slot_concurrency // max(1, entries)))
    per_slots = max(1, -(-len(order) // max(1, 2 * slots)))
    size = min(per_items, per_slots)
    by_host: dict[str, set[tuple[str, int, str]]] = {}
    for key in skip:
        if key[0] in hosts:
            by_host.setdefault(key[0], set()).add(key)
    shards: list[Shard] = []
    for i in range(0, len(order), size):
        chunk = order[i:i + size]
        done = frozenset(k for a in chunk for k in by_host.get(a, ()))
        shards.append(Shard(len(shards), tuple(t for a in chunk for t in hosts[a]), done))
    return shards


def capture_part_path(base: str, tag: str) -> str:
    """``scan.pcapng`` with ``tag`` ``job2`` -> ``scan.job2.pcapng`` (no suffix: ``scan.job2``)."""
    head, tail = os.path.split(base)
    stem, dot, suffix = tail.rpartition(".")
    name = f"{stem}.{tag}.{suffix}" if dot and stem else f"{tail}.{tag}"
    return os.path.join(head, name)


class OrderedMerge:
    """The one writer's order: records of shard ``i`` go out once shards ``0..i-1`` have.

    A shard index seen twice (a Dask task that ran twice) is dropped: each port is written once.
    """

    def __init__(self, emit: Callable[[ScanResult], None]) -> None:
        self.emit = emit
        #: the first shard not written yet
        self.next = 0
        self._pending: dict[int, list[ScanResult]] = {}

    def add(self, index: int, records: list[ScanResult]) -> bool:
        """Take a completed shard's records; False when the shard was already taken."""
        if index < self.next or index in self._pending:
            return False
        self._pending[index] = records
        while self.next in self._pending:
            for r in self._pending.pop(self.next):
                self.emit(r)
            self.next += 1
        return True

    def flush(self, partial: dict[int, list[ScanResult]] | None = None) -> None:
        """An interrupted run: write what is held (and the partial shards), still in shard order."""
        held = dict(partial or {})
        held.update(self._pending)
        self._pending.clear()
        for index in sorted(held):
            if index >= self.next:
                for r in held[index]:
                    self.emit(r)


def _encode(records: list[ScanResult]) -> bytes:
    from scanner.output import sort_results

    return _ENCODER.encode(sort_results(records))


def _decode(payload: bytes) -> list[ScanResult]:
    return _DECODER.decode(payload)


class _Interrupts:
    """Ctrl-C (SIGINT) as KeyboardInterrupt, but never in the middle of reading a message or
    writing a shard's records (a record in the ``--resume`` file and not on standard output, or a
    shard half written): inside :meth:`guard` it is held and raised on leaving."""

    def __init__(self) -> None:
        self.critical = 0
        self.pending = False
        self._old: Any = None

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)

    def _handler(self, signum: int, frame: object) -> None:
        if self.critical:
            self.pending = True
        else:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """A section that a Ctrl-C does not cut (it is raised at the end)."""
        self.critical += 1
        try:
            yield
        finally:
            self.critical -= 1
            if not self.critical and self.pending:
                self.pending = False
                raise KeyboardInterrupt


# ------------------------------------------------------------------ one process's scanning
_REGISTRY_LOCK = threading.Lock()
_REGISTRIES: dict[RegistryArgs, Any] = {}


def _registry(args: RegistryArgs) -> Any:
    """The probe registry of this process (loaded once per set of plugin options)."""
    with _REGISTRY_LOCK:
        reg = _REGISTRIES.get(args)
        if reg is None:
            from scanner.registry import load_registry

            reg = load_registry(strict=args.strict, plugin_paths=list(args.plugin_paths))
            names = tuple(sorted(p.name for p in reg.probes))
            if args.expect and names != args.expect:
                import socket

                raise ShardError(
                    f"{socket.gethostname()} (pid {os.getpid()}) loads the probes {', '.join(names)}, the client "
                    f"{', '.join(args.expect)}: install the same portproof and plugins everywhere (and restart "
                    "workers started before an upgrade)")
            _REGISTRIES[args] = reg
        return reg


class _Lanes:
    """Shards scanned at once in one event loop, each lane a Scanner with its share of the limits."""

    def __init__(self, job: ScanJob, lanes: int, recorder: Any, tick: Callable[[int], None]) -> None:
        from scanner.breadth import DatabaseHandle

        opts = job.options
        lane_opts = replace(opts, concurrency=max(1, opts.concurrency // lanes),
                            rate=opts.rate / lanes if opts.rate else 0.0, recorder=recorder, keep_results=False)
        registry = _registry(job.registry)
        # one service database per process, not one per lane
        self.service_db = DatabaseHandle(opts.service_db, opts.use_service_db)
        self.scanners = [Scanner(registry, lane_opts) for _ in range(lanes)]
        for s in self.scanners:
            s.service_db = self.service_db
        self.entries = list(job.entries)
        self.tick = tick
        #: records of the shards being scanned, by shard index
        self.current: dict[int, list[ScanResult]] = {}

    async def scan(self, scanner: Scanner, shard: Shard) -> list[ScanResult]:
        """Scan one shard on one lane; its records, or an exception."""
        records = self.current[shard.index] = []

        def on_result(r: ScanResult) -> None:
            records.append(r)
            self.tick(1)

        scanner.on_result = on_result
        await scanner.run(list(shard.targets), self.entries, shard.skip)
        del self.current[shard.index]
        return records

    def notes(self) -> list[str]:
        """The engine's notes, each once."""
        return list(dict.fromkeys(n for s in self.scanners for n in s.notes))


def _child_main(conn: Connection, job: ScanJob, number: int, lanes: int) -> None:
    """A local engine process: scan the shards the parent sends until told to stop.

    Messages to the parent: ``("tick", n)`` ports done, ``("done", index, payload)`` a complete
    shard, ``("partial", index, payload)`` a shard cut by an interruption, ``("failed", index,
    text)``, ``("exit", notes)`` at the end. From the parent: ``("shard", Shard)``, ``("stop",)`` (no
    more shards: finish and exit), ``("abort",)`` (interrupted: send what is done and exit).
    """
    # Ctrl-C goes to the whole process group: the parent alone decides (it sends "abort")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    recorder = None
    notes: list[str] = []
    try:
        if job.record:
            from scanner.replay.pcapwriter import PcapRecorder

            recorder = PcapRecorder(capture_part_path(job.record, f"job{number}"))
        with asyncio.Runner(loop_factory=lambda: _new_loop(recorder is not None)) as runner:
            notes = runner.run(_child_loop(conn, job, lanes, recorder))
    except Exception as exc:  # reported, never a silent death
        with contextlib.suppress(OSError):
            conn.send(("error", f"process {number}: {type(exc).__name__}: {exc}"))
    finally:
        if recorder is not None:
            recorder.close()
        with contextlib.suppress(OSError):
            conn.send(("exit", notes))
            conn.close()


async def _child_loop(conn: Connection, job: ScanJob, lanes: int, recorder: Any) -> list[str]:
    loop = asyncio.get_running_loop()
    ticks = [0]

    def tick(n: int) -> None:
        ticks[0] += n

    work = _Lanes(job, lanes, recorder, tick)
    queue: asyncio.Queue[Shard | None] = asyncio.Queue()
    aborted = asyncio.Event()

    def flush_ticks() -> None:
        if ticks[0]:
            conn.send(("tick", ticks[0]))
            ticks[0] = 0

    def deliver(msg: tuple[Any, ...]) -> None:
        if msg[0] == "shard":
            queue.put_nowait(msg[1])
        elif msg[0] == "stop":
            for _ in range(lanes):
                queue.put_nowait(None)
        elif msg[0] in ("abort", "gone"):
            aborted.set()

    def reader() -> None:
        # A thread blocked in recv, not the loop's add_reader: an event loop may make the descriptor
        # non-blocking, and Connection.send of a large shard would then fail half-written (EAGAIN)
        # and corrupt the stream. Sends stay on the loop's thread, on a blocking socket.
        try:
            while True:
                msg = conn.recv()
                loop.call_soon_threadsafe(deliver, msg)
        except (EOFError, OSError):  # the parent is gone: nothing to report to
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(deliver, ("gone",))
        except RuntimeError:  # the loop closed while a message came
            return

    async def lane(scanner: Scanner) -> None:
        while True:
            shard = await queue.get()
            if shard is None:
                return
            try:
                records = await work.scan(scanner, shard)
            except Exception as exc:
                work.current.pop(shard.index, None)
                conn.send(("failed", shard.index, f"{type(exc).__name__}: {exc}"))
                continue
            flush_ticks()
            conn.send(("done", shard.index, _encode(records)))

    async def ticker() -> None:
        while True:
            await asyncio.sleep(TICK_EVERY)
            flush_ticks()

    threading.Thread(target=reader, name="portproof-shard-reader", daemon=True).start()
    tasks = [asyncio.create_task(lane(s)) for s in work.scanners]
    beat = asyncio.create_task(ticker())
    stop: asyncio.Future[Any] = asyncio.ensure_future(aborted.wait())
    lanes_done: asyncio.Future[Any] = asyncio.gather(*tasks)
    # an abort cancels the lanes: their gathered exception is expected, not "never retrieved"
    lanes_done.add_done_callback(lambda f: f.cancelled() or f.exception())
    try:
        await asyncio.wait([stop, lanes_done], return_when=asyncio.FIRST_COMPLETED)
        if aborted.is_set():
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for index, records in sorted(work.current.items()):
                conn.send(("partial", index, _encode(records)))
        flush_ticks()
    finally:
        pending: list[asyncio.Future[Any]] = [beat, stop, lanes_done, *tasks]
        for fut in pending:
            fut.cancel()
    return work.notes()


# ------------------------------------------------------------------ the local pool (parent side)
@dataclass
class _Proc:
    number: int
    process: Any
    conn: Connection
    assigned: list[int] = field(default_factory=list)
    alive: bool = True
    exited: bool = False


def scan_local(
    job: ScanJob,
    targets: Sequence[Target],
    jobs: int,
    on_result: Callable[[ScanResult], None],
    on_progress: Callable[[int], None] | None = None,
    skip: frozenset[tuple[str, int, str]] = frozenset(),
) -> ShardedOutcome:
    """Scan ``targets`` with ``jobs`` engine processes; records go to ``on_result`` in the merge
    order (module doc). ``--concurrency`` and ``--rate`` are split evenly between the processes.
    A process that dies has its unfinished shards handed to the others. Ctrl-C (KeyboardInterrupt
    in this process) stops the processes, writes every port already done and returns with
    ``interrupted`` set."""
    import multiprocessing
    from multiprocessing.connection import wait

    opts = job.options
    jobs = max(1, jobs)
    per_proc = replace(opts, concurrency=max(1, opts.concurrency // jobs), rate=opts.rate / jobs if opts.rate else 0.0,
                       recorder=None, keep_results=False)
    job = replace(job, options=per_proc)
    lane_conc = max(1, per_proc.concurrency // LANES)
    shards = plan_shards(targets, len(job.entries), jobs * LANES, lane_conc, skip)
    outcome = ShardedOutcome(shards=len(shards), workers=jobs)
    merge = OrderedMerge(on_result)
    if not shards:
        return outcome
    ctx = multiprocessing.get_context("spawn")
    procs: list[_Proc] = []
    # children start with SIGINT ignored (an ignored signal stays ignored across exec, and Python
    # then installs no handler of its own), so a Ctrl-C during their start cannot kill them
    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        for k in range(1, jobs + 1):
            ours, theirs = ctx.Pipe()
            p = ctx.Process(target=_child_main, args=(theirs, job, k, LANES), name=f"portproof-job{k}", daemon=True)
            p.start()
            theirs.close()
            procs.append(_Proc(k, p, ours))
    except BaseException:
        _reap(procs)  # the ones already started do not outlive a failed start
        raise
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)
    todo: deque[int] = deque(range(len(shards)))
    window = jobs * LANES * WINDOW
    partial: dict[int, list[ScanResult]] = {}

    def handle(proc: _Proc, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "tick":
            if on_progress is not None:
                on_progress(msg[1])
        elif kind in ("done", "partial", "failed"):
            index = msg[1]
            if index in proc.assigned:
                proc.assigned.remove(index)
            if kind == "done":
                merge.add(index, _decode(msg[2]))
            elif kind == "partial":
                partial[index] = _decode(msg[2])
            else:
                outcome.errors.append(f"shard {index} ({_hosts(shards[index])}): {msg[2]}")
                merge.add(index, [])
        elif kind == "error":
            outcome.errors.append(str(msg[1]))
        elif kind == "exit":
            proc.exited = True
            outcome.notes.extend(n for n in msg[1] if n not in outcome.notes)

    def receive(timeout: float) -> None:
        live = [p for p in procs if p.alive]
        if not live:
            return
        ready = wait([p.conn for p in live], timeout)
        for proc in live:
            if proc.conn not in ready:
                continue
            try:
                while proc.alive and proc.conn.poll():
                    with ints.guard():
                        handle(proc, proc.conn.recv())
            except (EOFError, OSError, pickle.UnpicklingError):
                proc.alive = False
                # a process gone with shards unfinished: they go to the others (no record of theirs
                # was written, so nothing is duplicated)
                todo.extendleft(sorted(proc.assigned, reverse=True))
                proc.assigned.clear()

    def refill() -> None:
        for proc in procs:
            while proc.alive and todo and len(proc.assigned) < LANES + 1 and todo[0] < merge.next + window:
                index = todo.popleft()
                proc.assigned.append(index)
                try:
                    proc.conn.send(("shard", shards[index]))
                except OSError:
                    proc.assigned.remove(index)
                    todo.appendleft(index)
                    proc.alive = False

    ints = _Interrupts()
    try:
        with ints:
            try:
                while merge.next < len(shards):
                    refill()
                    if not any(p.alive for p in procs):
                        raise ShardError("every engine process ended before the scan was done"
                                         + (f": {outcome.errors[-1]}" if outcome.errors else ""))
                    receive(0.5)
                _send_all(procs, ("stop",))
                _drain(procs, receive)
            except KeyboardInterrupt:
                outcome.interrupted = True
                _send_all(procs, ("abort",))
                with contextlib.suppress(KeyboardInterrupt):
                    _drain(procs, receive)
                with contextlib.suppress(KeyboardInterrupt), ints.guard():
                    merge.flush(partial)
    finally:
        _reap(procs)
    if job.record:
        _join_captures(job.record, [capture_part_path(job.record, f"job{p.number}") for p in procs])
    return outcome


def _hosts(shard: Shard) -> str:
    first, last = shard.targets[0].address, shard.targets[-1].address
    return first if first == last else f"{first}..{last}"


def _send_all(procs: list[_Proc], msg: tuple[Any, ...]) -> None:
    for p in procs:
        if p.alive:
            try:
                p.conn.send(msg)
            except OSError:
                p.alive = False


def _drain(procs: list[_Proc], receive: Callable[[float], None]) -> None:
    """Read until every process said "exit" (or died), at most :data:`STOP_GRACE` seconds."""
    deadline = time.monotonic() + STOP_GRACE
    while any(p.alive and not p.exited for p in procs) and time.monotonic() < deadline:
        receive(min(0.5, max(0.01, deadline - time.monotonic())))


def _reap(procs: list[_Proc]) -> None:
    """Every process ends: joined when it exits by itself, else terminated, then killed."""
    for p in procs:
        p.process.join(timeout=2.0 if p.exited else 0.1)
    for p in procs:
        if p.process.is_alive():
            p.process.terminate()
            p.process.join(timeout=3.0)
        if p.process.is_alive():
            p.process.kill()
            p.process.join(timeout=3.0)
        with contextlib.suppress(OSError):
            p.conn.close()


def _join_captures(path: str, parts: list[str]) -> None:
    """``--record``: the processes' pcapng files, one after the other, as ``path``.

    A pcapng file is a sequence of sections, each opened by its own Section Header Block with
    its own interfaces (and Decryption Secrets Blocks), so concatenated files are one valid file.
    """
    with open(path, "wb") as out:
        for part in parts:
            try:
                with open(part, "rb") as fh:
                    while chunk := fh.read(1 << 20):
                        out.write(chunk)
            except FileNotFoundError:
                continue
            os.unlink(part)


# ------------------------------------------------------------------ Dask
def _dask() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ShardError(DASK_MISSING) from exc
    return distributed


def _connect(address: str, timeout: float) -> Any:
    distributed = _dask()
    try:
        return distributed.Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ShardError(f"no Dask scheduler answers at {address}: {exc}") from exc


def run_shard_task(job: ScanJob, shard: Shard) -> tuple[int, bytes, list[str]]:
    """One Dask task: scan one shard in this worker thread; (index, encoded records, notes).

    Runs anywhere ``portproof`` is installed; ``--record`` writes this shard's own capture on the
    worker. A task that is run again (lost worker) scans the shard again from scratch.
    """
    recorder = None
    if job.record:
        from scanner.replay.pcapwriter import PcapRecorder

        recorder = PcapRecorder(capture_part_path(job.record, f"shard{shard.index:05d}"))
    try:
        work = _Lanes(job, 1, recorder, lambda n: None)
        with asyncio.Runner(loop_factory=lambda: _new_loop(recorder is not None)) as runner:
            records = runner.run(work.scan(work.scanners[0], shard))
    finally:
        if recorder is not None:
            recorder.close()
    return shard.index, _encode(records), work.notes()


def scan_dask(
    job: ScanJob,
    targets: Sequence[Target],
    scheduler: str,
    on_result: Callable[[ScanResult], None],
    on_progress: Callable[[int], None] | None = None,
    skip: frozenset[tuple[str, int, str]] = frozenset(),
    connect_timeout: float = 10.0,
) -> ShardedOutcome:
    """Scan ``targets`` on the Dask cluster at ``scheduler``: one task per shard, records in the
    merge order as shards complete. ``--concurrency`` and ``--rate`` are split between the
    cluster's worker threads (each runs one shard at a time)."""
    distributed = _dask()
    client = _connect(scheduler, connect_timeout)
    try:
        threads = max(1, sum(client.nthreads().values()))
        opts = job.options
        per_task = replace(opts, concurrency=max(1, opts.concurrency // threads),
                           rate=opts.rate / threads if opts.rate else 0.0, recorder=None, keep_results=False)
        job = replace(job, options=per_task)
        shards = plan_shards(targets, len(job.entries), threads, per_task.concurrency, skip)
        outcome = ShardedOutcome(shards=len(shards), workers=threads)
        run = uuid.uuid4().hex[:12]
        futures = [client.submit(run_shard_task, job, s, key=f"portproof-scan-{run}-{s.index:05d}", pure=False,
                                 retries=1) for s in shards]
        merge = OrderedMerge(on_result)
        _collect(distributed.as_completed(futures, loop=client.loop), futures, shards, len(job.entries), merge,
                 outcome, on_progress)
        return outcome
    finally:
        client.close()


def _collect(
    completed: Any, futures: list[Any], shards: list[Shard], entries: int, merge: OrderedMerge,
    outcome: ShardedOutcome, on_progress: Callable[[int], None] | None,
) -> None:
    """Take the tasks' results as they complete (shard-level: a shard counts once)."""
    ints = _Interrupts()
    with ints:
        try:
            for fut in completed:
                try:
                    index, payload, notes = fut.result()
                except Exception as exc:
                    index = futures.index(fut)
                    outcome.errors.append(f"shard {index} ({_hosts(shards[index])}): {type(exc).__name__}: {exc}")
                    with ints.guard():
                        merge.add(index, [])
                    continue
                with ints.guard():
                    if merge.add(index, _decode(payload)) and on_progress is not None:
                        on_progress(shards[index].items(entries))
                outcome.notes.extend(n for n in notes if n not in outcome.notes)
        except KeyboardInterrupt:
            outcome.interrupted = True
            for fut in futures:
                fut.cancel()
            with contextlib.suppress(KeyboardInterrupt), ints.guard():
                merge.flush()


@dataclass(frozen=True)
class ReplayJob:
    """What every file of a replay on Dask shares."""

    registry: RegistryArgs = RegistryArgs()
    probes: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    service_db: str | None = None
    use_service_db: bool = True
    #: ``--tls-keylog``: the key log's text, read once by the client (workers need not see the file)
    tls_keylog: bytes | None = None


def run_replay_task(job: ReplayJob, index: int, path: str) -> tuple[int, bytes, list[str], int]:
    """One Dask task: replay one capture file; (index, encoded results, read errors, packets)."""
    from scanner.breadth import DatabaseHandle
    from scanner.replay import replay_paths

    probes = _registry(job.registry).select(list(job.probes), list(job.exclude)).probes
    keys = None
    if job.tls_keylog:
        from scanner.replay.keylog import KeyLog

        keys = KeyLog()
        keys.add_text(job.tls_keylog)
    report = replay_paths([path], probes, service_db=DatabaseHandle(job.service_db, job.use_service_db), tls_keys=keys)
    # file order is the order replay_paths gives: no sorting here
    return index, _ENCODER.encode(report.results), [str(e) for e in report.errors], report.packets


def replay_dask(
    job: ReplayJob, paths: Sequence[str], scheduler: str, on_result: Callable[[ScanResult], None],
    connect_timeout: float = 10.0,
) -> tuple[list[str], int, bool]:
    """Replay capture files on the Dask cluster at ``scheduler`` (one task per file; the paths must
    be readable by the workers, e.g. a shared file system). Results go to ``on_result`` in file
    order. Returns (read errors, packets read, interrupted)."""
    from scanner.replay import capture_files

    distributed = _dask()
    files = capture_files(list(paths))
    errors: list[str] = []
    packets = 0
    if not files:
        return errors, packets, False
    client = _connect(scheduler, connect_timeout)
    run = uuid.uuid4().hex[:12]
    try:
        futures = [client.submit(run_replay_task, job, i, f, key=f"portproof-replay-{run}-{i:05d}", pure=False,
                                 retries=1) for i, f in enumerate(files)]
        merge = OrderedMerge(on_result)
        with _Interrupts() as ints:
            try:
                for fut in distributed.as_completed(futures, loop=client.loop):
                    try:
                        index, payload, errs, count = fut.result()
                    except Exception as exc:
                        index = futures.index(fut)
                        errors.append(f"{files[index]}: replay failed on the cluster: {type(exc).__name__}: {exc}")
                        with ints.guard():
                            merge.add(index, [])
                        continue
                    with ints.guard():
                        if merge.add(index, _decode(payload)):
                            errors.extend(errs)
                            packets += count
            except KeyboardInterrupt:
                for fut in futures:
                    fut.cancel()
                with contextlib.suppress(KeyboardInterrupt), ints.guard():
                    merge.flush()
                return errors, packets, True
    finally:
        client.close()
    return errors, packets, False
