"""Result types: one :class:`ScanResult` per port (or per server endpoint in a replay).

These ``msgspec`` structs are the single definition of the output: JSON lines, JSON, the terminal
table and nmap XML are all rendered from them, and the shipped JSON Schema
(``scanner/data/result.schema.json``) is generated from them (``python -m scanner.schema``).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import msgspec

from scanner.api import MessageTooLarge, NotThisProtocol, RecvClosed, RecvTimeout, TLSFailed

__all__ = [
    "Attempt",
    "CertFacts",
    "EvidenceItem",
    "ReplaySource",
    "STATUSES",
    "ScanResult",
    "Status",
    "TLSInfo",
    "VERDICTS",
    "step_status",
]

#: port states, as nmap names them
State = Literal["open", "closed", "filtered", "open|filtered", "unknown"]

#: what the result says about the profile's expectation
Verdict = Literal["confirmed", "unexpected", "unidentified", "identified", "closed", "filtered", "error"]
VERDICTS: tuple[str, ...] = (
    "confirmed",  # the expected service answers
    "unexpected",  # something else answers (see service/product)
    "unidentified",  # open, maybe bytes seen (kept in details.banner), no probe matched
    "identified",  # no expectation for this port (not in the profile), and a probe matched
    "closed",  # refused (TCP RST / ICMP port unreachable)
    "filtered",  # no answer at all
    "error",  # the scan itself failed (resolution, probe bug, local resource limit)
)

#: attempt statuses (after zgrab2): one function in the engine maps low-level errors to these. The
#: type of :attr:`Attempt.status`, so mypy checks every status written and the JSON Schema lists them.
Status = Literal[
    "success",
    "no-match",  # the probe said: not my protocol
    "connection-refused",
    "connection-timeout",
    "connection-error",
    "io-timeout",
    "closed-early",  # peer closed before a complete message
    "protocol-error",  # framing limits exceeded or a malformed message
    "tls-error",
    "probe-bug",  # the probe raised an unexpected exception (traceback kept)
    "total-timeout",
    "skipped",
]
STATUSES: tuple[Status, ...] = get_args(Status)


def step_status(exc: BaseException) -> Status | None:
    """The status of a dialogue that ended with ``exc`` (a probe's or a step's error), or None when
    ``exc`` is none of those (live scans then look at socket errors; else it is a probe bug)."""
    if isinstance(exc, NotThisProtocol):
        return "no-match"
    if isinstance(exc, RecvTimeout):
        return "io-timeout"
    if isinstance(exc, RecvClosed):
        return "closed-early"
    if isinstance(exc, MessageTooLarge):
        return "protocol-error"
    if isinstance(exc, TLSFailed):
        return "tls-error"
    return None


class CertFacts(msgspec.Struct, kw_only=True):
    """The server certificate (leaf) as seen in the TLS handshake."""

    subject: str
    issuer: str
    #: subjectAltName entries, as "DNS:name" / "IP:addr"
    sans: list[str] = []
    not_before: str | None = None
    not_after: str | None = None
    serial: str | None = None
    #: SHA-256 of the DER certificate, hex
    sha256: str | None = None
    self_signed: bool = False
    #: "RSA 2048", "EC secp256r1", ...
    key: str | None = None
    signature_algorithm: str | None = None
    #: whether the certificate is expired at scan time
    expired: bool | None = None


class TLSInfo(msgspec.Struct, kw_only=True):
    """TLS facts of the connection that identified the service."""

    #: "implicit" (TLS from the first byte) or "starttls" (upgraded by a protocol command)
    mode: Literal["implicit", "starttls"]
    version: str | None = None
    cipher: str | None = None
    alpn: str | None = None
    certificate: CertFacts | None = None
    #: set when the handshake failed or the certificate could not be parsed
    error: str | None = None


class EvidenceItem(msgspec.Struct):
    """One fact that decided the identification: where it was seen, and the exact text."""

    source: str
    value: str


class Attempt(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One thing the engine tried on the port, and how it ended."""

    probe: str
    status: Status
    tls: bool = False
    elapsed_ms: float = 0.0
    error: str | None = None
    #: kept only for ``probe-bug`` (shown with ``-v``)
    traceback: str | None = None


class ReplaySource(msgspec.Struct, kw_only=True):
    """Where a replayed result was seen (pcap replay only)."""

    file: str
    flows: int = 1
    packets: int = 0
    first_seen: float | None = None
    last_seen: float | None = None


class ScanResult(msgspec.Struct, kw_only=True):
    """The result for one port of one target.

    Field names are fixed: tools may rely on them.
    """

    #: the target as the user wrote it (name, address, CIDR member)
    target: str
    #: the address that was scanned
    address: str
    port: int
    transport: Literal["tcp", "udp"]
    state: State
    #: the service found (``smtp``, ``ldap``, ...) or None
    service: str | None = None
    #: TLS facts when the service was found inside TLS (implicit or STARTTLS)
    tls: TLSInfo | None = None
    product: str | None = None
    version: str | None = None
    #: the profile's expected service for this port (None when the port is not in the profile)
    expected: str | None = None
    #: whether the profile expects TLS on this port
    expected_tls: bool | None = None
    verdict: Verdict = "unidentified"
    #: 0..10, like nmap's conf
    confidence: int = 0
    evidence: list[EvidenceItem] = []
    #: probe-specific details; ``banner`` holds the first bytes seen when nothing matched
    details: dict[str, Any] = {}
    attempts: list[Attempt] = []
    #: short free text (OS, host name) also written to nmap XML's extrainfo
    extrainfo: str | None = None
    #: why the verdict is what it is, in a sentence
    reason: str | None = None
    #: which probe identified the service
    probe: str | None = None
    #: the rule that named the product/version: ``portproof:<probe>/<rule>`` (ours) or
    #: ``nmap-service-probes:<line>`` (the installed service database)
    rule: str | None = None
    #: pcap replay only: where the endpoint was seen
    source: ReplaySource | None = None
    #: seconds spent on this port
    elapsed: float = 0.0
