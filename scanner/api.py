"""The stable probe API: everything a probe (built-in or third-party) may import.

A probe is *sans-I/O*. It never touches a socket: it declares facts about itself and writes its
conversation as a generator (the *dialogue*) that yields steps and receives their outcome:

* ``Send(data)``: the engine writes ``data``; the generator receives ``None``.
* ``Recv(framer)``: the engine reads until ``framer`` says one whole message is buffered and sends
  that message (``bytes``) back into the generator. Bytes past the message stay buffered for the
  next ``Recv``. On UDP, one ``Recv`` is one datagram (the framer must accept it whole).
* ``StartTLS()``: the engine upgrades the connection; the generator receives a :class:`TLSFacts`.
* ``Reconnect()``: the engine closes the connection and opens a new one to the same port (in the
  same TLS mode); the generator receives ``None``. For protocols whose variants can only be told
  apart on fresh connections (ISO-TSAP: MMS then S7). Bounded: a dialogue may reconnect at most
  :data:`MAX_RECONNECTS` times.

When the engine cannot do a step it *throws* into the generator: :class:`RecvTimeout`,
:class:`RecvClosed`, :class:`MessageTooLarge` or :class:`TLSFailed`. A probe may catch them (an
optional command that goes unanswered) or let them propagate: the status then says what ended the
dialogue. A finding stored with :meth:`ProbeContext.found` has proved the protocol: it is kept as
the (partial) result whatever ends the dialogue after it (a step error, :class:`NotThisProtocol`,
a probe bug), so store it only once the protocol is proved. One runner (``scanner.runner``)
applies these rules for the live engine, the pcap replay and the test kit alike.

The dialogue returns a :class:`Finding`, or raises :class:`NotThisProtocol` when the bytes are not
its protocol. Framers and parsers are plain functions over ``bytes`` so that the live engine, the
pcap replay and the transcript tests all drive the very same code (through one runner,
``scanner.runner``).

Framers that remember: a plain framer is called on the whole buffer each time bytes arrive, so a
reply dripped one byte at a time costs quadratic time. A :class:`ResumableFramer` (every built-in
framer is one) also gives a :class:`FrameCursor` per message that looks only at the bytes it has
not seen yet; :func:`prefix_framer` marks a framer that reads a fixed-size header (a length
prefix), whose cost does not depend on the buffer's length.

Passive hooks: three optional methods of :class:`Probe` (``client_hint``, ``pair_key``,
``identify_passive``) let a probe take part in the pcap replay of conversations it did not lead;
the replay itself knows no protocol and asks the registered probes (built-in or plugins).

Everything not exported here is private to portproof and may change without notice.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator, Hashable, Sequence
from dataclasses import dataclass, field
from functools import update_wrapper
from typing import Any, ClassVar, Literal, Protocol

__all__ = [
    "Dialogue",
    "Evidence",
    "Finding",
    "FrameCursor",
    "Framer",
    "MessageTooLarge",
    "NotThisProtocol",
    "Probe",
    "ProbeContext",
    "CLIENT_HINT_BYTES",
    "MAX_RECONNECTS",
    "Reconnect",
    "Recv",
    "RecvClosed",
    "RecvTimeout",
    "ResumableFramer",
    "Send",
    "StartTLS",
    "Step",
    "StepError",
    "TLSFacts",
    "TLSFailed",
    "Transport",
    "frame_cursor",
    "prefix_framer",
]

Transport = Literal["tcp", "udp"]

#: A framer looks at the buffered bytes and returns the length of the first complete message,
#: ``None`` when more bytes are needed, or raises :class:`NotThisProtocol`.
Framer = Callable[[bytes], "int | None"]


class FrameCursor(Protocol):
    """Frames one message out of a receive buffer that only grows between calls.

    ``feed(buf)`` gets every byte buffered for the message so far (the bytes of the previous call
    plus new ones at the end; a ``bytearray`` the cursor must not keep) and answers like a framer:
    the message length, ``None`` for "need more", or :class:`NotThisProtocol`. It looks only at
    bytes it has not examined yet, so each byte costs a bounded amount of work.
    """

    def feed(self, buf: bytes | bytearray) -> int | None:
        """The length of the first complete message in ``buf``, or None (see the class doc)."""
        ...


class ResumableFramer:
    """A framer with memory: :meth:`cursor` gives a fresh :class:`FrameCursor` per message; calling
    the framer itself frames a whole buffer at once (the plain :data:`Framer` contract), through
    the very same cursor code. Subclass and implement :meth:`cursor`."""

    def cursor(self) -> FrameCursor:
        """A new cursor, for one message."""
        raise NotImplementedError

    def __call__(self, buf: bytes) -> int | None:
        """Frame ``buf`` whole (the plain framer contract)."""
        return self.cursor().feed(buf)


class _WholeBuffer:
    """The cursor of a plain framer: frames the whole buffer (as ``bytes``) at every call."""

    __slots__ = ("framer",)

    def __init__(self, framer: Framer) -> None:
        self.framer = framer

    def feed(self, buf: bytes | bytearray) -> int | None:
        return self.framer(buf if isinstance(buf, bytes) else bytes(buf))


class _PrefixFramer(ResumableFramer):
    """See :func:`prefix_framer`."""

    def __init__(self, fn: Callable[[bytes], int | None]) -> None:
        self.fn = fn
        update_wrapper(self, fn)  # name, docstring and module of the function

    def cursor(self) -> FrameCursor:
        return self

    def feed(self, buf: bytes | bytearray) -> int | None:
        # the function only reads a fixed-size header and compares lengths: given the live buffer
        # (no copy), each call costs the same whatever the buffer's length
        return self.fn(buf)  # type: ignore[arg-type]

    def __call__(self, buf: bytes) -> int | None:
        return self.fn(buf)

    def __repr__(self) -> str:
        return f"<framer {self.fn.__module__}.{self.fn.__qualname__}>"


def prefix_framer(fn: Callable[[bytes], int | None]) -> ResumableFramer:
    """Mark ``fn`` as a framer whose cost does not depend on the buffer's length (it reads a
    fixed-size header, such as a length prefix, and compares lengths; it must accept a
    ``bytearray``). The runner then calls it on the live buffer without copying it."""
    return _PrefixFramer(fn)


def frame_cursor(framer: Framer) -> FrameCursor:
    """A cursor for one message: the framer's own when it is resumable (has a ``cursor()``), else
    one that frames the whole buffer at each call (plain framers of third-party plugins)."""
    make = getattr(framer, "cursor", None)
    if callable(make):
        cursor: FrameCursor = make()
        return cursor
    return _WholeBuffer(framer)


class NotThisProtocol(Exception):
    """The bytes seen are not this probe's protocol (a framer, parser or dialogue says so)."""


class StepError(Exception):
    """Base of the errors the engine throws into a dialogue when a step cannot be done."""

    def __init__(self, message: str, partial: bytes = b"") -> None:
        super().__init__(message)
        #: bytes that had been received for the unfinished message (capped)
        self.partial = partial


class RecvTimeout(StepError):
    """No complete message arrived within the read timeout."""


class RecvClosed(StepError):
    """The peer closed (or reset) the connection before a complete message arrived."""


class MessageTooLarge(StepError):
    """The framer still needed more bytes when the message reached ``Recv.max_size``."""


class TLSFailed(StepError):
    """The TLS handshake requested with :class:`StartTLS` failed."""


@dataclass(frozen=True, slots=True)
class Send:
    """Write ``data`` to the peer (one datagram on UDP)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Recv:
    """Read one framed message.

    ``max_size`` bounds the buffered message (the engine throws :class:`MessageTooLarge` past it);
    ``timeout`` overrides the engine's read timeout for this step (seconds).
    """

    framer: Framer
    max_size: int = 64 * 1024
    timeout: float | None = None
    #: the name of the service-database probe whose reply this message is (nmap's probe names:
    #: ``"NULL"`` for a greeting, ``"GetRequest"`` for the reply to ``GET / HTTP/1.0``,
    #: ``"DNSVersionBindReq"`` ...): the driver keeps tagged messages in
    #: :attr:`ProbeContext.responses` so the database can match them after the dialogue
    tag: str | None = None
    #: decoding this message may cost more CPU than one event loop can spare (scapy's NDR decoder
    #: on a long endpoint list: ~1 ms per entry): the live engine then feeds the bytes of this step
    #: to the runner in a worker thread, so every other connection keeps being served meanwhile
    offload: bool = False


@dataclass(frozen=True, slots=True)
class StartTLS:
    """Upgrade the connection to TLS (for STARTTLS-style commands); returns :class:`TLSFacts`."""

    server_name: str | None = None


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Close the connection and open a fresh one to the same port (same TLS mode)."""


#: most ``Reconnect`` steps one dialogue may take
MAX_RECONNECTS = 3

#: bytes of a client's first data given to :meth:`Probe.client_hint`
CLIENT_HINT_BYTES = 64

Step = Send | Recv | StartTLS | Reconnect

#: The type of a probe's dialogue generator.
Dialogue = Generator[Step, Any, "Finding"]


@dataclass(frozen=True, slots=True)
class TLSFacts:
    """What the engine learned from a TLS handshake (given to the dialogue after StartTLS)."""

    version: str
    cipher: str
    certificate_der: bytes | None = None
    alpn: str | None = None


@dataclass(frozen=True, slots=True)
class Evidence:
    """One fact that decided an identification: where it was seen and what it said."""

    #: where: "greeting", "EHLO", "CAPABILITY", "rootDSE vendorName", ...
    source: str
    #: the exact text (or a short hex dump) seen; made terminal-safe only at display time
    value: str


@dataclass(slots=True)
class Finding:
    """A probe's answer: the service it confirmed and what it learned about the product.

    ``service`` uses the profile's service names (``smtp``, ``imap``, ``pop3``, ``nntp``,
    ``ldap``, ``dns``, ``msrpc``, ``tsap``, ``http``, ...). ``confidence`` is 0..10 like nmap's
    ``conf``: 10 when the product named itself, lower when inferred from behaviour.
    """

    service: str
    product: str | None = None
    version: str | None = None
    confidence: int = 8
    evidence: list[Evidence] = field(default_factory=list)
    #: probe-specific facts (JSON-serialisable values only)
    details: dict[str, Any] = field(default_factory=dict)
    #: short free text for nmap's extrainfo (OS, hostname, ...)
    extrainfo: str | None = None
    #: host facts other probes on the same host may use (e.g. the AD domain)
    host_facts: dict[str, Any] = field(default_factory=dict)
    #: the rule that named ``product``/``version``: ``"portproof:<probe>/<rule>"`` for ours,
    #: ``"nmap-service-probes:<line>"`` for the service database; None when nothing was named
    rule: str | None = None

    def inherit(self, earlier: Finding) -> Finding:
        """Keep the details an earlier finding of the same dialogue gathered that this one lacks
        (a dialogue re-identifies as it learns more); returns ``self``."""
        for key, value in earlier.details.items():
            self.details.setdefault(key, value)
        return self

    def add(self, source: str, value: str | bytes) -> None:
        """Record a piece of evidence (bytes are decoded as latin-1 so nothing is lost)."""
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        self.evidence.append(Evidence(source, value[:4096]))


@dataclass(slots=True)
class ProbeContext:
    """What the engine tells a dialogue about the connection it is driving."""

    address: str
    port: int
    transport: Transport = "tcp"
    #: the name the user gave for the target, if any (for Host headers, SNI, EHLO checks)
    hostname: str | None = None
    #: set when the connection is (or became) TLS
    tls: TLSFacts | None = None
    #: True when TLS was started by the engine before the dialogue (implicit TLS)
    implicit_tls: bool = False
    #: seeded generator: every random id a probe sends must come from here (replayable requests)
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    #: facts found by earlier probes on the same host (e.g. ``{"ad_domain": "lab.example.test"}``)
    host_facts: dict[str, Any] = field(default_factory=dict)
    #: the name the client announces in EHLO/HELO and similar commands
    client_name: str = "portproof.invalid"
    #: the finding stored with :meth:`found`: kept whatever ends the dialogue after it
    partial: Finding | None = None
    #: True when the dialogue is driven over a capture (pcap replay): follow-up requests whose
    #: answers a capture cannot hold should be skipped
    replay: bool = False
    #: messages received by ``Recv`` steps that carry a ``tag`` (first message per tag, capped),
    #: filled by the driver for the service database
    responses: dict[str, bytes] = field(default_factory=dict)
    #: True in a ``--fast`` scan: name the service and product in as few exchanges as it takes and
    #: skip the follow-up requests that only add details (fewer details, a fraction of the cost)
    fast: bool = False

    def found(self, finding: Finding) -> Finding:
        """Remember ``finding`` as the result so far and return it (for incremental dialogues).

        Call it once the bytes have proved the protocol: the finding is then reported even if the
        dialogue ends later on an error or a :class:`NotThisProtocol`."""
        self.partial = finding
        return finding


class Probe:
    """Base class of every probe. Subclasses set the class attributes and write ``dialogue``.

    Declared facts (validated when the registry loads the probe):

    * ``name``: the probe's name, same as its module, entry point and CLI option;
    * ``services``: the service names it can report;
    * ``transports``: ``("tcp",)``, ``("udp",)`` or both;
    * ``ports``: port hints (the fast lane tries the probe first on these ports);
    * ``tls_ports``: ports where the service usually runs inside implicit TLS;
    * ``server_first``: the server speaks first; ``match`` then decides from the greeting;
    * ``rarity``: 1 (common) .. 9 (rare): outside its hinted ports the probe only runs when
      ``rarity <= intensity``;
    * ``summary``: one line for ``fingerprint probes``;
    * ``alpn``: ALPN protocol ids (RFC 7301) that name this probe's service inside TLS.

    Optional *passive hooks* let pcap replay use the probe on conversations it did not lead (all
    three default to "no opinion", so a probe without them works as before; replay contains an
    exception in a hook like one in a dialogue: the attempt becomes ``probe-bug`` and replay goes
    on): :meth:`client_hint`, :meth:`pair_key` and :meth:`identify_passive`.
    """

    name: ClassVar[str] = ""
    services: ClassVar[tuple[str, ...]] = ()
    transports: ClassVar[tuple[Transport, ...]] = ("tcp",)
    ports: ClassVar[tuple[int, ...]] = ()
    tls_ports: ClassVar[tuple[int, ...]] = ()
    server_first: ClassVar[bool] = False
    rarity: ClassVar[int] = 5
    summary: ClassVar[str] = ""
    alpn: ClassVar[tuple[str, ...]] = ()

    def match(self, greeting: bytes) -> bool:
        """For server-first probes: could ``greeting`` (the first bytes read) be this protocol?

        Cheap and conservative; the dialogue then confirms. Client-first probes return False.
        """
        return False

    def client_hint(self, first_client_bytes: bytes) -> bool:
        """Replay: do a client's first bytes on a TCP connection make it plain that the
        conversation is this probe's protocol (an HTTP method, a RESP command array ...)?

        ``first_client_bytes`` holds at most :data:`CLIENT_HINT_BYTES` bytes. Cheap and
        unmistakable only: replay then offers the conversation to this probe first, and uses the
        answer to tell the client side of a connection whose start was not captured.
        """
        return False

    def pair_key(self, datagram: bytes) -> Hashable | None:
        """Replay of UDP: a key equal for a request and its response (DNS: id and question;
        CLDAP: the message id), or None when the datagram is not this protocol's.

        Replay pairs responses with requests by the key of the first probe that gives one.
        """
        return None

    def identify_passive(self, server_messages: Sequence[bytes], client_messages: Sequence[bytes]) -> Finding | None:
        """Replay: identify a conversation this probe did not lead, from what both sides sent.

        TCP: each sequence holds one element, the side's reassembled bytes (the server's up to a
        STARTTLS upgrade); UDP: the datagrams in capture order. ``server_messages`` is empty when
        the capture holds only the client's side: replay then marks the result "only the client
        was seen" and keeps no product. Return a :class:`Finding` (or None: not this protocol).

        Replay calls it on the probe whose dialogue identified the conversation (what it returns
        adds the details, evidence and host facts the dialogue lacked: an NTLM CHALLENGE seen in
        another client's authentication ...) and, when no dialogue did, on every probe (the most
        confident finding wins). Never raise for bytes that are not the protocol: return None.
        """
        return None

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        """The conversation, as a generator of steps returning a :class:`Finding`."""
        raise NotImplementedError
        yield  # pragma: no cover  (makes this a generator function)
