"""tsap ``Reconnect``, live and in replay, against the lab's real ISO-TSAP servers.

The lab's servers do not close on the probe's first choice (libiec61850 answers the session
CONNECT, python-snap7 stays silent on it), so two small loopback proxies put the behaviour of
other stacks in front of them, and everything else comes from the real daemons:

* ``closes_on_session``: forwards to python-snap7 (127.0.0.2:102) but closes the connection
  when the client sends an ISO session CONNECT (what an S7-only stack does). The probe must get
  S7 on a fresh connection, not report ``s7_untried``.
* ``refuses_s7_tsaps``: answers a COTP CR whose called TSAP is ``0102`` (S7 rack 0 slot 2) with
  a DR and forwards every other connection to libiec61850 (127.0.0.1:102). The probe must retry
  with MMS TSAPs on a fresh connection.

Both scans are recorded with ``--record``'s writer and replayed: each connection is its own flow,
and ``identify.py`` must give the dialogue's ``Reconnect`` the next flow of the same endpoint, so
the replay reaches the live verdict and product.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from probes.tsap import TSAPProbe
from scanner.registry import GROUP, Registry, load_registry
from scanner.replay import replay_paths
from scanner.replay.pcapwriter import PcapRecorder
from scanner.results import ScanResult

pytestmark = pytest.mark.lab

SNAP7 = ("127.0.0.2", 102)
IEC61850 = ("127.0.0.1", 102)
#: a TPKT + COTP DT whose payload starts with the session CONNECT SPDU identifier (0x0D)
_DT_HEAD = b"\x02\xf0\x80"

Decide = Callable[[bytes], "bytes | None"]


def _registry() -> Registry:
    reg = load_registry(eps=[EntryPoint(name="tsap", value="probes.tsap:TSAPProbe", group=GROUP)])
    assert not reg.errors, reg.errors
    return reg


def _read_tpkt(sock: socket.socket) -> bytes:
    head = b""
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        if not chunk:
            return b""
        head += chunk
    need = struct.unpack(">H", head[2:4])[0] - 4
    body = b""
    while len(body) < need:
        chunk = sock.recv(need - len(body))
        if not chunk:
            return b""
        body += chunk
    return head + body


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        for _ in range(10_000):
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def _proxy(upstream_for: Callable[[bytes], tuple[str, int] | None], on_client_tpkt: Decide) -> Iterator[int]:
    """A TPKT-aware proxy on 127.0.0.1 (random port), bounded in connections and time.

    ``upstream_for(cr)`` picks the real server for a connection from its first TPKT (None: the
    proxy answers it itself with a COTP DR). ``on_client_tpkt(tpkt)`` returns the bytes to
    forward, or None to close both sides (the "stack closes on this PDU" behaviour).
    """
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def handle(client: socket.socket) -> None:
        client.settimeout(10.0)
        with client, contextlib.suppress(OSError):
            cr = _read_tpkt(client)
            if not cr:
                return
            target = upstream_for(cr)
            if target is None:
                # COTP DR, reason 0x03 "address unknown", echoing the client's source reference
                src_ref = cr[8:10]
                client.sendall(struct.pack(">BBH", 3, 0, 11) + b"\x06\x80" + src_ref + b"\x00\x00\x03")
                return
            with socket.create_connection(target, timeout=5.0) as up:
                up.settimeout(10.0)
                up.sendall(cr)
                back = threading.Thread(target=_pump, args=(up, client), daemon=True)
                back.start()
                for _ in range(1000):
                    tpkt = _read_tpkt(client)
                    if not tpkt:
                        break
                    fwd = on_client_tpkt(tpkt)
                    if fwd is None:
                        # close both sides at once, like a stack that drops the connection
                        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        break
                    up.sendall(fwd)
                with contextlib.suppress(OSError):
                    up.shutdown(socket.SHUT_RDWR)
                back.join(timeout=5)

    def serve() -> None:
        for _ in range(600):  # at most ~120 s
            if stop.is_set():
                return
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            t = threading.Thread(target=handle, args=(conn,), daemon=True)
            t.start()
            threads.append(t)

    main = threading.Thread(target=serve, daemon=True)
    main.start()
    try:
        yield int(srv.getsockname()[1])
    finally:
        stop.set()
        main.join(timeout=5)
        for t in threads:
            t.join(timeout=12)
        srv.close()


def _reachable(addr: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(addr, timeout=1.0):
            return True
    except OSError:
        return False


def _scan_and_replay(port: int, tmp_path: Path) -> tuple[ScanResult, ScanResult]:
    from scanner.engine import scan_sync

    path = tmp_path / "tsap.pcap"
    rec = PcapRecorder(path)
    try:
        (live,) = scan_sync(["127.0.0.1"], ports=str(port), registry=_registry(), read_timeout=4.0, recorder=rec)
    finally:
        rec.close()
    report = replay_paths([str(path)], [TSAPProbe()])
    assert report.errors == []
    (replayed,) = [r for r in report.results if r.port == port]
    return live, replayed


def test_closed_on_session_connect_gets_s7_on_a_fresh_connection(lab: object, tmp_path: Path) -> None:
    if not _reachable(SNAP7):
        pytest.fail("python-snap7 is not running on 127.0.0.2:102 (the lab starts it)")

    def drop_session_connect(tpkt: bytes) -> bytes | None:
        return None if tpkt[4:7] == _DT_HEAD and tpkt[7:8] == b"\x0d" else tpkt

    with _proxy(lambda cr: SNAP7, drop_session_connect) as port:
        live, replayed = _scan_and_replay(port, tmp_path)
    assert live.service == "tsap", [(a.probe, a.status, a.error) for a in live.attempts]
    assert live.details["upper_layer"] == "s7comm" and live.details["reconnects"] == 1
    assert live.details["after_session_connect"] == "closed" and "s7_untried" not in live.details
    assert live.product == "S7 CPU 315-2 PN/DP" and live.version == "V3.3.0"
    # the replay: two flows (session CONNECT then close; CR/CC + S7), one endpoint, same answer
    assert replayed.verdict == "identified" and replayed.service == "tsap"
    assert replayed.source is not None and replayed.source.flows == 2
    assert replayed.details["upper_layer"] == "s7comm"
    assert (replayed.product, replayed.version) == (live.product, live.version)
    # the kept result is the first flow's dialogue, continued over the second flow at its Reconnect
    assert replayed.details["replay"]["tsap_reconnects"] == 1 and replayed.details["reconnects"] == 1


def test_refused_s7_tsaps_get_mms_on_a_fresh_connection(lab: object, tmp_path: Path) -> None:
    if not _reachable(IEC61850):
        pytest.fail("libiec61850 is not running on 127.0.0.1:102 (the lab starts it)")

    def by_called_tsap(cr: bytes) -> tuple[str, int] | None:
        return None if b"\xc2\x02\x01\x02" in cr else IEC61850

    with _proxy(by_called_tsap, lambda tpkt: tpkt) as port:
        live, replayed = _scan_and_replay(port, tmp_path)
    assert live.service == "tsap", [(a.probe, a.status, a.error) for a in live.attempts]
    assert live.details["cotp"]["tpdu"] == "DR" and live.details["cotp"]["reason"] == 3
    assert live.details["cotp_retry"]["tpdu"] == "CC" and live.details["cotp_retry"]["called_tsap"] == "0001"
    assert live.details["upper_layer"] == "mms" and live.details["reconnects"] == 1
    assert live.product == "LabVendor LabIED"
    assert replayed.service == "tsap" and replayed.details["upper_layer"] == "mms"
    assert replayed.source is not None and replayed.source.flows == 2
    assert (replayed.product, replayed.version) == (live.product, live.version)
    assert replayed.details["replay"]["tsap_reconnects"] == 1 and replayed.details["cotp"]["tpdu"] == "DR"
