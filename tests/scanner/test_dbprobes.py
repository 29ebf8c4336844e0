"""nmap's own probes in the slow lane (scanner.dbprobes and the engine's use of them).

Planning is checked against the real database file (Debian's nmap-common, read at run time; the
tests skip without it): port hints first in file order, the rarity cut, ``sslports``, softmatch
narrowing, ``Exclude``. The matcher path runs a probe's dialogue through the one runner. The cost
of a port that never speaks is measured against a same-run control with the probes turned off,
on small asyncio fakes (hostile cases only); Redis is named on the lab without any Redis plugin.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from typing import Any
from xml.etree import ElementTree

import pytest

from scanner.breadth import DatabaseHandle
from scanner.dbprobes import (
    NmapLane,
    excluded,
    is_tls_hello,
    nmap_probe,
    outcome_kind,
    plan,
)
from scanner.engine import ScanOptions, scan_sync
from scanner.registry import load_registry
from scanner.servicedb import ServiceDB, default_db
from scanner.testing import SILENT, run_dialogue, run_scripted
from tests.hostile.hostile_kit import FakeServer, FakeUDPServer, make_self_signed, silent, tls_context_for


@pytest.fixture(scope="module")
def db() -> ServiceDB:
    found = default_db()
    if found is None:
        pytest.skip("nmap-service-probes is not installed (apt-get install nmap-common)")
    return found


def _names(probes: list[Any]) -> list[str]:
    return [p.name for p in probes]


# ------------------------------------------------------------------------------------------ planning
def test_port_hints_come_first_in_file_order_whatever_their_rarity(db: ServiceDB) -> None:
    hinted, others = plan(db, "tcp", 6379, intensity=7)
    assert _names(hinted) == ["redis-server"]  # rarity 8: hinted probes ignore --intensity
    assert db.probe("TCP:redis-server").rarity > 7  # type: ignore[union-attr]
    hinted25, _ = plan(db, "tcp", 25, intensity=7)
    assert "Hello" in _names(hinted25) and all(25 in p.ports for p in hinted25)
    order = {p.name: i for i, p in enumerate(db.probes()) if p.protocol == "TCP"}
    for group in (hinted25, others):
        assert [order[n] for n in _names(group)] == sorted(order[n] for n in _names(group))


def test_rarity_cut_follows_intensity(db: ServiceDB) -> None:
    _, seven = plan(db, "tcp", 6379, intensity=7)
    _, one = plan(db, "tcp", 6379, intensity=1)
    assert all(p.rarity <= 7 for p in seven) and all(p.rarity == 1 for p in one)
    assert {"GenericLines", "GetRequest"} <= set(_names(one)) < set(_names(seven))
    assert "redis-server" not in _names(seven)  # hinted elsewhere, rarity 8: never an "other"
    _, nine = plan(db, "tcp", 6379, intensity=9)
    assert "redis-server" not in _names(nine) and len(nine) > len(seven)
    for group in (seven, nine):
        assert "NULL" not in _names(group)  # the greeting read is the NULL probe


def test_sslports_inside_tls_ports_outside(db: ServiceDB) -> None:
    plain, _ = plan(db, "tcp", 443, tls=False)
    inside, _ = plan(db, "tcp", 443, tls=True)
    assert "X11Probe" in _names(plain) and "X11Probe" not in _names(inside)  # ports 443, no sslports
    assert "GetRequest" in _names(inside) and "GetRequest" not in _names(plain)  # sslports 443
    assert all(443 in p.sslports for p in inside) and all(443 in p.ports for p in plain)


def test_tls_client_hellos_are_left_to_the_engines_tls_layer(db: ServiceDB) -> None:
    hellos = {p.name for p in db.probes() if p.protocol == "TCP" and is_tls_hello(p.payload)}
    assert {"SSLSessionReq", "TLSSessionReq", "SSLv23SessionReq"} <= hellos
    assert not is_tls_hello(db.probe("TCP:GetRequest").payload)  # type: ignore[union-attr]
    for port in (443, 6379):
        hinted, others = plan(db, "tcp", port, intensity=9)
        assert not hellos & set(_names(hinted + others))


def test_softmatch_narrows_to_probes_that_can_name_the_service(db: ServiceDB) -> None:
    hinted, others = plan(db, "tcp", 6379, intensity=7, soft="redis")
    kept = hinted + others
    assert "GetRequest" in _names(kept) and "X11Probe" not in _names(kept)
    assert all("redis" in db.services(f"TCP:{p.name}") for p in kept)
    # a service seen inside TLS ("ssl/redis") narrows like the plain name
    assert _names(plan(db, "tcp", 6379, soft="ssl/redis")[1]) == _names(others)


def test_exclude_directive_and_udp_plan(db: ServiceDB) -> None:
    assert db.exclude and excluded(db.exclude, "tcp", 9100)
    assert plan(db, "tcp", 9100) == ([], [])
    udp_hinted, udp_others = plan(db, "udp", 9100)  # the Exclude names TCP only ("T:")
    assert "NTPRequest" in _names(udp_hinted) and all(p.protocol == "UDP" for p in udp_hinted + udp_others)
    hinted53, _ = plan(db, "udp", 53)
    assert {"DNSVersionBindReq", "DNSStatusRequest"} <= set(_names(hinted53))
    assert excluded("22,T:100-101,U:53", "udp", 22) and excluded("22,T:100-101,U:53", "tcp", 101)
    assert not excluded("22,T:100-101,U:53", "udp", 100) and not excluded("T:9100-9107", "tcp", 9108)


# ------------------------------------------------------------------------------------------ matcher path
REDIS_INFO = (b"$3907\r\n# Server\r\nredis_version:6.2.14\r\nredis_git_sha1:00000000\r\n"
              b"redis_mode:standalone\r\nos:Linux 6.1.0 x86_64\r\n\r\n")


def test_reply_is_matched_with_the_database_and_cites_its_line(db: ServiceDB) -> None:
    probe = nmap_probe(db, db.probe("TCP:redis-server"), tls=False, wait=1.0)  # type: ignore[arg-type]
    assert probe.name == "nmap:redis-server"
    expected = db.match("TCP:redis-server", REDIS_INFO)
    assert expected is not None and expected.version == "6.2.14"
    sent: list[bytes] = []

    def respond(data: bytes) -> bytes:
        sent.append(data)
        return REDIS_INFO

    run = run_scripted(probe, respond)
    assert sent == [db.probe("TCP:redis-server").payload]  # type: ignore[union-attr]
    f = run.finding
    assert f is not None and run.status == "success"
    assert (f.service, f.version, f.rule) == ("redis", "6.2.14", expected.rule)
    assert f.product and "Redis" in f.product and f.confidence == 8  # the bytes name Redis
    assert run.ctx is not None and run.ctx.responses["TCP:redis-server"] == REDIS_INFO
    assert outcome_kind(f) == "hard"
    # the same reply dripped in pieces (each read ends when the line goes quiet) gives the same
    pieces = [REDIS_INFO[i : i + 7] for i in range(0, len(REDIS_INFO), 7)][:16]
    again = run_dialogue(probe, [*pieces, SILENT])
    assert again.finding is not None and again.finding.version == "6.2.14"


def test_unmatched_reply_is_no_match_and_silence_a_timeout(db: ServiceDB) -> None:
    probe = nmap_probe(db, db.probe("TCP:GetRequest"), tls=False, wait=1.0)  # type: ignore[arg-type]
    odd = b"\x00\x13portproof-test-nothing-matches\r\n"
    run = run_dialogue(probe, [odd, SILENT])
    assert run.finding is None and run.status == "no-match"
    # the reply is kept for the database pass after the scan and for the banner
    assert run.ctx is not None and run.ctx.responses["TCP:GetRequest"] == odd
    assert run_dialogue(probe, [SILENT]).status == "io-timeout"
    assert run_dialogue(probe, b"").status == "closed-early"


def test_softmatch_and_tls_replies_are_told_apart(db: ServiceDB) -> None:
    probe = nmap_probe(db, db.probe("TCP:GenericLines"), tls=False, wait=1.0)  # type: ignore[arg-type]
    soft = run_dialogue(probe, [b"SSH-2.0-x\r\n", SILENT]).finding  # NULL's softmatch, via fallback
    assert soft is not None and outcome_kind(soft) == "soft" and soft.product is None
    lane = NmapLane(DatabaseHandle(db.path), "tcp", 6379)
    assert lane.take(soft) == "soft" and lane.soft == "ssh" and not lane.done
    # TLS alert record in reply to a plaintext probe: a TLS layer (the engine's TLS layer reruns all)
    alert = b"\x15\x03\x01\x00\x02\x02\x0a"
    get = nmap_probe(db, db.probe("TCP:GetRequest"), tls=False, wait=1.0)  # type: ignore[arg-type]
    tls_finding = run_dialogue(get, [alert, SILENT]).finding
    assert outcome_kind(tls_finding) == "tls" and lane.take(tls_finding) == "tls" and lane.done


def test_nmap_probes_are_not_plugins(db: ServiceDB) -> None:
    names = [p.name for p in load_registry().probes]
    assert names and not any(n.startswith("nmap:") for n in names)


def test_cli_switch_and_service_db_switch_turn_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    import scanner.engine
    from scanner.cli import main

    seen: list[ScanOptions] = []

    class Capture(scanner.engine.Scanner):
        async def run(self, *args: Any, **kw: Any) -> list[Any]:
            seen.append(self.options)
            return []

    monkeypatch.setattr(scanner.engine, "Scanner", Capture)
    base = ["127.0.0.1", "-p", "1", "-o", "jsonl", "--no-progress"]
    for extra, on in (([], True), (["--no-nmap-probes"], False), (["--no-service-db"], False)):
        main(["scan", *base, *extra])
        assert seen[-1].nmap_probes is on, extra


# ------------------------------------------------------------------------------------------ live cost
class _FixedPort(FakeServer):
    """The hostile kit's server, on a chosen loopback address and port (a port nmap's file hints)."""

    def __init__(self, handler: Any, host: str, port: int) -> None:
        super().__init__(handler)
        self.host, self.want = host, port

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.want)
        self.port = self.want


@pytest.fixture
def silent_on_hinted_port() -> Iterator[tuple[str, int]]:
    host, port = "127.0.0.23", 6379  # nmap's file hints redis-server here; nothing of ours does
    srv = _FixedPort(silent, host, port)
    try:
        srv.start()
    except (RuntimeError, OSError):
        pytest.skip(f"{host}:{port} is not free")
    yield host, port
    srv.stop()


_QUICK: dict[str, Any] = dict(greeting_wait=0.3, read_timeout=1.0, slow_read_timeout=0.2, tls_timeout=0.3,
                              connect_timeout=1.0, exclude=("redis",))


def _timed(host: str, port: str, **kw: Any) -> tuple[float, Any]:
    t0 = time.monotonic()
    res = scan_sync([host], port, resolve=False, **{**_QUICK, **kw})
    return time.monotonic() - t0, res[0]


def test_a_port_silent_to_everything_costs_no_more(silent_on_hinted_port: tuple[str, int]) -> None:
    """The same silent port, scanned with nmap's probes on and off in the same run: no nmap probe is
    sent (the port never spoke), so the time is the control's. Were the hinted probe sent, it would
    cost its wait (read_timeout 1 s here), past the tolerance."""
    host, port = silent_on_hinted_port
    # the best of two runs each, interleaved, so a busy machine's jitter does not decide
    runs: list[tuple[float, Any]] = []
    for _ in range(2):
        runs.append(_timed(host, str(port), nmap_probes=False))
        runs.append(_timed(host, str(port)))
    off_s, off = min(runs[0::2], key=lambda run: run[0])
    on_s, on = min(runs[1::2], key=lambda run: run[0])
    assert not [a for _s, r in runs[1::2] for a in r.attempts if a.probe.startswith("nmap:")]
    assert on.verdict == off.verdict == "unidentified"
    assert not [a for a in on.attempts if a.probe.startswith("nmap:")]
    assert on_s <= off_s + 0.5, (on_s, off_s)


async def _answers_everything(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reply to every request with a line no rule knows, never close (bounded like the kit's)."""
    for _ in range(1000):
        data = await reader.read(65536)
        if not data:
            return
        writer.write(b"\x00\x13portproof-test-nothing-matches\r\n")
        await writer.drain()


def test_a_port_that_answers_nonsense_is_bounded_by_the_budget() -> None:
    srv = FakeServer(_answers_everything).start()
    try:
        off_s, off = _timed("127.0.0.1", str(srv.port), nmap_probes=False)
        on_s, on = _timed("127.0.0.1", str(srv.port), nmap_budget=1.5)
    finally:
        srv.stop()
    sent = [a for a in on.attempts if a.probe.startswith("nmap:")]
    assert sent and all(a.status == "no-match" for a in sent)  # it spoke, so nmap's probes ran
    assert on.verdict == off.verdict == "unidentified"
    assert on_s - off_s <= 1.5 + 1.0, (on_s, off_s)


def test_inside_tls_the_remaining_probes_go_inside_tls(tmp_path: Any) -> None:
    """A TLS server that closes on plaintext: nmap's remaining probes are sent inside TLS (as nmap
    reruns its probes through SSL), none in the clear; silent inside TLS, it gets none at all."""
    cert, key = make_self_signed(tmp_path)
    chatty = FakeServer(_answers_everything, tls_context_for(cert, key)).start()
    quiet = FakeServer(silent, tls_context_for(cert, key)).start()
    try:
        _s, talk = _timed("127.0.0.1", str(chatty.port), nmap_budget=1.0)
        off_s, off = _timed("127.0.0.1", str(quiet.port), nmap_probes=False)
        on_s, on = _timed("127.0.0.1", str(quiet.port))
    finally:
        chatty.stop()
        quiet.stop()
    sent = [a for a in talk.attempts if a.probe.startswith("nmap:")]
    assert sent and all(a.tls for a in sent), talk.attempts
    assert not [a for a in on.attempts if a.probe.startswith("nmap:")]
    assert on.verdict == off.verdict == "unidentified" and on_s <= off_s + 0.5, (on_s, off_s)


def _udp_on(host: str, port: int, handler: Any) -> FakeUDPServer:
    """The hostile kit's UDP server, moved to a chosen loopback address and port."""
    srv = FakeUDPServer(handler)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        srv.stop()
        pytest.skip(f"{host}:{port}/udp is not free")
    srv.sock.close()
    sock.settimeout(0.2)
    srv.sock, srv.port = sock, port
    return srv.start()


def _ntp_reply(srv: FakeUDPServer, query: bytes) -> list[tuple[bytes, socket.socket | None]]:
    """An NTPv4 server's answer to a client (mode 3) request: LI 0, version 4, mode 4 (0x24),
    stratum 2, poll and precision, then root delay/dispersion, reference id and four timestamps
    (48 bytes, RFC 5905 section 7.3); anything else gets no answer."""
    if len(query) != 48 or query[0] & 0x07 != 3:
        return []
    header = struct.pack("!BBbb", 0x24, 2, 6, -20) + struct.pack("!II", 0x100, 0x200) + b"\x7f\x00\x00\x01"
    now = struct.pack("!Q", 0xE9000000 << 32)
    # reference, origin (the client's transmit timestamp echoed), receive, transmit
    return [(header + now + query[40:48] + now + now, None)]


def test_udp_service_named_by_nmaps_udp_probe() -> None:
    srv = _udp_on("127.0.0.23", 123, _ntp_reply)  # nmap's NTPRequest is hinted for 123; none of ours
    try:
        res = scan_sync(["127.0.0.23"], "U:123", resolve=False, udp_timeout=0.5)[0]
    finally:
        srv.stop()
    assert res.state == "open" and res.service == "ntp" and res.probe == "nmap:NTPRequest", res
    assert res.product == "NTP" and res.version == "v4" and res.rule and res.rule.startswith("nmap-service-probes:")


def test_a_udp_port_silent_to_everything_costs_no_more() -> None:
    """nmap's UDP probes hinted for the port wait beside ours, not after them."""
    srv = _udp_on("127.0.0.23", 161, lambda srv, query: [])  # SNMP's port: nmap hints its probes here
    try:
        t0 = time.monotonic()
        off = scan_sync(["127.0.0.23"], "U:161", resolve=False, udp_timeout=0.5, nmap_probes=False)[0]
        off_s = time.monotonic() - t0
        t0 = time.monotonic()
        on = scan_sync(["127.0.0.23"], "U:161", resolve=False, udp_timeout=0.5)[0]
        on_s = time.monotonic() - t0
    finally:
        srv.stop()
    assert [a for a in on.attempts if a.probe.startswith("nmap:")]  # sent, at once with ours
    assert on.state == off.state == "open|filtered"
    assert on_s <= off_s + 0.4, (on_s, off_s)


# ------------------------------------------------------------------------------------------ lab
def _redis_version() -> str:
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, timeout=30)
    m = re.search(r"v=(\d[\w.]*)", out.stdout)
    assert m, out.stdout
    return m.group(1)


@pytest.mark.lab
def test_redis_named_with_version_without_a_redis_plugin(lab: Any) -> None:
    """Redis on the lab (tests/lab/extra.d/redis.sh): product and version from nmap's own
    redis-server probe, as right as ``nmap -sV`` (which names "Redis key-value store" and the
    version), with any Redis plugin excluded; with the switch off it stays unidentified."""
    res = scan_sync([lab.ip1], "6379", resolve=False, exclude=("redis",))[0]
    assert res.service == "redis" and res.probe == "nmap:redis-server"
    assert res.product == "Redis key-value store" and res.version == _redis_version()
    assert res.rule and res.rule.startswith("nmap-service-probes:") and res.confidence >= 8
    nmap = shutil.which("nmap")
    if nmap:  # the same run's nmap -sV (loopback only): ours is at least as right
        xml = subprocess.run([nmap, "-n", "-Pn", "-sV", "-p6379", lab.ip1, "-oX", "-"], capture_output=True,
                             text=True, timeout=120).stdout
        svc = ElementTree.fromstring(xml).find(".//port[@portid='6379']/service")
        assert svc is not None and svc.get("name") == "redis"
        assert (svc.get("product"), svc.get("version")) == (res.product, res.version)
    off = scan_sync([lab.ip1], "6379", resolve=False, nmap_probes=False, **_QUICK)[0]
    assert off.product is None and off.verdict == "unidentified"
    assert not [a for a in off.attempts if a.probe.startswith("nmap:")]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        for _ in range(10000):
            data = await reader.read(65536)
            if not data:
                return
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


@pytest.mark.lab
def test_our_probe_keeps_precedence_over_a_database_match(lab: Any) -> None:
    """The lab's slapd (127.0.0.2:389) relayed on 3892, a port nmap's file hints LDAP probes for and
    ours does not: our HTTP guess makes slapd hang up (the port speaks), nmap's LDAP probe names
    "ldap", and our own LDAP probe, which reports that service, then runs and its finding stands."""

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(lab.ip2, 389)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)

    srv = _FixedPort(relay, "127.0.0.23", 3892)
    try:
        srv.start()
    except (RuntimeError, OSError):
        pytest.skip("127.0.0.23:3892 is not free")
    try:
        res = scan_sync(["127.0.0.23"], "3892", resolve=False)[0]
    finally:
        srv.stop()
    names = [a.probe for a in res.attempts]
    assert any(n.startswith("nmap:LDAP") for n in names), names
    assert res.probe == "ldap" and res.service == "ldap" and res.product == "OpenLDAP", res
    assert names.index("ldap") > min(i for i, n in enumerate(names) if n.startswith("nmap:"))
