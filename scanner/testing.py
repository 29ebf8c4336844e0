"""Test kit for probe authors (part of the stable API): drive a probe without any network.

* :func:`run_dialogue` replays a recorded server byte stream (TCP) or datagrams (UDP) through a
  probe's dialogue and returns what it found and what it sent.
* :func:`feed_bytewise` feeds a framer one byte at a time and checks the framed length equals the
  length found with the whole buffer (segment boundaries must not change a result).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from scanner.api import (
    Finding,
    Framer,
    MessageTooLarge,
    NotThisProtocol,
    Probe,
    ProbeContext,
    Recv,
    RecvClosed,
    Send,
    StartTLS,
    StepError,
    TLSFacts,
    TLSFailed,
    Transport,
)

__all__ = ["DialogueRun", "feed_bytewise", "run_dialogue"]


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

    @property
    def ok(self) -> bool:
        """True when the dialogue returned a finding normally."""
        return self.error is None and self.finding is not None


def run_dialogue(
    probe: Probe,
    server: bytes | Sequence[bytes],
    *,
    port: int = 0,
    transport: Transport = "tcp",
    address: str = "192.0.2.1",
    tls: TLSFacts | None = None,
    implicit_tls: bool = False,
    hostname: str | None = None,
    host_facts: dict[str, object] | None = None,
    seed: int = 0,
    max_steps: int = 1000,
) -> DialogueRun:
    """Drive ``probe.dialogue`` against recorded server bytes, with no I/O.

    TCP: ``server`` is the server's byte stream (a list is joined); each ``Recv`` frames the next
    message out of it, and the end of the stream is a close (:class:`RecvClosed`). UDP: ``server``
    is a list of datagrams, one per ``Recv``. ``StartTLS`` returns ``tls`` (or fails when it is
    None); the bytes after it are taken as the decrypted stream.
    """
    ctx = ProbeContext(
        address=address,
        port=port,
        transport=transport,
        hostname=hostname,
        tls=tls if implicit_tls else None,
        implicit_tls=implicit_tls,
        rng=random.Random(seed),
        host_facts=dict(host_facts or {}),
    )
    if transport == "udp":
        datagrams = [server] if isinstance(server, bytes) else list(server)
        stream = b""
    else:
        stream = server if isinstance(server, bytes) else b"".join(server)
        datagrams = []
    run = DialogueRun(finding=None, ctx=ctx)
    gen = probe.dialogue(ctx)
    value: object = None
    throw: BaseException | None = None
    try:
        for _ in range(max_steps):
            step = gen.throw(throw) if throw is not None else gen.send(value)
            throw, value = None, None
            if isinstance(step, Send):
                run.sent.append(step.data)
            elif isinstance(step, Recv):
                run.framers.append(step.framer)
                if transport == "udp":
                    if not datagrams:
                        throw = RecvClosed("no more datagrams")
                        continue
                    dgram = datagrams.pop(0)
                    try:
                        step.framer(dgram)
                    except NotThisProtocol as exc:
                        throw = exc
                        continue
                    value = dgram
                    continue
                try:
                    n = step.framer(stream[: step.max_size])
                except NotThisProtocol as exc:
                    throw = exc
                    continue
                if n is None:
                    if len(stream) >= step.max_size:
                        throw = MessageTooLarge("message exceeds max_size", stream[:256])
                    else:
                        throw = RecvClosed("stream ended before a complete message", stream[:256])
                    continue
                _check_framed(step.framer, n, min(len(stream), step.max_size))
                value, stream = stream[:n], stream[n:]
            elif isinstance(step, StartTLS):
                if tls is None:
                    throw = TLSFailed("no TLS in this transcript")
                else:
                    ctx.tls = tls
                    value = tls
            else:
                raise TypeError(f"dialogue yielded {step!r}, not a step")
        else:
            raise RuntimeError(f"dialogue did not finish within {max_steps} steps")
    except StopIteration as stop:
        run.finding = stop.value
        return run
    except (NotThisProtocol, StepError) as exc:
        run.error = exc
    run.finding = ctx.partial
    return run


def _check_framed(framer: Framer, n: object, size: int) -> None:
    """A framer must return None or a length within the buffer it was given (the engine's rule)."""
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 0 < n <= size):
        name = getattr(framer, "__qualname__", repr(framer))
        raise TypeError(f"framer {name} returned {n!r} for a buffer of {size} bytes")


def feed_bytewise(framer: Framer, message: bytes) -> int | None:
    """Feed ``message`` to ``framer`` one byte at a time; return the framed length.

    Asserts that no prefix shorter than the framed length is reported complete, and that the
    result equals framing the whole buffer at once.
    """
    whole = framer(message)
    for i in range(1, len(message) + 1):
        n = framer(message[:i])
        if n is not None:
            assert n == whole, f"prefix of {i} bytes framed as {n}, whole buffer as {whole}"
            return n
    return whole
