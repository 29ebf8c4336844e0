"""scanner.breadth: the order of authority between our rules and the service database.

The database here is a small file written by the test (the format of nmap-service-probes, with
made-up products), so each rule of :func:`scanner.breadth.refine` is checked on its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scanner import servicedb
from scanner.api import Finding
from scanner.breadth import DatabaseHandle, products_agree, refine, worth_asking

DB_TEXT = r"""# a tiny service database written for these tests
Probe TCP NULL q||
totalwaitms 5000
match smtp m|^220 [-.\w]+ ESMTP Zmailer (\d[\w.]+) ready\r\n| p/Zmailer smtpd/ v/$1/ i/test rule/
match smtp m|^220 [-.\w]+ ESMTP Postfix \(([\d.]+)\)| p/Postfix smtpd/ v/$1/
match smtp m|^220 [-.\w]+ Acme Mail Gateway ([\d.]+)\r\n| p/Acme gateway smtpd/ v/$1/
match ftp m|^220 Welcome to FooFTP (\d+\.\d+)\r\n| p/FooFTP/ v/$1/ o/Unix/
softmatch imap m|^\* OK |
match pop3 m|^\+OK <\d+\.\d+@[-.\w]+>\r\n| p/Zqmail pop3d/

Probe TCP GetRequest q|GET / HTTP/1.0\r\n\r\n|
ports 80
match http m|^HTTP/1\.[01] \d\d\d .*\r\nServer: Widget/([\d.]+)\r\n|s p/Widget httpd/ v/$1/
"""


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> servicedb.ServiceDB:
    path = tmp_path_factory.mktemp("db") / "probes"
    path.write_text(DB_TEXT, encoding="latin-1")
    loaded = servicedb.load(str(path))
    assert loaded is not None, servicedb.last_error()
    return loaded


def test_database_names_what_we_left_empty(db: servicedb.ServiceDB) -> None:
    ours = Finding(service="smtp", confidence=6)
    f = refine(ours, db, greeting=b"220 mx.example.org ESMTP Zmailer 2.99.57 ready\r\n")
    assert f is ours
    assert (f.product, f.version) == ("Zmailer smtpd", "2.99.57")
    assert f.rule is not None and f.rule.startswith("nmap-service-probes:")
    assert int(f.rule.split(":")[1]) == 4  # the line of the match in the file
    assert any(e.source == f.rule for e in f.evidence)


def test_ours_kept_when_the_database_disagrees(db: servicedb.ServiceDB) -> None:
    ours = Finding(service="smtp", product="Acme Mail Shield", version="3.1", rule="portproof:smtp/acme", confidence=10)
    f = refine(ours, db, greeting=b"220 mx.example.org Acme Mail Gateway 2.1\r\n")
    assert f is not None and f.product == "Acme Mail Shield" and f.rule == "portproof:smtp/acme"
    ours2 = Finding(service="smtp", product="Sendmail", rule="portproof:smtp/sendmail")
    f2 = refine(ours2, db, greeting=b"220 mx.example.org Acme Mail Gateway 2.1\r\n")
    assert f2 is not None and f2.product == "Sendmail" and f2.version is None
    assert any("Acme gateway smtpd" in e.value for e in f2.evidence)


def test_not_asked_when_it_could_add_nothing() -> None:
    """Ours named product and version, or the bytes hold nothing version-like: no lookup at all."""
    done = Finding(service="smtp", product="Postfix", version="3.7.11")
    assert not worth_asking(done, b"220 mx ESMTP Postfix (3.7.11)\r\n", {})
    hidden = Finding(service="imap", product="Dovecot")
    assert not worth_asking(hidden, b"* OK [CAPABILITY IMAP4rev1] Dovecot (Debian) ready.\r\n", {})
    assert worth_asking(hidden, b"* OK Dovecot 2.3.19 ready.\r\n", {})
    assert worth_asking(None, b"hello\r\n", {}) and worth_asking(Finding(service="x"), b"hello", {})
    assert not worth_asking(None, b"", {"GetRequest": b""})


def test_database_adds_a_version_to_the_same_product(db: servicedb.ServiceDB) -> None:
    ours = Finding(service="smtp", product="Postfix", rule="portproof:smtp/postfix")
    f = refine(ours, db, greeting=b"220 mx.example.org ESMTP Postfix (3.7.11)\r\n")
    assert f is not None and (f.product, f.version) == ("Postfix", "3.7.11")
    assert f.rule == "portproof:smtp/postfix" and f.details["version_rule"].startswith("nmap-service-probes:")


def test_unexpected_but_recognisable(db: servicedb.ServiceDB) -> None:
    f = refine(None, db, greeting=b"220 Welcome to FooFTP 1.4\r\n")
    assert f is not None and f.service == "ftp" and (f.product, f.version) == ("FooFTP", "1.4")
    soft = refine(None, db, greeting=b"* OK hello\r\n")
    assert soft is not None and soft.service == "imap" and soft.product is None and soft.confidence <= 3
    assert refine(None, db, greeting=b"hello, world\r\n") is None


def test_a_product_the_bytes_do_not_name_is_only_a_guess(db: servicedb.ServiceDB) -> None:
    """An APOP timestamp is no proof of a product: the claim stays at a guess's confidence."""
    f = refine(None, db, greeting=b"+OK <1234.5678@mail.example.org>\r\n")
    assert f is not None and f.product == "Zqmail pop3d" and f.confidence <= 3
    g = refine(Finding(service="pop3", confidence=8), db, greeting=b"+OK <1234.5678@mail.example.org>\r\n")
    assert g is not None and g.product == "Zqmail pop3d" and g.confidence <= 3


def test_tagged_reply_and_other_service_ignored(db: servicedb.ServiceDB) -> None:
    reply = b"HTTP/1.1 200 OK\r\nServer: Widget/2.5\r\nContent-Length: 0\r\n\r\n"
    f = refine(Finding(service="http"), db, responses={"GetRequest": reply})
    assert f is not None and (f.product, f.version) == ("Widget httpd", "2.5")
    # a database match for another service never names the product of ours
    g = refine(Finding(service="http"), db, greeting=b"220 Welcome to FooFTP 1.4\r\n")
    assert g is not None and g.product is None


def test_without_a_database_nothing_changes(tmp_path: Path) -> None:
    handle = DatabaseHandle(str(tmp_path / "absent"))
    assert handle.get() is None and handle.problem
    ours = Finding(service="smtp")
    assert refine(ours, None, greeting=b"220 x ESMTP Zmailer 2.99 ready\r\n") is ours and ours.product is None
    assert DatabaseHandle(enabled=False).get() is None


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("Postfix", "Postfix smtpd", True),
        ("Microsoft Exchange Server", "Microsoft Exchange smtpd", True),
        ("Apache httpd", "Apache Tomcat/Coyote JSP engine", False),
        ("Apache Tomcat", "Apache httpd", False),
        ("ISC BIND", "ISC BIND", True),
        ("Microsoft IIS httpd", "Microsoft HTTPAPI httpd", False),
        ("Dovecot", "Dovecot imapd", True),
        ("Exim", "Sendmail", False),
    ],
)
def test_products_agree(a: str, b: str, same: bool) -> None:
    assert products_agree(a, b) is same


def test_cli_without_the_database_says_so_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A replay with a database file that does not exist still names what our rules know, and says
    once on standard error that breadth is reduced."""
    from scanner.cli import main

    pcap = Path(__file__).resolve().parents[2] / "pcaps" / "smtp-postfix.pcap"
    rc = main(["replay", str(pcap), "-o", "jsonl", "--service-db", str(tmp_path / "absent")])
    out, err = capsys.readouterr()
    assert rc == 0
    assert err.count("breadth reduced") == 1, err
    assert '"product":"Postfix"' in out.replace(" ", ""), out[:500]
