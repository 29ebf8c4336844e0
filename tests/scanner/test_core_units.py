"""Profiles, port lists, targets, terminal safety, XML and the generated schema."""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from scanner.output import render_table, write_nmap_xml
from scanner.profile import ProfileError, load_profile, parse_ports, parse_profile_text
from scanner.results import EvidenceItem, ScanResult
from scanner.safe import safe_text
from scanner.schema import SCHEMA_PATH, schema_json
from scanner.targets import TargetError, expand_targets

PORTS_MD = Path(__file__).resolve().parents[1] / "data" / "PORTS.md"  # the project's port table, shipped with the tests


def test_default_profile_matches_ports_md() -> None:
    prof = load_profile()
    assert prof.name == "exchange-ad"
    got = {(e.port, e.transport) for e in prof.entries}
    assert len(got) == 22
    rows = re.findall(r"^\| (\d+) \| (tcp|udp and tcp) \|", PORTS_MD.read_text(), re.M)  # missing: a failure
    want = set()
    for port, tr in rows:
        for t in (["udp", "tcp"] if tr == "udp and tcp" else ["tcp"]):
            want.add((int(port), t))
    assert got == want
    assert prof.lookup(636, "tcp").tls is True  # type: ignore[union-attr]
    assert prof.lookup(3268, "tcp").service == "ldap"  # type: ignore[union-attr]


def test_parse_ports_forms() -> None:
    prof = load_profile()
    entries = parse_ports("25,110,389-390", prof)
    assert [(e.port, e.transport, e.service) for e in entries] == [
        (25, "tcp", "smtp"), (110, "tcp", "pop3"), (389, "tcp", "ldap"), (390, "tcp", "ldap")]
    mixed = parse_ports("U:53,T:25,8080", prof)
    assert [(e.port, e.transport) for e in mixed] == [(53, "udp"), (25, "tcp"), (8080, "tcp")]
    assert mixed[2].service is None
    for bad in ("0", "70000", "5-1", "abc", ""):
        with pytest.raises(ProfileError):
            parse_ports(bad, prof)


def test_user_profile_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('name = "mine"\n[[port]]\nport = 2525\nservice = "smtp"\n')
    prof = load_profile(str(path))
    assert prof.name == "mine" and prof.entries[0].port == 2525
    with pytest.raises(ProfileError):
        parse_profile_text("[[port]]\nport = 99999\n", "x")
    with pytest.raises(ProfileError):
        parse_profile_text("not toml [", "x")
    with pytest.raises(ProfileError):
        load_profile(str(tmp_path / "missing.toml"))


def test_targets() -> None:
    assert [t.address for t in expand_targets(["127.0.0.1-3"])] == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    assert len(expand_targets(["127.0.0.0/30"])) == 2
    assert [t.address for t in expand_targets(["::1", "[::1]", "127.0.0.1"])] == ["::1", "127.0.0.1"]
    assert expand_targets(["localhost"])[0].hostname == "localhost"
    with pytest.raises(TargetError):
        expand_targets(["localhost"], resolve=False)
    with pytest.raises(TargetError):
        expand_targets(["10.0.0.0/4"])


def test_safe_text_escapes_everything_invisible() -> None:
    hostile = "220 ok\x1b[2J\x1b]0;title\x07\r\n250 fake line\u202e\x00"
    out = safe_text(hostile, 500)
    assert "\x1b" not in out and "\r" not in out and "\n" not in out and "\u202e" not in out and "\x00" not in out
    assert "\\x1b[2J" in out and "\\u202e" in out
    assert safe_text("x" * 1000, 10).endswith("…")


def _result(**kw: object) -> ScanResult:
    base: dict[str, object] = dict(target="127.0.0.1", address="127.0.0.1", port=25, transport="tcp", state="open")
    base.update(kw)
    return ScanResult(**base)  # type: ignore[arg-type]


def test_table_shows_escaped_text_only() -> None:
    r = _result(service="smtp", product="Evil\x1b[31m\x1b[2J", verdict="unexpected",
                evidence=[EvidenceItem("greeting", "\x1b]0;pwn\x07")])
    buf = io.StringIO()
    render_table([r], buf, verbose=True)
    text = buf.getvalue()
    assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b[31m" in text


def test_nmap_xml_is_valid_and_escaped(tmp_path: Path) -> None:
    rs = [_result(service="smtp", product="Post\x01fix", version="3.7", confidence=10, verdict="confirmed"),
          _result(port=522, state="closed", verdict="closed", expected="uls")]
    path = tmp_path / "out.xml"
    write_nmap_xml(rs, str(path), "fingerprint 127.0.0.1", 1.0, 2.0)
    root = ET.parse(path).getroot()
    assert root.tag == "nmaprun"
    svc = root.find("./host/ports/port[@portid='25']/service")
    assert svc is not None and svc.get("product") == "Post\\x01fix" and svc.get("conf") == "10"


def test_shipped_schema_is_generated_from_types() -> None:
    assert SCHEMA_PATH.read_text() == schema_json(), "run: python -m scanner.schema --write"


def test_attempt_status_is_the_status_enum() -> None:
    """``Attempt.status`` is typed by the status list: the schema enumerates it, decoding refuses others."""
    import json

    import msgspec

    from scanner.results import STATUSES, Attempt

    schema = json.loads(SCHEMA_PATH.read_text())
    assert sorted(schema["$defs"]["Attempt"]["properties"]["status"]["enum"]) == sorted(STATUSES)
    assert msgspec.json.decode(b'{"probe": "smtp", "status": "no-match"}', type=Attempt).status == "no-match"
    with pytest.raises(msgspec.ValidationError, match="status"):
        msgspec.json.decode(b'{"probe": "smtp", "status": "maybe"}', type=Attempt)


def test_interruption_bookkeeping_is_one_bit_per_port() -> None:
    """``-o jsonl`` streams without a key per port: the "not scanned" summary reads a bitmap."""
    from scanner.cli import _PortBitmap, _unscanned_summary
    from scanner.targets import Target

    targets = [Target(spec=f"10.0.{i >> 8}.{i & 255}", address=f"10.0.{i >> 8}.{i & 255}") for i in range(16_000)]
    entries = list(load_profile().entries)
    done = _PortBitmap(targets, entries)
    assert len(done._bits) == (16_000 * len(entries) + 7) // 8  # 44 KB for 352,000 ports
    first = entries[0]
    done.add("10.0.0.1", first.port, first.transport)
    done.add("192.0.2.1", first.port, first.transport)  # not in the scan: ignored
    assert ("10.0.0.1", first.port, first.transport) in done
    assert ("10.0.0.2", first.port, first.transport) not in done
    assert ("192.0.2.1", first.port, first.transport) not in done
    few = _PortBitmap(targets[:2], entries[:2])
    few.add("10.0.0.0", entries[0].port, entries[0].transport)
    text = _unscanned_summary(targets[:2], entries[:2], few)
    assert text.startswith("interrupted: 1 of 4 ports scanned, 3 not scanned")
    assert f"10.0.0.0:{entries[0].port}/{entries[0].transport}" not in text
