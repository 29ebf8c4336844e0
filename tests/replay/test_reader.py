"""Damaged captures: a clear error naming the file and the record, results before it kept."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from probes.smtp import SMTPProbe
from scanner.replay import replay_paths
from scanner.replay.pcapwriter import PcapWriter, TCPConversation
from scanner.replay.reader import CaptureReader
from tests.replay._build import eth, write_pcap, write_pcapng

CORPUS = Path(__file__).resolve().parents[1] / "data" / "pcaps-public"  # shipped with the tests (MANIFEST.tsv)


def _smtp_capture(path: Path) -> Path:
    with PcapWriter(path) as w:
        conv = TCPConversation(w, ("10.1.1.1", 40000), ("10.1.1.2", 25), ts=1e9)
        conv.send(False, b"220 mx.example ESMTP Postfix (Debian/GNU)\r\n", 1e9 + 0.1)
        conv.send(True, b"EHLO portproof.invalid\r\n", 1e9 + 0.2)
        conv.send(False, b"250-mx.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n", 1e9 + 0.3)
        conv.close(reset=False)
    return path


def test_good_file_reads_every_record(tmp_path: Path) -> None:
    path = _smtp_capture(tmp_path / "ok.pcap")
    reader = CaptureReader(str(path))
    records = list(reader)
    assert reader.errors == [] and reader.format == "pcap"
    assert [r.index for r in records] == list(range(1, len(records) + 1))
    assert records[0].linktype == 101 and records[0].ts == pytest.approx(1e9)


def test_truncated_file_keeps_results_and_names_the_record(tmp_path: Path) -> None:
    whole = _smtp_capture(tmp_path / "whole.pcap").read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(whole[:-30])  # inside the last record
    n_records = len(list(CaptureReader(str(tmp_path / "whole.pcap"))))
    report = replay_paths([str(cut)], [SMTPProbe()])
    assert len(report.errors) == 1
    err = report.errors[0]
    assert err.file == str(cut) and err.record == n_records
    assert "truncated record" in err.message and str(cut) in str(err)
    assert report.packets == n_records - 1 and not report.nothing_read
    (res,) = report.results
    assert res.service == "smtp" and res.product == "Postfix"


def test_cut_inside_a_record_header(tmp_path: Path) -> None:
    whole = _smtp_capture(tmp_path / "whole.pcap").read_bytes()
    first_len = struct.unpack_from("<I", whole, 24 + 8)[0]
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(whole[: 24 + 16 + first_len + 7])
    reader = CaptureReader(str(cut))
    assert len(list(reader)) == 1
    assert reader.errors[0].record == 2 and "header" in reader.errors[0].message


def test_wrong_magic(tmp_path: Path) -> None:
    bad = tmp_path / "notapcap.pcap"
    bad.write_bytes(b"GIF89a" + b"\x00" * 100)
    report = replay_paths([str(bad)], [SMTPProbe()])
    assert report.nothing_read and report.results == []
    assert report.errors[0].record == 0 and "not a pcap" in report.errors[0].message


def test_absurd_snaplen_is_reported_but_records_are_read(tmp_path: Path) -> None:
    data = bytearray(_smtp_capture(tmp_path / "ok.pcap").read_bytes())
    data[16:20] = struct.pack("<I", 0x7FFFFFFF)
    bad = tmp_path / "snap.pcap"
    bad.write_bytes(bytes(data))
    report = replay_paths([str(bad)], [SMTPProbe()])
    assert report.errors[0].record == 0 and "snap length" in report.errors[0].message
    assert not report.errors[0].fatal
    assert report.results[0].service == "smtp"


def test_corrupt_record_header_stops_with_a_message(tmp_path: Path) -> None:
    data = bytearray(_smtp_capture(tmp_path / "ok.pcap").read_bytes())
    first_len = struct.unpack_from("<I", data, 24 + 8)[0]
    second = 24 + 16 + first_len
    data[second + 8 : second + 12] = struct.pack("<I", 0xF0000000)  # captured length
    bad = tmp_path / "corrupt.pcap"
    bad.write_bytes(bytes(data))
    reader = CaptureReader(str(bad))
    assert len(list(reader)) == 1
    assert reader.errors[0].record == 2 and "corrupt record header" in reader.errors[0].message


def test_pcapng_truncated_block(tmp_path: Path) -> None:
    frame = eth(b"\x45" + b"\x00" * 39)
    path = write_pcapng(tmp_path / "x.pcapng", [frame] * 5)
    whole = path.read_bytes()
    path.write_bytes(whole[:-10])
    reader = CaptureReader(str(path))
    assert len(list(reader)) == 4 and reader.format == "pcapng"
    assert reader.errors[0].record == 5 and "offset" in reader.errors[0].message
    clean = CaptureReader(str(write_pcapng(tmp_path / "y.pcapng", [frame] * 3)))
    assert len(list(clean)) == 3 and clean.errors == []


def test_unknown_link_type_is_counted_not_fatal(tmp_path: Path) -> None:
    path = write_pcap(tmp_path / "weird.pcap", [b"\x00" * 40] * 3, linktype=147)
    report = replay_paths([str(path)], [SMTPProbe()])
    assert report.unknown == {"link type 147": 3} and report.errors == [] and report.packets == 3


def test_public_damaged_capture() -> None:
    path = CORPUS / "smtp-sendmail-8.14.9-damaged-after-18-records.pcap"
    if not path.exists():
        pytest.fail(f"public capture {path} is missing (the test data ships with the tests)")
    report = replay_paths([str(path)], [SMTPProbe()])
    assert report.packets == 18
    (err,) = report.errors
    assert err.record == 19 and "corrupt record header" in err.message
    (res,) = report.results
    assert (res.address, res.port, res.service, res.product) == ("178.63.41.150", 25, "smtp", "Sendmail")
