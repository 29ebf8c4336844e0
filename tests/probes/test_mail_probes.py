"""SMTP, IMAP, POP3 and NNTP probes: framers byte by byte, real replies (lab and public captures)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from probes.imap import IMAPProbe, decode_exchange_token
from probes.nntp import NNTPProbe
from probes.pop3 import POP3Probe, parse_capa
from probes.pop3 import identify as identify_pop3
from probes.smtp import SMTPProbe, frame_reply, parse_ehlo, parse_reply
from scanner.api import NotThisProtocol, TLSFacts
from scanner.testing import feed_bytewise, run_dialogue
from scanner.textproto import frame_dot_block, frame_imap_tagged, frame_line
from tests.pcaputil import server_stream

DATA = Path(__file__).parent / "data"


def lab(name: str) -> bytes:
    return (DATA / f"{name}.txt").read_bytes()


# ---------------------------------------------------------------- framers
def test_smtp_framer_bytewise_multiline() -> None:
    msg = b"250-mail.example\r\n250-PIPELINING\r\n250 CHUNKING\r\n"
    assert feed_bytewise(frame_reply, msg + b"220 next") == len(msg)


def test_smtp_framer_rejects_non_smtp() -> None:
    with pytest.raises(NotThisProtocol):
        frame_reply(b"HTTP/1.1 400 Bad Request\r\n")
    with pytest.raises(NotThisProtocol):
        frame_reply(b"250-a\r\n251 b\r\n")  # codes differ


def test_smtp_framer_bounded() -> None:
    with pytest.raises(NotThisProtocol):
        frame_reply(b"220 " + b"x" * 20000)
    with pytest.raises(NotThisProtocol):
        frame_reply(b"250-x\r\n" * 5000)


def test_imap_tagged_framer_literal_is_not_a_tag() -> None:
    framer = frame_imap_tagged(b"a1")
    msg = b"* ID {8}\r\na1 OK x\r\n* X\r\na1 OK done\r\n"
    # the literal's 8 bytes "a1 OK x\r" would look like a tagged line if literals were ignored
    assert feed_bytewise(framer, msg) == len(msg)


def test_dot_block_error_line_is_whole() -> None:
    assert frame_dot_block(b"-ERR no\r\nmore") == 9
    assert feed_bytewise(frame_dot_block, b"+OK\r\nTOP\r\n.\r\n") == 13


def test_line_framer_bounded() -> None:
    assert frame_line(b"abc") is None
    with pytest.raises(NotThisProtocol):
        frame_line(b"a" * 10000)


# ---------------------------------------------------------------- lab transcripts
def test_smtp_postfix_lab_transcript() -> None:
    run = run_dialogue(SMTPProbe(), lab("smtp-postfix-3.7.11"), port=25)
    # the transcript holds no STARTTLS reply: the dialogue stops there with the finding so far
    f = run.finding
    assert f is not None and f.service == "smtp" and f.product == "Postfix"
    assert f.details["starttls"] is True and "PIPELINING" in f.details["extensions"]
    assert f.extrainfo == "Debian/GNU"
    assert run.sent[0] == b"EHLO portproof.invalid\r\n"


def test_smtp_starttls_then_ehlo_again() -> None:
    stream = lab("smtp-postfix-3.7.11") + b"220 2.0.0 Ready to start TLS\r\n" + b"250-mail\r\n250 AUTH PLAIN LOGIN\r\n"
    run = run_dialogue(SMTPProbe(), stream, port=25, tls=TLSFacts("TLSv1.3", "TLS_AES_256_GCM_SHA384"))
    assert run.ok, run.error
    assert run.finding is not None and run.finding.details["auth_tls"] == ["PLAIN", "LOGIN"]
    assert run.sent == [b"EHLO portproof.invalid\r\n", b"STARTTLS\r\n", b"EHLO portproof.invalid\r\n", b"QUIT\r\n"]


def test_imap_dovecot_lab_transcript() -> None:
    run = run_dialogue(IMAPProbe(), lab("imap-dovecot-2.3.19.1"), port=143)
    f = run.finding
    assert f is not None and f.product == "Dovecot" and "STARTTLS" in f.details["capabilities"]
    assert f.details["id"].get("name") == "Dovecot"


def test_pop3_dovecot_lab_transcript() -> None:
    run = run_dialogue(POP3Probe(), lab("pop3-dovecot-2.3.19.1"), port=110)
    f = run.finding
    assert f is not None and f.product == "Dovecot" and f.details["starttls"] is True
    assert f.details["sasl"] == ["PLAIN", "LOGIN"]


def test_nntp_inn_lab_transcript() -> None:
    run = run_dialogue(NNTPProbe(), lab("nntp-inn-2.7.1"), port=119)
    f = run.finding
    assert f is not None and (f.product, f.version) == ("InterNetNews (INN)", "2.7.1")
    assert f.details["implementation"] == "INN 2.7.1" and f.details["mode"] == "reader"


# ---------------------------------------------------------------- public captures
@pytest.mark.parametrize(
    ("pcap", "port", "product", "version"),
    [
        ("smtp-exchange2003-on-iis6-smtpsvc-6.0.3790.1830.pcap", 25, "Microsoft Exchange Server", "2000/2003"),
        ("smtp-exchange-cern-multiaddr.pcap", 25, "Microsoft Exchange Server", "2007 or later"),
        ("smtp-exim-4.94.2-loopback-prdr.pcap", 25, "Exim", "4.94.2"),
        ("smtp-exim-4.94.115-bdat-chunking.pcap", 25, "Exim", "4.94.115"),
        ("smtp-sendmail-8.14.9-loginserver.pcap", 25, "Sendmail", "8.14.9"),
        ("smtp-sendmail-8.8.7-darpa1999.pcap", 25, "Sendmail", "8.8.7"),
        ("smtp-emailrelay-2.1a.pcap", 25, "E-MailRelay", "2.1a"),
    ],
)
def test_smtp_public_captures(pcap: str, port: int, product: str, version: str) -> None:
    stream = server_stream(pcap, port)
    run = run_dialogue(SMTPProbe(), stream, port=port)
    assert run.finding is not None, run.error
    assert (run.finding.product, run.finding.version) == (product, version)


def test_smtp_iis_base_version_kept() -> None:
    stream = server_stream("smtp-exchange2003-on-iis6-smtpsvc-6.0.3790.1830.pcap", 25)
    f = run_dialogue(SMTPProbe(), stream, port=25).finding
    assert f is not None and f.details["smtpsvc_version"] == "6.0.3790.1830" and f.details["link_state"] is True


@pytest.mark.parametrize(
    ("pcap", "product", "version"),
    [
        ("imap-exchange-5.5.2650.23.pcap", "Microsoft Exchange Server", "5.5.2650.23"),
        ("imap-1and1-gmx-starttls.pcap", "1&1 / United Internet mail platform", None),
        ("imap-unidentified-server-version-4.9.04.012.pcap", None, None),
    ],
)
def test_imap_public_captures(pcap: str, product: str | None, version: str | None) -> None:
    f = run_dialogue(IMAPProbe(), server_stream(pcap, 143), port=143).finding
    assert f is not None and f.service == "imap"
    assert (f.product, f.version) == (product, version)


def test_imap_unidentified_keeps_banner_version_without_naming() -> None:
    f = run_dialogue(IMAPProbe(), server_stream("imap-unidentified-server-version-4.9.04.012.pcap", 143)).finding
    assert f is not None and f.product is None and f.details["banner_version"] == "4.9.04.012"


def test_exchange_2013_greeting_token() -> None:
    token = base64.b64encode("EXCH01.corp.example".encode("utf-16-le")).decode()
    greeting = f"* OK The Microsoft Exchange IMAP4 service is ready. [{token}]\r\n".encode()
    run = run_dialogue(IMAPProbe(), greeting + b"* CAPABILITY IMAP4rev1 AUTH=NTLM\r\na1 OK done\r\n", port=143)
    f = run.finding
    assert f is not None and f.product == "Microsoft Exchange Server"
    assert f.details["server_name"] == "EXCH01.corp.example"
    assert decode_exchange_token("[bm90IHV0ZjE2]") is None


@pytest.mark.parametrize(
    ("pcap", "product", "version"),
    [
        ("pop3-cmailserver-5.2.pcap", "CMailServer", "5.2"),
        ("pop3-1and1-mailcom-mieueus-large.pcap", "1&1 / United Internet mail platform", None),
    ],
)
def test_pop3_public_captures(pcap: str, product: str, version: str | None) -> None:
    f = run_dialogue(POP3Probe(), server_stream(pcap, 110), port=110).finding
    assert f is not None and (f.product, f.version) == (product, version)


def test_pop3_lavad_capa_from_capture() -> None:
    # that client sent an unknown command before CAPA, so parse the CAPA block it got directly
    stream = server_stream("pop3-lavabit-lavad-4.3.0-stls.pcap", 110)
    start = stream.index(b"+OK Capabilities follow")
    block = stream[start : start + frame_dot_block(stream[start:])]  # type: ignore[operator]
    caps = parse_capa(block)
    f = identify_pop3("lavad", caps)
    assert (f.product, f.version) == ("lavad", "4.3.0") and "STLS" in caps


def test_nntp_leafnode_capture() -> None:
    f = run_dialogue(NNTPProbe(), server_stream("nntp-leafnode-1.11.7rc1.pcap", 119), port=119).finding
    assert f is not None and (f.product, f.version) == ("Leafnode", "1.11.7.rc1")


# ---------------------------------------------------------------- matching and hostile bytes
def test_matchers_tell_protocols_apart() -> None:
    greetings = {
        "smtp": b"220 mx ESMTP\r\n",
        "imap": b"* OK ready\r\n",
        "pop3": b"+OK ready\r\n",
        "nntp": b"200 news ready\r\n",
    }
    probes = [SMTPProbe(), IMAPProbe(), POP3Probe(), NNTPProbe()]
    for name, greeting in greetings.items():
        assert [p.name for p in probes if p.match(greeting)] == [name]


def test_ftp_is_not_smtp() -> None:
    stream = b"220 ProFTPD Server ready\r\n500 EHLO not understood\r\n500 HELO not understood\r\n"
    run = run_dialogue(SMTPProbe(), stream, port=21)
    assert isinstance(run.error, NotThisProtocol)


@pytest.mark.parametrize("probe", [SMTPProbe(), IMAPProbe(), POP3Probe(), NNTPProbe()], ids=lambda p: p.name)
@pytest.mark.parametrize(
    "junk",
    [b"", b"\x00" * 100, b"\x1b[2J\x1b[31mhello\r\n", b"\xff\xfe\xfd" * 3000, b"220-" + b"A" * 100000],
)
def test_hostile_bytes_end_cleanly(probe: object, junk: bytes) -> None:
    run = run_dialogue(probe, junk)  # type: ignore[arg-type]
    assert run.error is not None or run.finding is not None


def test_parse_ehlo_auth_forms() -> None:
    info = parse_ehlo(parse_reply(b"250-mx\r\n250-AUTH=LOGIN PLAIN\r\n250-AUTH GSSAPI NTLM\r\n250 8BITMIME\r\n"))
    assert info.extensions["AUTH"] == "LOGIN PLAIN GSSAPI NTLM"
