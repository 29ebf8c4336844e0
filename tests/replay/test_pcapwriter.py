"""The ``--record`` writer: a valid pcap (tshark agrees), sequence numbers right, replayable."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from probes.smtp import SMTPProbe
from scanner.replay import replay_paths
from scanner.replay.pcapwriter import MSS, PcapRecorder, PcapWriter, TCPConversation, udp_packet


def _write(path: Path) -> Path:
    with PcapWriter(path) as w:
        conv = TCPConversation(w, ("127.0.0.1", 45000), ("127.0.0.1", 25), isn=(0xFFFFFF00, 77))
        conv.send(False, b"220 lab ESMTP Postfix (Debian/GNU)\r\n")
        conv.send(True, b"EHLO portproof.invalid\r\n")
        conv.send(False, b"250-lab\r\n" + b"250-X" * 1000 + b"\r\n250 8BITMIME\r\n")  # several segments
        conv.close(reset=False)
        six = TCPConversation(w, ("::1", 45001), ("::1", 2525))
        six.send(False, b"220 six ESMTP Exim 4.96\r\n")
        six.close()
        w.write(udp_packet("::1", "::1", 5000, 53, b"\x00\x01" + bytes(10)))
    return path


def test_replay_of_written_conversations(tmp_path: Path) -> None:
    report = replay_paths([str(_write(tmp_path / "w.pcap"))], [SMTPProbe()])
    by_port = {r.port: r for r in report.results}
    assert by_port[25].product == "Postfix" and by_port[25].source is not None
    assert by_port[25].details["replay"]["server_decided_by"] == "SYN-ACK"
    assert "gaps" not in by_port[25].details["replay"]  # sequence numbers (across the wrap) line up
    assert by_port[2525].product == "Exim" and by_port[2525].address == "::1"
    assert report.unknown == {}


def test_tshark_reads_it_with_good_checksums(tmp_path: Path) -> None:
    """Wireshark's reader, independent of ours, accepts the file (tests/run.sh installs tshark)."""
    if shutil.which("tshark") is None:
        pytest.fail("tshark is not installed (Debian package tshark; tests/run.sh installs it)")
    path = _write(tmp_path / "w.pcap")
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(path),
            "-o",
            "tcp.check_checksum:TRUE",
            "-o",
            "udp.check_checksum:TRUE",
            "-o",
            "ip.check_checksum:TRUE",
            "-T",
            "fields",
            "-e",
            "frame.number",
            "-e",
            "_ws.expert.message",
            "-e",
            "tcp.len",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = [ln.split("\t") for ln in out.stdout.splitlines()]
    assert len(lines) > 10
    problems = [ln for ln in lines if len(ln) > 1 and ("checksum" in ln[1].lower() or "malformed" in ln[1].lower())]
    assert problems == []
    assert max(int(ln[2]) for ln in lines if len(ln) > 2 and ln[2]) == MSS
    conv = subprocess.run(
        ["tshark", "-r", str(path), "-q", "-z", "conv,tcp"], capture_output=True, text=True, timeout=60, check=True
    )
    assert "127.0.0.1:45000" in conv.stdout and "127.0.0.1:25" in conv.stdout


class _FakeWriter:
    def __init__(self, sockname: tuple[str, int]) -> None:
        self.sockname = sockname

    def get_extra_info(self, name: str) -> object:
        return self.sockname if name == "sockname" else None


class _Conn:
    facts = None


def test_recorder_interface_without_tls(tmp_path: Path) -> None:
    rec = PcapRecorder(tmp_path / "r.pcap")
    conn = _Conn()
    rec.opened(conn, _FakeWriter(("127.0.0.1", 41000)), "127.0.0.1", 25)
    rec.server(conn, b"220 rec ESMTP Postfix (Debian/GNU)\r\n")
    rec.client(conn, b"EHLO x\r\n")
    rec.server(conn, b"250-rec\r\n250 PIPELINING\r\n")
    rec.closed(conn)
    rec.close()
    (res,) = replay_paths([str(tmp_path / "r.pcap")], [SMTPProbe()]).results
    assert (res.port, res.service, res.product) == (25, "smtp", "Postfix")
