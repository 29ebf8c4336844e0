"""msrpc, tsap and resvc against the real lab servers, through the engine (``scan_sync``).

127.0.0.1: Samba 4.17 AD DC's endpoint mapper on 135, libiec61850 1.5.2's MMS server on 102,
nothing on 691 and 522. 127.0.0.2: python-snap7 3.3.0's S7 server on 102. 127.0.0.4: Samba's
standalone ``samba-dcerpcd`` on 135 (tests/lab/extra.d/dcerpcd.sh).

The registry holds only the three probes of this file (built from entry points, the same code
path as an installed package). The hostile cases at the end use small asyncio servers on
loopback and need no lab.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from scanner.registry import GROUP, Registry, load_registry
from scanner.results import ScanResult

PROBES = {
    "msrpc": "probes.msrpc:MSRPCProbe",
    "tsap": "probes.tsap:TSAPProbe",
    "resvc": "probes.resvc:ResvcProbe",
}


def _registry() -> Registry:
    reg = load_registry(eps=[EntryPoint(name=n, value=v, group=GROUP) for n, v in PROBES.items()])
    assert not reg.errors, reg.errors
    return reg


def _scan(address: str, ports: str, **kw: object) -> dict[int, ScanResult]:
    from scanner.engine import scan_sync

    return {r.port: r for r in scan_sync([address], ports=ports, registry=_registry(), **kw)}


def _listening(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def host1(lab: object) -> dict[int, ScanResult]:
    return _scan("127.0.0.1", "135,102,691,522")


@pytest.mark.lab
def test_samba_dc_endpoint_mapper(host1: dict[int, ScanResult]) -> None:
    r = host1[135]
    assert r.state == "open"
    assert r.service == "msrpc" and r.probe == "msrpc"
    assert r.verdict == "confirmed"
    assert r.product == "Samba"
    names = set(r.details["interfaces"])
    assert {"drsuapi", "netlogon", "lsarpc", "samr", "dnsserver", "epmapper"} <= names
    assert "domain-controller" in r.details["roles"]
    assert r.extrainfo is not None and "domain controller" in r.extrainfo and "Samba" in r.extrainfo
    # Samba's quirk: everything in the first reply, then ept_s_not_registered
    assert r.details["lookup_status"] == ["0x00000000", "0x16c9a0d6"]
    assert r.details["list_end"] == "samba-paging"
    eps = r.details["endpoints"]
    assert len(eps) >= 40
    assert any(e.get("protseq") == "ncacn_ip_tcp" and e.get("endpoint") == "135" for e in eps)
    assert any(e.get("annotation") == "netlogon" for e in eps)
    # the NTLM bind on a fresh connection: Samba's CHALLENGE names the DC and its domain
    ntlm = r.details["ntlm"]
    assert (ntlm["netbios_domain"], ntlm["netbios_computer"], ntlm["dns_computer"]) == (
        "LAB", "DC1", "dc1.lab.example.test"
    )
    assert ntlm["dns_domain"] == "lab.example.test"
    assert ntlm["os_version"] == "6.1.0" and ntlm["looks_like_samba"] is True
    assert r.details["ntlm_auth"] == {"auth_type": 10, "auth_level": 2}
    assert "ntlm_error" not in r.details and "ntlm_product_conflict" not in r.details
    assert "dc1.lab.example.test" in r.extrainfo


@pytest.mark.lab
def test_mms_iec61850_on_102(host1: dict[int, ScanResult]) -> None:
    r = host1[102]
    assert r.service == "tsap" and r.verdict == "confirmed"
    assert r.details["upper_layer"] == "mms"
    assert r.details["session"] == "ACCEPT"
    assert "1.0.9506.2.3" in r.details["oids"]  # MMS abstract syntax (ISO 9506-2)
    # the identity the lab's server was given (IedServer_setServerIdentity)
    assert r.details["mms_identify"] == {"vendor": "LabVendor", "model": "LabIED", "revision": "1.0"}
    assert r.product == "LabVendor LabIED" and r.version == "1.0"
    assert r.details["cotp"]["tpdu"] == "CC"


@pytest.mark.lab
@pytest.mark.parametrize("port", [691, 522])
def test_691_522_closed_in_lab(host1: dict[int, ScanResult], port: int) -> None:
    r = host1[port]
    assert r.state == "closed" and r.verdict == "closed"
    assert r.service is None


@pytest.mark.lab
def test_s7_on_102(lab: object) -> None:
    r = _scan("127.0.0.2", "102")[102]
    assert r.service == "tsap" and r.verdict == "confirmed"
    assert r.details["upper_layer"] == "s7comm"
    assert r.details["s7_setup"]["pdu_size"] == 480
    module = r.details["module"]
    # what python-snap7 3.3.0's server gives in SZL 0x0011 / 0x001C
    assert module["order_number"] == "6ES7 315-2EH14-0AB0"
    assert module["module_type"] == "CPU 315-2 PN/DP"
    assert module["station_name"] == "SNAP7-SERVER"
    assert r.product == "S7 CPU 315-2 PN/DP" and r.version == "V3.3.0"


@pytest.mark.lab
def test_standalone_dcerpcd(lab: object) -> None:
    if not _listening("127.0.0.4", 135):
        pytest.fail("samba-dcerpcd is not running on 127.0.0.4:135 (tests/lab/extra.d/dcerpcd.sh; see the lab logs)")
    r = _scan("127.0.0.4", "135")[135]
    assert r.service == "msrpc" and r.verdict == "confirmed"
    assert r.details["bind"] == "bind_ack"
    # Samba 4.17's standalone daemon lists its endpoints AND says ept_s_not_registered in the same
    # reply; no drsuapi/netlogon, so no domain-controller role
    assert r.details["lookup_status"] == ["0x16c9a0d6"]
    assert "domain-controller" not in r.details["roles"]
    assert r.product == "Samba"
    assert "mdssvc" in r.details["interfaces"]
    # a standalone server (tests/lab/configs/samba/dcerpcd.conf.in: netbios name RPC1) gives its
    # own name as the NTLM domain
    ntlm = r.details["ntlm"]
    assert ntlm["netbios_computer"] == ntlm["netbios_domain"] == "RPC1"
    assert ntlm["os_version"] == "6.1.0"


@pytest.mark.lab
def test_samba_dc_ntlm_bind_recorded_and_replayed(lab: object, tmp_path: Path) -> None:
    """A live scan of 135 recorded with ``--record``'s writer, then replayed: the replay follows
    the probe's ``Reconnect`` to the capture's second connection and reads the same CHALLENGE."""
    from scanner.engine import scan_sync
    from scanner.replay import replay_paths
    from scanner.replay.pcapwriter import PcapRecorder

    recorded = tmp_path / "msrpc.pcap"
    rec = PcapRecorder(recorded)
    try:
        live = scan_sync(["127.0.0.1"], ports="135", registry=_registry(), recorder=rec)
    finally:
        rec.close()
    assert len(live) == 1 and live[0].details["ntlm"]["dns_computer"] == "dc1.lab.example.test"
    report = replay_paths([str(recorded)], _registry().probes)
    assert report.errors == []
    replayed = {(r.address, r.port): r for r in report.results}[("127.0.0.1", 135)]
    assert replayed.service == "msrpc" and replayed.product == "Samba"
    for key in ("netbios_domain", "netbios_computer", "dns_computer", "os_version"):
        assert replayed.details["ntlm"][key] == live[0].details["ntlm"][key]


# ---------------------------------------------------------------- hostile servers (no lab)

Handler = Callable[[socket.socket, threading.Event], None]


@pytest.fixture
def hostile() -> Iterator[Callable[[Handler], int]]:
    """Start a small blocking TCP server on 127.0.0.1 (random port); each connection runs
    ``handler(conn, stop)`` in a thread. Everything stops (bounded) at teardown."""
    stop = threading.Event()
    threads: list[threading.Thread] = []
    socks: list[socket.socket] = []

    def start(handler: Handler) -> int:
        srv = socket.create_server(("127.0.0.1", 0))
        srv.settimeout(0.1)
        socks.append(srv)

        def serve() -> None:
            for _ in range(600):  # at most ~60 s
                if stop.is_set():
                    return
                try:
                    conn, _ = srv.accept()
                except TimeoutError:
                    continue
                conn.settimeout(5.0)
                t = threading.Thread(target=_run, args=(handler, conn), daemon=True)
                t.start()
                threads.append(t)

        def _run(h: Handler, conn: socket.socket) -> None:
            with conn, contextlib.suppress(OSError):
                h(conn, stop)

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        threads.append(t)
        return int(srv.getsockname()[1])

    yield start
    stop.set()
    for t in threads:
        t.join(timeout=6)
    for srv in socks:
        srv.close()


def _one(port: int, probe: str) -> ScanResult:
    from scanner.engine import scan_sync

    reg = _registry().select(include=[probe])
    t0 = time.monotonic()
    res = scan_sync(["127.0.0.1"], ports=str(port), registry=reg, read_timeout=2.0)
    assert time.monotonic() - t0 < 30
    assert len(res) == 1
    return res[0]


def _no_bug(r: ScanResult) -> None:
    assert all(a.status != "probe-bug" for a in r.attempts), [(a.probe, a.error, a.traceback) for a in r.attempts]


def test_dcerpc_lying_frag_len(hostile: Callable[[Handler], int]) -> None:
    def handler(conn: socket.socket, stop: threading.Event) -> None:
        conn.recv(4096)
        # a bind_ack header claiming 60000 bytes, then only 40 bytes: never completes
        conn.sendall(bytes.fromhex("05000c0310000000") + struct.pack("<HHI", 60000, 0, 1) + b"\0" * 24)
        stop.wait(10)

    r = _one(hostile(handler), "msrpc")
    _no_bug(r)
    assert r.service is None


def test_dcerpc_frag_len_too_short(hostile: Callable[[Handler], int]) -> None:
    def handler(conn: socket.socket, stop: threading.Event) -> None:
        conn.recv(4096)
        conn.sendall(bytes.fromhex("05000c0310000000") + struct.pack("<HHI", 8, 0, 1) + b"\0" * 64)
        stop.wait(5)

    r = _one(hostile(handler), "msrpc")
    _no_bug(r)
    assert r.service is None


@pytest.mark.parametrize("length", [0, 3, 65535])
def test_tpkt_bad_length(hostile: Callable[[Handler], int], length: int) -> None:
    def handler(conn: socket.socket, stop: threading.Event) -> None:
        conn.recv(4096)
        conn.sendall(struct.pack(">BBH", 3, 0, length) + b"\x11\xd0" + b"\0" * 20)
        stop.wait(10)

    r = _one(hostile(handler), "tsap")
    _no_bug(r)
    assert r.service is None


def test_silent_server(hostile: Callable[[Handler], int]) -> None:
    def handler(conn: socket.socket, stop: threading.Event) -> None:
        stop.wait(20)

    port = hostile(handler)
    for probe in ("msrpc", "tsap"):
        r = _one(port, probe)
        _no_bug(r)
        assert r.service is None


# ---------------------------------------------------------------- hostile NTLM bind answers (no lab)

DATA = Path(__file__).resolve().parents[1] / "probes" / "data"


def _pdus(stream: bytes) -> list[bytes]:
    from probes.msrpc import frame_dcerpc_reply

    out = []
    for _ in range(64):
        if not stream:
            break
        n = frame_dcerpc_reply(stream)
        assert n is not None
        out.append(stream[:n])
        stream = stream[n:]
    return out


def _recv_pdu(conn: socket.socket) -> bytes:
    """Read one client PDU (by frag_len), bounded by the socket timeout."""
    buf = b""
    for _ in range(100):
        if len(buf) >= 10 and len(buf) >= struct.unpack("<H", buf[8:10])[0]:
            break
        chunk = conn.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf


def _epm_then(second: Callable[[socket.socket, threading.Event], None]) -> Handler:
    """A server that answers the first connection like Samba's recorded EPM (bind_ack, then an
    empty list) and hands every later connection (the NTLM bind) to ``second``."""
    recorded = _pdus((DATA / "msrpc-samba-4.17-dc.bin").read_bytes())
    lock = threading.Lock()
    seen = [0]

    def handler(conn: socket.socket, stop: threading.Event) -> None:
        with lock:
            seen[0] += 1
            first = seen[0] == 1
        if not first:
            second(conn, stop)
            return
        _recv_pdu(conn)
        conn.sendall(recorded[0])  # bind_ack
        _recv_pdu(conn)
        conn.sendall(recorded[2])  # ept_s_not_registered, no entries
        stop.wait(5)

    return handler


def _samba_ntlm_ack() -> bytes:
    return _pdus((DATA / "msrpc-samba-4.17-dc-ntlm.bin").read_bytes())[-1]


def _offsets_past_end(conn: socket.socket, stop: threading.Event) -> None:
    ack = _samba_ntlm_ack()
    at = ack.find(b"NTLMSSP\x00")
    _recv_pdu(conn)
    # the CHALLENGE's TargetInfo offset points 64 KiB past the end of the message
    conn.sendall(ack[: at + 44] + struct.pack("<I", 0xFFFF) + ack[at + 48 :])
    stop.wait(5)


def _auth_len_lies(conn: socket.socket, stop: threading.Event) -> None:
    ack = _samba_ntlm_ack()
    _recv_pdu(conn)
    conn.sendall(ack[:10] + struct.pack("<H", 0xFFF0) + ack[12:])
    stop.wait(5)


def _closes(conn: socket.socket, stop: threading.Event) -> None:
    _recv_pdu(conn)


def _silent(conn: socket.socket, stop: threading.Event) -> None:
    stop.wait(10)


def _good(after: list[bytes]) -> Callable[[socket.socket, threading.Event], None]:
    """Answer the NTLM bind with Samba's recorded CHALLENGE; keep what the client sends next."""

    def second(conn: socket.socket, stop: threading.Event) -> None:
        _recv_pdu(conn)
        conn.sendall(_samba_ntlm_ack())
        conn.settimeout(2.0)
        try:
            after.append(conn.recv(4096))  # b"": the scanner closed without answering
        except TimeoutError:
            after.append(b"(silence)")
        except ConnectionResetError:
            after.append(b"")  # closed by a reset (the engine aborts finished connections)

    return second


@pytest.mark.parametrize(
    ("second", "why"),
    [
        (_offsets_past_end, "past the"),
        (_auth_len_lies, "auth_len"),
        (_closes, "RecvClosed"),
        (_silent, "RecvTimeout"),
    ],
    ids=["offsets-past-end", "auth-len-lies", "closes", "silent"],
)
def test_hostile_ntlm_bind_answer_leaves_clean_result(
    hostile: Callable[[Handler], int], second: Callable[[socket.socket, threading.Event], None], why: str
) -> None:
    r = _one(hostile(_epm_then(second)), "msrpc")
    _no_bug(r)
    assert r.service == "msrpc" and r.details["empty"] is True
    assert "ntlm" not in r.details and why in r.details["ntlm_error"], r.details["ntlm_error"]


def test_ntlm_bind_answer_over_the_engine(hostile: Callable[[Handler], int]) -> None:
    after: list[bytes] = []
    r = _one(hostile(_epm_then(_good(after))), "msrpc")
    _no_bug(r)
    # nothing follows the CHALLENGE (an auth3 would carry an AUTHENTICATE): the scanner closes
    for _ in range(50):
        if after:
            break
        time.sleep(0.1)
    assert after == [b""]
    assert r.details["ntlm"]["dns_computer"] == "dc1.lab.example.test"
    assert r.product == "Samba"  # named by the NTLM VERSION alone (the list was empty)
