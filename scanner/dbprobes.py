"""nmap's own probes in the engine's slow lane, for services portproof has no probe for.

The service database (:mod:`scanner.servicedb`, nmap's ``nmap-service-probes`` read at run time
from the installed package, never copied) holds, besides its match lines, the *probes* nmap sends:
``Probe TCP GetRequest q|GET / HTTP/1.0\\r\\n\\r\\n|`` with the ports it suits (``ports``,
``sslports``), how rare its service is (``rarity``) and how long to wait (``totalwaitms``). Once our
own probes have failed on a port, the engine sends those probes the way nmap's service scan
chooses them (``service_scan.cc``, "Technique Described" in nmap's book):

* the file's TCP probes for a TCP port, its UDP probes for a UDP port; never the ``NULL`` probe
  (the engine's greeting read is it);
* first the probes whose ``ports`` (``sslports`` inside TLS) name the port, whatever their rarity;
* then, in file order, the others whose ``rarity`` is within ``--intensity``;
* a ``softmatch`` narrows what is left to the probes whose match lines can name that service
  (nmap's ``serviceIsPossible``), and a hard match ends the search;
* a port in the file's ``Exclude`` directive (printers, which print whatever they are sent) gets
  none; a port that closed on connect without a byte within the NULL probe's ``tcpwrappedms``
  is "tcpwrapped" and gets none either.

Departures from nmap, each for a reason:

* the probes that are a TLS ClientHello (``SSLSessionReq``, ``TLSSessionReq`` ...) are not sent:
  the engine makes a real TLS handshake itself (its TLS layer) and reruns everything inside;
* a probe's wait is its ``totalwaitms`` (nmap's 5 s when absent) capped by our read timeouts (the
  user's knobs); a reply counts as complete once a hard match is found, once
  :data:`READ_CAP` bytes are in (nmap stops at 4096 too), or after :data:`REPLY_QUIET` s with no
  new byte (nmap waits the whole ``totalwaitms``: on a server that answers every probe with an
  error line, 29 probes would cost 29 x 5 s);
* the whole lane has a time budget per port (``ScanOptions.nmap_budget``);
* nothing is sent to a TCP port before it has shown it speaks (a greeting, or bytes or a close in
  reply to one of our requests), so a port silent to everything costs what it cost before; the
  probes the file hints for the port then go right before our unhinted guesses, the others after
  every layer, inside TLS when a handshake succeeded (nmap too reruns its probes through SSL);
* on a UDP port none of ours is hinted for, the hinted ones go out at once beside ours (their
  waits overlap ours); the others, a few at a time, only once the port answered something.

Our probes keep precedence: they run first, and when a database probe names a service one of ours
reports but did not try on that layer, ours runs before the database's finding is accepted.

Each probe is a :class:`NmapProbe`: a sans-I/O dialogue like ours, driven by the one runner
(``scanner.runner``) through the engine's ``_drive`` on a fresh connection, so connection
handling, concurrency, timeouts, ``--record`` and the attempts list (``nmap:GetRequest``) are the
ones every probe has. It is built per database probe at run time: it is not in the plugin
registry and ``fingerprint probes`` does not list it. Its reply is matched by the same matcher
that :mod:`scanner.breadth` uses (:meth:`ServiceDB.match`) and reported through
:func:`scanner.breadth.db_finding` (the claim cites its ``nmap-service-probes:<line>``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from scanner.api import (
    Dialogue,
    Finding,
    NotThisProtocol,
    Probe,
    ProbeContext,
    Recv,
    RecvClosed,
    RecvTimeout,
    Send,
    prefix_framer,
)
from scanner.breadth import db_finding

if TYPE_CHECKING:
    from scanner.breadth import DatabaseHandle
    from scanner.servicedb import DBMatch, DBProbe, ServiceDB

__all__ = [
    "DEFAULT_TCPWRAPPED_MS",
    "DEFAULT_WAIT_MS",
    "MAX_PIECES",
    "READ_CAP",
    "REPLY_QUIET",
    "NmapLane",
    "NmapProbe",
    "excluded",
    "is_tls_hello",
    "nmap_probe",
    "outcome_kind",
    "plan",
]

#: nmap's wait for a probe's reply when the file gives no ``totalwaitms`` (DEFAULT_SERVICEWAITMS)
DEFAULT_WAIT_MS = 5000
#: nmap's ``tcpwrappedms`` when the NULL probe gives none (DEFAULT_TCPWRAPPEDMS)
DEFAULT_TCPWRAPPED_MS = 2000
#: bytes of a reply read and matched (nmap gives up reading a reply that matches nothing at 4096)
READ_CAP = 4096
#: seconds without a new byte after which a reply that matches nothing counts as complete
REPLY_QUIET = 0.5
#: most reads of one reply (each ends on a quiet period, the cap or the peer closing)
MAX_PIECES = 16
#: the database services that name no service (a TLS layer, a wrapper, nothing known)
_TLS_SERVICE = "ssl"
_NO_SERVICE = frozenset({"tcpwrapped", "unknown"})


@prefix_framer
def _any_bytes(buf: bytes) -> int | None:
    """Every byte buffered so far is one piece of the reply (the dialogue joins the pieces)."""
    return len(buf) or None


def is_tls_hello(payload: bytes) -> bool:
    """Whether a probe's payload is a TLS/SSL ClientHello: a TLS record (content type 0x16
    handshake, version major 3) or an SSLv2 record (high bit of the 2-byte length, message type
    1 = CLIENT-HELLO). The engine's own TLS layer replaces such probes."""
    if len(payload) >= 3 and payload[0] == 0x16 and payload[1] == 0x03:
        return True
    return len(payload) >= 3 and payload[0] & 0x80 != 0 and payload[2] == 0x01


def excluded(spec: str | None, transport: str, port: int) -> bool:
    """Whether the file's ``Exclude`` spec (nmap's port syntax: ``T:9100-9107,U:53``; items
    before any ``T:``/``U:`` prefix apply to both) names ``port`` for ``transport``."""
    if not spec:
        return False
    scope = "both"
    for raw in spec.split(","):
        item = raw.strip()
        if len(item) > 2 and item[1] == ":" and item[0].upper() in "TUSP":
            scope = {"T": "tcp", "U": "udp"}.get(item[0].upper(), "other")
            item = item[2:]
        if scope not in ("both", transport):
            continue
        lo, dash, hi = item.partition("-")
        try:
            low = int(lo) if lo else 0
            high = (int(hi) if hi else 65535) if dash else low
        except ValueError:
            continue
        if low <= port <= high:
            return True
    return False


def _plain(service: str) -> str:
    return service[4:] if service.startswith("ssl/") else service


def plan(
    db: ServiceDB,
    transport: str,
    port: int,
    *,
    tls: bool = False,
    intensity: int = 7,
    soft: str | None = None,
) -> tuple[list[DBProbe], list[DBProbe]]:
    """nmap's probes for ``port``, in nmap's order: (those whose ``ports``, or ``sslports`` when
    ``tls``, name the port; the others whose rarity is within ``intensity``), each in file order.

    ``soft``: the service a softmatch named so far; only probes that can name it are kept (nmap
    keeps every hinted probe at intensity 9). Never the NULL probe, nor TLS ClientHellos (see the
    module doc), nor anything for a port the file's ``Exclude`` names."""
    proto = transport.upper()
    if excluded(db.exclude, transport, port):
        return [], []
    hinted: list[DBProbe] = []
    others: list[DBProbe] = []
    want = _plain(soft) if soft else None
    for p in db.probes():
        if p.protocol != proto or p.name == "NULL" or not p.payload or is_tls_hello(p.payload):
            continue
        on_port = port in (p.sslports if tls else p.ports)
        if not on_port and p.rarity > intensity:
            continue
        if want is not None and not (on_port and intensity >= 9):
            if want not in {_plain(s) for s in db.services(f"{p.protocol}:{p.name}")}:
                continue
        (hinted if on_port else others).append(p)
    return hinted, others


def outcome_kind(finding: Finding | None) -> str:
    """What an nmap probe's finding means for the search: ``"hard"`` (a service is named: stop),
    ``"soft"`` (a softmatch: narrow), ``"tls"`` (the reply is a TLS layer: the engine's TLS layer
    takes over) or ``"none"``."""
    if finding is None:
        return "none"
    db: dict[str, Any] = finding.details.get("servicedb") or {}
    service = _plain(str(db.get("service") or ""))  # "ssl/ssl": a TLS layer seen inside TLS
    if service == _TLS_SERVICE:
        return "tls"
    if service in _NO_SERVICE or not service:
        return "none"
    return "soft" if db.get("soft") else "hard"


class NmapProbe(Probe):
    """One nmap probe as a dialogue: send its bytes, read the reply, match it with the database.

    Built by :func:`nmap_probe` (one subclass per database probe, so ``name`` stays a class fact
    like every probe's); not registered anywhere."""

    services = ()
    summary = "a probe of the installed nmap-service-probes"
    #: the database probe this class sends
    db_probe: ClassVar[DBProbe]

    def __init__(self, db: ServiceDB, *, tls: bool, wait: float) -> None:
        self.db = db
        self.tls = tls
        #: seconds to wait for the first byte of the reply
        self.wait = wait

    @property
    def key(self) -> str:
        """The probe's database key (``TCP:GetRequest``): its match lines and fallbacks."""
        return f"{self.db_probe.protocol}:{self.db_probe.name}"

    def _match(self, data: bytes) -> DBMatch | None:
        return self.db.match(self.key, data, tls=self.tls)

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        """Send the probe, read the reply in pieces until a hard match, the cap, quiet or close;
        return the database's finding, or raise NotThisProtocol when no line matches."""
        yield Send(self.db_probe.payload)
        data = bytearray()
        found: DBMatch | None = None
        checked = 0
        timeout = self.wait
        # UDP: one datagram is the reply; TCP: pieces until the reply goes quiet
        for _ in range(1 if ctx.transport == "udp" else MAX_PIECES):
            try:
                piece = yield Recv(_any_bytes, max_size=READ_CAP, timeout=timeout)
            except (RecvTimeout, RecvClosed):
                if not data:
                    raise  # silent or closed at once: the step's status says which
                break
            data += piece[: READ_CAP - len(data)]
            # match at the first piece and each time the reply has doubled: linear in its size
            if len(data) >= 2 * checked:
                checked = len(data)
                found = self._match(bytes(data))
                if found is not None and not found.soft:
                    break
            if len(data) >= READ_CAP:
                break
            timeout = min(REPLY_QUIET, self.wait)
        reply = bytes(data)
        if checked != len(reply):
            found = self._match(reply)
        # keep the reply for the database pass after the scan (scanner.breadth.refine)
        ctx.responses.setdefault(self.key, reply)
        if found is None:
            raise NotThisProtocol(f"no line of the service database matched the reply to {self.db_probe.name}")
        finding = db_finding(found, reply)
        finding.details["nmap_probe"] = self.db_probe.name
        return finding


_classes: dict[tuple[str, str, int], type[NmapProbe]] = {}


def nmap_probe(db: ServiceDB, probe: DBProbe, *, tls: bool, wait: float) -> NmapProbe:
    """The dialogue of the database probe ``probe`` (named ``nmap:<name>`` in attempts)."""
    key = (probe.protocol, probe.name, probe.line)
    cls = _classes.get(key)
    if cls is None:
        transport = "udp" if probe.protocol == "UDP" else "tcp"
        cls = type(
            f"NmapProbe_{probe.protocol}_{probe.name}",
            (NmapProbe,),
            {"name": f"nmap:{probe.name}", "transports": (transport,), "ports": tuple(sorted(probe.ports)),
             "rarity": probe.rarity, "db_probe": probe},
        )
        _classes[key] = cls
    return cls(db, tls=tls, wait=wait)


@dataclass
class NmapLane:
    """The state of nmap's probes on one port and layer: what ran, what a softmatch narrowed.

    The engine creates one per TCP layer (plain, TLS) and per UDP port; the database is loaded
    only when a probe is actually planned (:meth:`database`)."""

    handle: DatabaseHandle
    transport: str
    port: int
    tls: bool = False
    intensity: int = 7
    #: the port has shown it speaks (bytes to some request, a greeting, or a close after a request)
    spoke: bool = False
    #: nothing more to send: a hard match, a TLS layer, a tcpwrapped port or no database
    done: bool = False
    #: the service a softmatch named (nmap's name), and the finding it came with
    soft: str | None = None
    soft_finding: Finding | None = None
    #: database probes sent (names)
    tried: set[str] = field(default_factory=set)
    #: our probes that ran on this layer (an nmap match defers to those of ours that did not)
    ours: set[str] = field(default_factory=set)
    hinted_done: bool = False
    _greeting: tuple[bytes, bool, float] = (b"", False, 0.0)

    def database(self) -> ServiceDB | None:
        """The database (loaded on first need), or None: the lane is then done."""
        db = self.handle.get()
        if db is None:
            self.done = True
        return db

    def greeting(self, greeting: bytes, closed: bool, elapsed: float) -> None:
        """Note what the connection did before any request (judged on first need, see
        :meth:`_judge_greeting`): ``greeting`` bytes, or a close after ``elapsed`` s."""
        self._greeting = (greeting, closed, elapsed)
        if greeting:
            self.spoke = True

    def _judge_greeting(self, db: ServiceDB) -> None:
        """A greeting that the database's NULL probe hard-matches needs no more probes (the
        database names it after the scan); a softmatch narrows; a close without a byte within the
        NULL probe's ``tcpwrappedms`` is nmap's "tcpwrapped": nmap stops there, so do we."""
        greeting, closed, elapsed = self._greeting
        self._greeting = (b"", False, 0.0)
        if greeting:
            m = db.match("TCP:NULL", greeting, tls=self.tls)
            if m is not None and not m.soft:
                self.done = True
            elif m is not None:
                self.soft = m.service
        elif closed:
            null = db.probe("TCP:NULL")
            wrapped_ms = (null.tcpwrappedms if null is not None else None) or DEFAULT_TCPWRAPPED_MS
            if elapsed * 1000 < wrapped_ms:
                self.done = True

    def next_probes(self, hinted_only: bool) -> Iterator[tuple[DBProbe, bool]]:
        """The probes to send now, with whether each is hinted for the port; the plan is made
        again after every probe, so a softmatch narrows what follows at once."""
        while not self.done:
            db = self.database()
            if db is None:
                return
            if self._greeting != (b"", False, 0.0):
                self._judge_greeting(db)
                continue
            hinted, others = plan(db, self.transport, self.port, tls=self.tls, intensity=self.intensity,
                                  soft=self.soft)
            pick: tuple[DBProbe, bool] | None = None
            for p in hinted:
                if p.name not in self.tried:
                    pick = (p, True)
                    break
            if pick is None:
                self.hinted_done = True
                if not hinted_only:
                    pick = next(((p, False) for p in others if p.name not in self.tried), None)
            if pick is None:
                return
            self.tried.add(pick[0].name)
            yield pick

    def wait(self, probe: DBProbe, hinted: bool, read_timeout: float, slow_read_timeout: float) -> float:
        """Seconds to wait for ``probe``'s reply: its ``totalwaitms`` (nmap's default when absent),
        capped by our read timeout (hinted probes) or our slow-lane read timeout (the others)."""
        own = (probe.totalwaitms or DEFAULT_WAIT_MS) / 1000
        return min(own, read_timeout if hinted else slow_read_timeout)

    def take(self, finding: Finding | None) -> str:
        """Note what one probe found; returns :func:`outcome_kind` of it."""
        kind = outcome_kind(finding)
        if kind in ("hard", "tls"):
            self.done = True
        elif kind == "soft" and finding is not None and self.soft is None:
            self.soft = str(finding.details["servicedb"]["service"])
            self.soft_finding = finding
        return kind
