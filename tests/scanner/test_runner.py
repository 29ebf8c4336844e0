"""The one dialogue runner (scanner/runner.py): the rules every driver shares, proved through all three.

The live engine, the pcap replay and the transcript kit only feed the runner events, so a result
one of them keeps is kept by all: each case below runs the same server bytes through
``scanner.testing.run_dialogue``, ``scanner.replay.identify.drive_dialogue`` and a live scan of a
small loopback server (127.0.0.1, ephemeral port), and compares.
"""

from __future__ import annotations

import asyncio
import random
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from probes.dns import DNSProbe
from probes.tsap import TSAPProbe, build_cotp_dt, frame_tpkt
from scanner.api import (
    MAX_RECONNECTS,
    Dialogue,
    Finding,
    NotThisProtocol,
    Probe,
    ProbeContext,
    Reconnect,
    Recv,
    ResumableFramer,
    Send,
    StartTLS,
    TLSFacts,
    frame_cursor,
)
from scanner.engine import Scanner, ScanOptions
from scanner.profile import PortEntry
from scanner.registry import ProbeInfo, Registry
from scanner.replay.identify import drive_dialogue
from scanner.runner import (
    DETAILS_CAP,
    MAX_STEPS,
    RESPONSE_CAP,
    Done,
    DoStartTLS,
    NeedData,
    ProbeBug,
    Runner,
    bound_details,
)
from scanner.targets import Target
from scanner.testing import SILENT, feed_bytewise, run_dialogue
from scanner.textproto import frame_line, frame_smtp_reply

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "probes" / "data"


# ------------------------------------------------------------------------------ three drivers


def _ctx(port: int, transport: Any = "tcp", replay: bool = False) -> ProbeContext:
    return ProbeContext(address="192.0.2.1", port=port, transport=transport, rng=random.Random(0), replay=replay)


class _Server:
    """A loopback TCP server in a thread: for each connection, ``script`` gets the socket."""

    def __init__(self, script: Callable[[socket.socket], None]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.script = script
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        for _ in range(600):  # bounded: at most 120 s of accepting
            if self.stop.is_set():
                return
            try:
                conn, _addr = self.sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(5.0)
            try:
                self.script(conn)
            except OSError:
                pass
            finally:
                conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def _read_tpkt(conn: socket.socket) -> bytes:
    buf = b""
    for _ in range(64):
        n = frame_tpkt(buf) if buf else None
        if n is not None:
            return buf[:n]
        chunk = conn.recv(4096)
        if not chunk:
            return buf
        buf += chunk
    return buf


def _live(probe: Probe, script: Callable[[socket.socket], None], **opts: Any) -> Any:
    """Scan one loopback port running ``script`` with ``probe`` only; return the result."""
    server = _Server(script)
    try:
        registry = Registry(infos=[ProbeInfo(probe, "test", "0", False, "tests/scanner/test_runner.py")])
        options = ScanOptions(read_timeout=2.0, greeting_wait=0.3, short_wait=0.1, port_timeout=20.0, **opts)
        scanner = Scanner(registry, options)
        entry = PortEntry(port=server.port, probe=probe.name)
        return asyncio.run(scanner.scan_port(Target("127.0.0.1", "127.0.0.1"), entry))
    finally:
        server.close()


@pytest.fixture(scope="module")
def tsap_cc() -> bytes:
    stream = (DATA / "tsap-libiec61850-1.5.2-mms.bin").read_bytes()
    n = frame_tpkt(stream)
    assert n is not None
    return stream[:n]


def test_tsap_cc_then_unknown_session_byte_keeps_the_tsap_finding(tsap_cc: bytes) -> None:
    """A valid COTP CC proved ISO-TSAP; an unknown session SPDU after it ends the dialogue
    (NotThisProtocol) but the finding stays, in the kit, the replay and a live scan alike."""
    unknown = build_cotp_dt(b"\x99\x00")  # SPDU type 0x99: no such session SPDU
    run = run_dialogue(TSAPProbe(), tsap_cc + unknown, port=102)
    assert run.status == "no-match" and isinstance(run.error, NotThisProtocol)
    assert run.finding is not None and run.finding.service == "tsap"
    replayed = drive_dialogue(TSAPProbe(), _ctx(102, replay=True), tsap_cc + unknown)
    assert replayed.status == "no-match" and replayed.finding is not None
    assert replayed.finding.service == "tsap"

    def script(conn: socket.socket) -> None:
        _read_tpkt(conn)  # the CR
        conn.sendall(tsap_cc)
        _read_tpkt(conn)  # the session CONNECT
        conn.sendall(unknown)
        conn.recv(4096)

    res = _live(TSAPProbe(), script)
    assert res.service == "tsap" and res.verdict == "identified", (res.verdict, res.reason, res.attempts)
    assert res.details.get("partial") is True
    (attempt,) = [a for a in res.attempts if a.probe == "tsap"]
    assert attempt.status == "no-match" and "unknown session SPDU" in (attempt.error or "")


class _FoundThenBug(Probe):
    """Proves its protocol (ctx.found), then trips over a coding error."""

    name = "found_then_bug"
    services = ("fb",)
    summary = "test"

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        line = yield Recv(frame_line)
        ctx.found(Finding(service="fb", details={"greeting": line.decode()}))
        yield Send(b"MORE\r\n")
        yield Recv(frame_line)
        table: dict[str, int] = {}
        return Finding(service="fb", confidence=table["missing"])  # KeyError: a probe bug


def test_probe_bug_after_proof_keeps_the_finding_everywhere() -> None:
    server = b"FB ready\r\nmore\r\n"
    run = run_dialogue(_FoundThenBug(), server, raise_bugs=False)
    assert run.status == "probe-bug" and run.traceback is not None and "KeyError" in run.traceback
    assert run.finding is not None and run.finding.details["greeting"] == "FB ready\r\n"
    with pytest.raises(KeyError):
        run_dialogue(_FoundThenBug(), server)  # the kit's default: a probe bug is raised again
    out = drive_dialogue(_FoundThenBug(), _ctx(7), server)
    assert out.status == "probe-bug" and out.finding is not None and "KeyError" in (out.traceback or "")

    def script(conn: socket.socket) -> None:
        conn.sendall(b"FB ready\r\n")
        conn.recv(100)
        conn.sendall(b"more\r\n")
        conn.recv(100)

    res = _live(_FoundThenBug(), script)
    assert res.service == "fb" and res.details["greeting"] == "FB ready\r\n" and res.details.get("partial")
    (attempt,) = [a for a in res.attempts if a.probe == "found_then_bug"]
    assert attempt.status == "probe-bug" and "KeyError" in (attempt.traceback or "")


class _Endless(Probe):
    """Proves its protocol, then asks for lines forever (a runaway dialogue)."""

    name = "endless"
    services = ("endless",)
    summary = "test"

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        yield Recv(frame_line)
        ctx.found(Finding(service="endless"))
        while True:
            yield Send(b"x\r\n")


def test_step_budget_is_one_constant_and_keeps_the_partial() -> None:
    out = drive_dialogue(_Endless(), _ctx(7), b"hello\r\n")
    assert out.status == "probe-bug" and f"more than {MAX_STEPS} steps" in (out.error or "")
    assert out.finding is not None and out.finding.service == "endless"
    run = run_dialogue(_Endless(), b"hello\r\n", raise_bugs=False)
    assert run.status == "probe-bug" and run.finding is not None
    with pytest.raises(ProbeBug, match=f"more than {MAX_STEPS} steps"):
        run_dialogue(_Endless(), b"hello\r\n")

    def script(conn: socket.socket) -> None:
        conn.sendall(b"hello\r\n")
        for _ in range(100_000):  # read until the scanner hangs up (bounded; 5 s socket timeout)
            if not conn.recv(65536):
                return

    res = _live(_Endless(), script)
    (attempt,) = [a for a in res.attempts if a.probe == "endless"]
    assert attempt.status == "probe-bug" and f"more than {MAX_STEPS} steps" in (attempt.error or "")
    assert res.service == "endless"


def test_dns_over_tcp_replay_with_many_replies_keeps_its_finding() -> None:
    """250 replies in one DNS/TCP flow (more than the replay's old 200-step limit): identified."""
    from tests.probes.test_dns import BIND_TCP

    stream = b"".join(BIND_TCP) * 23  # 253 length-prefixed replies
    out = drive_dialogue(DNSProbe(), _ctx(53, replay=True), stream)
    assert out.status == "success", (out.status, out.error)
    assert out.finding is not None and out.finding.product == "ISC BIND"
    assert out.finding.details["queries_answered"] == 253


# ------------------------------------------------------------------------------ runner rules


class _Tagged(Probe):
    name = "tagged"
    services = ("tagged",)
    summary = "test"

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        first = yield Recv(frame_line, tag="NULL", max_size=100_000)
        yield Recv(frame_line, tag="NULL")
        big = yield Recv(frame_line, tag="Big", max_size=100_000)
        return Finding(service="tagged", details={"sizes": [len(first), len(big)]})


def test_tagged_replies_first_per_tag_and_capped() -> None:
    big = b"B" * 8000 + b"\r\n"
    run = run_dialogue(_Tagged(), b"one\r\ntwo\r\n" + big)
    assert run.ok and run.ctx is not None
    assert run.ctx.responses["NULL"] == b"one\r\n"  # the first message of a tag is kept
    assert run.ctx.responses["Big"] == big[:RESPONSE_CAP]


def test_framer_contract_is_checked_by_the_runner() -> None:
    class Zero(Probe):
        name = "zero"
        services = ("zero",)

        def dialogue(self, ctx: ProbeContext) -> Dialogue:
            yield Recv(lambda buf: 0)
            return Finding(service="zero")

    out = drive_dialogue(Zero(), _ctx(1), b"abc")
    assert out.status == "probe-bug" and "returned 0" in (out.error or "")
    with pytest.raises(TypeError, match="returned 0"):
        run_dialogue(Zero(), b"abc")


class _StartTLSProbe(Probe):
    name = "stls"
    services = ("stls",)

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        yield Recv(frame_line)
        facts = yield StartTLS()
        after = yield Recv(frame_line)
        return Finding(service="stls", details={"tls": facts.version, "after": after.decode()})


def test_plaintext_before_starttls_is_refused_live_and_kept_in_transcripts() -> None:
    facts = TLSFacts(version="TLSv1.3", cipher="x")
    runner = Runner(_StartTLSProbe(), _ctx(25))
    runner.receive_data(b"ready\r\ninjected\r\n")
    out = runner.outcome
    assert out.status == "tls-error" and "plaintext" in (out.error or "")
    # transcripts: the bytes after the STARTTLS reply stand for the decrypted stream
    run = run_dialogue(_StartTLSProbe(), b"ready\r\nsecret\r\n", tls=facts)
    assert run.ok and run.finding is not None and run.finding.details == {"tls": "TLSv1.3", "after": "secret\r\n"}
    # replay: what follows is encrypted, the Recv after StartTLS is told the connection closed
    replayed = drive_dialogue(_StartTLSProbe(), _ctx(25), b"ready\r\nother client\r\n", tls=facts)
    assert replayed.status == "closed-early" and replayed.starttls


def test_runner_asks_and_adapters_answer() -> None:
    """The request/event protocol seen by an adapter, step by step."""
    runner = Runner(_StartTLSProbe(), _ctx(25))
    assert runner.next_request() == NeedData(None, 1)
    runner.receive_data(b"rea")
    assert runner.next_request() == NeedData(None, 1)  # same Recv: the deadline keeps running
    runner.receive_data(b"dy\r\n")
    assert runner.next_request() == DoStartTLS(None)
    runner.tls_started(TLSFacts(version="TLSv1.2", cipher="y"))
    assert runner.next_request() == NeedData(None, 2)
    runner.timed_out()
    req = runner.next_request()
    assert isinstance(req, Done) and req.outcome.status == "io-timeout"
    with pytest.raises(RuntimeError):
        runner.sent()  # an event that answers nothing asked


class _Reconnecting(Probe):
    name = "reconnecting"
    services = ("reconnecting",)

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        for _ in range(MAX_RECONNECTS + 1):
            yield Reconnect()
        return Finding(service="reconnecting")


def test_reconnects_are_counted_by_the_runner() -> None:
    runner = Runner(_Reconnecting(), _ctx(1))
    for _ in range(MAX_RECONNECTS):
        runner.reconnected(None)
    assert runner.outcome.status == "probe-bug" and runner.outcome.reconnects == MAX_RECONNECTS + 1
    udp = Runner(_Reconnecting(), _ctx(1, "udp"))
    assert udp.outcome.status == "closed-early"  # UDP cannot reconnect: told the connection closed


def test_silent_transcript_times_out_like_a_live_read() -> None:
    class Waits(Probe):
        name = "waits"
        services = ("waits",)

        def dialogue(self, ctx: ProbeContext) -> Dialogue:
            try:
                yield Recv(frame_line)
            except Exception as exc:
                return Finding(service="waits", details={"first": type(exc).__name__})
            return Finding(service="waits")

    run = run_dialogue(Waits(), [SILENT])
    assert run.ok and run.finding is not None and run.finding.details["first"] == "RecvTimeout"


def test_details_are_bounded() -> None:
    huge = {"values": ["v" * 10] * 330_000, "name": "x" * 100_000, "ok": 1}
    small = bound_details(huge)
    import json

    assert len(json.dumps(small)) <= DETAILS_CAP and small["details_trimmed"] > DETAILS_CAP and small["ok"] == 1
    assert bound_details({"a": 1}) == {"a": 1}


# ------------------------------------------------------------------------------ framers


def test_builtin_framers_are_resumable() -> None:
    from probes import dns, http, ldap, msrpc, resvc, smtp, tsap

    for framer in (frame_line, frame_smtp_reply, smtp.frame_reply, resvc.frame_resvc_banner, http.frame_http_response,
                   ldap.frame_ldap_message, ldap.frame_ldap_or_rest, dns.frame_dns_tcp, dns.frame_dns_udp,
                   msrpc.frame_dcerpc_pdu, msrpc.frame_dcerpc_reply, tsap.frame_tpkt):
        assert isinstance(framer, ResumableFramer), framer


def test_plain_framers_of_plugins_still_work() -> None:
    def plain(buf: bytes) -> int | None:
        assert isinstance(buf, bytes)  # plain framers always get bytes, never the live bytearray
        end = buf.find(b"\n")
        return end + 1 if end >= 0 else None

    cursor = frame_cursor(plain)
    assert cursor.feed(bytearray(b"ab")) is None and cursor.feed(bytearray(b"ab\ncd")) == 3
    assert feed_bytewise(plain, b"hello\nworld") == 6


@pytest.mark.parametrize("size", [14_000])
def test_drip_framing_is_linear(size: int) -> None:
    """A reply fed one byte at a time through the runner costs linear time (was 12 s for 14 KB of
    SMTP, 8 s for 10 KB of IMAP, 80 s for 24 KB of chunked HTTP)."""
    import time

    from probes.http import frame_http_response
    from scanner.textproto import frame_imap_tagged

    lines = size // 64
    smtp = b"".join(b"250-%s\r\n" % (b"X" * 58) for _ in range(lines)) + b"250 end\r\n"
    imap = b"* 1 FETCH (BODY[] {%d}\r\n" % size + b"a" * size + b")\r\na1 OK done\r\n"
    chunk = b"64\r\n" + b"c" * 100 + b"\r\n"
    http = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * (24_000 // len(chunk)) + b"0\r\n\r\n"
    for framer, msg in ((frame_smtp_reply, smtp), (frame_imap_tagged(b"a1"), imap), (frame_http_response, http)):
        t0 = time.process_time()
        assert feed_bytewise(framer, msg) == len(msg)
        spent = time.process_time() - t0
        assert spent < 0.05 * len(msg) / 1000, (framer, len(msg), spent)  # < 50 us per byte, all costs in


def test_one_dialogue_loop_in_the_tree() -> None:
    """``git grep`` finds one place that drives dialogue generators: the runner."""
    proc = subprocess.run(["git", "grep", "--untracked", "-n", "-e", "gen.send(", "-e", ".throw(", "--",
                           "scanner", "probes", "tests", "bench", "examples"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    hits = [line for line in proc.stdout.splitlines() if not line.startswith("tests/scanner/test_runner.py:")]
    code = [h for h in hits if "``" not in h]  # the runner's docstring names the pattern
    assert len(code) == 1 and code[0].startswith("scanner/runner.py:"), hits


# ------------------------------------------------------------------------------ library errors


class _Injected(AttributeError):
    """A coding error (as a library change or a typo would raise), injected into a decoder."""


def _broken(*_args: Any, **_kw: Any) -> Any:
    raise _Injected("injected coding error")


@pytest.mark.lab
def test_coding_error_in_a_decoder_is_a_probe_bug_in_scan_and_replay(lab: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the libraries' own error types mean "not this protocol": a coding error inside the
    DNS (dnspython) or LDAP (pyasn1) decoding surfaces as ``probe-bug`` with its traceback, live
    and in a replay alike, instead of a silent no-match."""
    import dns.message

    import probes.dns.wire
    from probes.ldap import LDAPProbe, _ldap3
    from scanner.engine import scan_sync
    from tests.probes.test_dns import BIND_UDP

    monkeypatch.setattr(dns.message, "from_wire", _broken)
    # the DNS parser's fast path (common replies without dnspython) is decoding code too
    monkeypatch.setattr(probes.dns.wire, "_fast_reply", _broken)
    monkeypatch.setattr(_ldap3(), "decoder", type("BrokenDecoder", (), {"decode": staticmethod(_broken)}))

    replays = {
        "dns": drive_dialogue(DNSProbe(), _ctx(53, "udp", replay=True), BIND_UDP),
        "ldap": drive_dialogue(LDAPProbe(), _ctx(389, replay=True), (DATA / "ldap/samba-4.17-dc-389.bin").read_bytes()),
    }
    for name, out in replays.items():
        assert out.status == "probe-bug", (name, out.status, out.error)
        assert out.traceback is not None and "injected coding error" in out.traceback, name

    # the lab's BIND answers on lab.ip2:53 (tests/lab/up.sh), Samba's LDAP on lab.ip1:389
    live = {(r.port, r.transport): r for r in scan_sync([lab.ip2], "U:53", probes=("dns",), use_service_db=False)}
    live.update({(r.port, r.transport): r for r in scan_sync([lab.ip1], "T:389", probes=("ldap",), fast=True,
                                                             use_service_db=False)})
    for key in ((53, "udp"), (389, "tcp")):
        bugs = [a for a in live[key].attempts if a.status == "probe-bug"]
        assert bugs, (key, live[key].attempts)
        assert bugs[0].traceback is not None and "injected coding error" in bugs[0].traceback, key
