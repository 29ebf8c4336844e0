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
        else:
            assert r.verdict == "unidentified" and r.service is None, (name, r.verdict, r.service)
