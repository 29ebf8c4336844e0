"""Breadth: the installed service database (nmap's ``nmap-service-probes``) behind our probes.

Our probes are deep (Exchange generations, AD vs Samba, EPM interfaces, NTLM facts); the database
is broad (thousands of ``match`` lines kept by the nmap project). :func:`refine` puts the two
together for one port, after the dialogues ran, using only the bytes we already hold:

* the greeting the server sent on connect (nmap's ``NULL`` probe);
* the replies that probes tagged with the database probe they answer (``Recv(tag="GetRequest")``
  for the reply to ``GET /``, ``"DNSVersionBindReq"`` for the ``version.bind`` answer ...).

Order of authority:

1. our own classifier's product stays; a database product that disagrees is kept as evidence;
2. when our probe found the service but named no product, the database's hard match for the same
   service names it (the claim cites its line: ``nmap-service-probes:<line>``);
3. when both name the same product and ours has no version, the database may add the version;
4. when none of our probes recognised the bytes, the database's match names the service
   (FTP, SSH, MySQL ... on a port that should carry something else: verdict ``unexpected``).

A ``softmatch`` only ever names a service, at low confidence, and only where we have nothing.
The file is read at run time from the installed package (never copied into this repository);
without it scans work as before and say once that breadth is reduced.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from scanner.api import Evidence, Finding

if TYPE_CHECKING:
    from scanner.servicedb import DBMatch, ServiceDB

__all__ = ["DatabaseHandle", "db_finding", "names_itself", "products_agree", "refine", "worth_asking"]

#: confidence of a product named by a database hard match (ours that named itself: 10)
DB_CONFIDENCE = 8
#: confidence of a database hard match that names only the service
DB_SERVICE_CONFIDENCE = 6
#: confidence of a database softmatch (service only)
DB_SOFT_CONFIDENCE = 3
#: confidence of a database product the bytes do not name (inferred from the reply's shape)
INFERRED_CONFIDENCE = 3
#: most database lookups one port may make (greeting + tagged replies)
MAX_LOOKUPS = 8
#: services that say nothing about what runs (a TLS layer, a wrapper that closed at once)
_NOT_A_SERVICE = frozenset({"ssl", "tls", "tcpwrapped", "unknown"})

# Words that name no particular product: a shared "server" or "Microsoft" proves no agreement.
_GENERIC = frozenset(
    """server service services smtpd smtp esmtp imapd imap imap4 imap4rev1 pop3d pop3 pop nntpd nntp
    httpd http https web www daemon mail email mta ftpd dns name named ldap ldapd directory
    the and for with by of a an d internet services mail-server mailserver proxy""".split()
)
# Vendor names alone cannot tell products apart (Apache httpd vs Apache Tomcat).
_VENDORS = frozenset("microsoft apache ibm lotus oracle sun novell hp hpe cisco google gnu isc".split())
_TOKEN = re.compile(r"[a-z0-9]+")


def _tokens(product: str) -> set[str]:
    return {t for t in _TOKEN.findall(product.lower()) if t not in _GENERIC and not t.isdigit()}


def products_agree(ours: str, theirs: str) -> bool:
    """Whether two product names name the same product (``Postfix`` / ``Postfix smtpd``: yes;
    ``Apache httpd`` / ``Apache Tomcat/Coyote JSP engine``: no; ``Microsoft Exchange Server`` /
    ``Microsoft Exchange smtpd``: yes)."""
    a, b = _tokens(ours), _tokens(theirs)
    if not a or not b:
        return ours.strip().lower() == theirs.strip().lower()
    if a == b:
        return True
    small, big = (a, b) if len(a) <= len(b) else (b, a)
    return small <= big and bool(small - _VENDORS)


class DatabaseHandle:
    """Lazily loads the service database once per process (or never, when disabled).

    ``path`` None means the default (``PORTPROOF_SERVICE_DB``, then the Debian path).
    """

    def __init__(self, path: str | None = None, enabled: bool = True) -> None:
        self.path = path
        self.enabled = enabled
        self._db: ServiceDB | None = None
        self._loaded = False
        self._lock = threading.Lock()
        #: why the database is not available (None when it is, or not yet asked)
        self.problem: str | None = None

    def get(self) -> ServiceDB | None:
        """The database, or None (disabled, or the file is absent: see :attr:`problem`)."""
        if not self.enabled:
            return None
        if self._loaded:
            return self._db
        with self._lock:
            if not self._loaded:
                from scanner import servicedb

                self._db = servicedb.load(self.path) if self.path else servicedb.default_db()
                if self._db is None:
                    self.problem = servicedb.last_error() or "service database not found"
                self._loaded = True
        return self._db

    def refine(
        self,
        finding: Finding | None,
        *,
        greeting: bytes = b"",
        responses: Mapping[str, bytes] | None = None,
        tls: bool = False,
    ) -> Finding | None:
        """:func:`refine` with this handle's database, loaded only when it could add something."""
        if not worth_asking(finding, greeting, responses or {}):
            return finding
        return refine(finding, self.get(), greeting=greeting, responses=responses, tls=tls)


#: something a version could be made of ("2.4", "9.18.49", "6.0.3790.1830", "4_96")
_VERSIONISH = re.compile(rb"\d[._]\d")


def worth_asking(finding: Finding | None, greeting: bytes, responses: Mapping[str, bytes]) -> bool:
    """Whether the database could add anything, decided before it is loaded: there must be bytes,
    and when ours already named the product (only a version could come), those bytes must hold
    something version-like (a database version is taken from the bytes, almost always)."""
    if not greeting and not any(responses.values()):
        return False
    if finding is None or finding.product is None:
        return True
    if finding.version:
        return False
    return any(_VERSIONISH.search(data) for _tag, data in _inputs(greeting, responses))


def _inputs(greeting: bytes, responses: Mapping[str, bytes]) -> list[tuple[str, bytes]]:
    items = [(tag, data) for tag, data in responses.items() if data]
    if greeting and "NULL" not in responses:
        items.append(("NULL", greeting))
    return items[:MAX_LOOKUPS]


def _lookups(db: ServiceDB, inputs: Iterable[tuple[str, bytes]], tls: bool) -> list[tuple[DBMatch, bytes]]:
    out: list[tuple[DBMatch, bytes]] = []
    for tag, data in inputs:
        m = db.match(tag, data, tls=tls)
        if m is not None and m.service not in _NOT_A_SERVICE:
            out.append((m, data))
    return out


def _extrainfo(m: DBMatch) -> str | None:
    parts = [p for p in (m.info, m.hostname and f"host: {m.hostname}", m.ostype and f"OS: {m.ostype}") if p]
    return "; ".join(parts) or None


def _describe(m: DBMatch) -> str:
    text = " ".join(p for p in (m.product, m.version) if p) or f"service {m.service}"
    if m.info:
        text += f" ({m.info})"
    return text


def _db_details(m: DBMatch) -> dict[str, Any]:
    d: dict[str, Any] = {"rule": m.rule, "probe": m.probe, "service": m.service}
    for key in ("product", "version", "info", "hostname", "ostype", "devicetype"):
        value = getattr(m, key)
        if value:
            d[key] = value
    if m.cpe:
        d["cpe"] = list(m.cpe)
    if m.soft:
        d["soft"] = True
    return d


def names_itself(product: str, data: bytes) -> bool:
    """Whether the bytes name the product (one of its distinctive words appears in them).

    A database line that names a product the bytes do not mention infers it from the shape of the
    reply (an APOP timestamp taken for qmail, "+OK Hello there." for Courier): right on the servers
    its author saw, a guess on others. Such claims are reported at :data:`INFERRED_CONFIDENCE`.
    """
    text = data.lower()
    return any(t.encode() in text for t in _tokens(product))


def db_finding(m: DBMatch, data: bytes = b"") -> Finding:
    """A finding named by the database alone (nothing of ours recognised the bytes)."""
    from scanner.servicedb import service_name

    service, _tls = service_name(m.service)
    if m.soft:
        conf = DB_SOFT_CONFIDENCE
    elif m.product and not names_itself(m.product, data):
        conf = INFERRED_CONFIDENCE
    else:
        conf = DB_CONFIDENCE if m.product else DB_SERVICE_CONFIDENCE
    f = Finding(
        service=service,
        product=None if m.soft else m.product,
        version=None if m.soft else m.version,
        confidence=conf,
        extrainfo=None if m.soft else _extrainfo(m),
        rule=m.rule,
    )
    f.add(m.rule, _describe(m))
    f.details["servicedb"] = _db_details(m)
    return f


def refine(
    finding: Finding | None,
    db: ServiceDB | None,
    *,
    greeting: bytes = b"",
    responses: Mapping[str, bytes] | None = None,
    tls: bool = False,
) -> Finding | None:
    """Complete ``finding`` (ours, or None) with the database's matches on the bytes we hold.

    Returns the finding to report (the same object, completed, or a new one from the database).
    Never lowers what our probe said; every database claim cites its line.
    """
    if db is None or not worth_asking(finding, greeting, responses or {}):
        return finding  # nothing the database could add: do not pay for matching
    inputs = _inputs(greeting, responses or {})
    found = _lookups(db, inputs, tls)
    if not found:
        return finding
    from scanner.servicedb import service_name

    matches = [m for m, _data in found]
    if finding is None:
        hard = [(m, d) for m, d in found if not m.soft]
        return db_finding(*(hard[0] if hard else found[0]))
    same = [(m, d) for m, d in found if not m.soft and service_name(m.service)[0] == finding.service]
    if finding.product is None:
        named = [(m, d) for m, d in same if m.product]
        if named:
            m, data = named[0]
            finding.product, finding.version = m.product, m.version
            finding.rule = m.rule
            if m.product and names_itself(m.product, data):
                finding.confidence = max(min(finding.confidence, DB_CONFIDENCE), DB_SERVICE_CONFIDENCE)
            else:
                finding.confidence = min(finding.confidence, INFERRED_CONFIDENCE)
            if not finding.extrainfo:
                finding.extrainfo = _extrainfo(m)
            finding.add(m.rule, _describe(m))
            finding.details["servicedb"] = _db_details(m)
        else:
            _note_others(finding, matches)
        return finding
    # ours named the product: the database may add a version for the same product, else evidence
    for m, _data in same:
        if m.product and products_agree(finding.product, m.product):
            if finding.version is None and m.version:
                finding.version = m.version
                finding.details["version_rule"] = m.rule
                finding.add(m.rule, _describe(m))
                finding.details["servicedb"] = _db_details(m)
                return finding
            break
    _note_others(finding, matches)
    return finding


def _note_others(finding: Finding, matches: list[DBMatch]) -> None:
    """Keep database matches that disagree with ours as evidence (never as the product)."""
    for m in matches[:2]:
        if m.soft or not m.product:
            continue
        if finding.product and products_agree(finding.product, m.product):
            continue
        if any(e.source == m.rule for e in finding.evidence):
            continue
        finding.evidence.append(Evidence(m.rule, f"database says: {_describe(m)} (ours kept)"))
