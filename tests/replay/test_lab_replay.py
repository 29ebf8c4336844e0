"""Against the real lab: a live scan recorded two ways (our ``--record`` writer, and tcpdump on
the loopback), then replayed: the replay must give the live scan's verdicts and services."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from scanner.replay import replay_paths
from scanner.replay.pcapwriter import PcapRecorder
from scanner.results import ScanResult

pytestmark = pytest.mark.lab

TCP_PORTS = [25, 110, 143, 119, 465, 563, 993, 995, 80, 443, 389, 636]


def _compare(live: list[ScanResult], replayed: list[ScanResult]) -> list[str]:
    got = {(r.address, r.port, r.transport): r for r in replayed}
    problems = []
    for r in live:
        if r.state != "open":
            continue
        key = (r.address, r.port, r.transport)
        rep = got.get(key)
        if r.verdict in ("confirmed", "identified", "unexpected"):
            if rep is None or rep.verdict != "identified" or rep.service != r.service:
                problems.append(f"{key}: live {r.service} ({r.verdict}), replay {rep and (rep.service, rep.verdict)}")
            elif r.tls is not None and (rep.tls is None or rep.tls.mode != r.tls.mode):
                problems.append(f"{key}: live TLS {r.tls.mode}, replay {rep.tls}")
        elif r.verdict == "unidentified" and rep is not None and rep.verdict == "identified":
            problems.append(f"{key}: live unidentified, replay says {rep.service}")
    return problems


def test_live_scan_recorded_and_replayed(lab: object, tmp_path: Path) -> None:
    from scanner.engine import scan_sync
    from scanner.registry import load_probes

    recorded = tmp_path / "recorded.pcap"
    sniffed = tmp_path / "tcpdump.pcap"
    sniffer = None
    # The tcpdump half is opt-in (PORTPROOF_TCPDUMP_TEST=1): tcpdump on lo drops packets now and
    # then under load, which makes the comparison flaky for reasons outside portproof.
    if os.environ.get("PORTPROOF_TCPDUMP_TEST") and shutil.which("tcpdump") and os.geteuid() == 0:
        flt = "host 127.0.0.1 and (" + " or ".join(f"port {p}" for p in TCP_PORTS) + ")"
        sniffer = subprocess.Popen(
            ["tcpdump", "-i", "lo", "--immediate-mode", "-U", "-s", "0", "-w", str(sniffed), flt],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        # wait (bounded) for "listening on lo": only then is the capture running
        assert sniffer.stderr is not None
        ready, _, _ = select.select([sniffer.stderr], [], [], 20.0)
        assert ready and b"listening" in sniffer.stderr.readline()
    rec = PcapRecorder(recorded)
    try:
        live = scan_sync(["127.0.0.1"], "T:" + ",".join(map(str, TCP_PORTS)), recorder=rec)
    finally:
        rec.close()
        if sniffer is not None:
            time.sleep(1.5)  # let the kernel's capture ring drain into the file
            sniffer.terminate()
            sniffer.wait(timeout=10)
    probes = load_probes()
    assert any(r.verdict in ("confirmed", "identified") for r in live)

    report = replay_paths([str(recorded)], probes)
    assert report.errors == [] and report.unknown == {}
    assert _compare(live, report.results) == []
    by_port = {r.port: r for r in report.results}
    live_by_port = {r.port: r for r in live}
    assert by_port[25].product == live_by_port[25].product == "Postfix"
    assert by_port[25].tls is not None and by_port[25].tls.mode == "starttls"

    if sniffer is None:
        pytest.skip("real-capture half skipped (set PORTPROOF_TCPDUMP_TEST=1; needs tcpdump and root)")
    real = replay_paths([str(sniffed)], probes)
    assert real.errors == [] and real.packets > 0, (sniffed.stat().st_size, [(r.port, r.state) for r in live])
    assert _compare(live, real.results) == []
    cert = next(r.tls.certificate for r in real.results if r.port == 443 and r.tls is not None)
    assert cert is not None and "mail.lab.example.test" in cert.subject  # TLS 1.2 on nginx: cert readable


def test_dns_udp_recorded_from_bind_and_replayed(lab: object, tmp_path: Path) -> None:
    """The DNS probe's own queries to the lab's BIND (127.0.0.2:53), recorded, then replayed.

    The replay seeds each dialogue like the live engine does, so the id-checking DNS probe asks
    with the recorded ids and accepts the recorded replies.
    """
    import random
    import socket

    from probes.dns import DNSProbe
    from scanner.api import ProbeContext
    from scanner.replay.pcapwriter import PcapWriter, udp_packet
    from scanner.runner import Done, NeedData, Runner, SendBytes

    probe = DNSProbe()
    ctx = ProbeContext(address="127.0.0.2", port=53, transport="udp", rng=random.Random("0:127.0.0.2:53"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(1.0)
    sock.connect(("127.0.0.2", 53))
    local = sock.getsockname()
    path = tmp_path / "dns.pcap"
    # a blocking-socket adapter over the one dialogue runner (the engine is the asyncio one)
    runner = Runner(probe, ctx)
    with PcapWriter(path) as w:
        try:
            for _ in range(400):
                req = runner.next_request()
                if isinstance(req, Done):
                    break
                if isinstance(req, SendBytes):
                    sock.send(req.data)
                    w.write(udp_packet(local[0], "127.0.0.2", local[1], 53, req.data))
                    runner.sent()
                elif isinstance(req, NeedData):
                    try:
                        data = sock.recv(65535)
                    except TimeoutError:
                        runner.timed_out()
                        continue
                    w.write(udp_packet("127.0.0.2", local[0], 53, local[1], data))
                    runner.receive_data(data)
        finally:
            sock.close()
    live = runner.outcome.finding if runner.done else None
    assert live is not None and live.product is not None
    probe_list = [DNSProbe()]
    (res,) = replay_paths([str(path)], probe_list).results
    assert (res.address, res.port, res.transport, res.service) == ("127.0.0.2", 53, "udp", "dns")
    assert (res.product, res.version) == (live.product, live.version)
    assert res.details["replay"]["paired"] >= 3
