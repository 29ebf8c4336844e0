"""The passive hooks of the probe API (``client_hint``, ``pair_key``, ``identify_passive``) in replay.

* A third-party plugin takes part in replay with no change to ``scanner/``: the Redis example
  (``examples/redis-probe``, loaded from its file as ``--plugin-path`` does) names Redis and its
  version in a capture of a real redis-server conversation that another client led (commands the
  plugin's dialogue never sends), tells the client side of a connection caught mid-stream on an
  unknown port by its ``client_hint``, and names the service from the client's commands alone.
* A bug in a hook is contained as in dialogues: a ``probe-bug`` attempt with its traceback, and
  replay goes on.
* ``scanner/replay/identify.py`` holds no protocol knowledge any more.
"""

from __future__ import annotations

import ast
import os
import random
import socket
import time
from collections.abc import Hashable, Sequence
from pathlib import Path

import pytest

from scanner.api import Dialogue, Finding, NotThisProtocol, Probe, ProbeContext, Recv, TLSFacts
from scanner.registry import load_probes, load_registry
from scanner.replay import replay_paths
from scanner.replay.identify import pair_datagrams
from scanner.replay.pcapwriter import (
    ACK,
    PSH,
    PcapWriter,
    TCPConversation,
    synthesize_client_hello,
    synthesize_server_handshake,
    tcp_packet,
    udp_packet,
)
from scanner.results import ScanResult

ROOT = Path(__file__).resolve().parents[2]
REDIS_PLUGIN = ROOT / "examples" / "redis-probe" / "portproof_redis" / "probe.py"
CLIENT = "127.0.0.1"


def _redis_probes() -> list[Probe]:
    reg = load_registry(plugin_paths=[str(REDIS_PLUGIN)])
    assert not reg.errors, reg.errors
    probes = reg.probes
    assert "redis" in [p.name for p in probes]
    return probes


def _command(*args: bytes) -> bytes:
    """A RESP command array, as redis-cli writes it (written here, not with the plugin's helper)."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


#: another client's read-only session: none of it is what the plugin's dialogue sends (PING first)
SESSION = [
    _command(b"CLIENT", b"SETNAME", b"portproof-test"),
    _command(b"ECHO", b"hello"),
    _command(b"EXISTS", b"portproof:no-such-key"),
    _command(b"INFO", b"server"),
    _command(b"QUIT"),
]


def _resp_done(buf: bytes) -> bool:
    """One whole RESP reply of the kinds this session gets (+, -, :, or a $ bulk string)."""
    if buf[:1] in (b"+", b"-", b":"):
        return buf.endswith(b"\r\n")
    if buf[:1] == b"$":
        head, _, rest = buf.partition(b"\r\n")
        return len(rest) >= int(head[1:]) + 2
    return False


def _redis_session() -> list[bytes]:
    """The session with the lab's redis-server on 127.0.0.1:6379: one reply per command (bounded)."""
    replies: list[bytes] = []
    try:
        sock = socket.create_connection(("127.0.0.1", 6379), timeout=5.0)
    except OSError as exc:
        pytest.fail(f"the lab's redis-server (127.0.0.1:6379) is not reachable: {exc}")
    with sock:
        for cmd in SESSION:
            sock.sendall(cmd)
            buf = b""
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline and not (buf and _resp_done(buf)):
                sock.settimeout(max(0.05, deadline - time.monotonic()))
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    break
                buf += chunk
            replies.append(buf)
    return replies


def _replay(path: Path, probes: Sequence[Probe]) -> dict[tuple[str, int, str], ScanResult]:
    return {(r.address, r.port, r.transport): r for r in replay_paths([str(path)], probes).results}


def test_redis_plugin_identifies_another_clients_session(lab: object, tmp_path: Path) -> None:
    replies = _redis_session()
    assert replies[0] == b"+OK\r\n" and replies[1] == b"$5\r\nhello\r\n", replies[:2]
    info = dict(line.split(b":", 1) for line in replies[3].split(b"\r\n") if b":" in line)
    version = info[b"redis_version"].decode()
    path = tmp_path / "redis-session.pcap"
    with PcapWriter(path) as w:
        conv = TCPConversation(w, (CLIENT, 40101), ("127.0.0.1", 6379))
        for cmd, reply in zip(SESSION, replies, strict=True):
            conv.send(True, cmd)
            conv.send(False, reply)
        conv.close(reset=False)

    # the built-in probes alone: Redis is unknown to portproof
    plain = _replay(path, load_probes())[("127.0.0.1", 6379, "tcp")]
    assert plain.service != "redis"

    res = _replay(path, _redis_probes())[("127.0.0.1", 6379, "tcp")]
    assert (res.verdict, res.service, res.probe) == ("identified", "redis", "redis"), res.reason
    assert (res.product, res.version) == ("Redis", version)
    assert "passively" in (res.reason or "")
    # the plugin's dialogue (PING first) was tried on these bytes and did not fit them
    assert any(a.probe == "redis" and a.status != "success" for a in res.attempts)


def test_redis_client_hint_tells_the_client_side_midstream(lab: object, tmp_path: Path) -> None:
    """No handshake, no known port: only the client's first bytes tell which side is the client."""
    replies = _redis_session()
    path = tmp_path / "redis-midstream.pcap"
    server, client = ("127.0.0.1", 16379), (CLIENT, 50000)  # neither port is in any probe's hints
    cseq, sseq = 1000, 9000
    with PcapWriter(path) as w:
        for cmd, reply in zip(SESSION[1:4], replies[1:4], strict=True):
            w.write(tcp_packet(client[0], server[0], client[1], server[1], cseq, sseq, PSH | ACK, cmd))
            cseq += len(cmd)
            w.write(tcp_packet(server[0], client[0], server[1], client[1], sseq, cseq, PSH | ACK, reply))
            sseq += len(reply)
    results = _replay(path, _redis_probes())
    res = results[("127.0.0.1", 16379, "tcp")]
    assert res.service == "redis", res.reason
    assert res.details["replay"]["server_decided_by"] == "client hint"
    assert ("127.0.0.1", 50000, "tcp") not in results


def test_redis_client_only_session(lab: object, tmp_path: Path) -> None:
    """Only the client's packets: named from its RESP commands, saying only the client was seen."""
    path = tmp_path / "redis-client-only.pcap"
    data = b"".join(SESSION[:3])
    with PcapWriter(path) as w:
        w.write(tcp_packet(CLIENT, "127.0.0.1", 40102, 6379, 1000, 0, 0x02, b""))
        w.write(tcp_packet(CLIENT, "127.0.0.1", 40102, 6379, 1001, 5001, PSH | ACK, data))
    res = _replay(path, _redis_probes())[("127.0.0.1", 6379, "tcp")]
    assert (res.service, res.product, res.state) == ("redis", None, "unknown"), res.reason
    assert res.details["only_client_seen"] is True and res.confidence <= 3
    assert res.details["client_commands"] == ["CLIENT", "ECHO", "EXISTS"]


# ----------------------------------------------------------------------------- probe bugs


class _Line(Probe):
    """A toy line protocol: the server says ``TOY <product>``; a client starts with ``HELLO``."""

    name = "toy"
    services = ("toy",)
    transports = ("tcp", "udp")
    ports = (7777,)
    summary = "test"

    def client_hint(self, first_client_bytes: bytes) -> bool:
        return first_client_bytes.startswith(b"HELLO")

    def pair_key(self, datagram: bytes) -> Hashable | None:
        return datagram[:4] if datagram[:1] == b"#" else None

    def identify_passive(self, server_messages: Sequence[bytes], client_messages: Sequence[bytes]) -> Finding | None:
        first = next((m for m in server_messages if m), b"")
        if b"TOY " in first[:16]:
            return Finding(service="toy", confidence=6)
        return None

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        yield Recv(lambda b: None)
        raise NotThisProtocol("never")


class _Buggy(_Line):
    """Every hook raises (or answers nonsense): replay must go on and report each as a probe bug."""

    name = "buggy"
    services = ("buggy",)
    rarity = 1

    def client_hint(self, first_client_bytes: bytes) -> bool:
        raise ZeroDivisionError("client_hint bug")

    def pair_key(self, datagram: bytes) -> Hashable | None:
        raise KeyError("pair_key bug")

    def identify_passive(self, server_messages: Sequence[bytes], client_messages: Sequence[bytes]) -> Finding | None:
        raise RuntimeError("identify_passive bug")


class _Liar(_Line):
    """identify_passive answers a service it does not declare: rejected as a probe bug."""

    name = "liar"
    services = ("liar",)
    rarity = 1

    def identify_passive(self, server_messages: Sequence[bytes], client_messages: Sequence[bytes]) -> Finding | None:
        return Finding(service="smtp", confidence=10)


def test_a_bug_in_a_hook_is_contained(tmp_path: Path) -> None:
    path = tmp_path / "toy.pcap"
    with PcapWriter(path) as w:
        conv = TCPConversation(w, ("192.0.2.1", 40200), ("192.0.2.7", 7777))
        conv.send(True, b"HELLO toy\r\n")
        conv.send(False, b"TOY 1.0 ready\r\n")
        conv.close()
        w.write(udp_packet("192.0.2.1", "192.0.2.7", 40201, 7777, b"#abc request"))
        w.write(udp_packet("192.0.2.7", "192.0.2.1", 7777, 40201, b"#abc TOY reply"))
    results = _replay(path, [_Buggy(), _Liar(), _Line()])
    tcp = results[("192.0.2.7", 7777, "tcp")]
    assert (tcp.service, tcp.probe) == ("toy", "toy"), tcp.reason
    bugs = {(a.probe, a.error) for a in tcp.attempts if a.status == "probe-bug"}
    assert ("buggy", "client_hint() raised") in bugs
    assert ("buggy", "identify_passive() raised") in bugs
    assert any(p == "liar" and e and "service 'smtp'" in e for p, e in bugs)
    tb = next(a.traceback for a in tcp.attempts if a.error == "identify_passive() raised")
    assert tb is not None and "identify_passive bug" in tb

    udp = results[("192.0.2.7", 7777, "udp")]
    assert udp.service == "toy", udp.reason
    assert udp.details["replay"]["paired"] == 1  # the toy probe's key paired them, the bug did not stop it
    assert any(a.probe == "buggy" and a.error == "pair_key() raised" for a in udp.attempts)


def test_pair_datagrams_uses_the_probes_keys() -> None:
    """Pairing knows no protocol: without a probe that keys them, datagrams pair in order."""
    dgrams = [(0, b"#k01 q"), (0, b"#k02 q"), (1, b"#k02 r"), (1, b"#k09 r")]
    responses, info = pair_datagrams(dgrams, 1, [_Line()])
    assert info == {"paired": 1, "unpaired_responses": 1, "unanswered_requests": 1}
    assert responses[0] == b"#k02 r"
    _, in_order = pair_datagrams(dgrams, 1, [])
    assert in_order == {"paired": 2, "unpaired_responses": 0, "unanswered_requests": 0}


def test_identify_holds_no_protocol_knowledge() -> None:
    """No protocol name or signature is left in scanner/replay/identify.py's code (docstrings and
    comments may name examples)."""
    source = (ROOT / "scanner" / "replay" / "identify.py").read_text()
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    words = ("http", "ldap", "msrpc", "tsap", "dns", "imap", "pop3", "smtp", "GET ", "POST")
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes) and id(node) not in docstrings:
            text = node.value.decode("latin-1") if isinstance(node.value, bytes) else node.value
            assert not any(w in text.lower() for w in (w.lower() for w in words)), text
        if isinstance(node, ast.Name | ast.FunctionDef):
            name = node.id if isinstance(node, ast.Name) else node.name
            assert name not in ("_client_hint", "_dns_key", "_ber_message_id", "_pair_key", "_ALPN_SERVICE"), name
            assert not any(w in name.lower() for w in ("dns", "ldap", "msrpc", "tsap")), name


def _hostile_inputs() -> list[bytes]:
    rng = random.Random(16)
    out = [b"", b"\x00", b"\xff" * 64, b"\r\n" * 40, b"0" * 70_000, os.urandom(0)]
    out += [bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 600))) for _ in range(60)]
    # plausible heads of every built-in's protocol, cut and corrupted
    out += [b"\x30\x84\xff\xff\xff\xff\x02\x01", b"\x05\x00\x0b\x03" + b"\xff" * 12, b"\x03\x00\x00\x05\x00\xe0",
            b"\x00\x20" + b"\x01" * 12, b"*99999\r\n$3\r\nGET", b"220 x\r\n334 TlRMTVNTUAACAAAA!!\r\n",
            b"+ TlRMTVNTUAACAAAA" + b"A" * 200, b"NTLMSSP\x00\x02\x00\x00\x00" + b"\xff" * 40]
    return out


def test_every_probe_hook_survives_hostile_bytes() -> None:
    """The contract of the hooks, for every registered probe and the Redis plugin: never raise on
    foreign bytes, answer the declared types, finish fast."""
    inputs = _hostile_inputs()
    for probe in _redis_probes():
        t0 = time.perf_counter()
        for data in inputs:
            assert probe.client_hint(data[:64]) in (True, False), probe.name
            key = probe.pair_key(data)
            if key is not None:
                hash(key)
            for server, client in (([data], [data]), ([], [data]), ([data], []), ([data, data], [data])):
                found = probe.identify_passive(server, client)
                assert found is None or (isinstance(found, Finding) and found.service in probe.services), probe.name
        assert time.perf_counter() - t0 < 10, f"{probe.name}: hooks too slow on hostile input"


def test_alpn_declared_by_a_probe_names_an_encrypted_connection(tmp_path: Path) -> None:
    """The ALPN ids a probe declares (``alpn``) name an implicit-TLS connection on a port no probe
    hints: replay holds no table of ALPN ids of its own."""

    class _ToyTLS(_Line):
        name = "toytls"
        services = ("toytls",)
        alpn = ("toy/1",)

    path = tmp_path / "alpn.pcap"
    with PcapWriter(path) as w:
        conv = TCPConversation(w, ("192.0.2.1", 40300), ("192.0.2.8", 9443))
        conv.send(True, synthesize_client_hello())
        conv.send(False, synthesize_server_handshake(TLSFacts("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256", alpn="toy/1")))
        conv.close()
    res = _replay(path, [*load_probes(), _ToyTLS()])[("192.0.2.8", 9443, "tcp")]
    assert (res.service, res.probe) == ("toytls", "toytls"), res.reason
    assert "ALPN 'toy/1'" in (res.reason or "")
