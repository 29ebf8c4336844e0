"""The lab's real servers scanned together with hostile servers beside them (needs the lab).

Done-when criterion of the reliability issue: a scan of the lab with hostile servers added
reports every real service correctly and the hostile ones honestly, within the time limits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import hostile_kit as hk
import pytest

from scanner.engine import scan_sync

pytestmark = pytest.mark.lab

#: lab services on 127.0.0.1 (tests/lab/up.sh, LAB.md): port/transport -> (service, product)
REAL = {
    (25, "tcp"): ("smtp", "Postfix"),
    (110, "tcp"): ("pop3", "Dovecot"),
    (143, "tcp"): ("imap", "Dovecot"),
    (993, "tcp"): ("imap", "Dovecot"),
    (119, "tcp"): ("nntp", "InterNetNews (INN)"),
    (389, "tcp"): ("ldap", None),
    (636, "tcp"): ("ldap", None),
    (135, "tcp"): ("msrpc", None),
    (53, "udp"): ("dns", None),
}
OPTS: dict[str, Any] = dict(read_timeout=3.0, greeting_wait=2.0, tls_timeout=3.0, port_timeout=20.0)


def test_lab_with_hostile_neighbours(lab: Any, serve: Callable[..., hk.FakeServer]) -> None:
    """Every real service is confirmed; the hostile ports are reported honestly; all in time."""
    registry = hk.full_registry()
    loaded = {p.name for p in registry.probes}
    real = {k: v for k, v in REAL.items() if v[0] in loaded}
    hostile = {serve(h).port: h.__name__ for h in (hk.evil_text, hk.smtp_flood, hk.silent, hk.flood,
                                                    hk.smtp_multiline_forever, hk.reset_mid_reply)}
    ports = ",".join([f"T:{p}" for p, t in real if t == "tcp"] + [f"T:{p}" for p in hostile]
                     + [f"U:{p}" for p, t in real if t == "udp"])
    t0 = time.monotonic()
    results = scan_sync([lab.ip1], ports=ports, registry=registry, **OPTS)
    elapsed = time.monotonic() - t0
    assert elapsed < OPTS["port_timeout"] + 5, f"scan took {elapsed:.1f} s"
    by_key: dict[tuple[int, str], Any] = {(r.port, r.transport): r for r in results}
    for key, (service, product) in real.items():
        r = by_key[key]
        assert r.verdict == "confirmed" and r.service == service, (key, r.verdict, r.service, r.attempts)
        if product:
            assert r.product == product, (key, r.product)
    for port, name in hostile.items():
        r = by_key[(port, "tcp")]
        assert r.state == "open", (name, r.state)
        assert all(a.status != "probe-bug" for a in r.attempts), (name, r.attempts)
        assert r.elapsed <= OPTS["port_timeout"] + 0.5
        if name == "smtp_flood":
            assert r.service == "smtp" and r.details.get("partial") is True
        elif name in ("reset_mid_reply", "smtp_multiline_forever") and r.service is not None:
            # the service database's softmatch names SMTP from the partial reply: a guess, no product
            assert r.service == "smtp" and r.product is None and r.confidence <= 3, (name, r)
            assert r.probe == "servicedb", (name, r.probe)
        else:
            assert r.verdict == "unidentified" and r.service is None, (name, r.verdict, r.service)


#: every service of 127.0.0.1 in the lab's ground truth (bench/lab_truth.toml) that a probe
#: confirms: (port, transport) -> (service, product, TLS mode reported)
REAL_CLI: dict[tuple[int, str], tuple[str, str, str | None]] = {
    (25, "tcp"): ("smtp", "Postfix", "starttls"),
    (465, "tcp"): ("smtp", "Postfix", "implicit"),
    (110, "tcp"): ("pop3", "Dovecot", "starttls"),
    (995, "tcp"): ("pop3", "Dovecot", "implicit"),
    (143, "tcp"): ("imap", "Dovecot", "starttls"),
    (993, "tcp"): ("imap", "Dovecot", "implicit"),
    (119, "tcp"): ("nntp", "InterNetNews (INN)", None),
    (563, "tcp"): ("nntp", "InterNetNews (INN)", "implicit"),
    (80, "tcp"): ("http", "nginx", None),
    (443, "tcp"): ("http", "nginx", "implicit"),
    (389, "tcp"): ("ldap", "Samba AD DC", None),
    (636, "tcp"): ("ldap", "Samba AD DC", "implicit"),
    (3268, "tcp"): ("ldap", "Samba AD DC", None),
    (3269, "tcp"): ("ldap", "Samba AD DC", "implicit"),
    (379, "tcp"): ("ldap", "OpenLDAP", None),
    (390, "tcp"): ("ldap", "OpenLDAP", None),
    (135, "tcp"): ("msrpc", "Samba", None),
    (102, "tcp"): ("tsap", "", None),
    (53, "udp"): ("dns", "Samba", None),
    (389, "udp"): ("ldap", "Samba AD DC", None),
}
CLI_PORT_TIMEOUT = 20.0


def test_cli_lab_with_a_hostile_tcp_and_udp_port(lab: Any, serve: Callable[..., hk.FakeServer],
                                                 serve_udp: Callable[..., hk.FakeUDPServer]) -> None:
    """``fingerprint 127.0.0.1 -p <lab ports>,<hostile> -o jsonl`` in a subprocess: every real
    service right (service, product, TLS mode), the hostile TCP and UDP ports honest, in time."""
    import json

    loaded = {p.name for p in hk.full_registry().probes}
    real = {k: v for k, v in REAL_CLI.items() if v[0] in loaded}
    evil = serve(hk.evil_text)
    flood = serve_udp(hk.udp_wrong_id_flood)
    tcp = [p for p, t in real if t == "tcp"] + [evil.port]
    udp = [p for p, t in real if t == "udp"] + [flood.port]
    ports = "T:" + ",".join(map(str, tcp)) + ",U:" + ",".join(map(str, udp))
    t0 = time.monotonic()
    proc = hk.run_cli([lab.ip1, "-n", "--no-progress", "-p", ports, "-o", "jsonl", "--read-timeout", "3",
                       "--greeting-wait", "2", "--port-timeout", str(CLI_PORT_TIMEOUT)], timeout=120)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert elapsed < CLI_PORT_TIMEOUT + 10, f"CLI scan took {elapsed:.1f} s"
    records = {(r["port"], r["transport"]): r for r in map(json.loads, proc.stdout.splitlines())}
    assert len(records) == len(tcp) + len(udp)
    wrong = []
    for key, (service, product, tls_mode) in real.items():
        r = records[key]
        mode = (r["tls"] or {}).get("mode")
        if (r["service"] != service or not (r["product"] or "").startswith(product)
                or (tls_mode is not None and mode != tls_mode) or r["verdict"] not in ("confirmed", "identified")):
            wrong.append((key, r["service"], r["product"], mode, r["verdict"]))
        assert all(a["status"] != "probe-bug" for a in r["attempts"]), (key, r["attempts"])
    assert not wrong, wrong
    for key in ((evil.port, "tcp"), (flood.port, "udp")):
        r = records[key]
        assert r["state"] == "open" and r["service"] is None and r["verdict"] == "unidentified", (key, r)
        assert all(a["status"] != "probe-bug" for a in r["attempts"]), (key, r["attempts"])
        assert r["elapsed"] <= CLI_PORT_TIMEOUT + 0.5
        assert r["details"].get("banner_hex"), r["details"]  # the bytes it sent are kept
    assert bytes.fromhex(records[(evil.port, "tcp")]["details"]["banner_hex"]).startswith(b"\x1b[2J")
    assert any(a["status"] == "no-match" for a in records[(flood.port, "udp")]["attempts"])
