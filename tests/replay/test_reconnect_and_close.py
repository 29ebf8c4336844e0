"""Replay: flows flushed at their close, framer refusals thrown into the dialogue, ``Reconnect``
served by the next flow of the same endpoint, and the ``ctx.replay`` tolerance of the mail probes.

The tsap streams are the lab's real server bytes (tests/probes/data: python-snap7 3.3.0 and
libiec61850 1.5.2, recorded with ``--record``), cut where a stack that closes on the session
CONNECT would have closed.
"""

from __future__ import annotations

from pathlib import Path

from probes.pop3 import POP3Probe
from probes.smtp import SMTPProbe
from probes.tsap import TSAPProbe, frame_tpkt
from scanner.api import (
    MAX_RECONNECTS,
    Dialogue,
    Finding,
    NotThisProtocol,
    Probe,
    ProbeContext,
    Reconnect,
    Recv,
    RecvClosed,
    Send,
)
from scanner.replay import replay_paths
from scanner.replay.identify import ServerStream, drive_dialogue
from scanner.replay.layers import ACK, FIN, PSH, RST, SYN, TCPSegment
from scanner.replay.pcapwriter import PcapWriter, TCPConversation
from scanner.replay.reassembly import FlowTable, TCPFlow, UDPFlow

DATA = Path(__file__).resolve().parents[1] / "probes" / "data"
SNAP7 = DATA / "tsap-python-snap7-3.3.0-s7.bin"
A, B = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])


def _ctx(port: int = 102) -> ProbeContext:
    return ProbeContext(address="192.0.2.1", port=port, replay=True)


def _tpkts(stream: bytes) -> list[bytes]:
    out = []
    while stream:
        n = frame_tpkt(stream)
        assert n is not None
        out.append(stream[:n])
        stream = stream[n:]
    return out


# ---------------------------------------------------------------- flows flushed at their close


def _seg(sport: int, dport: int, seq: int, flags: int, payload: bytes = b"") -> TCPSegment:
    return TCPSegment(sport, dport, seq, 0, flags, payload)


def test_flow_flushed_when_both_sides_sent_fin() -> None:
    flushed: list[TCPFlow | UDPFlow] = []
    table = FlowTable(flushed.append)
    table.add_tcp(1.0, A, B, _seg(40000, 25, 10, SYN))
    table.add_tcp(1.1, B, A, _seg(25, 40000, 500, SYN | ACK))
    table.add_tcp(1.2, B, A, _seg(25, 40000, 501, PSH | ACK, b"220 hi\r\n"))
    table.add_tcp(1.3, A, B, _seg(40000, 25, 11, FIN | ACK))
    assert flushed == []  # half-closed: the server may still talk
    table.add_tcp(1.4, B, A, _seg(25, 40000, 509, FIN | ACK))
    assert len(flushed) == 1 and not table.flows and table.closed_flushed == 1
    table.add_tcp(1.5, A, B, _seg(40000, 25, 12, ACK))  # the last ACK opens no new flow
    assert not table.flows
    table.add_tcp(2.0, A, B, _seg(40000, 25, 9000, SYN))  # a new connection on the same four-tuple does
    assert len(table.flows) == 1
    table.flush_all()
    assert len(flushed) == 2


def test_flow_flushed_at_rst() -> None:
    flushed: list[TCPFlow | UDPFlow] = []
    table = FlowTable(flushed.append)
    table.add_tcp(1.0, A, B, _seg(40000, 102, 1, PSH | ACK, b"\x03\x00\x00\x07\x02\xf0\x80"))
    table.add_tcp(1.1, A, B, _seg(40000, 102, 8, RST | ACK))
    assert len(flushed) == 1 and isinstance(flushed[0], TCPFlow) and flushed[0].rst
    table.add_tcp(1.2, B, A, _seg(102, 40000, 1, RST))  # a RST answering the RST: no new flow
    assert not table.flows


# ---------------------------------------------------------------- drive_dialogue


class _Strict(Probe):
    """Reads one line with a framer that refuses lines not starting with "OK"; catches the refusal."""

    name = "strict"
    services = ("strict",)

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        def framer(buf: bytes) -> int | None:
            if buf and not buf.startswith(b"OK"[: len(buf)]):
                raise NotThisProtocol("not OK")
            end = buf.find(b"\n")
            return end + 1 if end >= 0 else None

        try:
            yield Recv(framer)
        except NotThisProtocol as exc:
            return Finding(service="strict", details={"caught": str(exc)})
        return Finding(service="strict")


class _Reconnecting(Probe):
    """Reads one line per connection, reconnecting ``times`` times."""

    name = "reconnecting"
    services = ("reconnecting",)

    def __init__(self, times: int) -> None:
        self.times = times

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        lines = []
        for i in range(self.times + 1):
            if i:
                yield Reconnect()
            yield Send(b"hello\r\n")
            try:
                lines.append((yield Recv(lambda b: b.find(b"\n") + 1 or None)).decode())
            except RecvClosed as exc:
                lines.append(f"closed: {exc}")
                break
        return Finding(service="reconnecting", details={"lines": lines})


def test_framer_refusal_is_thrown_into_the_dialogue() -> None:
    out = drive_dialogue(_Strict(), _ctx(), b"NO\r\n")
    assert out.status == "success" and out.finding is not None and out.finding.details["caught"] == "not OK"


def test_reconnect_takes_the_following_streams_then_ends_cleanly() -> None:
    out = drive_dialogue(_Reconnecting(2), _ctx(), b"one\n", following=[ServerStream(b"two\n")])
    assert out.status == "success" and out.reconnects == 2 and out.reconnect_unserved
    assert out.finding is not None
    lines = out.finding.details["lines"]
    assert lines[:2] == ["one\n", "two\n"] and lines[2].startswith("closed: the capture holds no later connection")
    served = drive_dialogue(_Reconnecting(1), _ctx(), b"one\n", following=[ServerStream(b"two\n")])
    assert served.reconnects == 1 and not served.reconnect_unserved


def test_reconnects_are_bounded() -> None:
    out = drive_dialogue(_Reconnecting(MAX_RECONNECTS + 1), _ctx(), b"x\n", following=[ServerStream(b"y\n")] * 9)
    assert out.status == "probe-bug" and "reconnects" in (out.error or "")


# ---------------------------------------------------------------- tsap over several flows


def _two_flow_capture(path: Path) -> Path:
    """Our scan of an S7 stack that closes on the session CONNECT, as ``--record`` writes it."""
    server = _tpkts(SNAP7.read_bytes())
    cc, rest = server[0], b"".join(server[1:])
    with PcapWriter(path) as w:
        first = TCPConversation(w, ("192.0.2.10", 50000), ("192.0.2.102", 102), ts=1e9)
        first.send(True, b"\x03\x00\x00\x16\x11\xe0" + bytes(16))  # the CR (content not read)
        first.send(False, cc)
        first.send(True, b"\x03\x00\x00\x08\x02\xf0\x80\x0d")  # session CONNECT (cut)
        first.close(reset=False)  # the server's FIN: closed on the session CONNECT
        second = TCPConversation(w, ("192.0.2.10", 50001), ("192.0.2.102", 102), ts=1e9 + 1)
        second.send(True, b"\x03\x00\x00\x16\x11\xe0" + bytes(16))
        second.send(False, cc)
        second.send(True, b"\x03\x00\x00\x07\x02\xf0\x80")  # S7 setup (content not read)
        second.send(False, rest)
        second.close()
    return path


def test_reconnect_is_served_by_the_next_flow_of_the_endpoint(tmp_path: Path) -> None:
    report = replay_paths([str(_two_flow_capture(tmp_path / "s7.pcap"))], [TSAPProbe()])
    (res,) = report.results
    assert res.service == "tsap" and res.source is not None and res.source.flows == 2
    assert res.details["upper_layer"] == "s7comm" and res.details["reconnects"] == 1
    assert res.details["replay"]["tsap_reconnects"] == 1
    assert res.details["after_session_connect"] == "closed" and "s7_untried" not in res.details
    assert res.product == "S7 CPU 315-2 PN/DP" and res.version == "V3.3.0"


def test_first_flow_alone_ends_cleanly(tmp_path: Path) -> None:
    # without the second connection the Reconnect is unserved: the CC-only finding, no S7 claim
    cc = _tpkts(SNAP7.read_bytes())[0]
    out = drive_dialogue(TSAPProbe(), _ctx(), cc)
    assert out.status == "success" and out.reconnect_unserved and out.finding is not None
    assert out.finding.details["upper_layer"] is None and out.finding.details["s7_untried"] is True
    assert out.finding.product is None


# ---------------------------------------------------------------- mail probes, foreign clients


def test_smtp_keeps_a_naming_greeting_when_the_client_spoke_garbage() -> None:
    refused = b'500 5.5.1 Command unrecognized: "\x16\x03"\r\n'
    server = b"220 mx.example ESMTP Sendmail 8.14.3/8.14.3; Thu\r\n" + refused * 2
    out = drive_dialogue(SMTPProbe(), _ctx(25), server)
    assert out.status == "success" and out.finding is not None
    assert out.finding.product == "Sendmail" and "replay_stopped" in out.finding.details
    live = ProbeContext(address="192.0.2.1", port=25)  # not a replay: the 500s deny SMTP
    assert drive_dialogue(SMTPProbe(), live, server).status == "no-match"


def test_smtp_does_not_keep_a_bare_220() -> None:
    server = b"220 host FTP server (Version 6.4) ready.\r\n331 Password required.\r\n530 Login incorrect.\r\n"
    assert drive_dialogue(SMTPProbe(), _ctx(21), server).status == "no-match"


def test_pop3_keeps_the_greeting_past_a_huge_listing() -> None:
    listing = b"".join(b"%d 4096\r\n" % i for i in range(1, 2500))
    server = b"+OK POP server ready H mieueus020 x\r\n+OK password required\r\n+OK 2108 messages\r\n" + listing
    out = drive_dialogue(POP3Probe(), _ctx(110), server)
    assert out.status == "success" and out.finding is not None
    assert out.finding.product == "1&1 / United Internet mail platform"
