"""The one dialogue runner: a pure state machine that drives a probe's dialogue (no I/O, no clock).

Like h11's ``Connection``, :class:`Runner` owns the protocol logic and nothing else. The live
engine, the pcap replay and the test kit (``scanner.testing``) are thin adapters: they ask
:meth:`Runner.next_request` what to do, carry it out, and report what happened as events:

==========================  ============================================================================
request                     the adapter does, then reports
==========================  ============================================================================
:class:`SendBytes`          writes the bytes; :meth:`Runner.sent` (or :meth:`Runner.send_failed`)
:class:`NeedData`           waits up to the step's time for bytes: :meth:`Runner.receive_data`,
                            :meth:`Runner.peer_closed`, :meth:`Runner.timed_out` (UDP: one datagram
                            per ``receive_data``; :meth:`Runner.refused` for ICMP port unreachable)
:class:`DoStartTLS`         the handshake: :meth:`Runner.tls_started` or :meth:`Runner.tls_failed`
:class:`DoReconnect`        a fresh connection: :meth:`Runner.reconnected` or
                            :meth:`Runner.reconnect_failed`
:class:`Done`               nothing: the dialogue is over; :attr:`Done.outcome` says how
==========================  ============================================================================

The runner alone owns the rules every driver used to repeat (and let drift):

* the step budget (:data:`MAX_STEPS`) and reconnect accounting (:data:`scanner.api.MAX_RECONNECTS`);
* the receive buffer and framing: each ``Recv`` frames out of the bytes received so far; a
  resumable framer (:class:`scanner.api.ResumableFramer`) gets one cursor per message, so a reply
  dripped one byte at a time costs linear time; a framer's result is checked (an int within the
  buffer, else a probe bug); ``max_size`` is enforced (:class:`~scanner.api.MessageTooLarge`);
* plaintext received before a STARTTLS handshake is refused (injection, CVE-2011-0411 style);
* tagged replies: a ``Recv(tag=...)`` message is kept in ``ctx.responses[tag]`` (first per tag,
  at most :data:`RESPONSE_CAP` bytes);
* the partial-result rule: a finding stored with ``ctx.found()`` proved the protocol, so it is
  kept whatever ends the dialogue after it (a step error, ``NotThisProtocol``, a probe bug, the
  step budget); the status says what ended it;
* the error-to-status map (:func:`scanner.results.step_status`; anything else is ``probe-bug``
  with its traceback);
* the size of a finding's ``details`` (:func:`bound_details`).
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any

import msgspec

from scanner.api import (
    MAX_RECONNECTS,
    Finding,
    FrameCursor,
    Framer,
    MessageTooLarge,
    NotThisProtocol,
    Probe,
    ProbeContext,
    Reconnect,
    Recv,
    RecvClosed,
    RecvTimeout,
    Send,
    StartTLS,
    StepError,
    TLSFacts,
    TLSFailed,
    frame_cursor,
)
from scanner.results import Status, step_status

__all__ = [
    "DETAILS_CAP",
    "MAX_STEPS",
    "RESPONSE_CAP",
    "DoReconnect",
    "DoStartTLS",
    "Done",
    "NeedData",
    "Outcome",
    "ProbeBug",
    "Request",
    "Runner",
    "SendBytes",
    "bound_details",
    "try_match",
]

#: most steps one dialogue may take, in every driver (a runaway generator is a probe bug)
MAX_STEPS = 1000
#: bytes of a tagged reply kept in ``ctx.responses``
RESPONSE_CAP = 16 * 1024
#: most bytes of a finding's ``details`` (as JSON); larger details are trimmed by bound_details
DETAILS_CAP = 256 * 1024
#: a string value in trimmed details keeps at most this many characters, a list this many items
_TRIM_STR = 2048
_TRIM_LIST = 256
#: bytes of an unfinished message given to a step error (``StepError.partial``)
_PARTIAL = 256


class ProbeBug(RuntimeError):
    """The dialogue broke the probe contract (budget exceeded, bad framer result, bad step)."""


@dataclass(frozen=True, slots=True)
class SendBytes:
    """Write ``data`` to the peer (one datagram on UDP), then report :meth:`Runner.sent`."""

    data: bytes


@dataclass(frozen=True, slots=True)
class NeedData:
    """Wait for bytes (TCP) or one datagram (UDP).

    ``timeout`` is the step's own limit (None: the adapter's default read timeout); it covers the
    whole ``Recv`` step, so the adapter starts its deadline when ``recv`` (the step's ordinal)
    changes and keeps it across the waits of the same step.
    """

    timeout: float | None
    recv: int
    datagram: bool = False
    #: the step's ``Recv.offload``: report its bytes from a worker thread (heavy decoding follows)
    offload: bool = False


@dataclass(frozen=True, slots=True)
class DoStartTLS:
    """Run a TLS handshake on the connection."""

    server_name: str | None


@dataclass(frozen=True, slots=True)
class DoReconnect:
    """Close the connection and open a fresh one to the same port (same TLS mode)."""


@dataclass(slots=True)
class Outcome:
    """How a dialogue ended."""

    #: the finding returned, or the partial one stored with ``ctx.found`` (see ``partial``)
    finding: Any
    #: one of :data:`scanner.results.STATUSES`
    status: Status
    error: str | None = None
    #: for ``probe-bug``: the traceback of the probe's exception
    traceback: str | None = None
    #: the exception that ended the dialogue (None on success)
    exception: BaseException | None = None
    steps: int = 0
    reconnects: int = 0
    #: the dialogue reached a successful StartTLS
    starttls: bool = False
    #: the finding is the partial one (the dialogue did not return normally)
    partial: bool = False


@dataclass(frozen=True, slots=True)
class Done:
    """The dialogue is over."""

    outcome: Outcome


Request = SendBytes | NeedData | DoStartTLS | DoReconnect | Done


def _framer_name(framer: Framer) -> str:
    return str(getattr(framer, "__qualname__", None) or getattr(getattr(framer, "func", None), "__qualname__", None)
               or type(framer).__name__)


def try_match(probe: Probe, greeting: bytes) -> tuple[bool, str | None]:
    """``probe.match(greeting)`` for a server-first probe: (matched, traceback when it raised).

    A raising matcher is a probe bug (reported with its traceback by scan and replay alike), never
    a silent no-match.
    """
    try:
        return bool(probe.match(greeting)), None
    except Exception:
        return False, traceback.format_exc()


def _trim(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return value if len(value) <= _TRIM_STR else value[:_TRIM_STR] + "..."
    if isinstance(value, list | tuple):
        items = [_trim(v, depth + 1) for v in value[:_TRIM_LIST]]
        if len(value) > _TRIM_LIST:
            items.append(f"... {len(value) - _TRIM_LIST} more")
        return items
    if isinstance(value, dict):
        if depth > 8:
            return "..."
        out = {}
        for i, (k, v) in enumerate(value.items()):
            if i >= _TRIM_LIST:
                out["..."] = f"{len(value) - _TRIM_LIST} more keys"
                break
            out[k] = _trim(v, depth + 1)
        return out
    return value


def bound_details(details: dict[str, Any], cap: int = DETAILS_CAP) -> dict[str, Any]:
    """``details`` if its JSON is at most ``cap`` bytes; else a trimmed copy (long strings cut,
    long lists and dicts shortened) marked ``details_trimmed``, and as a last resort only the
    keys whose values are small."""
    try:
        size = len(msgspec.json.encode(details))
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError):
        return details  # not JSON-serialisable: the contract check reports it; output encodes it
    if size <= cap:
        return details
    trimmed = _trim(details)
    trimmed["details_trimmed"] = size
    if len(msgspec.json.encode(trimmed)) <= cap:
        return trimmed
    small = {k: v for k, v in trimmed.items() if len(msgspec.json.encode(v)) <= 1024}
    small["details_trimmed"] = size
    return small


class Runner:
    """Drive one probe's dialogue: feed it events, carry out its requests (see the module doc).

    ``can_reconnect``: whether the adapter can serve :class:`DoReconnect` (UDP cannot; a
    ``Reconnect`` step is then told the connection closed). ``unread_at_starttls``: what becomes
    of bytes received and not yet read when the dialogue asks for ``StartTLS``: ``"refuse"`` (live:
    they would be injected plaintext, the step fails with :class:`~scanner.api.TLSFailed`),
    ``"drop"`` (replay: they answer requests the capture's client made and the probe did not) or
    ``"keep"`` (transcripts: the bytes after the STARTTLS reply stand for the decrypted stream).
    ``max_steps``: the step budget. ``record``: keep every payload sent and every framer used
    (:attr:`sent_log`, :attr:`framers`; the test kit reports them).
    """

    def __init__(
        self,
        probe: Probe,
        ctx: ProbeContext,
        *,
        max_steps: int = MAX_STEPS,
        can_reconnect: bool = True,
        unread_at_starttls: str = "refuse",
        record: bool = False,
    ) -> None:
        self.probe = probe
        self.ctx = ctx
        self.udp = ctx.transport == "udp"
        self.max_steps = max_steps
        self.can_reconnect = can_reconnect and not self.udp
        if unread_at_starttls not in ("refuse", "drop", "keep"):
            raise ValueError(f"unread_at_starttls: {unread_at_starttls!r}")
        self.unread_at_starttls = unread_at_starttls
        self.record = record
        #: every Send payload, in order (with ``record``)
        self.sent_log: list[bytes] = []
        #: the framer of every Recv step, in order (with ``record``; the contract check feeds them
        #: hostile bytes)
        self.framers: list[Framer] = []
        #: the ``tag`` of every Recv step, in order (with ``record``)
        self.tags: list[str | None] = []
        self._buf = bytearray()
        self._closed: str | None = None
        self._implicit = ctx.tls if ctx.implicit_tls else None
        self._steps = 0
        self._recvs = 0
        self._reconnects = 0
        self._starttls = False
        self._step: Any = None
        self._cursor: FrameCursor | None = None
        self._request: Request
        try:
            self._gen: Any = probe.dialogue(ctx)
        except Exception as exc:
            self._gen = None
            self._request = Done(self._bug(exc, "dialogue() raised", traceback.format_exc()))
            return
        self._advance(None, None)

    # ------------------------------------------------------------------ what to do
    def next_request(self) -> Request:
        """What the adapter must do now (the same request until an event answers it)."""
        return self._request

    @property
    def done(self) -> bool:
        """True once the dialogue is over."""
        return isinstance(self._request, Done)

    @property
    def outcome(self) -> Outcome:
        """How the dialogue ended (only once :attr:`done`)."""
        req = self._request
        if not isinstance(req, Done):
            raise RuntimeError("the dialogue is still running")
        return req.outcome

    @property
    def buffered(self) -> bytes:
        """Bytes received and not yet framed into a message."""
        return bytes(self._buf)

    # ------------------------------------------------------------------ events
    def sent(self) -> None:
        """The bytes of :class:`SendBytes` were written."""
        self._expect(SendBytes)
        self._advance(None, None)

    def send_failed(self, message: str) -> None:
        """Writing failed (the connection is gone): the dialogue is told the peer closed."""
        self._expect(SendBytes)
        self._closed = message
        self._advance(None, RecvClosed(message))

    def receive_data(self, data: bytes) -> None:
        """Bytes arrived (TCP: any segment of the stream; UDP: exactly one datagram).

        On TCP bytes may arrive at any time (the adapter may pass what it already holds); they are
        framed when a ``Recv`` asks for them.
        """
        if self.udp:
            self._expect(NeedData)
            self._datagram(data)
            return
        if not data:
            return
        self._buf += data
        if isinstance(self._request, NeedData):
            self._try_frame()

    def peer_closed(self, message: str = "connection closed before a complete message") -> None:
        """The peer closed (or reset) the connection; later reads fail with ``message``."""
        self._closed = message
        if isinstance(self._request, NeedData):
            self._try_frame()

    def timed_out(self) -> None:
        """No complete message within the step's time."""
        self._expect(NeedData)
        what = "no datagram within the timeout" if self.udp else "read timed out"
        self._advance(None, RecvTimeout(what, bytes(self._buf[:_PARTIAL])))

    def refused(self) -> None:
        """UDP: the port answered ICMP port unreachable (the port is closed)."""
        self._expect(NeedData)
        self._finish("connection-refused", "port unreachable", None, ConnectionRefusedError("port unreachable"))

    def tls_started(self, facts: TLSFacts) -> None:
        """The STARTTLS handshake succeeded."""
        self._expect(DoStartTLS)
        self._starttls = True
        self.ctx.tls = facts
        self._advance(facts, None)

    def tls_failed(self, message: str) -> None:
        """The STARTTLS handshake failed (the connection is unusable afterwards)."""
        self._expect(DoStartTLS)
        self._closed = message
        self._advance(None, TLSFailed(message))

    def reconnected(self, tls: TLSFacts | None = None) -> None:
        """A fresh connection is open (``tls``: its implicit TLS facts, if any)."""
        self._expect(DoReconnect)
        self._buf.clear()
        self._closed = None
        self.ctx.tls = tls
        self._advance(None, None)

    def reconnect_failed(self, message: str = "reconnect failed") -> None:
        """No fresh connection could be opened."""
        self._expect(DoReconnect)
        self._buf.clear()
        self._closed = message
        self._advance(None, RecvClosed(message))

    # ------------------------------------------------------------------ internals
    def _expect(self, kind: type) -> None:
        if not isinstance(self._request, kind):
            raise RuntimeError(f"event for {kind.__name__} while the runner asks {self._request!r}")

    def _bug(self, exc: BaseException, error: str, tb: str | None) -> Outcome:
        return self._outcome("probe-bug", error, tb, exc)

    def _outcome(self, status: Status, error: str | None, tb: str | None, exc: BaseException | None) -> Outcome:
        partial = self.ctx.partial
        return Outcome(
            finding=partial,
            status=status,
            error=error,
            traceback=tb,
            exception=exc,
            steps=self._steps,
            reconnects=self._reconnects,
            starttls=self._starttls,
            partial=partial is not None,
        )

    def _finish(self, status: Status, error: str | None, tb: str | None, exc: BaseException | None) -> None:
        out = self._outcome(status, error, tb, exc)
        if out.finding is not None:
            out.finding.details = bound_details(out.finding.details)
        self._request = Done(out)
        self._close_gen()

    def _close_gen(self) -> None:
        gen, self._gen = self._gen, None
        if gen is not None:
            try:
                gen.close()
            except Exception:  # a dialogue that raises on close: the outcome is already decided
                pass

    def _advance(self, value: Any, throw: BaseException | None) -> None:
        """Resume the dialogue with ``value`` (or ``throw``) and run it until it needs the adapter.

        The only place any dialogue generator is driven (``git grep "gen.send("``).
        """
        gen = self._gen
        while gen is not None:
            self._steps += 1
            if self._steps > self.max_steps:
                err = ProbeBug(f"dialogue took more than {self.max_steps} steps")
                self._finish("probe-bug", str(err), None, err)
                return
            try:
                step = gen.throw(throw) if throw is not None else gen.send(value)
            except StopIteration as stop:
                finding = stop.value
                if isinstance(finding, Finding):
                    finding.details = bound_details(finding.details)
                    self._request = Done(Outcome(finding, "success", steps=self._steps,
                                                 reconnects=self._reconnects, starttls=self._starttls))
                    self._gen = None
                    return
                err = ProbeBug(f"dialogue returned {type(finding).__name__}, not a Finding")
                self._finish("probe-bug", str(err), None, err)
                return
            except (NotThisProtocol, StepError) as exc:
                self._finish(step_status(exc) or "probe-bug", str(exc), None, exc)
                return
            except Exception as exc:
                self._finish("probe-bug", f"{type(exc).__name__}: {exc}", traceback.format_exc(), exc)
                return
            value, throw = None, None
            if isinstance(step, Send):
                data = bytes(step.data)
                if self.record:
                    self.sent_log.append(data)
                self._request = SendBytes(data)
                return
            if isinstance(step, Recv):
                if self.record:
                    self.framers.append(step.framer)
                    self.tags.append(step.tag)
                self._step = step
                self._recvs += 1
                self._cursor = None
                if self.udp:
                    if self._closed is not None:
                        throw = RecvClosed(self._closed)
                        continue
                    self._request = NeedData(step.timeout, self._recvs, datagram=True, offload=step.offload)
                    return
                self._request = NeedData(step.timeout, self._recvs, offload=step.offload)
                got = self._frame()
                if got is None:
                    return  # wait for bytes
                value, throw = got
                if isinstance(value, _FramerBug):
                    self._framer_bug(value)
                    return
                continue
            if isinstance(step, StartTLS):
                if self.udp:
                    throw = TLSFailed("StartTLS on a UDP socket")
                elif self._closed is not None:
                    throw = TLSFailed(f"TLS handshake failed: {self._closed}")
                elif self._buf and self.unread_at_starttls == "refuse":
                    # bytes after the STARTTLS reply would be injected plaintext (CVE-2011-0411 style)
                    throw = TLSFailed("plaintext bytes received before the TLS handshake", bytes(self._buf[:_PARTIAL]))
                else:
                    if self.unread_at_starttls == "drop":
                        self._buf.clear()
                    self._request = DoStartTLS(step.server_name or self.ctx.hostname)
                    return
                continue
            if isinstance(step, Reconnect):
                self._reconnects += 1
                if self._reconnects > MAX_RECONNECTS:
                    err = ProbeBug(f"dialogue asked to reconnect more than {MAX_RECONNECTS} times (more than "
                                   f"{MAX_RECONNECTS} reconnects)")
                    self._finish("probe-bug", str(err), None, err)
                    return
                if not self.can_reconnect:
                    throw = RecvClosed("Reconnect is not available on this connection")
                    continue
                self._starttls = False
                self.ctx.tls = self._implicit
                self._request = DoReconnect()
                return
            err = ProbeBug(f"dialogue yielded {type(step).__name__}, not a step")
            self._finish("probe-bug", str(err), None, err)
            return

    def _framer_bug(self, bug: _FramerBug) -> None:
        exc = bug.exc
        error = str(exc) if bug.tb is None else f"framer raised {type(exc).__name__}: {exc}"
        self._finish("probe-bug", error, bug.tb, exc)

    def _frame(self) -> tuple[Any, BaseException | None] | None:
        """Frame the current ``Recv`` out of the buffer: (message, None), (None, error to throw),
        (bug, None) for a framer that broke the contract, or None to wait for more bytes."""
        step: Recv = self._step
        buf = self._buf
        max_size = step.max_size
        if buf:
            if len(buf) <= max_size:
                view: bytes | bytearray = buf
            else:
                view = bytes(buf[:max_size])
            try:
                if self._cursor is None:
                    self._cursor = frame_cursor(step.framer)
                n = self._cursor.feed(view)
            except NotThisProtocol as exc:
                return None, exc
            except Exception as exc:
                return _FramerBug(exc, traceback.format_exc()), None
            if n is not None:
                if not isinstance(n, int) or isinstance(n, bool) or not 0 < n <= len(view):
                    bad = TypeError(f"framer {_framer_name(step.framer)} returned {n!r} for a buffer of "
                                    f"{len(view)} bytes")
                    return _FramerBug(bad, None), None
                msg = bytes(buf[:n])
                del buf[:n]
                self._cursor = None
                if step.tag is not None and step.tag not in self.ctx.responses:
                    self.ctx.responses[step.tag] = msg[:RESPONSE_CAP]
                return msg, None
            if len(buf) >= max_size:
                return None, MessageTooLarge(f"message larger than {max_size} bytes", bytes(buf[:_PARTIAL]))
        if self._closed is not None:
            return None, RecvClosed(self._closed, bytes(buf[:_PARTIAL]))
        return None

    def _try_frame(self) -> None:
        got = self._frame()
        if got is None:
            return
        value, throw = got
        if isinstance(value, _FramerBug):
            self._framer_bug(value)
            return
        self._advance(value, throw)

    def _datagram(self, data: bytes) -> None:
        step: Recv = self._step
        if len(data) > step.max_size:
            self._advance(None, MessageTooLarge("datagram larger than max_size", data[:_PARTIAL]))
            return
        try:
            # one datagram is one message: the framer only judges it (it may refuse it)
            frame_cursor(step.framer).feed(data)
        except NotThisProtocol as exc:
            self._advance(None, exc)
            return
        except Exception as exc:
            self._framer_bug(_FramerBug(exc, traceback.format_exc()))
            return
        if step.tag is not None and step.tag not in self.ctx.responses:
            self.ctx.responses[step.tag] = data[:RESPONSE_CAP]
        self._advance(data, None)


class _FramerBug:
    """A framer broke the contract: it raised something other than NotThisProtocol (``tb`` holds
    the traceback) or returned a length outside the buffer (``tb`` is None)."""

    __slots__ = ("exc", "tb")

    def __init__(self, exc: BaseException, tb: str | None) -> None:
        self.exc = exc
        self.tb = tb
