"""The MS-RPC endpoint-mapper probe's dialogue. Part of the :mod:`probes.msrpc` package."""

from __future__ import annotations

from collections.abc import Sequence

from probes._replay import keep_greeting_in_replay, record_passive_ntlm
from probes.msrpc.classify import (
    infer_product,
    infer_roles,
)
from probes.msrpc.wire import (
    EPT_S_NOT_REGISTERED,
    MAX_ENDPOINTS,
    MAX_LOOKUPS,
    MAX_REPLAY_PDUS,
    MAX_REPLY,
    NTLM_BIND_CALL_ID,
    PTYPE_BIND_ACK,
    PTYPE_BIND_NAK,
    PTYPE_FAULT,
    PTYPE_RESPONSE,
    Endpoint,
    PduHeader,
    build_bind,
    build_ept_lookup,
    build_ntlm_bind,
    frame_dcerpc_pdu,
    frame_dcerpc_reply,
    parse_auth_verifier,
    parse_bind_challenge,
    parse_bind_reply,
    parse_ept_lookup_reply,
    parse_ept_map_reply,
    parse_fault,
    parse_pdu_header,
)
from scanner.api import (
    Dialogue,
    Finding,
    NotThisProtocol,
    Probe,
    ProbeContext,
    Reconnect,
    Recv,
    Send,
    StepError,
)
from scanner.ntlm import NTLMChallenge, NTLMError, find_ntlmssp, parse_challenge

__all__ = [
    "MSRPCProbe",
]


# ---------------------------------------------------------------- probe


class MSRPCProbe(Probe):
    """MS-RPC endpoint mapper: bind to EPM v3, list every endpoint with ``ept_lookup``, then read
    the NTLMSSP CHALLENGE of an authenticated bind (no AUTH3, no credentials)."""

    name = "msrpc"
    services = ("msrpc",)
    ports = (135,)
    server_first = False
    rarity = 4
    summary = (
        "DCE/RPC endpoint mapper: bind + ept_lookup, endpoints by name, roles, Samba vs Windows; "
        "NTLM bind (no credentials): host/domain names, OS version"
    )

    # ---------------------------------------------------------------- passive hooks (replay)
    def client_hint(self, first_client_bytes: bytes) -> bool:
        """A DCE/RPC v5.0 connection-oriented ``bind`` (11) or ``alter_context`` (14) PDU."""
        head = first_client_bytes
        return len(head) >= 16 and head[:2] == b"\x05\x00" and head[2] in (11, 14)

    def identify_passive(self, server_messages: Sequence[bytes], client_messages: Sequence[bytes]) -> Finding | None:
        """A server's DCE/RPC PDU, with the NTLMSSP CHALLENGE of an authenticated bind's verifier
        (names and Windows build, read wherever it appears)."""
        server = next((bytes(m) for m in server_messages if m), b"")
        try:
            hdr = parse_pdu_header(server)
        except NotThisProtocol:
            return None
        if hdr.ptype not in _SERVER_PTYPES:
            return None
        f = Finding(service="msrpc", confidence=5)
        f.add(f"DCE/RPC {hdr.ptype_name}", server[:64].hex())
        record_passive_ntlm(f, server_messages, "NTLMSSP CHALLENGE in a DCE/RPC auth verifier")
        return f

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        """Bind, then page through ``ept_lookup`` (bounded); see the module docstring."""
        yield Send(build_bind(call_id=1))
        reply = yield Recv(frame_dcerpc_pdu)
        hdr = parse_pdu_header(reply)
        if ctx.replay and (hdr.call_id != 1 or hdr.ptype not in (PTYPE_BIND_ACK, PTYPE_BIND_NAK, PTYPE_FAULT)):
            # another client's conversation (other call ids, often from mid-connection)
            return (yield from self._replay_dialogue(ctx, reply))
        finding = Finding(service="msrpc", confidence=8)
        finding.add(f"DCE/RPC {hdr.ptype_name}", reply[:64].hex())
        if hdr.call_id != 1:
            raise NotThisProtocol(f"reply to call 1 carries call_id {hdr.call_id}")
        if hdr.ptype in (PTYPE_BIND_NAK, PTYPE_FAULT) or hdr.ptype == 6:  # 6: reject (CL)
            finding.details["bind"] = hdr.ptype_name
            if hdr.ptype == PTYPE_BIND_NAK:
                nak = parse_bind_reply(reply)
                finding.details["reject_reason"] = nak.reject_reason
            elif hdr.ptype == PTYPE_FAULT:
                finding.details["fault_status"] = f"{parse_fault(reply):#010x}"
            finding.extrainfo = f"EPM bind refused ({hdr.ptype_name})"
            return finding
        if hdr.ptype != PTYPE_BIND_ACK:
            raise NotThisProtocol(f"answer to bind is a {hdr.ptype_name}")
        bind = parse_bind_reply(reply)
        finding.details["bind"] = "bind_ack"
        finding.details["max_xmit_frag"] = bind.max_xmit_frag
        finding.details["max_recv_frag"] = bind.max_recv_frag
        if bind.sec_addr:
            finding.details["sec_addr"] = bind.sec_addr
        if not bind.accepted:
            finding.details["context"] = bind.results[0] if bind.results else "none"
            finding.extrainfo = "EPM context not accepted"
            return ctx.found(finding)
        ctx.found(finding)
        # in a replay the captured client may have asked anything after its bind: what does not
        # fit ept_lookup leaves the bind's finding standing
        finding = yield from keep_greeting_in_replay(ctx, finding, self._lookups(ctx, finding), True)
        if ctx.replay and hdr.auth_len:
            # another client's authenticated bind (with call id 1 too): its verifier may already
            # hold the CHALLENGE
            _ntlm_from_verifier(finding, reply, hdr)
        if "ntlm" not in finding.details:
            yield from self._ntlm_bind(ctx, finding)
        return finding

    def _ntlm_bind(self, ctx: ProbeContext, finding: Finding) -> Dialogue:
        """On a fresh connection, bind with an NTLMSSP NEGOTIATE and record the CHALLENGE.

        Optional: whatever goes wrong (no reconnect, timeout, close, ``bind_nak``, a verifier
        that is absent or malformed) is noted in ``details["ntlm_error"]`` and the endpoint
        listing stands. In a replay the next connection of the capture serves the
        ``Reconnect``: when it was not ours, its first PDU is another client's (any call id), and
        only a CHALLENGE found there is recorded, never an error.
        """
        try:
            yield Reconnect()
            yield Send(build_ntlm_bind())
            reply = yield Recv(frame_dcerpc_pdu)
            hdr = parse_pdu_header(reply)
        except (StepError, NotThisProtocol) as exc:
            if not ctx.replay:
                finding.details["ntlm_error"] = f"NTLM bind: {type(exc).__name__}: {exc}"[:200]
            return finding
        problem: str | None = None
        if not ctx.replay and hdr.call_id != NTLM_BIND_CALL_ID:
            problem = f"reply to the NTLM bind carries call_id {hdr.call_id}"
        elif hdr.ptype == PTYPE_BIND_NAK:
            try:
                problem = f"bind_nak, reason {parse_bind_reply(reply).reject_reason}"
            except NotThisProtocol:
                problem = "malformed bind_nak"
        elif hdr.ptype == PTYPE_FAULT:
            try:
                problem = f"fault {parse_fault(reply):#010x}"
            except NotThisProtocol:
                problem = "malformed fault"
        else:
            try:
                verifier, chal = parse_bind_challenge(reply)
            except NotThisProtocol as exc:  # NTLMError included
                problem = f"{hdr.ptype_name}: {exc}"
            else:
                finding.details["ntlm_auth"] = {
                    "auth_type": verifier.auth_type,
                    "auth_level": verifier.auth_level,
                }
                _record_ntlm(finding, chal, f"NTLMSSP CHALLENGE in the {hdr.ptype_name} auth verifier")
        if problem is not None and not ctx.replay:
            finding.details["ntlm_error"] = problem[:200]
        return finding

    def _lookups(self, ctx: ProbeContext, finding: Finding) -> Dialogue:
        """Page through ``ept_lookup`` (bounded) and name roles and product from the endpoints."""
        endpoints: list[Endpoint] = []
        handle = b"\x00" * 20
        statuses: list[str] = []
        behaviour: str | None = None
        for i in range(MAX_LOOKUPS):
            call_id = 2 + i
            yield Send(build_ept_lookup(call_id, handle))
            msg = yield Recv(frame_dcerpc_reply, max_size=MAX_REPLY, offload=True)  # scapy NDR: ~1 ms per entry
            rhdr = parse_pdu_header(msg)
            if rhdr.ptype == PTYPE_FAULT:
                statuses.append(f"fault {parse_fault(msg):#010x}")
                break
            if rhdr.ptype != PTYPE_RESPONSE:
                raise NotThisProtocol(f"answer to ept_lookup is a {rhdr.ptype_name}")
            lookup = parse_ept_lookup_reply(msg)
            statuses.append(f"{lookup.status:#010x}")
            endpoints.extend(lookup.entries[: MAX_ENDPOINTS - len(endpoints)])
            if lookup.status == EPT_S_NOT_REGISTERED:
                if lookup.entries:
                    behaviour = "not-registered-with-entries"
                elif i == 1 and endpoints:
                    behaviour = "samba-paging"
                break
            if lookup.status != 0 or not lookup.entries or lookup.handle_is_null:
                break
            if len(endpoints) >= MAX_ENDPOINTS:
                break
            handle = lookup.entry_handle
        finding.details["lookups"] = len(statuses)
        finding.details["lookup_status"] = statuses
        finding.details["endpoints"] = [e.as_dict() for e in endpoints]
        finding.details["interfaces"] = sorted({e.name for e in endpoints if e.name})
        roles = infer_roles(endpoints)
        finding.details["roles"] = roles
        finding.add("ept_lookup", f"{len(endpoints)} endpoints, status " + " ".join(statuses))
        if behaviour:
            finding.details["list_end"] = behaviour
        if not endpoints:
            finding.details["empty"] = True
            finding.extrainfo = "endpoint mapper alive, no endpoints listed"
            return finding
        product, reasons = infer_product(endpoints, behaviour)
        finding.product = product
        for reason in reasons:
            finding.add("behaviour", reason)
        tcp_ports = sorted(
            {e.endpoint for e in endpoints if e.protseq == "ncacn_ip_tcp" and e.endpoint},
            key=lambda p: (len(p), p),
        )
        if tcp_ports:
            finding.details["tcp_ports"] = tcp_ports
        extra = []
        if "domain-controller" in roles:
            extra.append("domain controller")
        extra += [r for r in roles if r != "domain-controller"]
        if product:
            extra.append(product)
        finding.extrainfo = ", ".join(extra) or None
        finding.confidence = 9 if product else 8
        return finding

    def _replay_dialogue(self, ctx: ProbeContext, first: bytes) -> Dialogue:
        """Replay: read what the server sent to *another* client, whatever that client asked.

        A capture holds other clients' binds and requests (any interface, any call id, often
        from the middle of a connection), so nothing is paired with our own requests: the
        server's PDUs are read in order (at most :data:`MAX_REPLAY_PDUS`) and each tells what it
        can: ``bind_ack``/``alter_context_resp`` (fragment sizes, secondary address, an NTLMSSP
        CHALLENGE in the auth verifier: names and Windows build), ``bind_nak``, ``fault``, and
        ``ept_lookup``/``ept_map`` responses (endpoints). A client PDU first means the bytes are
        not a DCE/RPC server's.
        """
        finding = Finding(service="msrpc", confidence=8)
        kinds: dict[str, int] = {}
        endpoints: list[Endpoint] = []
        msg = first
        for i in range(MAX_REPLAY_PDUS):
            try:
                if i:
                    msg = yield Recv(frame_dcerpc_pdu, max_size=MAX_REPLY)
                hdr = parse_pdu_header(msg)
            except (NotThisProtocol, StepError):
                if i == 0:
                    raise
                break  # a gap, the capture's end or junk after real PDUs: keep what was read
            if hdr.ptype not in _SERVER_PTYPES:
                if i == 0:
                    raise NotThisProtocol(f"a {hdr.ptype_name} PDU where the server speaks")
                break
            if not kinds:
                finding.add(f"DCE/RPC {hdr.ptype_name}", msg[:64].hex())
                ctx.found(finding)
            kinds[hdr.ptype_name] = kinds.get(hdr.ptype_name, 0) + 1
            try:
                if hdr.ptype == PTYPE_BIND_ACK and "max_xmit_frag" not in finding.details:
                    bind = parse_bind_reply(msg)
                    finding.details["max_xmit_frag"] = bind.max_xmit_frag
                    finding.details["max_recv_frag"] = bind.max_recv_frag
                    if bind.sec_addr:
                        finding.details["sec_addr"] = bind.sec_addr
                elif hdr.ptype == PTYPE_BIND_NAK:
                    finding.details["reject_reason"] = parse_bind_reply(msg).reject_reason
                elif hdr.ptype == PTYPE_FAULT:
                    finding.details.setdefault("faults", []).append(f"{parse_fault(msg):#010x}")
                elif hdr.ptype == PTYPE_RESPONSE and len(endpoints) < MAX_ENDPOINTS:
                    endpoints.extend(_endpoints_in_response(msg))
            except NotThisProtocol as exc:
                finding.details.setdefault("unparsed", []).append(f"{hdr.ptype_name}: {exc}"[:200])
            if hdr.auth_len and "ntlm" not in finding.details:
                _ntlm_from_verifier(finding, msg, hdr)
        finding.details["replay_pdus"] = kinds
        if endpoints:
            finding.details["endpoints"] = [e.as_dict() for e in endpoints[:MAX_ENDPOINTS]]
            finding.details["interfaces"] = sorted({e.name for e in endpoints if e.name})
            roles = infer_roles(endpoints)
            finding.details["roles"] = roles
            product, reasons = infer_product(endpoints, None)
            if product and finding.product is None:
                finding.product = product
                for reason in reasons:
                    finding.add("behaviour", reason)
        return finding


#: PDU types a connection-oriented DCE/RPC server sends
_SERVER_PTYPES = frozenset({PTYPE_RESPONSE, PTYPE_FAULT, PTYPE_BIND_ACK, PTYPE_BIND_NAK, 15, 17})


def _endpoints_in_response(msg: bytes) -> list[Endpoint]:
    """Endpoints in an ``ept_lookup`` or ``ept_map`` response (a capture does not say which)."""
    try:
        return parse_ept_lookup_reply(msg).entries
    except NotThisProtocol:
        pass
    try:
        return parse_ept_map_reply(msg)[1]
    except NotThisProtocol:
        return []  # a response of another interface: it still confirms DCE/RPC


def _ntlm_from_verifier(finding: Finding, msg: bytes, hdr: PduHeader) -> None:
    """Record an NTLMSSP CHALLENGE carried in a PDU's auth verifier (bind_ack, alter_context_resp).

    The VERSION field's Windows build names the product ("Microsoft Windows") when it is a known
    Windows release; Samba's fixed 6.1.0 and unknown builds name none.
    """
    try:
        verifier = parse_auth_verifier(msg)
        if verifier is None:
            return
        chal = parse_challenge(find_ntlmssp(verifier.token))
    except (NTLMError, NotThisProtocol, ValueError):
        return
    finding.details["ntlm"] = chal.as_dict()
    finding.add("NTLMSSP CHALLENGE", chal.summary())
    finding.extrainfo = chal.summary() or finding.extrainfo
    if chal.windows_version:
        finding.product = "Microsoft Windows"
        finding.version = chal.os_version_text
        finding.details["windows_release"] = chal.windows_version
        finding.confidence = 9


def _record_ntlm(finding: Finding, chal: NTLMChallenge, source: str) -> None:
    """Record the CHALLENGE our NTLM bind got: details, evidence, host facts, product hints.

    The NTLM VERSION field is a strong tell: Samba always sends 6.1 build 0 (no Windows release
    has build 0) and a known Windows build names the release. It fills the product when the
    endpoints did not name one and is recorded as evidence either way; when it contradicts the
    endpoints' verdict the contradiction is recorded and the product is left as it was.
    """
    finding.details["ntlm"] = chal.as_dict()
    summary = chal.summary()
    finding.add(source, summary or f"flags 0x{chal.flags:08x}")
    finding.host_facts.update(chal.host_facts())
    if chal.windows_version:
        finding.details["windows_release"] = chal.windows_version
    if chal.looks_like_samba:
        said = "Samba"
        finding.add("behaviour", "NTLM VERSION 6.1 build 0: Samba's fixed value (no Windows release has build 0)")
    elif chal.windows_version:
        said = "Microsoft Windows RPC"
        finding.add("behaviour", f"NTLM VERSION {chal.os_version_text}: {chal.windows_version}")
    else:
        said = None
    if said is not None:
        if finding.product is None:
            finding.product = said
            finding.confidence = max(finding.confidence, 9)
        elif finding.product != said:
            finding.details["ntlm_product_conflict"] = f"endpoints say {finding.product}, NTLM VERSION says {said}"
        if said == finding.product == "Microsoft Windows RPC" and finding.version is None:
            finding.version = chal.os_version_text
    # extrainfo: host and domain, and a Windows release (Samba's 6.1.0 is already the product)
    extra = ", ".join(
        part
        for part in (
            chal.dns_computer or chal.netbios_computer,
            f"domain {chal.netbios_domain or chal.target_name}" if chal.netbios_domain or chal.target_name else None,
            f"{chal.windows_version} (build {chal.os_version_text})" if chal.windows_version else None,
        )
        if part
    )
    if extra:
        finding.extrainfo = f"{finding.extrainfo}; {extra}" if finding.extrainfo else extra
