"""The Kerberos and kpasswd probes' dialogues. Part of the :mod:`probes.kerberos` package."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

from probes.kerberos.classify import KdcVerdict, classify_kdc, classify_kpasswd
from probes.kerberos.wire import (
    ETYPE_NAMES,
    MAX_MESSAGE,
    KdcReply,
    KpasswdReply,
    KrbError,
    build_as_req,
    build_kpasswd_probe,
    frame_kdc_tcp,
    frame_kdc_udp,
    frame_kpasswd_tcp,
    frame_kpasswd_udp,
    parse_kdc_message,
    parse_kpasswd_reply,
    tcp_wrap,
)
from scanner.api import (
    Dialogue,
    Finding,
    Framer,
    NotThisProtocol,
    Probe,
    ProbeContext,
    Reconnect,
    Recv,
    RecvTimeout,
    Send,
    Step,
    StepError,
)

__all__ = [
    "KerberosProbe",
    "KpasswdProbe",
    "PLACEHOLDER_REALM",
]

#: the realm asked when no earlier probe learned the host's (``.invalid`` is reserved, RFC 2606):
#: a KDC answers it as an unknown realm, which is itself a behaviour worth recording
PLACEHOLDER_REALM = "PORTPROOF.INVALID"
#: the AD account every domain has (disabled); see :mod:`probes.kerberos.classify`
KRBTGT_ACCOUNT = "krbtgt"
#: encryption types asked one at a time when PA-ETYPE-INFO2 named only the preferred one:
#: AES128 (RFC 3962) and RC4-HMAC (RFC 4757, deprecated by RFC 8429: whether it is still there
#: is the security fact)
ENCTYPE_CHECKS = (17, 23)
#: UDP: sends of the first request (a lost datagram is normal on UDP)
UDP_TRIES = 2
#: replay: server messages read from one conversation at most
MAX_REPLAY_MESSAGES = 8
#: the largest framed message (prefix included)
_MAX_RECV = MAX_MESSAGE + 4


def _realm(ctx: ProbeContext) -> tuple[str, str | None]:
    """The realm to ask and where it came from: a realm an earlier kpasswd/Kerberos reply named,
    else the AD domain the LDAP or DNS probe (or an NTLM CHALLENGE) found (an AD realm is its DNS
    domain in upper case, MS-KILE 3.1.5.1), else the parent domain of the host name the user gave,
    else :data:`PLACEHOLDER_REALM` (source None)."""
    facts = ctx.host_facts
    realm = facts.get("kerberos_realm")
    if isinstance(realm, str) and realm:
        return realm, "kerberos_realm"
    for key in ("ad_domain", "ntlm_dns_domain"):
        domain = facts.get(key)
        if isinstance(domain, str) and "." in domain.strip("."):
            return domain.upper().strip("."), key
    # a host name the user gave (dc1.corp.example.com): its parent domain is the usual AD realm;
    # a guess, reported only when the KDC confirms it
    host = (ctx.hostname or "").strip(".")
    if host.count(".") >= 2 and not host.replace(".", "").isdigit():
        return host.split(".", 1)[1].upper(), "hostname"
    return PLACEHOLDER_REALM, None


def _server_time(err: KrbError) -> str | None:
    """stime/susec as ISO 8601 (``2026-12-08T03:28:09.447717Z``), None when stime is malformed."""
    s = err.stime
    if len(s) != 15 or not s[:14].isdigit() or s[14] != "Z":
        return None
    frac = f".{err.susec:06d}" if err.susec is not None and 0 <= err.susec < 1_000_000 else ""
    return f"{s[0:4]}-{s[4:6]}-{s[6:8]}T{s[8:10]}:{s[10:12]}:{s[12:14]}{frac}Z"


def _record_error(finding: Finding, err: KrbError, label: str) -> None:
    """Evidence for one KRB-ERROR: code, realm, e-text and what its e-data holds."""
    parts = [err.error_name, f"realm {err.realm!r}"]
    if err.e_text is not None:
        parts.append(f"e-text {err.e_text!r}")
    if err.padata_types:
        parts.append("e-data METHOD-DATA " + ",".join(map(str, err.padata_types)))
    if err.etype_info2:
        parts.append("ETYPE-INFO2 " + ",".join(ETYPE_NAMES.get(e, str(e)) for e, _ in err.etype_info2))
    if err.ntstatus is not None:
        parts.append(f"NTSTATUS {err.ntstatus:#010x}")
    if err.result_code is not None:
        parts.append(f"result {err.result_code} {err.result_string!r}")
    finding.add(label, "; ".join(parts))


def _apply(finding: Finding, verdict: KdcVerdict, probe: str) -> None:
    """Put a classification's product, rule and reasons on the finding."""
    for reason in verdict.reasons:
        finding.add("behaviour", reason)
    if verdict.product:
        finding.product = verdict.product
        finding.rule = f"portproof:{probe}/{verdict.rule}"
        finding.confidence = verdict.confidence


def _reply_finding(reply: KrbError | KdcReply, finding: Finding) -> None:
    """Details shared by live and passive reading of one KDC reply."""
    if isinstance(reply, KrbError):
        finding.details.setdefault("message", "KRB-ERROR")
        when = _server_time(reply)
        if when:
            finding.details.setdefault("server_time", when)
    else:
        finding.details.setdefault("message", reply.msg_type)
        finding.details.setdefault("kdc_reply", reply.as_dict())
        realm = reply.ticket_realm or reply.crealm
        if realm:
            finding.details.setdefault("realm", realm)
        finding.add(reply.msg_type, f"ticket {reply.ticket_sname}@{reply.ticket_realm} for {reply.crealm}")


class KerberosProbe(Probe):
    """Kerberos KDC (88 tcp/udp): an AS-REQ for a made-up principal, then one for the AD
    ``krbtgt`` account; the KRB-ERRORs give realm, server time, error codes, e-text, the supported
    encryption types, and name MIT / Heimdal / Samba / Microsoft from behaviour.

    Sends (no pre-authentication, no credentials, nothing that can yield a ticket):

    1. an AS-REQ for ``portproof-<10 hex digits from ctx.rng>@REALM`` asking ``krbtgt/REALM``,
       REALM being the host's realm when an earlier probe learned it (``kerberos_realm`` or the
       LDAP/DNS ``ad_domain`` host fact) and ``PORTPROOF.INVALID`` otherwise: the KRB-ERROR
       (usually KDC_ERR_C_PRINCIPAL_UNKNOWN) confirms Kerberos and gives the server clock;
    2. when the realm is known: an AS-REQ for ``krbtgt@REALM``, the account every AD domain holds,
       disabled, with pre-authentication required. An AD KDC answers KDC_ERR_PREAUTH_REQUIRED with
       PA-ETYPE-INFO2 (the encryption types the account's keys exist in: the supported enctypes)
       or KDC_ERR_CLIENT_REVOKED; a MIT or Heimdal KDC does not know the name; then, when
       ETYPE-INFO2 named one key only, the same with AES128 alone and RC4 alone (:meth:`_enctypes`);
    3. when the realm is unknown or step 2 named nothing: an AS-REQ that names no client, whose
       e-text names Heimdal ("No client in request") or MIT ("NULL_CLIENT").

    Collects: the realm (``realm_confirmed`` when the KDC showed it serves it), the server time,
    each error's code and name, e-text, which optional fields are present, the PA-DATA types
    offered and the ETYPE-INFO2 enctypes, and the product (see :mod:`probes.kerberos.classify`).
    """

    name = "kerberos"
    services = ("kerberos",)
    transports = ("tcp", "udp")
    ports = (88,)
    server_first = False
    #: Kerberos off port 88 is rare: like the smb probe, outside the default slow lane
    #: (intensity 7), so a port silent to everything costs no more than before
    rarity = 8
    summary = (
        "Kerberos KDC: AS-REQ without pre-auth for a made-up principal and the AD krbtgt account: "
        "realm, server time, error codes, enctypes; MIT/Heimdal/Samba/Microsoft from behaviour"
    )

    def client_hint(self, first_client_bytes: bytes) -> bool:
        """A 4-byte length prefix then an AS-REQ (0x6a) or TGS-REQ (0x6c) with a long-form DER
        length (every real request is longer than 127 bytes)."""
        b = first_client_bytes
        return len(b) >= 6 and b[:2] == b"\x00\x00" and b[4] in (0x6A, 0x6C) and b[5] in (0x81, 0x82)

    def identify_passive(self, server_messages: Sequence[bytes], client_messages: Sequence[bytes]) -> Finding | None:
        """A capture's KDC replies: message types, realm, ticket facts (never any key)."""
        return _passive(server_messages, kpasswd=False)

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        """See the class docstring."""
        udp = ctx.transport == "udp"
        framer: Framer = frame_kdc_udp if udp else frame_kdc_tcp
        realm, source = _realm(ctx)
        user = f"portproof-{ctx.rng.getrandbits(40):010x}"
        req = build_as_req(user, realm, ctx.rng.getrandbits(31))
        first = parse_kdc_message((yield from _first_reply(ctx, req, framer)))
        finding = Finding(service="kerberos", confidence=8)
        finding.details["transport"] = ctx.transport
        _reply_finding(first, finding)
        if ctx.replay:
            # another client's conversation: its requests were not ours, read what the KDC said
            return (yield from self._replay_rest(ctx, finding, first, framer, udp))
        if not isinstance(first, KrbError):
            # an AS-REP for a made-up name: a KDC that issues tickets to anyone. Confirmed; the
            # encrypted parts are not kept
            finding.add("behaviour", f"{first.msg_type} for a made-up principal")
            return ctx.found(finding)
        finding.details["principal"] = f"{user}@{realm}"
        finding.details["first"] = first.as_dict()
        _record_error(finding, first, f"KRB-ERROR for {user}@{realm}")
        if source is None:
            # the engine's host facts are live: a kpasswd/LDAP/DNS probe of the same host that
            # finished while we waited may have named the realm meanwhile
            later, later_source = _realm(ctx)
            if later_source is not None:
                realm, source = later, later_source
        known = source is not None
        if not known and first.realm and first.realm != PLACEHOLDER_REALM:
            # the KDC answered with a realm of its own: that is the realm to ask in
            realm, known = first.realm, True
            finding.add("behaviour", f"unknown realm answered with realm {first.realm!r}")
        if first.realm == PLACEHOLDER_REALM:
            finding.details["unknown_realm_answer"] = first.error_name
        ctx.found(finding)
        krbtgt: KrbError | KdcReply | None = None
        nameless: KrbError | KdcReply | None = None
        if known:
            krbtgt = yield from self._ask_krbtgt(ctx, finding, realm, framer, udp)
        if not known or (krbtgt is not None and classify_kdc(first, krbtgt).product is None):
            # no realm, or the krbtgt answer named nothing (a plain Heimdal or MIT database has no
            # such principal): the request naming no client still tells them apart
            nameless = yield from self._ask_nameless(ctx, finding, realm, framer, udp)
        # the realm is the KDC's when the AD account exists in it, or a kpasswd reply named it
        confirmed = (isinstance(krbtgt, KrbError) and krbtgt.error_code in (18, 24, 25)) or source == "kerberos_realm"
        if known and (confirmed or source != "hostname"):
            finding.details["realm"] = realm
            finding.details["realm_source"] = source or "kdc"
            finding.details["realm_confirmed"] = confirmed
            if confirmed:
                finding.host_facts["kerberos_realm"] = realm
        if isinstance(krbtgt, KrbError) and krbtgt.error_code == 25:
            yield from self._enctypes(ctx, finding, realm, krbtgt, framer, udp)
        _apply(finding, classify_kdc(first, krbtgt, nameless), self.name)
        extra = [f"realm {realm}" if "realm" in finding.details else "realm unknown"]
        if "server_time" in finding.details:
            extra.append(f"server time {finding.details['server_time']}")
        finding.extrainfo = "; ".join(extra)
        return finding

    def _ask_krbtgt(
        self, ctx: ProbeContext, finding: Finding, realm: str, framer: Framer, udp: bool
    ) -> Generator[Step, Any, KrbError | KdcReply | None]:
        """The second AS-REQ (the AD ``krbtgt`` account). Optional: an error or silence is noted
        in ``details["krbtgt_error"]`` and the first reply's finding stands."""
        req = build_as_req(KRBTGT_ACCOUNT, realm, ctx.rng.getrandbits(31), etypes=(18, 17, 20, 19, 23, 16))
        try:
            reply = yield from _exchange(req, framer, udp)
        except (StepError, NotThisProtocol) as exc:
            finding.details["krbtgt_error"] = f"{type(exc).__name__}: {exc}"[:200]
            return None
        if isinstance(reply, KrbError):
            finding.details["krbtgt"] = reply.as_dict()
            _record_error(finding, reply, f"KRB-ERROR for {KRBTGT_ACCOUNT}@{realm}")
        else:
            # never expected (the AD krbtgt account is disabled): keep only the message type
            finding.details["krbtgt"] = {"message": reply.msg_type}
        return reply

    def _ask_nameless(
        self, ctx: ProbeContext, finding: Finding, realm: str, framer: Framer, udp: bool
    ) -> Generator[Step, Any, KrbError | KdcReply | None]:
        """Without a realm: an AS-REQ that names no client (cname is optional in KDC-REQ-BODY,
        RFC 4120 5.4.1). Its KRB-ERROR's wording tells implementations apart with no realm
        known (Heimdal: "No client in request"). Optional, like :meth:`_ask_krbtgt`."""
        req = build_as_req(None, realm, ctx.rng.getrandbits(31))
        try:
            reply = yield from _exchange(req, framer, udp)
        except (StepError, NotThisProtocol) as exc:
            finding.details["nameless_error"] = f"{type(exc).__name__}: {exc}"[:200]
            return None
        if isinstance(reply, KrbError):
            finding.details["nameless"] = reply.as_dict()
            _record_error(finding, reply, "KRB-ERROR for a request naming no client")
        return reply

    def _enctypes(
        self, ctx: ProbeContext, finding: Finding, realm: str, krbtgt: KrbError, framer: Framer, udp: bool
    ) -> Generator[Step, Any, None]:
        """Which encryption types the ``krbtgt`` account has keys in.

        A KDC lists in PA-ETYPE-INFO2 only the key it prefers among those the request offers
        (Heimdal, MIT: one entry; RFC 4120 5.2.7.5 lets it choose). Asking again with one etype
        at a time (AES128, then RC4: the one whose absence is the security fact) gets
        PREAUTH_REQUIRED with that etype in PA-ETYPE-INFO2 when a key exists, PREAUTH_REQUIRED
        without it when the KDC accepts the type but lists no such key (``enctypes_unlisted``: Samba
        4.17 for AES128 and RC4), KDC_ERR_ETYPE_NOSUPP when the KDC refuses the type. Still
        no pre-authentication: nothing is issued. At most :data:`ENCTYPE_CHECKS` requests.
        """
        offered = [e for e, _ in krbtgt.etype_info2]
        supported = list(offered)
        refused: list[int] = []
        unlisted: list[int] = []
        for etype in ENCTYPE_CHECKS:
            if etype in supported:
                continue
            req = build_as_req(KRBTGT_ACCOUNT, realm, ctx.rng.getrandbits(31), etypes=(etype,))
            try:
                reply = yield from _exchange(req, framer, udp)
            except (StepError, NotThisProtocol) as exc:
                finding.details["enctype_check_error"] = f"{type(exc).__name__}: {exc}"[:200]
                break
            if not isinstance(reply, KrbError):
                break  # never expected: stop asking
            if reply.error_code == 25 and any(e == etype for e, _ in reply.etype_info2):
                supported.append(etype)
            elif reply.error_code == 25:
                unlisted.append(etype)  # accepted, but no key of that type listed for the account
            elif reply.error_code == 14:  # KDC_ERR_ETYPE_NOSUPP
                refused.append(etype)
        if supported:
            finding.details["enctypes"] = [ETYPE_NAMES.get(e, str(e)) for e in supported]
            finding.add("PA-ETYPE-INFO2", "krbtgt keys: " + ", ".join(finding.details["enctypes"]))
        if unlisted:
            finding.details["enctypes_unlisted"] = [ETYPE_NAMES.get(e, str(e)) for e in unlisted]
        if refused:
            finding.details["enctypes_refused"] = [ETYPE_NAMES.get(e, str(e)) for e in refused]
            finding.add("KDC_ERR_ETYPE_NOSUPP", "no krbtgt key in " + ", ".join(finding.details["enctypes_refused"]))
        return None

    def _replay_rest(
        self, ctx: ProbeContext, finding: Finding, first: KrbError | KdcReply, framer: Framer, udp: bool
    ) -> Dialogue:
        """Replay: the rest of the KDC's messages in the conversation (bounded), summarised."""
        ctx.found(finding)
        replies: list[KrbError | KdcReply] = [first]
        for _ in range(MAX_REPLAY_MESSAGES - 1):
            try:
                msg = yield Recv(framer, max_size=_MAX_RECV)
                replies.append(parse_kdc_message(msg if udp else msg[4:]))
            except (StepError, NotThisProtocol):
                break
        _summarise(finding, replies)
        return finding


def _first_reply(ctx: ProbeContext, req: bytes, framer: Framer) -> Generator[Step, Any, bytes]:
    """Send the dialogue's first request and return the reply's message (the TCP length prefix
    taken off); over UDP the request is sent again once when no answer comes (a lost datagram),
    except in a replay, where nothing more can arrive."""
    udp = ctx.transport == "udp"
    tries = UDP_TRIES if udp and not ctx.replay else 1
    for attempt in range(tries):
        yield Send(req if udp else tcp_wrap(req))
        try:
            msg: bytes = yield Recv(framer, max_size=_MAX_RECV)
        except RecvTimeout:
            if attempt + 1 >= tries:
                raise
            continue
        return msg if udp else msg[4:]
    raise AssertionError("unreachable: the last try returns or raises")


def _exchange(req: bytes, framer: Framer, udp: bool) -> Generator[Step, Any, KrbError | KdcReply]:
    """One follow-up request and its reply. Over TCP on a fresh connection: MIT's KDC closes a
    TCP connection after one reply (seen from the lab's krb5 1.20), Heimdal's keeps it; a new
    connection per request serves both (at most ``scanner.api.MAX_RECONNECTS`` per dialogue: 3 follow-ups)."""
    if not udp:
        yield Reconnect()
    yield Send(req if udp else tcp_wrap(req))
    msg = yield Recv(framer, max_size=_MAX_RECV)
    return parse_kdc_message(msg if udp else msg[4:])


def _summarise(finding: Finding, replies: Sequence[KrbError | KdcReply]) -> None:
    """Details of the KDC replies a capture holds, and the product where one of them names it."""
    kinds: dict[str, int] = {}
    errors = []
    for reply in replies:
        kind = "KRB-ERROR" if isinstance(reply, KrbError) else reply.msg_type
        kinds[kind] = kinds.get(kind, 0) + 1
        _reply_finding(reply, finding)
        if isinstance(reply, KrbError):
            errors.append(reply.as_dict())
            _record_error(finding, reply, "KRB-ERROR")
            if reply.realm:
                finding.details.setdefault("realm", reply.realm)
    finding.details["replay_messages"] = kinds
    if errors:
        finding.details["errors"] = errors[:MAX_REPLAY_MESSAGES]
    first = replies[0]
    verdict = classify_kdc(first, None)
    if verdict.product is None and len(replies) > 1:
        verdict = classify_kdc(replies[1], None)
    _apply(finding, verdict, "kerberos")
    realm = finding.details.get("realm")
    finding.extrainfo = f"realm {realm}" if realm else None


def _split_tcp(stream: bytes, framer: Framer) -> list[bytes]:
    """The framed messages at the start of a reassembled TCP stream (bounded)."""
    out: list[bytes] = []
    while stream and len(out) < MAX_REPLAY_MESSAGES:
        try:
            n = framer(stream)
        except NotThisProtocol:
            break
        if n is None:
            break
        out.append(stream[4:n])
        stream = stream[n:]
    return out


def _passive(server_messages: Sequence[bytes], kpasswd: bool) -> Finding | None:
    """identify_passive of both probes. TCP gives one element (the stream, which starts with a
    4-byte length prefix); UDP the datagrams."""
    if not server_messages:
        return None
    first = server_messages[0]
    framer: Framer = frame_kpasswd_tcp if kpasswd else frame_kdc_tcp
    # a TCP stream starts with a length prefix; a kpasswd datagram starts with its own 2-byte
    # length, so "starts with 0x00" does not decide: try the TCP framing, fall back to datagrams
    msgs = _split_tcp(first, framer) if len(server_messages) == 1 and first[:1] == b"\x00" else []
    if not msgs:
        msgs = list(server_messages[:MAX_REPLAY_MESSAGES])
    if kpasswd:
        for msg in msgs:
            try:
                kp = parse_kpasswd_reply(msg)
            except NotThisProtocol:
                continue
            finding = Finding(service="kpasswd", confidence=8)
            _kpasswd_finding(finding, kp)
            return finding
        return None
    replies: list[KrbError | KdcReply] = []
    for msg in msgs:
        try:
            replies.append(parse_kdc_message(msg))
        except NotThisProtocol:
            continue
    if not replies:
        return None
    finding = Finding(service="kerberos", confidence=8)
    _summarise(finding, replies)
    return finding


def _kpasswd_finding(finding: Finding, reply: KpasswdReply) -> None:
    """Details, evidence, realm and product of a kpasswd reply."""
    finding.details["reply"] = reply.as_dict()
    err = reply.error
    if reply.priv:
        finding.add("kpasswd reply", "AP-REP + KRB-PRIV (an authenticated exchange)")
        return
    if err is None:  # pragma: no cover  (parse_kpasswd_reply gives one or the other)
        return
    _record_error(finding, err, "kpasswd KRB-ERROR" if reply.framed else "bare KRB-ERROR")
    when = _server_time(err)
    if when:
        finding.details["server_time"] = when
    if err.realm:
        finding.details["realm"] = err.realm
        # a kpasswd server names its own realm in the error's service principal
        # (kadmin/changepw@REALM, RFC 3244 2): the 88 probe may ask in it
        finding.host_facts["kerberos_realm"] = err.realm
    if err.result_code is not None:
        finding.details["result_code"] = err.result_code
        finding.details["result_string"] = err.result_string
    _apply(finding, classify_kpasswd(reply), "kpasswd")
    extra = [f"realm {err.realm}"] if err.realm else []
    if err.result_string:
        extra.append(f"result {err.result_code}: {err.result_string}")
    finding.extrainfo = "; ".join(extra) or None


class KpasswdProbe(Probe):
    """kpasswd (464 tcp/udp, RFC 3244): a minimal malformed request; the error reply (kpasswd
    header, KRB-ERROR with a result code and string) names kpasswd, its realm and, by its
    wording, the implementation.

    Sends the 10 bytes of :func:`probes.kerberos.wire.build_kpasswd_probe` (an empty SEQUENCE where
    the AP-REQ belongs): no ticket, no key, no password. Collects: the reply's framing (kpasswd
    header or a bare KRB-ERROR), the error code, realm and service principal, server time, the
    RFC 3244 result code and string, and the product where the wording names it.
    """

    name = "kpasswd"
    services = ("kpasswd",)
    transports = ("tcp", "udp")
    ports = (464,)
    server_first = False
    rarity = 8
    summary = "kpasswd (RFC 3244): malformed request, error reply shape, result code/string, realm; Samba named"

    def client_hint(self, first_client_bytes: bytes) -> bool:
        """4-byte TCP length, the same length again in the kpasswd header, version 1 or 0xff80,
        then an AP-REQ (0x6e)."""
        b = first_client_bytes
        return (
            len(b) >= 11
            and int.from_bytes(b[:4], "big") == int.from_bytes(b[4:6], "big")
            and b[6:8] in (b"\x00\x01", b"\xff\x80")
            and b[10] == 0x6E
        )

    def identify_passive(self, server_messages: Sequence[bytes], client_messages: Sequence[bytes]) -> Finding | None:
        """A capture's kpasswd replies."""
        return _passive(server_messages, kpasswd=True)

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        """See the class docstring."""
        udp = ctx.transport == "udp"
        req = build_kpasswd_probe()
        framer: Framer = frame_kpasswd_udp if udp else frame_kpasswd_tcp
        reply = parse_kpasswd_reply((yield from _first_reply(ctx, req, framer)))
        finding = Finding(service="kpasswd", confidence=8)
        finding.details["transport"] = ctx.transport
        _kpasswd_finding(finding, reply)
        return finding
