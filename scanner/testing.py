"""Test kit for probe authors (part of the stable API): drive a probe without any network.

* :func:`run_dialogue` replays a recorded server byte stream (TCP) or datagrams (UDP) through a
  probe's dialogue and returns what it found and what it sent.
* :func:`feed_bytewise` feeds a framer one byte at a time and checks the framed length equals the
  length found with the whole buffer (segment boundaries must not change a result).
* :func:`check_probe_contract` / :func:`assert_probe_contract` run the checks every registered
  probe must pass (declared facts, no I/O imports, deterministic requests, hostile bytes).
* :func:`replay_pcap` runs a pcap/pcapng capture through probes, like ``fingerprint replay``.

The same helpers are pytest fixtures (``scanner.pytest_plugin``, loaded through the ``pytest11``
entry point): ``probe_contract``, ``run_dialogue``, ``feed_bytewise``, ``replay_pcap``.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import json
import random
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scanner.api import (
    Dialogue,
    Finding,
    Framer,
    NotThisProtocol,
    Probe,
    ProbeContext,
    Recv,
    TLSFacts,
    Transport,
)
from scanner.results import ScanResult
from scanner.runner import MAX_STEPS, Done, DoReconnect, DoStartTLS, NeedData, Runner, SendBytes

__all__ = [
    "FAKE_TLS",
    "FORBIDDEN_IMPORTS",
    "ContractError",
    "ContractReport",
    "DialogueRun",
    "SILENT",
    "Transcript",
    "assert_probe_contract",
    "check_probe_contract",
    "feed_bytewise",
    "hostile_datagrams",
    "hostile_streams",
    "io_import_problems",
    "replay_pcap",
    "run_dialogue",
    "run_scripted",
]


class _Silent:
    """See :data:`SILENT`."""

    def __repr__(self) -> str:
        return "SILENT"


#: in a transcript given as a list: the server stays silent here, so the ``Recv`` waiting at this
#: point times out (:class:`~scanner.api.RecvTimeout`) as it would live
SILENT = _Silent()


@dataclass
class DialogueRun:
    """What happened when a dialogue was driven over recorded bytes."""

    #: the finding returned, or the partial finding stored with ``ctx.found`` when it failed
    finding: Finding | None
    #: every ``Send`` payload, in order
    sent: list[bytes] = field(default_factory=list)
    #: the exception that ended the dialogue early (NotThisProtocol, RecvClosed, ...), if any
    error: BaseException | None = None
    #: the context the dialogue saw
    ctx: ProbeContext | None = None
    #: the framer of every ``Recv`` step, in order (the contract check feeds them hostile bytes)
    framers: list[Framer] = field(default_factory=list)
    #: how it ended, as a live scan's attempt would say (``success``, ``no-match``, ``probe-bug``...)
    status: str = "success"
    #: for ``probe-bug``: the traceback
    traceback: str | None = None
    #: the ``tag`` of every ``Recv`` step, in order (None for untagged ones)
    tags: list[str | None] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the dialogue returned a finding normally."""
        return self.error is None and self.finding is not None


def _context(
    address: str,
    port: int,
    transport: Transport,
    hostname: str | None,
    tls: TLSFacts | None,
    implicit_tls: bool,
    seed: int,
    host_facts: dict[str, object] | None,
) -> ProbeContext:
    """The context a transcript or scripted run gives the dialogue (seeded ids, a copy of the facts)."""
    return ProbeContext(
        address=address,
        port=port,
        transport=transport,
        hostname=hostname,
        tls=tls if implicit_tls else None,
        implicit_tls=implicit_tls,
        rng=random.Random(seed),
        host_facts=dict(host_facts or {}),
    )


def run_dialogue(
    probe: Probe,
    server: bytes | Sequence[bytes | _Silent],
    *,
    port: int = 0,
    transport: Transport = "tcp",
    address: str = "192.0.2.1",
    tls: TLSFacts | None = None,
    implicit_tls: bool = False,
    hostname: str | None = None,
    host_facts: dict[str, object] | None = None,
    seed: int = 0,
    max_steps: int = MAX_STEPS,
    raise_bugs: bool = True,
) -> DialogueRun:
    """Drive ``probe.dialogue`` against recorded server bytes, with no I/O, through the very runner
    a live scan uses (:class:`scanner.runner.Runner`: same step budget, framing, partial results).

    TCP: ``server`` is the server's byte stream, or a list of its segments given one per wait
    (:data:`SILENT` in the list: that wait times out); the end of the stream is a close
    (:class:`RecvClosed`). UDP: ``server`` is a list of datagrams, one per ``Recv``. ``StartTLS``
    returns ``tls`` (or fails when it is None); the bytes after it are taken as the decrypted
    stream; after a ``Reconnect`` the recorded stream goes on as the new connection's bytes.

    A probe bug (an exception other than NotThisProtocol or a step error, a framer breaking its
    contract, the step budget) is raised again when ``raise_bugs`` (the contract check relies on
    it); with ``raise_bugs=False`` the run says ``status="probe-bug"`` and keeps the partial finding.
    """
    ctx = _context(address, port, transport, hostname, tls, implicit_tls, seed, host_facts)
    items: list[bytes | _Silent] = [server] if isinstance(server, bytes) else list(server)
    items.reverse()  # popped from the end
    runner = Runner(probe, ctx, max_steps=max_steps, unread_at_starttls="keep", record=True)
    _run(runner, lambda: items.pop() if items else None, None, tls, implicit_tls)
    return _result(runner, ctx, raise_bugs)


def run_scripted(
    probe: Probe,
    respond: Callable[[bytes], bytes | None],
    *,
    port: int = 0,
    transport: Transport = "tcp",
    address: str = "192.0.2.1",
    tls: TLSFacts | None = None,
    implicit_tls: bool = False,
    hostname: str | None = None,
    host_facts: dict[str, object] | None = None,
    seed: int = 0,
    max_steps: int = MAX_STEPS,
    raise_bugs: bool = True,
) -> DialogueRun:
    """Like :func:`run_dialogue`, but against a scripted server: ``respond(sent)`` answers each
    ``Send`` (TCP: bytes added to the stream; UDP: one datagram) or returns None to stay silent
    (the next ``Recv`` then times out, as it would live). For servers whose answers depend on the
    request: ids, questions, tags."""
    ctx = _context(address, port, transport, hostname, tls, implicit_tls, seed, host_facts)
    pending: list[bytes] = []

    def on_send(data: bytes) -> None:
        reply = respond(data)
        if reply is not None:
            pending.append(reply)

    runner = Runner(probe, ctx, max_steps=max_steps, unread_at_starttls="keep", record=True)
    _run(runner, lambda: pending.pop(0) if pending else SILENT, on_send, tls, implicit_tls)
    return _result(runner, ctx, raise_bugs)


def _run(
    runner: Runner,
    next_input: Callable[[], bytes | _Silent | None],
    on_send: Callable[[bytes], None] | None,
    tls: TLSFacts | None,
    implicit_tls: bool,
) -> None:
    """The kit's adapter over the runner: ``next_input()`` answers each wait (bytes, SILENT for a
    timeout, None for the end of the stream); ``on_send`` sees each payload sent."""
    while True:  # bounded: each wait consumes an input or ends the stream; other requests are steps
        req = runner.next_request()
        if isinstance(req, Done):
            return
        if isinstance(req, SendBytes):
            if on_send is not None:
                on_send(req.data)
            runner.sent()
        elif isinstance(req, NeedData):
            item = next_input()
            if item is None:
                runner.peer_closed("no more datagrams" if req.datagram else "stream ended before a complete message")
            elif isinstance(item, _Silent):
                runner.timed_out()
            else:
                runner.receive_data(item)
        elif isinstance(req, DoStartTLS):
            if tls is None:
                runner.tls_failed("no TLS in this transcript")
            else:
                runner.tls_started(tls)
        elif isinstance(req, DoReconnect):
            rest = runner.buffered
            runner.reconnected(tls if implicit_tls else None)
            runner.receive_data(rest)


def _result(runner: Runner, ctx: ProbeContext, raise_bugs: bool) -> DialogueRun:
    out = runner.outcome
    if out.status == "probe-bug" and raise_bugs and out.exception is not None:
        raise out.exception
    error = out.exception if out.status != "success" else None
    return DialogueRun(out.finding, runner.sent_log, error, ctx, runner.framers, out.status, out.traceback,
                       runner.tags)


class _OneMessage(Probe):
    """The dialogue of :func:`feed_bytewise`: one ``Recv`` with the framer under test."""

    name = "feed_bytewise"
    services = ("-",)

    def __init__(self, framer: Framer, max_size: int) -> None:
        self.framer = framer
        self.max_size = max_size

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        """One framed message; its length goes back in the details."""
        msg = yield Recv(self.framer, max_size=self.max_size)
        return Finding(service="-", details={"n": len(msg)})


def feed_bytewise(framer: Framer, message: bytes) -> int | None:
    """Feed ``message`` to ``framer`` one byte at a time through the runner, as a server dripping
    it would (a resumable framer through its cursor); return the framed length.

    Asserts that the length framed from the drip equals the length found with the whole buffer
    (segment boundaries must not change a result). The framer's NotThisProtocol propagates.
    """
    whole = framer(message)
    runner = Runner(_OneMessage(framer, len(message) + 1), ProbeContext(address="192.0.2.1", port=0))
    for i in range(len(message)):
        if runner.done:
            break
        runner.receive_data(message[i : i + 1])
    if not runner.done:
        assert whole is None, f"the whole buffer frames as {whole}, the drip never completes"
        return None
    out = runner.outcome
    if out.exception is not None:
        raise out.exception
    n = out.finding.details["n"] if out.finding is not None else None
    assert n == whole, f"dripped one byte at a time framed as {n}, whole buffer as {whole}"
    return n


# --------------------------------------------------------------------------- the probe contract
#
# Every registered probe, built-in or third-party, must pass these checks (our CI runs them over
# load_registry().probes; a plugin author runs them on their own probe with the pytest fixture
# ``probe_contract`` or by calling :func:`assert_probe_contract`).

#: modules a probe may not import: probes are sans-I/O, the engine does all the I/O
FORBIDDEN_IMPORTS: frozenset[str] = frozenset(
    {
        "socket", "asyncio", "ssl", "select", "selectors", "socketserver", "http.client", "urllib.request",
        "ftplib", "smtplib", "poplib", "imaplib", "nntplib", "telnetlib", "subprocess",
        "requests", "httpx", "aiohttp", "trio", "anyio", "uvloop", "twisted",
    }
)
#: modules a probe may only import inside a function (they make ``fingerprint --help`` slow)
LAZY_IMPORTS: frozenset[str] = frozenset({"scapy"})
#: how many modules of the probe's own package the import check follows
MAX_MODULES = 32


@dataclass(frozen=True)
class Transcript:
    """A recorded server side of one conversation, to drive a probe with (see :func:`run_dialogue`).

    A pcap-based source of transcripts can produce these too; :func:`check_probe_contract` accepts
    any iterable of them.
    """

    #: TCP: the server's byte stream; UDP: the list of response datagrams
    server: bytes | tuple[bytes, ...]
    transport: Transport = "tcp"
    port: int = 0
    #: what StartTLS returns (and the connection's TLS when ``implicit_tls``)
    tls: TLSFacts | None = None
    implicit_tls: bool = False
    name: str = ""


class ContractError(AssertionError):
    """A probe broke the contract; the message lists every problem found."""


@dataclass
class ContractReport:
    """What :func:`check_probe_contract` found for one probe."""

    probe: str
    problems: list[str] = field(default_factory=list)
    #: dialogue runs done (transcripts twice each, plus the hostile inputs)
    runs: int = 0
    #: framer calls done with hostile buffers
    framer_calls: int = 0

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def raise_for_problems(self) -> None:
        """Raise :class:`ContractError` listing the problems, if any."""
        if self.problems:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            raise ContractError(f"probe {self.probe!r} breaks the contract:\n{lines}")


#: a TLS handshake result for transcripts (StartTLS succeeds with it during the checks)
FAKE_TLS = TLSFacts(version="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256", certificate_der=None)


def hostile_streams(seed: int = 0, rounds: int = 24) -> list[bytes]:
    """Server byte streams no probe should choke on: random bytes, huge lines, hostile lengths.

    Deterministic for a given ``seed``. Besides random bytes of several sizes it holds the length
    prefixes of the binary protocols we frame (BER, TPKT, DNS over TCP, DCE/RPC) claiming huge
    messages, endless text lines, many short lines and the greetings of other protocols.
    """
    rng = random.Random(seed)
    out = [
        b"",
        b"\x00" * 64,
        b"\xff" * 70_000,
        b"A" * (1 << 20),  # a line that never ends
        b"A" * 100_000 + b"\r\n",
        b"\r\n" * 5000,
        b"+OK\r\n" * 3000,
        b"220-x\r\n" * 3000,
        b"* OK x\r\n" + b"* " * 40_000,
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n",
        b"\x30\x84\xff\xff\xff\xff\x02\x01\x01",  # BER SEQUENCE claiming 4 GiB
        b"\x30\x89" + b"\xff" * 9,  # BER length of 9 bytes
        b"\x03\x00\xff\xff\x02\xf0\x80",  # TPKT claiming 65535 bytes
        b"\x03\x00\x00\x02",  # TPKT shorter than its own header
        b"\xff\xff" + b"\x00" * 12,  # DNS over TCP claiming 65535 bytes
        b"\x00\x00",  # DNS over TCP, empty message
        b"\x05\x00\x0c\x03\x10\x00\x00\x00\xff\xff\x00\x00\x01\x00\x00\x00",  # DCE/RPC bind_ack, huge frag
        b"\x05\x00\x02\x03\x10\x00\x00\x00\x00\x00\x00\x00",  # DCE/RPC frag_length 0
        b"\x16\x03\x01\xff\xff\x02",  # TLS record claiming 65535 bytes
        b"*99999\r\n$-5\r\n",
    ]
    for size in (1, 3, 7, 16, 64, 512, 4096, 70_000):
        for _ in range(max(1, rounds // 8)):
            out.append(rng.randbytes(size))
    return out


def hostile_datagrams(seed: int = 0, rounds: int = 24) -> list[tuple[bytes, ...]]:
    """UDP answers no probe should choke on (each item: the datagrams of one conversation)."""
    rng = random.Random(seed)
    out: list[tuple[bytes, ...]] = [
        (b"",),
        (b"\x00" * 12,),
        (b"\xff" * 65_507,),
        (b"\x00\x00\x81\x80" + b"\xff" * 8,),  # DNS header claiming 65535 records of each kind
        (b"\x30\x84\xff\xff\xff\xff",),
        tuple(rng.randbytes(40) for _ in range(40)),
    ]
    for size in (1, 12, 64, 512, 1500, 65_507):
        for _ in range(max(1, rounds // 8)):
            out.append((rng.randbytes(size),))
    return out


def _mutations(data: bytes, rng: random.Random, count: int) -> list[bytes]:
    """Truncations, byte flips and garbage tails of a real transcript (bounded, seeded)."""
    if not data:
        return []
    out = []
    for _ in range(count):
        cut = rng.randrange(len(data))
        out.append(data[:cut])
        flipped = bytearray(data)
        for _ in range(1 + len(data) // 64):
            flipped[rng.randrange(len(data))] = rng.randrange(256)
        out.append(bytes(flipped))
        out.append(data[:cut] + rng.randbytes(rng.randrange(1, 2048)))
    return out


def _is_forbidden(name: str, names: frozenset[str]) -> str | None:
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        if ".".join(parts[:i]) in names:
            return ".".join(parts[:i])
    return None


def _imports(tree: ast.AST, package: str | None) -> list[tuple[str, int, bool]]:
    """Every module imported in ``tree``: (absolute name, line, at module level?)."""
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = top and not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, top) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level and package:
                    base = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    mod = f"{base}.{child.module}" if child.module else base
                    found.append((mod, child.lineno, top))
                    found.extend((f"{mod}.{a.name}", child.lineno, top) for a in child.names)
                elif child.module:
                    found.append((child.module, child.lineno, top))
            elif isinstance(child, ast.Call) and child.args and isinstance(child.args[0], ast.Constant):
                # __import__("socket") and importlib.import_module("socket")
                fn = child.func
                fname = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
                if fname in ("__import__", "import_module") and isinstance(child.args[0].value, str):
                    found.append((child.args[0].value, child.lineno, top))
            visit(child, inner)

    visit(tree, True)
    return found


def io_import_problems(probe: Probe | type[Probe]) -> list[str]:
    """Check the source of the probe's module (and of the modules of its own package it imports).

    Uses :mod:`ast`, so nothing is executed: an import of :data:`FORBIDDEN_IMPORTS` anywhere (also
    inside a function, also through ``__import__``/``importlib``) or of :data:`LAZY_IMPORTS` at
    module level is a problem.
    """
    cls = probe if isinstance(probe, type) else type(probe)
    problems: list[str] = []
    start = sys.modules.get(cls.__module__)
    if start is None:
        return [f"module {cls.__module__} of {cls.__qualname__} is not imported"]
    top_pkg = cls.__module__.split(".")[0]
    todo = [start]
    seen: set[str] = set()
    while todo and len(seen) < MAX_MODULES:
        module = todo.pop()
        if module.__name__ in seen:
            continue
        seen.add(module.__name__)
        try:
            path = inspect.getsourcefile(module)
            source = Path(path).read_text(encoding="utf-8") if path else None
        except (OSError, TypeError):
            source = None
        if source is None:
            problems.append(f"no source for module {module.__name__}: cannot check its imports")
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError as exc:
            problems.append(f"{module.__name__}: cannot parse: {exc}")
            continue
        is_pkg = hasattr(module, "__path__")
        package = module.__name__ if is_pkg else module.__name__.rpartition(".")[0] or None
        where = Path(path or "?").name
        for name, line, top in _imports(tree, package):
            bad = _is_forbidden(name, FORBIDDEN_IMPORTS)
            if bad:
                problems.append(f"{module.__name__} ({where}:{line}) imports {bad}: probes are sans-I/O")
            lazy = _is_forbidden(name, LAZY_IMPORTS)
            if lazy and top:
                problems.append(f"{module.__name__} ({where}:{line}) imports {lazy} at module level: "
                                "import it inside the function that needs it")
            if name.split(".")[0] == top_pkg and top_pkg not in ("scanner",):
                sub = sys.modules.get(name)
                if sub is not None and sub.__name__ not in seen:
                    todo.append(sub)
    return problems


def _finding_problems(probe: Probe, finding: Finding | None, label: str) -> list[str]:
    if finding is None:
        return []
    if not isinstance(finding, Finding):
        return [f"{label}: dialogue returned {type(finding).__name__}, not a Finding"]
    problems = []
    if finding.service not in probe.services:
        problems.append(f"{label}: finding.service {finding.service!r} is not in the declared services "
                        f"{probe.services!r}")
    try:
        json.dumps(finding.details)
        json.dumps(finding.host_facts)
    except (TypeError, ValueError) as exc:
        problems.append(f"{label}: finding details are not JSON-serialisable ({exc})")
    if not isinstance(finding.confidence, int) or not 0 <= finding.confidence <= 10:
        problems.append(f"{label}: confidence {finding.confidence!r} is not an int 0..10")
    return problems


class _Deadline(Exception):
    """Raised by the alarm when one dialogue run takes too long."""


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Interrupt a runaway probe (SIGALRM, main thread on Unix only; elsewhere no limit)."""
    usable = (
        hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread() and seconds > 0
    )
    if not usable:
        yield
        return

    def on_alarm(signum: int, frame: object) -> None:
        raise _Deadline(f"took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _short(data: bytes | Sequence[bytes]) -> str:
    if isinstance(data, bytes):
        return f"{len(data)} bytes {data[:24]!r}"
    return f"{len(data)} datagram(s)"


def _run_checked(
    probe: Probe, server: bytes | Sequence[bytes], transport: Transport, port: int, seed: int,
    tls: TLSFacts | None, implicit_tls: bool, time_limit: float, label: str, report: ContractReport,
) -> DialogueRun | None:
    """run_dialogue, turning anything but a clean DialogueRun into a reported problem."""
    report.runs += 1
    try:
        with _time_limit(time_limit):
            run = run_dialogue(probe, server, port=port, transport=transport, seed=seed, tls=tls,
                               implicit_tls=implicit_tls)
    except _Deadline as exc:
        report.problems.append(f"{label}: dialogue {exc} (unbounded loop?)")
        return None
    except Exception as exc:
        tb = traceback.format_exc(limit=-3).strip().splitlines()
        report.problems.append(f"{label}: raised {type(exc).__name__}: {str(exc)[:200]} "
                               f"(only NotThisProtocol or a step error may escape) at {' | '.join(tb[-3:])}")
        return None
    report.problems.extend(_finding_problems(probe, run.finding, label))
    return run


def _check_framer(framer: Framer, buf: bytes, label: str, report: ContractReport, time_limit: float) -> None:
    report.framer_calls += 1
    name = getattr(framer, "__qualname__", None) or getattr(getattr(framer, "func", None), "__qualname__", "framer")
    try:
        with _time_limit(time_limit):
            n = framer(buf)
    except NotThisProtocol:
        return
    except _Deadline as exc:
        report.problems.append(f"framer {name} on {label}: {exc}")
        return
    except Exception as exc:
        report.problems.append(f"framer {name} on {label}: raised {type(exc).__name__}: {str(exc)[:200]}")
        return
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 0 < n <= len(buf)):
        report.problems.append(f"framer {name} on {label}: returned {n!r} for a buffer of {len(buf)} bytes")


def check_probe_contract(
    probe: Probe,
    *,
    transcripts: Iterable[Transcript] = (),
    seed: int = 0,
    hostile_rounds: int = 24,
    time_limit: float = 5.0,
) -> ContractReport:
    """Check what every probe must guarantee; return a report listing the problems found.

    1. *Declared facts* are valid (:func:`scanner.registry.validate_probe`), with a ``summary``
       and a module docstring (the header saying ports, what it sends, what it collects).
    2. *Sans-I/O*: no socket/asyncio/ssl (:data:`FORBIDDEN_IMPORTS`) import in the probe's
       module source or the modules of its own package it imports; scapy only inside functions.
    3. *Deterministic requests*: the dialogue, run twice with the same seed over the same
       transcript (``transcripts`` plus an empty server), sends the same bytes, even when the
       global :mod:`random` state differs between the runs.
    4. *Hostile bytes* (random bytes, endless lines, huge length prefixes, mutations of the given
       transcripts) end in a clean :class:`DialogueRun` (a finding, :class:`NotThisProtocol` or a
       step error), never another exception; so do ``match()`` and every framer the dialogue
       used, and framers return ``None`` or a length within the buffer.

    Findings met on the way must name a declared service and hold JSON-serialisable details.
    """
    state = random.getstate()  # the checks reseed the global generator: leave it as found
    try:
        return _check_contract(probe, list(transcripts), seed, hostile_rounds, time_limit)
    finally:
        random.setstate(state)


def _check_contract(
    probe: Probe, given: list[Transcript], seed: int, hostile_rounds: int, time_limit: float
) -> ContractReport:
    from scanner.registry import validate_probe  # the registry's own rules, not a copy

    report = ContractReport(probe=str(getattr(probe, "name", type(probe).__name__)))
    report.problems.extend(f"declared facts: {p}" for p in validate_probe(probe))
    if report.problems:
        return report  # nothing else can be trusted (dialogue may not even be a generator)
    if not isinstance(probe.summary, str) or not probe.summary.strip():
        report.problems.append("declared facts: summary must be a one-line description")
    module = sys.modules.get(type(probe).__module__)
    if module is None or not (module.__doc__ or "").strip():
        report.problems.append(f"module {type(probe).__module__} has no docstring header "
                               "(default ports, what it sends, what it collects)")
    report.problems.extend(io_import_problems(probe))

    transports: list[Transport] = list(probe.transports)
    port = probe.ports[0] if probe.ports else 0
    base = [Transcript(b"" if t == "tcp" else (), t, port, FAKE_TLS, name=f"empty {t}") for t in transports]
    framers: dict[int, Framer] = {}

    # deterministic requests: same seed, same transcript -> same bytes sent
    for i, tr in enumerate([*given, *base]):
        label = f"transcript {tr.name or i}"
        sent: list[list[bytes]] = []
        for glob in (1, 2):
            random.seed(glob)  # a probe drawing from the global generator gets caught here
            run = _run_checked(probe, tr.server, tr.transport, tr.port or port, seed, tr.tls,
                               tr.implicit_tls, time_limit, label, report)
            if run is None:
                break
            sent.append(run.sent)
            for fr in run.framers[:16]:
                framers.setdefault(id(getattr(fr, "func", fr)), fr)
        if len(sent) == 2 and sent[0] != sent[1]:
            report.problems.append(f"{label}: requests differ between two runs with seed {seed} "
                                   "(random ids must come from ctx.rng)")

    # hostile bytes through the dialogue, match() and the framers
    rng = random.Random(seed)
    streams = hostile_streams(seed, hostile_rounds)
    for tr in given:
        if tr.transport == "tcp" and isinstance(tr.server, bytes):
            streams += _mutations(tr.server, rng, max(1, hostile_rounds // 8))
    for t in transports:
        inputs: list[bytes | tuple[bytes, ...]] = list(streams) if t == "tcp" else list(
            hostile_datagrams(seed, hostile_rounds))
        for data in inputs:
            label = f"hostile {t} input ({_short(data)})"
            run = _run_checked(probe, data, t, port, seed, FAKE_TLS, False, time_limit, label, report)
            if run is not None:
                for fr in run.framers[:16]:
                    framers.setdefault(id(getattr(fr, "func", fr)), fr)
    if probe.server_first:
        for data in streams:
            try:
                with _time_limit(time_limit):
                    probe.match(data[:4096])
            except Exception as exc:
                report.problems.append(f"match() on {_short(data)} raised {type(exc).__name__}: {exc}")
    for fr in list(framers.values())[:16]:
        for data in streams:
            _check_framer(fr, data, _short(data), report, time_limit)
    # one problem per distinct message is enough to act on
    report.problems = list(dict.fromkeys(report.problems))[:50]
    return report


def assert_probe_contract(probe: Probe, **options: Any) -> ContractReport:
    """:func:`check_probe_contract`, raising :class:`ContractError` when a problem is found."""
    report = check_probe_contract(probe, **options)
    report.raise_for_problems()
    return report


def replay_pcap(probes: Probe | Sequence[Probe], path: str | Path) -> list[ScanResult]:
    """Replay a pcap/pcapng capture through ``probes``: one result per server endpoint.

    The same code path as ``fingerprint replay`` (:mod:`scanner.replay`), restricted to the given
    probes, so a plugin's tests can use a capture of its real server.
    """
    from scanner.replay import replay_paths

    chosen = [probes] if isinstance(probes, Probe) else list(probes)
    return replay_paths([str(path)], chosen).results
