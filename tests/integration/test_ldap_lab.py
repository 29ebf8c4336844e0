"""The ldap probe against the real lab servers, through the engine (``scan_sync``).

127.0.0.1: Samba 4.17 AD DC on 389, 636 (LDAPS), 3268, 3269 (LDAPS, global catalog) and OpenLDAP
slapd 2.5.13 on 379 and 390; 127.0.0.2: slapd on 389 and 636 (LDAPS). See tests/lab/up.sh.

The registry is built from the probe's entry point (the same code path as an installed package),
holding only the ldap probe, so these tests say what *this* probe finds on each port. The last
tests use small asyncio servers for hostile replies (they do not need the lab).
"""

from __future__ import annotations

import asyncio
import threading
import time
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from scanner.registry import GROUP, Registry, load_registry
from scanner.results import ScanResult


def _registry() -> Registry:
    reg = load_registry(eps=[EntryPoint(name="ldap", value="probes.ldap:LDAPProbe", group=GROUP)])
    assert not reg.errors, reg.errors
    assert reg.get("ldap") is not None
    return reg


def _scan(address: str, ports: str) -> dict[int, ScanResult]:
    from scanner.engine import scan_sync

    results = scan_sync([address], ports=ports, registry=_registry())
    return {r.port: r for r in results}


def _evidence(result: ScanResult) -> dict[str, str]:
    return {e.source: e.value for e in result.evidence}


@pytest.fixture(scope="module")
def host1(lab: object) -> dict[int, ScanResult]:
    return _scan("127.0.0.1", "389,379,390,636,3268,3269")


@pytest.mark.lab
@pytest.mark.parametrize("port", [389, 636, 3268, 3269])
def test_samba_ad_dc(host1: dict[int, ScanResult], port: int) -> None:
    r = host1[port]
    assert r.state == "open" and r.service == "ldap" and r.probe == "ldap", r
    assert r.product == "Samba AD DC"  # not Microsoft: vendorName says Samba
    assert r.verdict == "confirmed"
    assert r.confidence == 10
    assert r.details["domain"] == "lab.example.test"
    assert r.details["dns_host_name"] == "dc1.lab.example.test"
    assert r.details["site"] == "Default-First-Site-Name"
    assert "domain-controller" in r.details["roles"]
    assert "global-catalog" in r.details["roles"]  # isGlobalCatalogReady: TRUE
    assert r.details["anonymous_access"] == "rootdse-only"
    assert _evidence(r)["rootDSE vendorName"].startswith("Samba Team")
    # Samba returns vendorVersion only when it is asked for by name (not with "*" or "+")
    assert r.version is not None and r.version.startswith("4.")
    if port in (636, 3269):
        assert r.tls is not None and r.tls.mode == "implicit"
        assert r.tls.certificate is not None
        assert r.details["transport_security"] == "ldaps"
    else:
        assert r.tls is None
    expected_role = "global-catalog" if port in (3268, 3269) else "directory"
    assert r.details["port_role"] == expected_role


@pytest.mark.lab
@pytest.mark.parametrize("port", [379, 390])
def test_openldap_on_host1(host1: dict[int, ScanResult], port: int) -> None:
    r = host1[port]
    assert r.state == "open" and r.service == "ldap", r
    assert r.product == "OpenLDAP"
    assert r.version == "2.5.13"
    assert r.details["build"].startswith("2.5.13")
    assert _evidence(r)["rootDSE structuralObjectClass"] == "OpenLDAProotDSE"
    assert _evidence(r)["cn=Monitor monitoredInfo"].startswith("OpenLDAP: slapd 2.5.13")
    assert r.details["anonymous_access"] == "directory"
    assert "domain" not in r.details and "domain-controller" not in r.details.get("roles", [])
    # slapd advertises StartTLS and the lab configures a certificate: the upgrade succeeds
    assert r.details["starttls_advertised"] is True
    assert r.details["starttls"] == "ok"
    assert r.tls is not None and r.tls.mode == "starttls"


@pytest.mark.lab
def test_openldap_on_host2(lab: object) -> None:
    results = _scan("127.0.0.2", "389,636")
    for port in (389, 636):
        r = results[port]
        assert r.service == "ldap" and r.product == "OpenLDAP" and r.version == "2.5.13", r
        assert r.verdict == "confirmed"
    assert results[636].tls is not None and results[636].tls.mode == "implicit"
    assert results[636].details["transport_security"] == "ldaps"
    assert results[389].details["starttls"] == "ok"


# ----------------------------------------------------------------------------- hostile servers
# Small asyncio servers on 127.0.0.1 (ephemeral ports) for what no real daemon does on purpose:
# garbage, a truncated BER reply, an absurd BER length, a reply that never ends. Each must give a
# clean "unidentified"/"error" result (or the identification the bytes allow), never a probe-bug
# and never a hang.

SAMBA_ENTRY_AND_DONE = Path(__file__).resolve().parents[1] / "probes" / "data" / "ldap" / "samba-4.17-dc-389.bin"


class _FakeServer:
    """Answer the first request of each connection with ``reply``; then close or stay silent."""

    def __init__(self, reply: bytes, close: bool, hold: float = 8.0) -> None:
        self.reply, self.close, self.hold = reply, close, hold
        self.port = 0
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.read(4096), timeout=self.hold)
            writer.write(self.reply)
            await writer.drain()
            if not self.close:
                await asyncio.wait_for(reader.read(4096), timeout=self.hold)  # silent until then
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        # orderly teardown: stop listening, cancel the handlers still holding connections open
        server.close()
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    def __enter__(self) -> _FakeServer:
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def _scan_fake(server: _FakeServer) -> ScanResult:
    from scanner.engine import scan_sync

    started = time.monotonic()
    (result,) = scan_sync(
        ["127.0.0.1"],
        ports=str(server.port),
        registry=_registry(),
        read_timeout=1.0,
        greeting_wait=0.3,
        short_wait=0.3,
        port_timeout=15.0,
        nmap_probes=False,  # the ldap probe's own verdict on hostile replies (nmap's probes would name them)
    )
    assert time.monotonic() - started < 12, "the scan did not end in bounded time"
    assert all(a.status != "probe-bug" for a in result.attempts), result.attempts
    return result


def _samba_messages() -> tuple[bytes, bytes]:
    from probes.ldap import frame_ldap_message

    stream = SAMBA_ENTRY_AND_DONE.read_bytes()
    n = frame_ldap_message(stream)
    assert n
    return stream[:n], stream[n:]


@pytest.mark.parametrize(
    ("reply", "close"),
    [
        (b"HTTP/1.0 400 Bad Request\r\n\r\n", True),  # garbage
        (b"\x30\x84\x80\x00\x00\x00\x02\x01\x01", False),  # a 2^31-byte BER length
        (b"\x30\x05\x02\x01\x01\xff\x00", True),  # framed, but not an LDAP message inside
    ],
    ids=["garbage", "2^31-length", "bad-protocolop"],
)
def test_hostile_reply_is_not_ldap(reply: bytes, close: bool) -> None:
    with _FakeServer(reply, close) as server:
        result = _scan_fake(server)
    assert result.state == "open"
    assert result.service is None and result.verdict in ("unidentified", "error"), result
    assert any(a.probe == "ldap" and a.status in ("no-match", "protocol-error") for a in result.attempts)


@pytest.mark.parametrize("close", [True, False], ids=["then-close", "then-silence"])
def test_truncated_ber_reply(close: bool) -> None:
    entry, _done = _samba_messages()
    with _FakeServer(entry[: len(entry) // 2], close) as server:
        result = _scan_fake(server)
    assert result.service is None and result.verdict in ("unidentified", "error"), result
    statuses = {a.status for a in result.attempts if a.probe == "ldap"}
    assert statuses <= {"closed-early", "io-timeout", "protocol-error"}, result.attempts


def test_entry_without_search_done_still_identifies() -> None:
    entry, _done = _samba_messages()
    with _FakeServer(entry, close=False) as server:  # the searchResDone never comes
        result = _scan_fake(server)
    assert result.service == "ldap" and result.product == "Samba AD DC", result


@pytest.mark.lab
def test_samba_ldap_result_carries_ntlm_challenge_facts(lab: object) -> None:
    """The SASL bind with an NTLMSSP NEGOTIATE returns Samba's real CHALLENGE (no credentials sent)."""
    r = _scan("127.0.0.1", "389")[389]
    ntlm = r.details["ntlm"]
    assert (ntlm["netbios_domain"], ntlm["netbios_computer"]) == ("LAB", "DC1")
    assert (ntlm["dns_computer"], ntlm["dns_domain"]) == ("dc1.lab.example.test", "lab.example.test")
    assert ntlm["looks_like_samba"] is True
