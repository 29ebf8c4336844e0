"""``--fast`` against the real lab servers: the same service and product as the default scan, from
fewer exchanges (``ProbeContext.fast``: HTTP asks ``GET /`` only, DNS the first query and
``version.bind`` only), which is what makes a fast scan cost a fraction of the default's CPU.

* nginx on 127.0.0.1:80, Apache httpd on 127.0.0.5:80;
* BIND 9.18 on 127.0.0.2 udp/53, dnsmasq on 127.0.0.3 udp/53;
* Postfix (25), Dovecot (110, 143) on 127.0.0.1: their dialogues are short already.
"""

from __future__ import annotations

import pytest

from scanner.engine import scan_sync
from scanner.results import ScanResult


def _both(address: str, ports: str) -> tuple[dict[tuple[int, str], ScanResult], dict[tuple[int, str], ScanResult]]:
    default = {(r.port, r.transport): r for r in scan_sync([address], ports, resolve=False)}
    fast = {(r.port, r.transport): r for r in scan_sync([address], ports, resolve=False, fast=True)}
    return default, fast


def _same_identity(default: ScanResult, fast: ScanResult) -> None:
    assert fast.service == default.service and fast.service is not None, (default, fast)
    assert (fast.product, fast.version, fast.verdict) == (default.product, default.version, default.verdict)


@pytest.mark.lab
@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.5"])
def test_fast_http_names_the_server_from_get_slash_alone(lab: object, address: str) -> None:
    default, fast = _both(address, "T:80")
    _same_identity(default[(80, "tcp")], fast[(80, "tcp")])
    assert list(fast[(80, "tcp")].details["requests"]) == ["/"]
    assert len(default[(80, "tcp")].details["requests"]) > 1  # the default asks the Exchange paths too


@pytest.mark.lab
@pytest.mark.parametrize("address", ["127.0.0.2", "127.0.0.3"])
def test_fast_dns_names_the_server_from_two_queries(lab: object, address: str) -> None:
    default, fast = _both(address, "U:53")
    d, f = default[(53, "udp")], fast[(53, "udp")]
    _same_identity(d, f)
    assert f.details["queries_answered"] == 2
    assert d.details["queries_answered"] > 2


@pytest.mark.lab
def test_fast_mail_ports_unchanged(lab: object) -> None:
    default, fast = _both("127.0.0.1", "T:25,110,143")
    for key in ((25, "tcp"), (110, "tcp"), (143, "tcp")):
        _same_identity(default[key], fast[key])
