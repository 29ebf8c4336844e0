"""Greetings that name no product: the mail and news probes must claim none (confidence above 3).

Three kinds of negatives:
- real greetings that name no product (cited where seen; never another fingerprint project's files),
- host names that look like products (``exim.example.org``, ``postfix-relay``): a rule matches the
  product's own words, never a host name,
- generic words ("ready", "service", "server") and localised generic greetings.
The shared corpus ``tests/data/banners/negative.tsv`` (format: tests/data/banners/README.md) is used
as well: its smtp/imap/pop3/nntp greetings with an empty ``product_re`` (refusal lines that are not
greetings are left out).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from probes import imap, nntp, pop3, smtp
from scanner.api import Finding
from scanner.textproto import looks_like_version

#: the most a classifier may claim on a greeting that names no product
MAX_CONFIDENCE = 3

NEGATIVE_TSV = Path(__file__).parents[1] / "data" / "banners" / "negative.tsv"

INLINE: list[tuple[str, str]] = [
    # ---- real greetings that name no product
    ("smtp", "220 mta4265.mail.ne1.yahoo.com ESMTP ready"),  # capture:smtp-multi-sendmail-communigate-yahoo-...
    ("smtp", "220-mtaout-ma02.r1000.mx.aol.com ESMTP MUA/Third Party Client Interface"),  # capture:smtp-aol-587
    ("smtp", "220 ESMTP server ready"),  # repo:jstedfast/MailKit:UnitTests/Net/Smtp/Resources/comcast-greeting.txt
    ("smtp", "220 smtp.example.com ESMTP Postfix-compatible relay ready"),
    ("imap", "* OK IMAP4Rev1 Server Version 4.9.04.012"),  # capture:imap-unidentified-server-version-4.9.04.012
    ("pop3", "+OK POP3 ready"),  # repo:jstedfast/MailKit:UnitTests/Net/Pop3/Resources/greeting.txt
    ("pop3", "+OK <apop-token@example.com>"),  # repo:jstedfast/MailKit:UnitTests/Net/Pop3/Resources/lang/greeting.txt
    ("pop3", "+OK POP3 server ready <1896.697170952@dbc.mtview.us>"),  # RFC 1939 section 10 example
    ("pop3", "+OK memoryhole POP3 Server"),  # http://www.memoryhole.net/~kyle/index.php?section=reference&inc=pop3
    ("pop3", "+OK Hello there."),  # Courier's POP3 greeting: it names no product, so nothing is claimed
    ("nntp", "200 NNTP Service Ready"),  # RFC 3977-style greeting used by many small servers
    ("nntp", "200 NNTP Service Ready - posting allowed"),
    ("nntp", "201 server ready - no posting allowed"),
    ("nntp", "200 news.example.com ready (posting ok)"),
    # ---- host names that look like products
    ("smtp", "220 exim.example.org ESMTP"),
    ("smtp", "220 sendmail.example.net ESMTP ready"),
    ("smtp", "220 postfix.example.com ESMTP service ready"),
    ("smtp", "220 exchange.example.com ESMTP Mail Service ready"),
    ("smtp", "220 mdaemon.example.com ESMTP ready"),
    ("smtp", "220 domino.example.com ESMTP Service ready"),
    ("smtp", "220 courier.example.com ESMTP"),
    ("smtp", "220 qmail.example.com ESMTP"),
    ("smtp", "220 gsmtp.example.com ESMTP"),
    ("smtp", "220 zimbra.example.com ESMTP"),
    ("smtp", "220 hmailserver.example.com ESMTP"),
    ("smtp", "220 haraka.example.com ESMTP ready"),
    ("smtp", "220 stalwart ESMTP ready"),
    ("smtp", "220 mailhog.example.com ESMTP"),
    ("smtp", "220 mx.mailgun.example ESMTP ready"),
    ("smtp", "220 smtp.qq.example ESMTP ready"),
    ("imap", "* OK postfix-relay IMAP4 ready"),
    ("imap", "* OK dovecot.example.org IMAP4rev1 server ready"),
    ("imap", "* OK cyrus.example.edu IMAP4 server ready"),
    ("imap", "* OK exchange.example.com IMAP4rev1 service ready"),
    ("imap", "* OK zimbra.example.com IMAP4rev1 server ready"),
    ("imap", "* OK gimap.example.com IMAP4rev1 ready"),
    ("imap", "* OK stalwart IMAP4rev2 ready"),
    ("imap", "* OK coremail.example.com IMAP4rev1 Server Ready"),
    ("imap", "* OK twisted.example.org IMAP4rev1 Ready"),
    ("pop3", "+OK dovecot.example.org POP3 server ready"),
    ("pop3", "+OK qpopper.example.edu POP3 ready"),
    ("pop3", "+OK exchange.example.com POP3 service ready"),
    ("pop3", "+OK lavad.example.com POP3 ready"),
    ("pop3", "+OK inbucket.example.com POP3 server ready"),
    ("pop3", "+OK greenmail.example.org POP3 server ready"),
    ("pop3", "+OK stalwart POP3 ready"),
    ("nntp", "200 typhoon.example.net NNTP server ready"),
    ("nntp", "200 news.giganews.example ready"),
    ("nntp", "200 inn.example.org NNTP ready (posting ok)"),
    ("nntp", "200 leafnode.example.org NNTP ready"),
    ("nntp", "200 diablo.example.net NNTP Service Ready"),
    ("nntp", "200 cyrus.example.edu NNTP server ready"),
    ("nntp", "200 ginzicut.example.net NNTP server ready"),
    # ---- words: "ready", "service", "server", "version"
    ("smtp", "220 mail.example.com Exim ready"),
    ("smtp", "220 mail.example.com SMTP Service ready"),
    ("smtp", "220 mail.example.com Mail Server ready"),
    ("smtp", "220 mail.example.com Microsoft ESMTP MAIL Service"),
    ("imap", "* OK IMAP4 ready"),
    ("imap", "* OK [CAPABILITY IMAP4rev1] Server ready"),
    ("imap", "* OK Server Version ready"),
    ("pop3", "+OK POP3v3.0 server ready"),
    ("pop3", "+OK server ready"),
    ("nntp", "200 server ready - posting allowed"),
    ("nntp", "200 news.example.com InterNetNews server ready"),
    # ---- localised generic greetings
    ("smtp", "220 mail.example.de ESMTP Dienst bereit"),
    ("smtp", "220 mail.example.fr Service SMTP prêt"),
    ("smtp", "220 correo.example.es Servicio ESMTP listo"),
    ("imap", "* OK IMAP-Server bereit"),
    ("imap", "* OK Serveur IMAP prêt"),
    ("imap", "* OK Servidor IMAP listo"),
    ("pop3", "+OK POP3-Server bereit"),
    ("pop3", "+OK Serveur POP3 prêt"),
    ("nntp", "200 Nachrichtenserver bereit"),
]


def identify(protocol: str, banner: str) -> Finding:
    """The probe's classifier on a greeting (greeting only, as the first step of its dialogue)."""
    raw = banner.encode("utf-8") + b"\r\n"
    if protocol == "smtp":
        return smtp.identify(smtp.parse_reply(raw), None)
    if protocol == "imap":
        _, text = imap.parse_greeting(raw)
        return imap.identify(text, imap.capabilities_from(text), {})
    if protocol == "pop3":
        _, text = pop3.parse_status(raw)
        return pop3.identify(text, {})
    code, text = nntp.parse_status(raw)
    return nntp.identify(code, text, {})


_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|[rnt\\])")


def unescape(field: str) -> str:
    """Undo the corpus escapes: ``\\r \\n \\t \\\\`` and ``\\xNN`` (a byte, shown as latin-1)."""
    table = {"r": "\r", "n": "\n", "t": "\t", "\\": "\\"}
    return _ESCAPE.sub(lambda m: chr(int(m.group(1)[1:], 16)) if m.group(1)[0] == "x" else table[m.group(1)], field)


def shared_negatives() -> list[tuple[str, str]]:
    """The mail/news greetings of the shared negative corpus (a missing file is an error)."""
    rows: list[tuple[str, str]] = []
    with NEGATIVE_TSV.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            if row.get("protocol") in ("smtp", "imap", "pop3", "nntp") and not (row.get("product_re") or "").strip():
                rows.append((row["protocol"], unescape(row["banner"])))
    assert rows, f"no mail/news rows in {NEGATIVE_TSV}"
    return [(p, b) for p, b in rows if _greeting_ok(p, b)]


def _greeting_ok(protocol: str, banner: str) -> bool:
    """True when the banner is a greeting the probe parses (the shared corpus may hold refusals)."""
    first = banner.split("\r\n")[-1] if protocol == "smtp" else banner.split("\r\n")[0]
    prefix = {"smtp": r"[2-5]\d\d[ -]", "imap": r"\* (OK|PREAUTH|BYE)\b", "pop3": r"(\+OK|-ERR)", "nntp": r"[1-5]\d\d"}
    return re.match(prefix[protocol], first, re.I) is not None


@pytest.mark.parametrize(("protocol", "banner"), INLINE + shared_negatives(), ids=lambda v: str(v)[:48])
def test_no_product_claimed(protocol: str, banner: str) -> None:
    assert _greeting_ok(protocol, banner), "the inline list holds greetings only"
    f = identify(protocol, banner)
    assert f.product is None or f.confidence <= MAX_CONFIDENCE, (f.product, f.version, f.rule)
    assert f.version is None or looks_like_version(f.version)
    assert f.rule is None
    assert f.evidence and f.evidence[0].source == "greeting"  # the text is kept as evidence


def test_inline_list_covers_every_protocol() -> None:
    assert {p for p, _ in INLINE} == {"smtp", "imap", "pop3", "nntp"}
