"""The SMB probe's dialogue. Part of the :mod:`probes.smb` package."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from probes.smb.classify import SAMBA, claim_product, samba_guid_name
from probes.smb.wire import (
    MAX_SMB_MESSAGE,
    NBSS_KEEPALIVE,
    NBSS_MESSAGE,
    NBSS_NEGATIVE,
    NBSS_POSITIVE,
    NBSS_RETARGET,
    SMB1_MAGIC,
    SMB2_MAGIC,
    STATUS_MORE_PROCESSING_REQUIRED,
    NetBIOSMessage,
    SMB1Negotiate,
    SMB1SessionSetup,
    SMB2Negotiate,
    build_netbios_session_request,
    build_smb1_negotiate,
    build_smb1_session_setup,
    build_smb2_negotiate,
    build_smb2_session_setup,
    build_spnego_ntlm_negotiate,
    command_name,
    frame_netbios,
    parse_netbios,
    parse_smb1_negotiate,
    parse_smb1_session_setup,
    parse_smb2_header,
    parse_smb2_negotiate,
    parse_smb2_session_setup,
    status_name,
)
from scanner.api import (
    Dialogue,
    Finding,
    NotThisProtocol,
    Probe,
    ProbeContext,
    Reconnect,
    Recv,
    RecvClosed,
    Send,
    StepError,
)
from scanner.ntlm import NTLMChallenge, NTLMError, find_ntlmssp, parse_challenge

__all__ = [
    "SMBProbe",
]

#: most keepalives skipped while waiting for one reply
MAX_KEEPALIVES = 4
#: most server messages read from a capture (the negotiate and session setup come first)
MAX_REPLAY_MESSAGES = 32
#: the port of SMB over the NetBIOS session service; anywhere else SMB is spoken direct (445)
NETBIOS_SSN_PORT = 139


@dataclass
class _Facts:
    """What the replies said, for the classification at the end."""

    smb2: SMB2Negotiate | None = None
    smb1: SMB1Negotiate | None = None
    session: SMB1SessionSetup | None = None
    challenge: NTLMChallenge | None = None


class SMBProbe(Probe):
    """SMB on 445 (direct) and 139 (after a NetBIOS session request): SMB2 NEGOTIATE, then a
    SESSION_SETUP with an NTLMSSP NEGOTIATE that stops at the server's CHALLENGE; SMB1 for servers
    that drop SMB2. Samba vs Windows from the server GUID, the NTLM VERSION and SMB1's
    NativeOS/NativeLanMan."""

    name = "smb"
    services = ("smb",)
    ports = (445, 139)
    server_first = False
    # SMB off 139/445 is rare, and every slow-lane probe costs a silent port its own read timeout:
    # above the default intensity (7), so only ``--intensity 8`` or more tries it elsewhere (nmap's
    # own SMB probe in the service database's lane still covers such ports)
    rarity = 8
    summary = (
        "SMB 445/139: SMB2 negotiate (dialect, signing, GUID, capabilities, times), SMB1 for old servers, "
        "NTLM session setup to the challenge (no credentials): names, OS build, Samba vs Windows"
    )

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        """Negotiate, then read the NTLM challenge; see the package docstring."""
        if ctx.replay:
            return (yield from self._replay(ctx))
        nbss = ctx.port == NETBIOS_SSN_PORT
        finding = _new_finding(nbss)
        facts = _Facts()
        if nbss and not (yield from self._session_request(ctx, finding)):
            return finding
        yield Send(build_smb2_negotiate(ctx.rng.randbytes(16), ctx.rng.randbytes(32)))
        try:
            reply = yield from _recv_message()
        except RecvClosed as exc:
            if exc.partial:
                raise  # a reply cut short is no SMB1 server's hang-up
            # SMB1-only servers (Windows 2000/2003, Samba 3.x) hang up on an SMB2 NEGOTIATE
            finding.details["smb2_negotiate"] = f"connection closed: {exc}"[:200]
            return (yield from self._smb1(ctx, finding, facts, nbss))
        if reply.payload[:4] == SMB1_MAGIC:
            finding.details["smb2_negotiate"] = "answered in SMB1"
            return (yield from self._smb1(ctx, finding, facts, nbss))
        hdr = parse_smb2_header(reply.payload)
        if hdr.command == 0 and hdr.is_response and hdr.status != 0:
            # an SMB2 server that refuses every dialect we offer still speaks SMB2
            finding.details["negotiate_status"] = hdr.status_name
            finding.add("SMB2 NEGOTIATE", f"refused: {hdr.status_name}")
            finding.extrainfo = f"SMB2 NEGOTIATE refused ({hdr.status_name})"
            return ctx.found(finding)
        facts.smb2 = parse_smb2_negotiate(reply.payload)
        _record_smb2(finding, facts.smb2)
        ctx.found(finding)
        yield from self._smb2_session_setup(finding, facts)
        return _conclude(finding, facts)

    def _session_request(self, ctx: ProbeContext, finding: Finding) -> Generator[Any, Any, bool]:
        """Port 139: NetBIOS SESSION REQUEST to ``*SMBSERVER``; True when the session is open.

        A negative response proves the NetBIOS session service (nothing else answers that
        packet) but leaves no way to SMB: it is stored as the finding, with its reason."""
        yield Send(build_netbios_session_request())
        msg = yield from _recv_message(accept_session=True)
        finding.details["netbios_session"] = msg.kind_name
        if msg.kind == NBSS_POSITIVE:
            return True
        if msg.kind == NBSS_MESSAGE:
            raise NotThisProtocol("an SMB message in answer to a NetBIOS session request")
        reason = msg.negative_reason or msg.kind_name
        finding.add("NetBIOS session", f"{msg.kind_name}: {reason}")
        finding.details["netbios_session_error"] = reason
        finding.confidence = 5
        finding.extrainfo = f"NetBIOS session refused ({reason})"
        ctx.found(finding)
        return False

    def _smb2_session_setup(self, finding: Finding, facts: _Facts) -> Dialogue:
        """SESSION_SETUP with SPNEGO(NTLMSSP NEGOTIATE): record the CHALLENGE, then stop (no
        AUTHENTICATE is ever sent). Optional: what goes wrong lands in ``details["ntlm_error"]``."""
        try:
            yield Send(build_smb2_session_setup(build_spnego_ntlm_negotiate()))
            reply = yield from _recv_message()
            setup = parse_smb2_session_setup(reply.payload)
        except (StepError, NotThisProtocol) as exc:
            finding.details["ntlm_error"] = f"SESSION_SETUP: {type(exc).__name__}: {exc}"[:200]
            return finding
        if setup.header.status != STATUS_MORE_PROCESSING_REQUIRED:
            finding.details["ntlm_error"] = f"SESSION_SETUP answered {setup.header.status_name}"
            return finding
        _record_challenge(finding, facts, setup.security_blob, "SMB2 SESSION_SETUP")
        return finding

    def _smb1(self, ctx: ProbeContext, finding: Finding, facts: _Facts, nbss: bool) -> Dialogue:
        """On a fresh connection: SMB1 NEGOTIATE offering NT LM 0.12 and SMB 2.002/2.???, then a
        session setup that reads NativeOS/NativeLanMan (with extended security: SPNEGO NTLMSSP up
        to the CHALLENGE; without: an anonymous one, empty account and password)."""
        yield Reconnect()
        if nbss and not (yield from self._session_request(ctx, finding)):
            return finding
        yield Send(build_smb1_negotiate())
        reply = yield from _recv_message()
        if reply.payload[:4] == SMB2_MAGIC:
            # an SMB2 server that answers the SMB1 form only (MS-SMB2 3.3.5.3.1)
            facts.smb2 = parse_smb2_negotiate(reply.payload)
            _record_smb2(finding, facts.smb2)
            ctx.found(finding)
            return _conclude(finding, facts)
        facts.smb1 = parse_smb1_negotiate(reply.payload)
        _record_smb1(finding, facts.smb1)
        ctx.found(finding)
        if facts.smb1.dialect is None:
            finding.extrainfo = "SMB1, none of our dialects accepted"
            return finding
        blob = build_spnego_ntlm_negotiate() if facts.smb1.extended_security else None
        try:
            yield Send(build_smb1_session_setup(blob))
            reply = yield from _recv_message()
            facts.session = parse_smb1_session_setup(reply.payload)
        except (StepError, NotThisProtocol) as exc:
            finding.details["session_setup_error"] = f"{type(exc).__name__}: {exc}"[:200]
            return _conclude(finding, facts)
        finding.details["smb1_session_setup"] = facts.session.as_dict()
        for key, source in (("native_os", "SMB1 NativeOS"), ("native_lanman", "SMB1 NativeLanMan")):
            value = getattr(facts.session, key)
            if value:
                finding.add(source, value)
        if blob is not None:
            if facts.session.header.status == STATUS_MORE_PROCESSING_REQUIRED:
                _record_challenge(finding, facts, facts.session.security_blob, "SMB1 SESSION_SETUP_ANDX")
            else:
                status = status_name(facts.session.header.status)
                finding.details["ntlm_error"] = f"SESSION_SETUP_ANDX answered {status}"
        return _conclude(finding, facts)

    def _replay(self, ctx: ProbeContext) -> Dialogue:
        """Replay: read what the server sent, whatever the captured client asked.

        The server's messages are read in order (at most :data:`MAX_REPLAY_MESSAGES`), none paired
        with our requests: a NetBIOS session response, SMB2 and SMB1 NEGOTIATE responses (a later
        one replaces an SMB2 wildcard ``2.???`` answer), a SESSION_SETUP response holding an NTLMSSP
        CHALLENGE, SMB1 NativeOS/NativeLanMan; other SMB2 replies are counted by command (a capture
        that starts mid-connection still shows SMB, with no product). A connection that carried no
        server bytes (our SMB2 NEGOTIATE dropped by an SMB1-only server) is followed by one
        ``Reconnect`` to the capture's next connection."""
        finding = _new_finding(ctx.port == NETBIOS_SSN_PORT)
        facts = _Facts()
        commands: dict[str, int] = {}
        seen = 0
        reconnected = False
        for _ in range(MAX_REPLAY_MESSAGES):
            try:
                msg = yield from _recv_message(accept_session=True)
            except (StepError, NotThisProtocol) as exc:
                if seen == 0 and not reconnected and isinstance(exc, RecvClosed) and not exc.partial:
                    reconnected = True
                    yield Reconnect()
                    continue
                if seen == 0:
                    raise
                break  # a gap, the capture's end or a message past our bound: keep what was read
            seen += 1
            if msg.kind != NBSS_MESSAGE:
                finding.details["netbios_session"] = msg.kind_name
                if msg.kind == NBSS_NEGATIVE:
                    finding.details["netbios_session_error"] = msg.negative_reason
                ctx.found(finding)
                continue
            try:
                _replay_message(finding, facts, msg.payload, commands)
            except NotThisProtocol as exc:
                finding.details.setdefault("unparsed", []).append(str(exc)[:200])
                if len(finding.details["unparsed"]) > 8:
                    break
            ctx.found(finding)
        if commands:
            finding.details["replay_smb2_replies"] = commands
        return _conclude(finding, facts)


def _new_finding(nbss: bool) -> Finding:
    finding = Finding(service="smb", confidence=8)
    # nmap's names for the two transports (its service database and XML use them)
    finding.details["nmap_service"] = "netbios-ssn" if nbss else "microsoft-ds"
    finding.details["transport"] = "netbios-session" if nbss else "direct-tcp"
    return finding


def _recv_message(accept_session: bool = False) -> Generator[Any, Any, NetBIOSMessage]:
    """The next NetBIOS packet, keepalives skipped (bounded). Session responses (positive,
    negative, retarget) are only expected after a session request (``accept_session``)."""
    for _ in range(MAX_KEEPALIVES + 1):
        raw = yield Recv(frame_netbios, max_size=MAX_SMB_MESSAGE + 4)
        msg = parse_netbios(raw)
        if msg.kind == NBSS_KEEPALIVE:
            continue
        if msg.kind in (NBSS_POSITIVE, NBSS_NEGATIVE, NBSS_RETARGET) and not accept_session:
            raise NotThisProtocol(f"a NetBIOS {msg.kind_name} where an SMB reply was due")
        return msg
    raise NotThisProtocol(f"more than {MAX_KEEPALIVES} keepalives in a row")


def _record_smb2(finding: Finding, neg: SMB2Negotiate) -> None:
    """The SMB2 NEGOTIATE facts: details, evidence."""
    facts = neg.as_dict()
    finding.details["smb2"] = facts
    finding.details["dialect"] = neg.dialect_name
    finding.details["signing_required"] = neg.signing_required
    finding.add("SMB2 NEGOTIATE", f"dialect {neg.dialect_name}, security mode 0x{neg.security_mode:x}, "
                                  f"server GUID {neg.guid_text}")
    name = samba_guid_name(neg.server_guid)
    if name is not None:
        finding.details["guid_netbios_name"] = name


def _record_smb1(finding: Finding, neg: SMB1Negotiate) -> None:
    """The SMB1 NEGOTIATE facts: details, evidence."""
    finding.details["smb1"] = neg.as_dict()
    finding.details["dialect"] = neg.dialect or f"SMB1 index {neg.dialect_index}"
    finding.details["signing_required"] = bool(neg.security_mode & 0x8)
    finding.add("SMB1 NEGOTIATE", f"dialect {neg.dialect!r}, capabilities 0x{neg.capabilities:08x}")
    name = samba_guid_name(neg.server_guid)
    if name is not None:
        finding.details["guid_netbios_name"] = name


def _record_challenge(finding: Finding, facts: _Facts, blob: bytes, source: str) -> None:
    """Parse the NTLMSSP CHALLENGE in a session setup's SPNEGO blob: details, evidence, host facts."""
    try:
        chal = parse_challenge(find_ntlmssp(blob))
    except NTLMError as exc:
        finding.details["ntlm_error"] = f"{source}: {exc}"[:200]
        return
    facts.challenge = chal
    finding.details["ntlm"] = chal.as_dict()
    finding.add(f"NTLMSSP CHALLENGE in the {source} response", chal.summary() or f"flags 0x{chal.flags:08x}")
    finding.host_facts.update(chal.host_facts())


def _replay_message(finding: Finding, facts: _Facts, payload: bytes, commands: dict[str, int]) -> None:
    """What one captured server message tells (see ``SMBProbe._replay``)."""
    if payload[:4] == SMB2_MAGIC:
        hdr = parse_smb2_header(payload)
        if not hdr.is_response:
            raise NotThisProtocol("an SMB2 request where the server speaks")
        commands[command_name(hdr.command)] = commands.get(command_name(hdr.command), 0) + 1
        if hdr.command == 0 and hdr.status == 0 and (facts.smb2 is None or facts.smb2.dialect == 0x02FF):
            facts.smb2 = parse_smb2_negotiate(payload)
            _record_smb2(finding, facts.smb2)
        elif hdr.command == 1 and hdr.status == STATUS_MORE_PROCESSING_REQUIRED and facts.challenge is None:
            _record_challenge(finding, facts, parse_smb2_session_setup(payload).security_blob, "SMB2 SESSION_SETUP")
        return
    if payload[:4] == SMB1_MAGIC:
        command = payload[4] if len(payload) > 4 else -1
        if command == 0x72 and facts.smb1 is None:
            facts.smb1 = parse_smb1_negotiate(payload)
            _record_smb1(finding, facts.smb1)
        elif command == 0x73 and facts.session is None:
            facts.session = parse_smb1_session_setup(payload)
            finding.details["smb1_session_setup"] = facts.session.as_dict()
            if facts.session.header.status == STATUS_MORE_PROCESSING_REQUIRED and facts.challenge is None:
                _record_challenge(finding, facts, facts.session.security_blob, "SMB1 SESSION_SETUP_ANDX")
        return
    commands["other"] = commands.get("other", 0) + 1  # transform/compression headers: SMB 3 traffic


def _conclude(finding: Finding, facts: _Facts) -> Finding:
    """Name the product from the facts (the rules of probes.smb.classify) and write the extrainfo."""
    claim = claim_product(facts.smb2, facts.smb1, facts.session, facts.challenge)
    if claim.product is not None:
        finding.product, finding.version, finding.rule = claim.product, claim.version, claim.rule
        finding.confidence = claim.confidence
        for source, text in claim.reasons:
            finding.add(f"{source} ({claim.product})", text)
        if claim.build_extra:
            finding.details["samba_build"] = claim.build_extra
    if claim.conflicts:
        finding.details["product_conflicts"] = claim.conflicts
    if claim.os:
        finding.details["os"] = claim.os
    parts: list[str] = []
    dialect = finding.details.get("dialect")
    if dialect:
        parts.append(f"SMB {dialect}" if facts.smb2 is not None else f"SMB1 {dialect}")
    if finding.details.get("signing_required"):
        parts.append("signing required")
    chal = facts.challenge
    if chal is not None:
        host = chal.dns_computer or chal.netbios_computer
        if host:
            parts.append(host)
        domain = chal.netbios_domain or chal.target_name
        if domain:
            parts.append(f"domain {domain}")
    elif facts.session is not None and facts.session.primary_domain:
        parts.append(f"domain {facts.session.primary_domain}")
    if claim.os and claim.product != SAMBA:
        parts.append(claim.os)
    finding.extrainfo = ", ".join(parts) or finding.extrainfo
    return finding
