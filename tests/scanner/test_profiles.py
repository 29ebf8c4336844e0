"""The built-in port profiles (exchange-ad, ad-dc), ``fingerprint profiles`` and ``--rpc-range``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from scanner.profile import ProfileError, builtin_profiles, load_profile, parse_profile_text, parse_range, rpc_entries


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scanner.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_ad_dc_is_exchange_ad_plus_the_dc_ports() -> None:
    seed, dc = load_profile("exchange-ad"), load_profile("ad-dc")
    assert dc.name == "ad-dc" and dc.rpc_range == (49152, 65535)
    # every port of the seed's table, with the same expectation
    for e in seed.entries:
        d = dc.lookup(e.port, e.transport)
        assert d is not None, e
        assert (d.service, d.tls, d.probe) == (e.service, e.tls, e.probe)
    added = {(e.port, e.transport): e for e in dc.entries if seed.lookup(e.port, e.transport) is None}
    assert set(added) == {(88, "tcp"), (88, "udp"), (464, "tcp"), (464, "udp"), (139, "tcp"), (445, "tcp"),
                          (3389, "tcp"), (5985, "tcp"), (5986, "tcp"), (9389, "tcp")}
    assert added[(88, "udp")].service == "kerberos" and added[(464, "tcp")].service == "kpasswd"
    assert added[(139, "tcp")].service == added[(445, "tcp")].service == "smb"
    assert added[(5986, "tcp")].tls is True and added[(5985, "tcp")].tls is False
    # exchange-ad stays the seed's table exactly (tests/scanner/test_core_units.py checks it against
    # PORTS.md) and has no RPC range of its own
    assert seed.rpc_range is None and len(seed.entries) == 22


def test_builtin_profiles_default_first() -> None:
    names = [p.name for p in builtin_profiles()]
    assert names[0] == "exchange-ad" and "ad-dc" in names


def test_rpc_range_parsing_and_entries() -> None:
    assert parse_range("49152-49160") == (49152, 49160)
    for bad in ("49160-49152", "0-10", "1-70000", "abc", "5", "-"):
        with pytest.raises(ProfileError):
            parse_range(bad)
    have = load_profile("ad-dc").entries
    got = rpc_entries(130, 140, have)  # 135 and 139 are already listed: left out
    assert [e.port for e in got] == [130, 131, 132, 133, 134, 136, 137, 138, 140]
    assert {(e.service, e.probe, e.transport) for e in got} == {("msrpc", "msrpc", "tcp")}
    with pytest.raises(ProfileError):
        parse_profile_text('rpc_range = 5\n[[port]]\nport = 1\n', "x")


def test_profiles_command() -> None:
    out = _cli("profiles", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    by_name = {p["name"]: p for p in doc["profiles"]}
    assert len(by_name["exchange-ad"]["ports"]) == 22 and len(by_name["ad-dc"]["ports"]) == 32
    assert by_name["ad-dc"]["rpc_range"] == "49152-65535"
    table = _cli("profiles", "ad-dc")
    assert table.returncode == 0 and "kpasswd" in table.stdout and "exchange-ad" not in table.stdout
    bad = _cli("profiles", "no-such-profile")
    assert bad.returncode == 2 and "no built-in profile" in bad.stderr


def test_rpc_range_profile_needs_a_range() -> None:
    out = _cli("127.0.0.1", "-p", "135", "--rpc-range", "profile", "--no-progress")
    assert out.returncode == 2 and "names no rpc_range" in out.stderr


@pytest.mark.lab
def test_rpc_range_on_the_lab_dc(lab: object) -> None:
    """Samba AD DC's ncacn_ip_tcp endpoints sit at 49152-49154 in the lab: with --rpc-range each is
    expected and confirmed as msrpc; ports of the range nothing listens on are closed."""
    out = _cli("127.0.0.1", "--profile", "ad-dc", "-p", "135", "--rpc-range", "49152-49156", "-o", "jsonl",
               "--no-progress", "--fast")
    assert out.returncode in (0, 1), out.stderr
    recs = {r["port"]: r for r in map(json.loads, out.stdout.splitlines())}
    assert set(recs) == {135, 49152, 49153, 49154, 49155, 49156}
    for port in (49152, 49153, 49154):
        assert recs[port]["expected"] == "msrpc" and recs[port]["service"] == "msrpc", recs[port]
        assert recs[port]["verdict"] == "confirmed"
    assert recs[49156]["state"] == "closed"
