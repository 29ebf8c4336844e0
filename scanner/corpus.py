"""Score banner corpora: what our probes (with the service database behind them) name, beside what
the database alone names, on real-world greetings, ``Server:`` values and ``version.bind`` strings.

A corpus is a folder of tab-separated files (``tests/data/banners/*.tsv``, format in its README):
``protocol  banner  product_re  version  source  note``. ``product_re`` is a regex a right product
name matches (empty: the banner names no product and nothing may be claimed).

Each banner is turned into the bytes a server would send, and the real probe's dialogue runs over
them through the one dialogue runner (as a live scan or a replay would): a greeting for SMTP, IMAP,
POP3 and NNTP (the server closes after it); an HTTP response carrying the ``Server:`` value; a DNS
server that answers ``version.bind`` with the string (and REFUSED to anything else). The database
alone sees the same bytes under its own probe (``NULL``, ``GetRequest``, ``DNSVersionBindReq``).
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scanner.api import Finding, Probe

if TYPE_CHECKING:
    from scanner.servicedb import ServiceDB

__all__ = ["Claim", "CorpusEntry", "Score", "load_corpus", "score_corpus", "unescape"]

#: protocol of a corpus line -> the probe that speaks it
PROBE_OF = {"smtp": "smtp", "imap": "imap", "pop3": "pop3", "nntp": "nntp", "http": "http", "dns": "dns"}
#: a claim at or below this confidence is a guess, not a product claim (negative corpus)
LOW_CONFIDENCE = 3

_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|[rnt\\])")


def unescape(text: str) -> bytes:
    r"""A corpus field as bytes: ``\r \n \t \\ \xNN`` escapes, the rest as UTF-8."""

    out = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(text):
        out += text[pos : m.start()].encode("utf-8")
        code = m.group(1)
        out += {"r": b"\r", "n": b"\n", "t": b"\t", "\\": b"\\"}.get(code) or bytes([int(code[1:], 16)])
        pos = m.end()
    out += text[pos:].encode("utf-8")
    return bytes(out)


@dataclass(frozen=True)
class CorpusEntry:
    """One banner of a corpus file."""

    protocol: str
    banner: bytes
    product_re: str
    version: str
    source: str
    note: str
    where: str  # file:line

    @property
    def negative(self) -> bool:
        """The banner names no product: nothing may be claimed."""
        return not self.product_re


def load_corpus(folder: str | Path) -> list[CorpusEntry]:
    """Read every ``*.tsv`` of ``folder`` (header line first; duplicates are kept once)."""
    entries: list[CorpusEntry] = []
    seen: set[tuple[str, bytes]] = set()
    for path in sorted(Path(folder).glob("*.tsv")):
        with path.open(encoding="utf-8", newline="") as fh:
            rows = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = next(rows, None)
            if header is None or header[:3] != ["protocol", "banner", "product_re"]:
                raise ValueError(f"{path}: header must start with protocol, banner, product_re")
            for lineno, row in enumerate(rows, start=2):
                if not row or not "".join(row).strip():
                    continue
                if len(row) != 6:
                    raise ValueError(f"{path}:{lineno}: {len(row)} fields, expected 6")
                proto, banner, product_re, version, source, note = row
                if proto not in PROBE_OF:
                    raise ValueError(f"{path}:{lineno}: unknown protocol {proto!r}")
                re.compile(product_re)
                data = unescape(banner)
                if (proto, data) in seen:
                    continue
                seen.add((proto, data))
                entries.append(CorpusEntry(proto, data, product_re, version.strip(), source, note,
                                           f"{path.name}:{lineno}"))
    return entries


@dataclass
class Claim:
    """What one side (ours, or the database alone) said of one banner."""

    product: str | None = None
    version: str | None = None
    confidence: int = 0
    rule: str | None = None
    service: str | None = None


def _version_right(expected: str, got: str | None) -> bool:
    if not got:
        return False
    e, g = expected.lower(), got.lower()
    if e == g:
        return True
    # "9.18.24" vs "9.18.24-1-Debian", "8.14.4/8.14.4" vs "8.14.4": the same release named longer
    longer, shorter = (g, e) if len(g) > len(e) else (e, g)
    return longer.startswith(shorter) and not longer[len(shorter)].isdigit()


@dataclass
class Tally:
    """Counts over one protocol for one side."""

    banners: int = 0
    named: int = 0  # a product expected
    right: int = 0
    wrong: int = 0  # a product claimed that the banner does not name (incl. negatives)
    negatives: int = 0
    versions: int = 0  # a version expected
    version_right: int = 0
    wrong_examples: list[str] = field(default_factory=list)
    missed_examples: list[str] = field(default_factory=list)

    def add(self, entry: CorpusEntry, claim: Claim) -> None:
        """Count one banner."""
        self.banners += 1
        claimed = claim.product if claim.product and claim.confidence > LOW_CONFIDENCE else None
        text = entry.banner.decode("utf-8", "replace")[:120]
        if entry.negative:
            self.negatives += 1
            if claimed:
                self.wrong += 1
                self.wrong_examples.append(f"{entry.where}: {text!r} -> {claimed!r} ({claim.rule})")
            return
        self.named += 1
        if claimed and re.search(entry.product_re, claimed, re.I):
            self.right += 1
        elif claimed:
            self.wrong += 1
            self.wrong_examples.append(f"{entry.where}: {text!r} -> {claimed!r} ({claim.rule})")
        else:
            self.missed_examples.append(f"{entry.where}: {text!r}")
        if entry.version:
            self.versions += 1
            if claimed and re.search(entry.product_re, claimed, re.I) and _version_right(entry.version, claim.version):
                self.version_right += 1

    def as_dict(self) -> dict[str, Any]:
        """Counts and percentages."""
        def pct(a: int, b: int) -> float | None:
            return round(100.0 * a / b, 1) if b else None

        return {
            "banners": self.banners, "named": self.named, "right": self.right, "wrong": self.wrong,
            "negatives": self.negatives, "versions": self.versions, "version_right": self.version_right,
            "right_pct": pct(self.right, self.named), "wrong_pct": pct(self.wrong, self.banners),
            "version_pct": pct(self.version_right, self.versions),
        }


@dataclass
class Score:
    """Per-protocol tallies for ours and for the database alone."""

    ours: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    database: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))


# ---------------------------------------------------------------- the bytes a server would send
def _http_response(server: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nServer: " + server + b"\r\nContent-Type: text/html\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n")


def _dns_responder(version: bytes) -> Callable[[bytes], bytes | None]:
    """A DNS server (dnspython) that answers CHAOS ``version.bind`` TXT with ``version`` and
    REFUSED to anything else."""
    import dns.exception
    import dns.flags
    import dns.message
    import dns.rcode
    import dns.rdataclass
    import dns.rdatatype
    import dns.rrset

    def respond(query_wire: bytes) -> bytes | None:
        try:
            q = dns.message.from_wire(query_wire)
        except (dns.exception.DNSException, ValueError):  # not a DNS query: a real server stays silent
            return None
        r = dns.message.make_response(q)
        qs = q.question[0] if q.question else None
        if (qs is not None and qs.rdclass == dns.rdataclass.CH and qs.rdtype == dns.rdatatype.TXT
                and qs.name.to_text().lower() == "version.bind."):
            txt = '"' + version.decode("latin-1").replace("\\", "\\\\").replace('"', '\\"') + '"'
            r.answer.append(dns.rrset.from_text(qs.name, 0, dns.rdataclass.CH, dns.rdatatype.TXT, txt))
            r.flags |= dns.flags.AA
        else:
            r.set_rcode(dns.rcode.REFUSED)
        return r.to_wire()

    return respond


def _nmap_dns_reply(db: ServiceDB, version: bytes) -> bytes | None:
    """The reply a server would give to the database's own ``DNSVersionBindReq`` payload."""
    probe = db.probe("DNSVersionBindReq")
    if probe is None:
        return None
    return _dns_responder(version)(bytes(probe.payload))


# ---------------------------------------------------------------- the two sides
def _claim_of(f: Finding | None) -> Claim:
    if f is None:
        return Claim()
    return Claim(f.product, f.version, f.confidence, f.rule, f.service)


def _ours(entry: CorpusEntry, probe: Probe, db: ServiceDB | None) -> Claim:
    from scanner.breadth import refine
    from scanner.testing import run_dialogue, run_scripted

    if entry.protocol == "dns":
        run = run_scripted(probe, _dns_responder(entry.banner), port=53, transport="udp")
        return _claim_of(refine(run.finding, db, responses=run.ctx.responses if run.ctx else {}))
    if entry.protocol == "http":
        response = _http_response(entry.banner)
        run = run_dialogue(probe, [response], port=80)
        return _claim_of(refine(run.finding, db, responses=run.ctx.responses if run.ctx else {}))
    greeting = entry.banner + b"\r\n"
    finding = None
    responses: dict[str, bytes] = {}
    if probe.match(greeting):
        port = {"smtp": 25, "imap": 143, "pop3": 110, "nntp": 119}[entry.protocol]
        run = run_dialogue(probe, [greeting], port=port)
        finding, responses = run.finding, (run.ctx.responses if run.ctx else {})
    return _claim_of(refine(finding, db, greeting=greeting, responses=responses))


def _database(entry: CorpusEntry, db: ServiceDB | None) -> Claim:
    if db is None:
        return Claim()
    if entry.protocol == "http":
        m = db.match("GetRequest", _http_response(entry.banner))
    elif entry.protocol == "dns":
        reply = _nmap_dns_reply(db, entry.banner)
        m = db.match("DNSVersionBindReq", reply) if reply else None
    else:
        m = db.match("NULL", entry.banner + b"\r\n")
    if m is None or m.soft:
        return Claim(service=m.service if m else None)
    from scanner.breadth import DB_CONFIDENCE, DB_SERVICE_CONFIDENCE

    return Claim(m.product, m.version, DB_CONFIDENCE if m.product else DB_SERVICE_CONFIDENCE, m.rule, m.service)


def score_corpus(
    entries: Iterable[CorpusEntry], probes: Sequence[Probe], db: ServiceDB | None
) -> tuple[Score, list[tuple[CorpusEntry, Claim, Claim]]]:
    """Score every entry for ours and for the database alone; also return each entry's claims."""
    by_name = {p.name: p for p in probes}
    score = Score()
    rows: list[tuple[CorpusEntry, Claim, Claim]] = []
    for entry in entries:
        probe = by_name.get(PROBE_OF[entry.protocol])
        if probe is None:
            raise LookupError(f"no {PROBE_OF[entry.protocol]!r} probe loaded")
        ours = _ours(entry, probe, db)
        theirs = _database(entry, db)
        score.ours[entry.protocol].add(entry, ours)
        score.database[entry.protocol].add(entry, theirs)
        rows.append((entry, ours, theirs))
    return score, rows
