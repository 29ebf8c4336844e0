"""The LDAP probe's dialogue (TCP and CLDAP over UDP). Part of the :mod:`probes.ldap` package."""

from __future__ import annotations

from collections.abc import Generator, Hashable, Sequence
from typing import Any, ClassVar

from probes.ldap.classify import (
    CLDAP_TRIES,
    classify_root_dse,
    cldap_finding,
    refusal_finding,
    replayed_messages_finding,
    split_datagram,
)
from probes.ldap.passive import identify_ldap_passive, ldap_client_hint, ldap_message_id
from probes.ldap.wire import (
    _SEARCH_REPLY_OPS,
    MAX_RECV,
    MAX_SEARCH_MESSAGES,
    LDAPMessageInfo,
    build_root_dse_request,
    build_search_request,
    build_starttls_request,
    build_unbind_request,
    frame_ldap_message,
    frame_ldap_or_rest,
    parse_ldap_message,
    parse_monitor_version,
    parse_root_dse,
)
from scanner.api import (
    Dialogue,
    Finding,
    NotThisProtocol,
    Probe,
    ProbeContext,
    Recv,
    RecvClosed,
    RecvTimeout,
    Send,
    StartTLS,
    Step,
    TLSFailed,
)
from scanner.textproto import decode_text

__all__ = [
    "LDAPProbe",
]


# ------------------------------------------------------------------------------------- probe


class LDAPProbe(Probe):
    """LDAP rootDSE probe (see the module docstring for what it sends and collects)."""

    name: ClassVar[str] = "ldap"
    services: ClassVar[tuple[str, ...]] = ("ldap",)
    transports = ("tcp", "udp")
    ports: ClassVar[tuple[int, ...]] = (389, 379, 390, 3268, 636, 3269)
    tls_ports: ClassVar[tuple[int, ...]] = (636, 3269)
    server_first: ClassVar[bool] = False
    rarity: ClassVar[int] = 2
    summary: ClassVar[str] = (
        "LDAP rootDSE: AD DS / AD LDS / Samba AD / OpenLDAP / 389-DS, domain, DC and global-catalog role"
    )

    # ---------------------------------------------------------------- passive hooks (replay)
    def client_hint(self, first_client_bytes: bytes) -> bool:
        """An LDAPMessage carrying a request (see :func:`probes.ldap.passive.ldap_client_hint`)."""
        return ldap_client_hint(first_client_bytes)

    def pair_key(self, datagram: bytes) -> Hashable | None:
        """CLDAP: the messageID pairs a response with its request."""
        return ldap_message_id(datagram)

    def identify_passive(self, server_messages: Sequence[bytes], client_messages: Sequence[bytes]) -> Finding | None:
        """LDAP server messages, with a SASL bind's NTLMSSP CHALLENGE (names, OS build)."""
        return identify_ldap_passive(server_messages, client_messages)

    def _search(self, message_id: int, entries: list[LDAPMessageInfo]) -> Generator[Step, Any, LDAPMessageInfo | None]:
        """Read the replies to request ``message_id``, appending entries to ``entries``.

        Returns the final message: searchResDone, a notice of disconnection or any other reply to
        the request (None after :data:`MAX_SEARCH_MESSAGES` messages without one). Entries are
        appended as they arrive so that they survive a timeout thrown in mid-search.
        """
        for _ in range(MAX_SEARCH_MESSAGES):
            data = yield Recv(frame_ldap_or_rest, max_size=MAX_RECV)
            reply = parse_ldap_message(data)
            if reply.is_notice_of_disconnection:
                return reply
            if reply.message_id != message_id:
                continue  # not ours (no other request is outstanding): skip, bounded by the loop
            if reply.op == "searchResEntry":
                entries.append(reply)
            elif reply.op == "searchResRef":
                continue
            else:
                return reply
        return None

    def _cldap(self, ctx: ProbeContext) -> Dialogue:
        """CLDAP (UDP): the rootDSE search in one datagram, its answer in one datagram.

        Sent at most :data:`CLDAP_TRIES` times when unanswered. In a replay the answer may be
        another client's (an AD "LDAP ping" for the netlogon attribute): any message id is taken.
        """
        answer: bytes | None = None
        for attempt in range(CLDAP_TRIES):
            yield Send(build_root_dse_request(1))
            try:
                answer = yield Recv(frame_ldap_message, max_size=MAX_RECV)
            except RecvTimeout:
                if attempt + 1 == CLDAP_TRIES:
                    raise
                continue
            break
        assert answer is not None
        messages = split_datagram(answer)
        if not ctx.replay and any(m.message_id != 1 for m in messages):
            raise NotThisProtocol("CLDAP answer with another message id")
        return cldap_finding(messages, ctx.port)

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        """rootDSE search, OpenLDAP monitor, anonymous-read check, StartTLS, unbind (CLDAP on UDP)."""
        if ctx.transport == "udp":
            return (yield from self._cldap(ctx))
        message_id = 1
        yield Send(build_root_dse_request(message_id))
        # In a pcap replay the server's replies answer another client's requests: their message
        # ids are not ours and the stream goes on with whatever that client asked (binds, SASL-
        # wrapped traffic). The first reply tells: our id and the rootDSE (our own scan, recorded
        # with --record: the follow-ups are in the capture too), or anything else (a foreign client).
        replay = False
        entries: list[LDAPMessageInfo] = []
        others: list[LDAPMessageInfo] = []
        done: LDAPMessageInfo | None = None
        for _ in range(MAX_SEARCH_MESSAGES):
            # once something was identified, a non-LDAP tail must not undo it (see frame_ldap_or_rest)
            framer = frame_ldap_or_rest if entries or others else frame_ldap_message
            try:
                data = yield Recv(framer, max_size=MAX_RECV)
                reply = parse_ldap_message(data)
            except (RecvTimeout, RecvClosed, NotThisProtocol):
                if entries or (replay and others):
                    break  # keep what was read (a reply cut short after the entry, SASL-sealed data)
                raise
            if not entries and not others and not reply.is_notice_of_disconnection:
                # a first reply with another id, or one that is no answer to a search at all
                # (bindResponse, extendedResp), answers someone else's request
                if reply.message_id != message_id or reply.op not in _SEARCH_REPLY_OPS:
                    replay = True
                elif ctx.replay and reply.op == "searchResEntry" and reply.dn != "":
                    replay = True  # another client's search with our message id
            if reply.is_notice_of_disconnection:
                done = reply
                break
            if replay:
                if reply.op == "searchResEntry" and reply.dn == "":
                    entries.append(reply)
                    break
                others.append(reply)
            elif reply.message_id != message_id or reply.op == "searchResRef":
                continue  # not ours / a referral: skip (bounded by the loop)
            elif reply.op == "searchResEntry":
                entries.append(reply)
            else:
                done = reply
                break
        if replay and not entries:
            return replayed_messages_finding(others)
        if not entries:
            if done is None:
                raise NotThisProtocol("no reply to the rootDSE search")
            if done.result_code == 0:
                # success with no entry: an LDAP server that hides its rootDSE
                finding = Finding(service="ldap", confidence=8)
                finding.add("searchResDone to rootDSE search", "success, no entry returned")
                finding.details["anonymous_access"] = "none"
                return finding
            return refusal_finding(done)

        root = parse_root_dse(entries[0])
        finding = ctx.found(classify_root_dse(root, ctx.port))
        finding.details["root_dse"] = root.as_dict()
        if entries[0].trimmed:
            finding.details["root_dse_trimmed"] = True
        if done is not None and done.op == "searchResDone":
            finding.add("searchResDone", f"resultCode {done.result_code} {done.result_name}")
        if ctx.implicit_tls:
            finding.details["transport_security"] = "ldaps"
        if replay:
            return finding  # the capture holds no answers to our follow-up requests
        anonymous: dict[str, Any] = {"root_dse": True}
        finding.details["anonymous_access"] = "rootdse-only"
        finding.details["anonymous"] = anonymous

        # --- OpenLDAP states its version only in cn=Monitor
        monitor = root.first("monitorContext")
        if finding.product == "OpenLDAP" and monitor:
            message_id += 1
            yield Send(build_search_request(message_id, monitor, ("monitoredInfo", "+"), size_limit=1))
            mon_entries: list[LDAPMessageInfo] = []
            try:
                mon_done = yield from self._search(message_id, mon_entries)
            except (RecvTimeout, RecvClosed, NotThisProtocol):
                return finding  # an optional step: keep the identification
            anonymous["monitor"] = bool(mon_entries)
            for entry in mon_entries[:1]:
                info = [decode_text(v) for v in entry.attributes.get("monitoredInfo", [])]
                if info:
                    finding.add("cn=Monitor monitoredInfo", info[0])
                    finding.details["monitored_info"] = info[0]
                    parsed = parse_monitor_version(info[0])
                    if parsed:
                        finding.version, finding.details["build"] = parsed
            if mon_done is not None and mon_done.is_notice_of_disconnection:
                return finding

        # --- can an anonymous client read below the rootDSE?
        naming_context = root.first("defaultNamingContext") or root.first("namingContexts")
        if naming_context:
            message_id += 1
            yield Send(build_search_request(message_id, naming_context, ("objectClass",), size_limit=1))
            nc_entries: list[LDAPMessageInfo] = []
            try:
                nc_done = yield from self._search(message_id, nc_entries)
            except (RecvTimeout, RecvClosed, NotThisProtocol):
                return finding  # an optional step: keep the identification
            anonymous["naming_context"] = naming_context
            anonymous["naming_context_readable"] = bool(nc_entries)
            if nc_entries:
                finding.details["anonymous_access"] = "directory"
                finding.add("anonymous read", f"base entry {naming_context} returned")
            elif nc_done is not None:
                anonymous["naming_context_error"] = (
                    f"{nc_done.result_code} {nc_done.result_name}: {nc_done.diagnostic or ''}".strip()
                )
                finding.add(f"anonymous read of {naming_context}", anonymous["naming_context_error"])
            if nc_done is not None and nc_done.is_notice_of_disconnection:
                return finding

        # --- StartTLS, when advertised on a plain connection
        if finding.details.get("starttls_advertised") and ctx.tls is None:
            message_id += 1
            yield Send(build_starttls_request(message_id))
            try:
                tls_reply = yield from self._search(message_id, [])
            except (RecvTimeout, RecvClosed, NotThisProtocol):
                finding.details["starttls"] = "no-reply"
                return finding
            if tls_reply is None or tls_reply.op != "extendedResp" or tls_reply.is_notice_of_disconnection:
                finding.details["starttls"] = "no-reply"
                return finding
            if tls_reply.result_code != 0:
                finding.details["starttls"] = f"refused: {tls_reply.result_code} {tls_reply.result_name}"
                return finding
            try:
                facts = yield StartTLS(server_name=ctx.hostname)
            except TLSFailed as exc:
                finding.details["starttls"] = f"handshake failed: {exc}"[:200]
                return finding
            finding.details["starttls"] = "ok"
            finding.details["starttls_tls"] = {"version": facts.version, "cipher": facts.cipher}

        # --- NTLM facts: a SASL bind carrying an NTLMSSP NEGOTIATE returns the server's CHALLENGE
        # (NetBIOS/DNS names, OS version); no credentials are sent and the bind is left unfinished
        mechs = [str(m).upper() for m in finding.details.get("sasl_mechanisms") or []]
        mech = "NTLM" if "NTLM" in mechs else ("GSS-SPNEGO" if "GSS-SPNEGO" in mechs else None)
        if mech is not None:
            from scanner.ntlm import NTLMError, build_ldap_sasl_bind, parse_ldap_bind_response

            message_id += 1
            yield Send(build_ldap_sasl_bind(message_id, mech))
            try:
                bind_reply = yield Recv(frame_ldap_message)
                bound = parse_ldap_bind_response(bind_reply)
            except (RecvTimeout, RecvClosed, NotThisProtocol, NTLMError) as exc:
                finding.details["ntlm_error"] = str(exc)[:200]
                return finding
            if bound.challenge is not None:
                finding.details["ntlm"] = bound.challenge.as_dict()
                finding.add(f"SASL {mech} challenge", bound.challenge.summary())
            else:
                finding.details["ntlm_error"] = bound.challenge_error or f"bind result {bound.result_code}"

        message_id += 1
        yield Send(build_unbind_request(message_id))
        return finding
