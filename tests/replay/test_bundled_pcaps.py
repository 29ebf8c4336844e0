"""The bundled captures in pcaps/ (recorded from the lab with --record) replay to the live verdicts."""

from __future__ import annotations

from pathlib import Path

import pytest

from scanner.engine import apply_profile, scan_sync
from scanner.profile import load_profile
from scanner.registry import load_probes
from scanner.replay import replay_paths

PCAPS = Path(__file__).resolve().parents[2] / "pcaps"


@pytest.fixture(scope="module")
def replayed() -> dict[tuple[str, int, str], object]:
    files = sorted(PCAPS.glob("*.pcap"))
    assert len(files) >= 20, "pcaps/ should hold one capture per lab service"
    report = replay_paths([str(PCAPS)], load_probes())
    assert report.errors == []
    profile = load_profile()
    return {(r.address, r.port, r.transport): apply_profile(r, profile) for r in report.results}


def test_every_bundled_capture_identifies_its_service(replayed: dict) -> None:
    assert all(r.service for r in replayed.values()), [k for k, r in replayed.items() if not r.service]
    assert all(r.verdict == "confirmed" for r in replayed.values()), {
        k: (r.service, r.verdict) for k, r in replayed.items() if r.verdict != "confirmed"}


def test_replay_matches_a_live_scan_of_the_lab(lab: object, replayed: dict) -> None:
    by_host: dict[str, list[str]] = {}
    for address, port, transport in replayed:
        by_host.setdefault(address, []).append(f"{'U' if transport == 'udp' else 'T'}:{port}")
    for address, ports in by_host.items():
        for live in scan_sync([address], ",".join(ports)):
            rep = replayed[(live.address, live.port, live.transport)]
            assert (rep.service, rep.verdict) == (live.service, live.verdict), (live.port, live.transport)
            if live.tls is None or live.tls.mode != "implicit":
                # inside implicit TLS a recording holds only the handshake: no product to compare
                assert rep.product == live.product, (live.port, rep.product, live.product)
