"""The ISO-TSAP probe's dialogue (COTP connect, then S7comm or MMS). Part of the :mod:`probes.tsap`
package."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from probes.tsap.wire import (
    COTP_DT,
    MAX_DT_SEGMENTS,
    MAX_TPKT,
    MMS_INITIATE_CN,
    MMS_TSAPS,
    S7_TSAPS,
    SESSION_WAIT,
    CotpPdu,
    ber_children,
    ber_find,
    build_cotp_cr,
    build_cotp_dt,
    build_mms_identify,
    build_s7_setup,
    build_s7_szl_read,
    decode_oid,
    frame_tpkt,
    parse_component_identification,
    parse_cotp,
    parse_mms_identify,
    parse_module_identification,
    parse_s7_setup_ack,
    parse_session,
    parse_szl_response,
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
    RecvTimeout,
    Send,
    Step,
)

__all__ = [
    "TSAPProbe",
]


# ---------------------------------------------------------------- probe


def _recv_tsdu(first_timeout: float | None = None) -> Generator[Step, Any, CotpPdu]:
    """Receive one TPDU; for DT, join segments up to end-of-TSDU (bounded)."""
    msg = yield Recv(frame_tpkt, max_size=MAX_TPKT + 1, timeout=first_timeout)
    pdu = parse_cotp(msg)
    if pdu.kind != "DT":
        return pdu
    data = bytearray(pdu.data)
    for _ in range(MAX_DT_SEGMENTS):
        if pdu.eot:
            break
        pdu = parse_cotp((yield Recv(frame_tpkt, max_size=MAX_TPKT + 1)))
        if pdu.kind != "DT":
            raise NotThisProtocol(f"{pdu.kind} inside a segmented TSDU")
        data += pdu.data
    else:
        raise NotThisProtocol("too many DT segments")
    return CotpPdu(kind="DT", code=COTP_DT, eot=True, data=bytes(data))


class TSAPProbe(Probe):
    """ISO-TSAP (RFC 1006) on 102: COTP CR/CC, then MMS (IEC 61850), S7comm or X.400 above it."""

    name = "tsap"
    services = ("tsap",)
    ports = (102,)
    server_first = False
    rarity = 6
    summary = "RFC 1006 TPKT/COTP connect, then tells MMS/IEC 61850, Siemens S7comm and X.400 apart"

    def client_hint(self, first_client_bytes: bytes) -> bool:
        """Replay: TPKT version 3 (``03 00`` + length) carrying a COTP Connection Request (``E0``)."""
        head = first_client_bytes
        return len(head) >= 6 and head[:2] == b"\x03\x00" and head[5] == 0xE0

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        """CR -> CC, then session CONNECT (MMS), S7 on silence or on a fresh connection; see the module doc."""
        finding = Finding(service="tsap", confidence=8)
        finding.details["upper_layer"] = None
        cc = yield from self._connect(ctx, finding, S7_TSAPS)
        if cc is None:
            # refused (DR/ER) at the S7 TSAPs: an MMS stack may want its own TSAPs (S7 refused,
            # MMS on a fresh connection: the "vice versa" of the session CONNECT case below)
            yield Reconnect()
            finding.details["reconnects"] = 1
            cc = yield from self._connect(ctx, finding, MMS_TSAPS)
            if cc is None:
                return finding
            return (yield from self._mms_then_s7(ctx, finding, fresh_connection_for_s7=False))
        return (yield from self._mms_then_s7(ctx, finding, fresh_connection_for_s7=True))

    def _connect(
        self, ctx: ProbeContext, finding: Finding, tsaps: tuple[bytes, bytes]
    ) -> Generator[Step, Any, CotpPdu | None]:
        """COTP CR with ``tsaps`` (calling, called) -> CC; None when refused or closed."""
        src_ref = ctx.rng.randint(1, 0xFFFE)
        yield Send(build_cotp_cr(src_ref, calling_tsap=tsaps[0], called_tsap=tsaps[1]))
        try:
            cc = parse_cotp((yield Recv(frame_tpkt, max_size=MAX_TPKT + 1)))
        except RecvClosed:
            if finding.details.get("cotp") is None:
                raise  # nothing seen yet: the port is not ISO-TSAP as far as we know
            finding.details["cotp_closed"] = True
            return None
        first = finding.details.get("cotp") is None
        facts = cc.facts()
        if first:
            finding.details["cotp"] = facts
        else:
            finding.details["cotp_retry"] = facts
        finding.add(f"COTP {cc.kind}", repr(facts))
        if cc.kind in ("DR", "ER"):
            finding.extrainfo = f"ISO transport, connection refused ({cc.kind})"
            finding.details["cotp_closed"] = False
            ctx.found(finding)
            return None
        if cc.kind != "CC":
            raise NotThisProtocol(f"answer to a COTP CR is a {cc.kind}")
        if cc.dst_ref != src_ref and not ctx.replay:
            facts["ref_mismatch"] = True
        finding.details.pop("cotp_closed", None)
        finding.extrainfo = "ISO transport (COTP CC), upper layer unknown"
        ctx.found(finding)
        return cc

    def _mms_then_s7(self, ctx: ProbeContext, finding: Finding, fresh_connection_for_s7: bool) -> Dialogue:
        """Session CONNECT (MMS); S7 on silence, or on a fresh connection when the peer refuses it."""
        yield Send(build_cotp_dt(MMS_INITIATE_CN))
        try:
            reply = yield from _recv_tsdu(first_timeout=SESSION_WAIT)
        except RecvTimeout:
            reply = None
        except RecvClosed:
            reply = CotpPdu(kind="closed", code=-1)
        if reply is not None and reply.kind == "DT" and reply.data[:1] == b"\x32":
            # S7comm where a session SPDU was expected: a capture of a client that spoke S7 (or
            # of our own scan after the silence) shows the S7 answer right after the CC
            return (yield from self._s7_answer(ctx, finding, reply))
        if reply is not None and reply.kind == "DT":
            return (yield from self._session_path(ctx, finding, reply.data))
        if reply is not None:
            # the session CONNECT was refused (DR/ER) or the connection closed: S7 stacks that
            # only know S7comm do that; S7 is asked on a fresh connection
            finding.details["after_session_connect"] = reply.kind
            if reply.kind != "closed":
                finding.add(f"COTP {reply.kind} after session CONNECT", repr(reply.facts()))
            if not fresh_connection_for_s7:
                finding.details["s7_untried"] = True
                return finding
            yield Reconnect()
            finding.details["reconnects"] = finding.details.get("reconnects", 0) + 1
            cc = yield from self._connect(ctx, finding, S7_TSAPS)
            if cc is None:
                finding.details["s7_untried"] = True
                return finding
        # -- silence (or a fresh connection): try S7comm
        yield Send(build_cotp_dt(build_s7_setup(pdu_ref=ctx.rng.randint(1, 0xFFFF))))
        try:
            s7 = yield from _recv_tsdu()
        except (RecvTimeout, RecvClosed):
            finding.details["after_s7_setup"] = "no answer"
            return finding
        return (yield from self._s7_answer(ctx, finding, s7))

    def _s7_answer(self, ctx: ProbeContext, finding: Finding, s7: CotpPdu) -> Dialogue:
        """The answer to an S7 setup communication: on an Ack_Data, read the SZLs."""
        if s7.kind != "DT":
            finding.details["after_s7_setup"] = s7.kind
            return finding
        try:
            setup = parse_s7_setup_ack(s7.data)
        except NotThisProtocol:
            finding.details["after_s7_setup"] = s7.data[:64].hex()
            return finding
        return (yield from self._s7_path(ctx, finding, s7.data, setup))

    def _session_path(self, ctx: ProbeContext, finding: Finding, payload: bytes) -> Dialogue:
        """The peer answered the session CONNECT: MMS (then identify), X.400, or plain ISO session."""
        spdu, user = parse_session(payload)
        finding.details["session"] = spdu
        finding.add(f"ISO session {spdu}", payload[:96].hex())
        oids = []
        for item in ber_find(user, 0x06):
            try:
                oids.append(decode_oid(item.value))
            except NotThisProtocol:
                continue
        if oids:
            finding.details["oids"] = sorted(set(oids))
        if any(o.startswith("2.6.") for o in oids):
            # MHS object identifiers (X.400/X.419: id-ac-mts-transfer ...): recognised from the
            # published layouts only; no X.400 MTA exists in the lab.
            finding.details["upper_layer"] = "x400"
            finding.extrainfo = "X.400 (MHS application context)"
            finding.confidence = 6
            return finding
        init = ber_find(user, 0xA9)  # MMS initiate-ResponsePDU
        err = ber_find(user, 0xAA)  # MMS initiate-ErrorPDU
        if spdu != "ACCEPT" or not (init or err):
            finding.extrainfo = f"ISO session ({spdu}), upper layer unknown"
            return finding
        finding.details["upper_layer"] = "mms"
        finding.confidence = 9
        finding.extrainfo = "MMS (ISO 9506), IEC 61850 style"
        if init:
            fields = {i.tag: i.value for i in ber_children(init[0].value)}
            detail = {}
            if 0x80 in fields:
                detail["local_detail_called"] = int.from_bytes(fields[0x80][:4], "big")
            if 0x83 in fields:
                detail["data_structure_nesting_level"] = int.from_bytes(fields[0x83][:2], "big")
            if 0xA4 in fields:
                sub = {i.tag: i.value for i in ber_children(fields[0xA4])}
                if 0x80 in sub:
                    detail["version"] = int.from_bytes(sub[0x80][:2], "big")
            finding.details["mms_initiate"] = detail
            finding.add("MMS initiate-Response", init[0].value[:64].hex())
        else:
            finding.details["mms_initiate"] = {"error": True}
            return finding
        ctx.found(finding)
        yield Send(build_cotp_dt(build_mms_identify(invoke_id=1)))
        try:
            ident_pdu = yield from _recv_tsdu()
            ident = parse_mms_identify(ident_pdu.data)
        except (RecvTimeout, RecvClosed, NotThisProtocol):
            return finding
        finding.details["mms_identify"] = {
            k: v for k, v in (("vendor", ident.vendor), ("model", ident.model), ("revision", ident.revision)) if v
        }
        finding.add("MMS identify", f"{ident.vendor} / {ident.model} / {ident.revision}")
        name = " ".join(x for x in (ident.vendor, ident.model) if x)
        finding.product = name or None
        finding.version = ident.revision
        finding.confidence = 10 if name else 9
        return finding

    def _s7_path(self, ctx: ProbeContext, finding: Finding, raw: bytes, setup: dict[str, int]) -> Dialogue:
        """S7comm answered setup communication: read module and component identification."""
        finding.details["upper_layer"] = "s7comm"
        finding.details["s7_setup"] = setup
        finding.add("S7comm setup communication Ack_Data", raw[:64].hex())
        finding.confidence = 9
        finding.extrainfo = "S7comm"
        ctx.found(finding)
        identity: dict[str, str] = {}
        for szl_id in (0x0011, 0x001C):
            yield Send(build_cotp_dt(build_s7_szl_read(ctx.rng.randint(1, 0xFFFF), szl_id)))
            try:
                pdu = yield from _recv_tsdu()
                szl = parse_szl_response(pdu.data)
            except (RecvTimeout, RecvClosed):
                break
            except NotThisProtocol as exc:
                finding.details[f"szl_{szl_id:04x}_error"] = str(exc)
                continue
            if szl.szl_id != szl_id:
                # a capture of another client's SZL reads: record which, never decode one SZL as another
                finding.details.setdefault("szl_other", []).append(f"{szl.szl_id:#06x}/{szl.index:#06x}")
                continue
            part = (
                parse_module_identification(szl) if szl_id == 0x0011 else parse_component_identification(szl)
            )
            if part:
                finding.add(f"SZL {szl_id:#06x}", repr(part))
            identity.update(part)
        if identity:
            finding.details["module"] = identity
            model = identity.get("module_type") or identity.get("module_name")
            finding.product = f"S7 {model}" if model else None
            finding.version = identity.get("firmware")
            extra = [identity[k] for k in ("order_number", "station_name") if k in identity]
            finding.extrainfo = ", ".join(["S7comm", *extra])
            finding.confidence = 10 if model else 9
        return finding
