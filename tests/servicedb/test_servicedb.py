"""scanner.servicedb: parser, PCRE conversion, matching semantics and substitution on small files
written here, then the installed Debian database (required: the test command installs
nmap-common) against real replies of the lab's servers."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

import scanner.servicedb as sdb
from scanner.servicedb import DBMatch, ServiceDB, load, service_name
from scanner.servicedb.literals import analyse, quick_prefix
from scanner.servicedb.parser import parse_ports, unescape_c
from scanner.servicedb.pcre import Unsupported, convert

DEBIAN = Path("/usr/share/nmap/nmap-service-probes")


def db_from(tmp_path: Path, text: str, name: str = "probes") -> ServiceDB:
    """A database from file text written here (lines joined with \\n)."""
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1"))
    db = load(path)
    assert db is not None, sdb.last_error()
    return db


SMALL = r"""# a small database written for these tests
Exclude T:9100-9102
Probe TCP NULL q||
totalwaitms 6000
tcpwrappedms 3000
match ftp m|^220 Foo FTPd ([\d.]+)\r\n| p/Foo FTPd/ v/$1/ cpe:/a:foo:ftpd:$1/a
softmatch smtp m|^220 [\w.-]+ ESMTP|
match smtp m=^220 ([\w.-]+) ESMTP Bar \| mailer (\d+)= p|Bar MTA| v/$2/ h/$1/
match smtp m%^220 ([\w.-]+) ESMTP Baz% p/Baz/ h/$1/
match ident m/^x-(\d+)/i p/Case Test/ v/$1/
match dotall m|^start.end$|s p/Dotall/
match zed m|^Z(.)| p/never reached before soft/

Probe TCP GetRequest q|GET / HTTP/1.0\r\n\r\n|
rarity 1
ports 80,8000-8002
sslports 443
match http m|^HTTP/1\.[01] \d+ .*\r\nServer: Qux/([\d.]+)|s p/Qux httpd/ v/$1/ o/Unix/ d/router/
softmatch http m|^HTTP/1\.[01] \d+| p/generic httpd/

Probe TCP Special q=\x01\0\\|end\r\n= no-payload
fallback GetRequest
ports 7
match special m|^OK| p/Special/

Probe UDP Datagram q|\x00\x01|
fallback Other
match udpthing m|^U| p/UDP thing/

Probe UDP Other q|x|
match other m|^V| p/Other/
"""


# ---------------------------------------------------------------- parser


def test_parser_probes_and_directives(tmp_path: Path) -> None:
    db = db_from(tmp_path, SMALL)
    null = db.probe("NULL")
    assert null is not None and null.protocol == "TCP" and null.payload == b""
    assert null.totalwaitms == 6000 and null.tcpwrappedms == 3000 and null.rarity == 5
    get = db.probe("GetRequest")
    assert get is not None
    assert get.payload == b"GET / HTTP/1.0\r\n\r\n"
    assert get.ports == frozenset({80, 8000, 8001, 8002}) and get.sslports == frozenset({443})
    assert get.rarity == 1 and get.line == 14
    special = db.probe("Special")
    assert special is not None
    assert special.payload == b"\x01\x00\\|end\r\n"
    assert special.no_payload and special.fallback == ("GetRequest",)
    udp = db.probe("UDP:Datagram")
    assert udp is not None and udp.protocol == "UDP" and db.probe("TCP:Datagram") is None
    stats = db.stats()
    assert stats["matches"] == 10 and stats["softmatches"] == 2 and stats["parse_errors"] == 0
    assert stats["lines"] == SMALL.count("\n")


def test_parser_bad_lines_counted_not_fatal(tmp_path: Path) -> None:
    text = "\n".join([
        "match early m|^x| p/before any probe/",
        "Probe TCP NULL q||",
        "match ok m|^OK| p/Fine/",
        "match badopt m|^x|q p/illegal option/",
        "match noend m|^x p/unterminated/",
        "match badtemplate m|^x| z/unknown template/",
        "rarity 12",
        "ports 80-70",
        "frobnicate 1",
        "Probe SCTP X q||",
        "match ok2 m|^OK2| p/Still fine/",
        "",
    ])
    db = db_from(tmp_path, text)
    stats = db.stats()
    # the match under the bad Probe line has no probe to belong to: skipped too
    assert stats["parse_errors"] == 9
    assert stats["matches"] == 1
    reasons = dict(db.parse_errors())
    assert "before any Probe" in reasons[1] and "before any Probe" in reasons[11]
    assert "illegal regex option" in reasons[4]
    assert "unterminated" in reasons[5]
    assert "rarity" in reasons[7] and "port range" in reasons[8]
    assert "unknown directive" in reasons[9]
    assert "TCP or UDP" in reasons[10]
    got = db.match("NULL", b"OK ...")
    assert got is not None and got.product == "Fine" and got.line == 3


def test_unescape_and_ports() -> None:
    assert unescape_c(r"\0\x41\r\n\t\\\|\"q") == b"\x00A\r\n\t\\|\"q"
    with pytest.raises(ValueError):
        unescape_c(r"\x4")
    assert parse_ports("21-23, 80") == frozenset({21, 22, 23, 80})
    for bad in ("", "80-", "x", "70000", "9-3"):
        with pytest.raises(ValueError):
            parse_ports(bad)


# ---------------------------------------------------------------- matching


def test_delimiters_templates_and_cpe(tmp_path: Path) -> None:
    db = db_from(tmp_path, SMALL)
    m = db.match("NULL", b"220 Foo FTPd 1.2.3\r\n")
    assert m == DBMatch(service="ftp", product="Foo FTPd", version="1.2.3", info=None, hostname=None, ostype=None,
                        devicetype=None, cpe=("cpe:/a:foo:ftpd:1.2.3",), soft=False, probe="NULL", line=6)
    assert m.rule == "nmap-service-probes:6"
    # m=..= with a literal | inside, p|..| with another delimiter
    m = db.match("NULL", b"220 mx.example ESMTP Bar | mailer 42\r\n")
    assert m is not None and (m.product, m.version, m.hostname, m.soft) == ("Bar MTA", "42", "mx.example", False)
    m = db.match("NULL", b"220 mx.example ESMTP Baz\r\n")
    assert m is not None and m.product == "Baz" and m.line == 9


def test_flags_i_and_s(tmp_path: Path) -> None:
    db = db_from(tmp_path, SMALL)
    m = db.match("NULL", b"X-77")
    assert m is not None and m.product == "Case Test" and m.version == "77"
    m = db.match("NULL", b"start\nend\n")
    assert m is not None and m.product == "Dotall"  # "." crosses \n with s; "$" before a final \n


def test_softmatch_keeps_looking_for_same_service(tmp_path: Path) -> None:
    db = db_from(tmp_path, SMALL)
    # the softmatch (line 7) comes first; a later hard smtp line wins
    m = db.match("NULL", b"220 host ESMTP Baz\r\n")
    assert m is not None and not m.soft and m.product == "Baz" and m.hostname == "host"
    # no hard smtp line matches: the softmatch is the answer, service only
    m = db.match("NULL", b"220 host ESMTP Unknown\r\n")
    assert m is not None and m.soft and m.service == "smtp" and m.product is None and m.line == 7


def test_fallback_order_and_null(tmp_path: Path) -> None:
    db = db_from(tmp_path, SMALL)
    # Special's own line, then its fallback GetRequest's, then NULL's
    assert (db.match("Special", b"OK") or pytest.fail()).probe == "Special"
    m = db.match("Special", b"HTTP/1.1 200 OK\r\nServer: Qux/2.1\r\n\r\n")
    assert m is not None and m.probe == "GetRequest" and m.product == "Qux httpd" and m.version == "2.1"
    assert m.ostype == "Unix" and m.devicetype == "router"
    m = db.match("Special", b"220 Foo FTPd 9\r\n")
    assert m is not None and m.probe == "NULL" and m.service == "ftp"
    # the NULL probe has no fallback: GetRequest's lines are not tried for it
    assert db.match("NULL", b"HTTP/1.1 200 OK\r\nServer: Qux/2.1\r\n\r\n") is None
    # UDP: own lines, then the fallback's, never NULL's
    assert (db.match("Datagram", b"U") or pytest.fail()).product == "UDP thing"
    assert (db.match("Datagram", b"V") or pytest.fail()).probe == "Other"
    assert db.match("Datagram", b"220 Foo FTPd 9\r\n") is None
    assert db.match("NoSuchProbe", b"OK") is None
    assert db.match("NULL", b"") is None


def test_tls_prefix_and_service_names(tmp_path: Path) -> None:
    db = db_from(tmp_path, SMALL)
    m = db.match("GetRequest", b"HTTP/1.0 404 Nope\r\n\r\n", tls=True)
    # a softmatch with a template reports it (as nmap does), still marked soft
    assert m is not None and m.service == "ssl/http" and m.soft and m.product == "generic httpd"
    assert service_name(m.service) == ("http", True)
    assert service_name("domain") == ("dns", False)
    assert service_name("imaps") == ("imap", True)
    assert service_name("submission") == ("smtp", False)
    assert service_name("iso-tsap") == ("tsap", False)
    assert service_name("http-proxy") == ("http", False)
    assert service_name("ssl/pop3") == ("pop3", True)
    assert service_name("ftp") == ("ftp", False)


SUBST = r"""Probe TCP NULL q||
match a m|^A(\d)(\d)?(x)?| p/P $1/ v/$2/ i/info $3/
match b m|^B([^\r\n]*)| p/$P(1)/ v/$SUBST(1,"_",".")/ i/trail $1 , ,  /
match c m|^C(..)(..)| v/$I(1,">")/ i/$I(2,"<")/ p/Cee/ cpe:/a:vendor:Cee Product:$1/
match d m|^D(.+)| p/$1/ v/ok/
match e m|^E| p/$Q(1)/ v/$SUBST(1,"a")/ i/fine/
"""


def test_substitution_functions(tmp_path: Path) -> None:
    db = db_from(tmp_path, SUBST)
    m = db.match("NULL", b"A1")
    # $2/$3 refer to groups past the last one that took part: those fields are dropped (nmap)
    assert m is not None and (m.product, m.version, m.info) == ("P 1", None, None)
    m = db.match("NULL", b"A1x")
    # $2 did not take part but a later group did: empty substitution
    assert m is not None and (m.product, m.version, m.info) == ("P 1", None, "info x")
    m = db.match("NULL", b"B2_4\x00_1\r\n")
    assert m is not None and m.product == "2_4_1" and m.version == "2.4\x00.1"
    assert m.info == "trail 2_4\x00_1"  # trailing blanks and commas trimmed
    m = db.match("NULL", b"CAB\x03\x04")
    assert m is not None and m.version == str(0x4142) and m.info == str(0x0403)
    # a substituted value inside a CPE is lower-cased; the line's own text is kept as written
    assert m.cpe == ("cpe:/a:vendor:Cee Product:ab",)
    m = db.match("NULL", b"D" + b"x" * 200)
    # the product does not fit nmap's 80-byte buffer: dropped, the rest kept
    assert m is not None and m.product is None and m.version == "ok"
    m = db.match("NULL", b"E")
    # unknown command and wrong argument count: the fields are dropped, not the match
    assert m is not None and (m.product, m.version, m.info) == (None, None, "fine")


def test_cpe_transform(tmp_path: Path) -> None:
    db = db_from(tmp_path, "Probe TCP NULL q||\nmatch x m|^X ([^\\r]+)| p/X/ cpe:/a:x:x:$1/\n")
    m = db.match("NULL", b"X Ab C:d/e\r")
    assert m is not None and m.cpe == ("cpe:/a:x:x:ab_c%3Ad%2Fe",)


# ---------------------------------------------------------------- PCRE conversion


@pytest.mark.parametrize(
    ("pcre", "flags", "subject", "matches"),
    [
        (r"^ab\z", "", b"ab", True),
        (r"^ab\z", "", b"ab\n", False),
        (r"^ab\Z", "", b"ab\n", True),
        (r"^ab$", "", b"ab\n", True),
        (r"^ab$", "", b"ab\nc", False),
        (r"^a\hb", "", b"a\tb", True),
        (r"^a\Hb", "", b"a b", False),
        (r"^a\vb", "", b"a\rb", True),
        (r"^a\Rb", "", b"a\r\nb", True),
        (r"^a\Nb", "", b"a\nb", False),
        (r"^\Q*+.\E$", "", b"*+.", True),
        (r"^[[:alpha:]]+[[:digit:]]$", "", b"abC7", True),
        (r"^[[:xdigit:][:space:]]+$", "", b"af 09", True),
        (r"^(?<ver>\d+)\.\k<ver>$", "", b"12.12", True),
        (r"^a(?i)bc", "", b"aBC", True),
        (r"^a(?i)bc", "", b"ABC", False),
        (r"^(x(?i)y|z)$", "", b"Z", True),
        (r"^\x{41}\x4\0\101", "", b"A\x04\x00A", True),
        (r"^[\w-.]+$", "", b"a-b.c", True),
        (r"^[.-\d]+$", "", b"-.5", True),
        (r"^[a\-z]+$", "", b"a-z", True),
        (r"^[a\-z]+$", "", b"b", False),
        (r"^a{,3}$", "", b"a{,3}", True),
        (r"^a{2}b{1,}$", "", b"aabbb", True),
        (r"^\e\cA", "", b"\x1b\x01", True),
        (r"^(a)\g{-1}\g1$", "", b"aaa", True),
        (r"^[[&&]]$", "", b"&]", True),
        (r"^(?>a+)b", "", b"aaab", True),
        (r"^a++b", "", b"aaab", True),
        (r"^(?#comment)ab", "", b"ab", True),
        (r"^\8\9", "", b"89", True),
        (r"^A.B", "s", b"A\nB", True),
        (r"^A.B", "", b"A\nB", False),
        (r"^abc", "i", b"ABC", True),
        (r"\bfoo\b", "", b"x foo y", True),
    ],
)
def test_pcre_conversion(pcre: str, flags: str, subject: bytes, matches: bool) -> None:
    f = (re.IGNORECASE if "i" in flags else 0) | (re.DOTALL if "s" in flags else 0)
    rx = re.compile(convert(pcre).encode("latin-1"), f)
    assert (rx.search(subject) is not None) is matches


@pytest.mark.parametrize("pcre", [r"\p{L}", r"a\K", r"(?R)", r"(*UTF8)a", r"(?U)a+", r"[[:^alpha:]]", r"\x{100}",
                                  r"(a", r"a)", r"[abc", "a\\"])
def test_pcre_unsupported(pcre: str) -> None:
    with pytest.raises(Unsupported):
        convert(pcre)


def test_compile_failures_counted(tmp_path: Path) -> None:
    text = "\n".join([
        "Probe TCP NULL q||",
        r"match bad1 m|^\p{L}x| p/unsupported/",
        r"match bad2 m%^(?<=a|bc)x% p/variable look-behind/",
        r"match good m|^x| p/Good/",
        "",
    ])
    db = db_from(tmp_path, text)
    m = db.match("NULL", b"x")
    assert m is not None and m.product == "Good"
    failures = db.compile_all()
    assert set(failures) == {2, 3}
    assert "Unicode property" in failures[2] and "look-behind" in failures[3]
    assert db.stats()["failed"] == 2 and db.stats()["compiled"] == 1


def test_literal_facts() -> None:
    f = analyse(r"^220 ([-\w.]+) ESMTP Exim (\d[\w.]+)", False)
    assert f.anchored and f.prefix == b"220 " and b" ESMTP Exim " in f.required
    f = analyse(r"^SSH-([\d.]+)-OpenSSH[_-]", True)
    assert f.prefix == b"ssh-" and b"-openssh" in f.required
    assert analyse(r"^a|b", False).required == () and not analyse(r"^a|b", False).anchored
    assert analyse(r"^ab?c", False).prefix == b"a"
    assert analyse(r"^ab+c", False).prefix == b"ab"
    assert quick_prefix(r"^ab?c", False) == b"a" and quick_prefix(r"x^", False) == b""
    assert analyse(r"(?i)^abc", False).required == ()


def test_data_cap_and_slow_quarantine(tmp_path: Path) -> None:
    db = db_from(tmp_path, "Probe TCP NULL q||\nmatch tail m|x$| p/Tail/\nmatch evil m|^(a+)+$| p/Evil/\n")
    assert db.match("NULL", b"y" * 100 + b"x") is not None
    # past MAX_DATA the regexes do not see the data
    assert db.match("NULL", b"y" * sdb.MAX_DATA + b"x") is None
    # catastrophic backtracking (~0.2 s a run here): after the second slow run the line is
    # quarantined and no longer run
    hostile = b"a" * 22 + b"b"
    assert db.match("NULL", hostile) is None and db.stats()["slow"] == 0
    assert db.match("NULL", hostile) is None and db.stats()["slow"] == 1
    t0 = time.process_time()
    assert db.match("NULL", hostile) is None and db.stats()["slow"] == 1
    assert time.process_time() - t0 < 0.02


def test_threads_share_one_database(tmp_path: Path) -> None:
    db = db_from(tmp_path, SMALL)
    results: list[DBMatch | None] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(50):
            got = db.match("Special", b"HTTP/1.1 200 OK\r\nServer: Qux/3.0\r\n\r\n")
            with lock:
                results.append(got)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 200 and all(r is not None and r.version == "3.0" for r in results)


# ---------------------------------------------------------------- loading


def test_missing_file_gives_none_with_reason(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert load(missing) is None
    reason = sdb.last_error()
    assert reason is not None and "nope" in reason
    assert load(tmp_path) is None  # a directory is not a database


def test_env_var_and_default_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "env-probes"
    path.write_text(SMALL)
    monkeypatch.setenv(sdb.ENV_VAR, str(path))
    sdb.reset_default()
    try:
        db = sdb.default_db()
        assert db is not None and db.path == str(path)
        assert sdb.default_db() is db  # cached
        # the path argument wins over the variable
        other = db_from(tmp_path, "Probe TCP NULL q||\n", name="other")
        assert other.path.endswith("other")
        monkeypatch.setenv(sdb.ENV_VAR, str(tmp_path / "absent"))
        sdb.reset_default()
        assert sdb.default_db() is None and "absent" in (sdb.last_error() or "")
    finally:
        sdb.reset_default()


def test_load_is_lazy(tmp_path: Path) -> None:
    db = db_from(tmp_path, SMALL)
    assert db.parse_seconds == 0.0  # nothing read yet
    db.probe("NULL")
    assert db.parse_seconds > 0.0


# ---------------------------------------------------------------- the installed Debian database


@pytest.fixture(scope="module")
def debian() -> ServiceDB:
    """The installed database; its absence is a failure (tests/run.sh installs nmap-common)."""
    db = load(DEBIAN)
    if db is None:
        pytest.fail(f"nmap-service-probes missing: {sdb.last_error()} (apt-get install nmap-common)")
    return db


def test_debian_stats_and_compile_rate(debian: ServiceDB) -> None:
    failures = debian.compile_all()
    stats = debian.stats()
    total = stats["matches"] + stats["softmatches"]
    assert stats["matches"] > 10_000 and stats["probes"] > 100
    assert stats["parse_errors"] == 0, debian.parse_errors()[:5]
    assert stats["compiled"] + stats["failed"] == total
    assert stats["compiled"] / total > 0.99, debian.failure_reasons().most_common(5)
    assert len(failures) == stats["failed"]


def test_debian_probes(debian: ServiceDB) -> None:
    null = debian.probe("NULL")
    assert null is not None and null.payload == b"" and null.protocol == "TCP"
    get = debian.probe("GetRequest")
    assert get is not None and get.payload == b"GET / HTTP/1.0\r\n\r\n" and 80 in get.ports
    bind = debian.probe("DNSVersionBindReq")
    assert bind is not None and bind.protocol == "UDP" and 53 in bind.ports
    assert b"\x07version\x04bind" in bind.payload


def test_debian_known_banners(debian: ServiceDB) -> None:
    """Greetings of servers that are not in the lab, typed from their documented formats."""
    m = debian.match("NULL", b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
    assert m is not None and m.service == "ssh" and m.product == "OpenSSH" and m.version is not None
    assert m.version.startswith("9.2p1")
    m = debian.match("NULL", b"220 (vsFTPd 3.0.3)\r\n")
    assert m is not None and (m.service, m.product, m.version) == ("ftp", "vsftpd", "3.0.3")
    assert debian.match("NULL", b"\x00\x01\x02 nothing anyone would send") is None


# ---------------------------------------------------------------- the lab's real servers


def _grab(host: str, port: int, send: bytes = b"", timeout: float = 5.0) -> bytes:
    """One reply from a lab server on loopback: the greeting, or what answers ``send``."""
    import socket
    import time

    assert host.startswith("127.")
    data = b""
    with socket.create_connection((host, port), timeout=timeout) as s:
        if send:
            s.sendall(send)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(data) < 65536:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
            if not send and data.endswith(b"\n"):
                break
    return data


@pytest.mark.lab
def test_lab_mail_and_news_greetings(lab: object, debian: ServiceDB) -> None:
    smtp = _grab("127.0.0.1", 25)
    m = debian.match("NULL", smtp)
    assert m is not None and m.service == "smtp" and m.product == "Postfix smtpd" and not m.soft
    nntp = _grab("127.0.0.1", 119)
    version = re.search(rb"INN ([\d.]+)", nntp)
    assert version, nntp
    m = debian.match("NULL", nntp)
    assert m is not None and m.service == "nntp" and m.version == version.group(1).decode()
    assert m.product is not None and "INN" in m.product
    for port, service in ((143, "imap"), (110, "pop3")):
        m = debian.match("NULL", _grab("127.0.0.1", port))
        # Debian's Dovecot greeting names no version: nmap's database only softmatches it
        assert m is not None and service_name(m.service) == (service, False), (port, m)


@pytest.mark.lab
def test_lab_http_reply(lab: object, debian: ServiceDB) -> None:
    probe = debian.probe("GetRequest")
    assert probe is not None
    reply = _grab("127.0.0.1", 80, probe.payload)
    server = re.search(rb"\r\nServer: nginx/([\d.]+)", reply)
    assert server, reply[:200]
    m = debian.match("GetRequest", reply)
    assert m is not None and (m.service, m.product, m.version) == ("http", "nginx", server.group(1).decode())
    assert m.probe == "GetRequest" and m.rule.startswith("nmap-service-probes:")


@pytest.mark.lab
def test_lab_bind_version(lab: object, debian: ServiceDB) -> None:
    import socket

    import dns.message
    import dns.rdatatype

    probe = debian.probe("DNSVersionBindReq")
    assert probe is not None and probe.protocol == "UDP"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(probe.payload, ("127.0.0.2", 53))
        reply, _ = s.recvfrom(4096)
    txt = [rr for rr in dns.message.from_wire(reply).answer if rr.rdtype == dns.rdatatype.TXT]
    assert txt, reply
    said = b"".join(txt[0][0].strings).decode()
    m = debian.match("UDP:DNSVersionBindReq", reply)
    assert m is not None and service_name(m.service) == ("dns", False)
    assert m.product == "ISC BIND" and m.version is not None and said.startswith(m.version)
