"""The LDAP probe's passive hooks (pcap replay of conversations it did not lead). Part of :mod:`probes.ldap`.

An LDAPMessage (RFC 4511 4.1.1) is a BER SEQUENCE: ``30`` and a definite length, the messageID
INTEGER (``02``, 1 to 4 octets), then the protocolOp, an APPLICATION-tagged choice (``60``
bindRequest, ``61`` bindResponse, ``63`` searchRequest, ``77`` extendedReq ...). CLDAP (RFC 1798)
sends the same messages in UDP datagrams, so the messageID pairs a response with its request.

A SASL bind with GSS-SPNEGO or NTLM carries the server's NTLMSSP CHALLENGE in the bind
response's ``serverSaslCreds``: its names and Windows build are read wherever they appear
(:func:`probes._replay.record_passive_ntlm`).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from probes._replay import record_passive_ntlm
from probes.ldap.wire import frame_ldap_message, parse_ldap_message
from scanner.api import Finding, NotThisProtocol

__all__ = ["ldap_client_hint", "ldap_message_id", "identify_ldap_passive"]

#: protocolOp tags a client sends (RFC 4511 4.2-4.14): bind, unbind, search, modify, add, delete,
#: modifyDN, compare, abandon, extended
_CLIENT_OPS = frozenset({0x60, 0x42, 0x63, 0x66, 0x68, 0x4A, 0x6C, 0x6E, 0x50, 0x77})
#: server messages framed to confirm the protocol at most (the first is decoded with pyasn1, the
#: others checked by their protocolOp tag: decoding is the costly part)
_MAX_CONFIRM = 4
#: protocolOp tags of server messages (RFC 4511): bindResponse, searchResEntry, searchResDone,
#: modifyResponse, addResponse, delResponse, modDNResponse, compareResponse, searchResRef,
#: extendedResp, intermediateResponse
_SERVER_OPS = frozenset({0x61, 0x64, 0x65, 0x67, 0x69, 0x6B, 0x6D, 0x6F, 0x73, 0x78, 0x79})


def _after_length(d: bytes) -> int | None:
    """Offset just past the outer SEQUENCE's length octets, None when not a definite BER length."""
    if len(d) < 2 or d[0] != 0x30:
        return None
    first = d[1]
    if first < 0x80:
        return 2
    count = first & 0x7F
    if not 1 <= count <= 4:
        return None
    return 2 + count


def ldap_message_id(d: bytes) -> Hashable | None:
    """("ldap", messageID bytes) of an LDAPMessage: the CLDAP pairing key (None if not BER-shaped)."""
    pos = _after_length(d)
    if pos is None or pos + 2 > len(d) or d[pos] != 0x02 or not 1 <= d[pos + 1] <= 4:
        return None
    return ("ldap", d[pos + 2 : pos + 2 + d[pos + 1]])


def ldap_client_hint(data: bytes) -> bool:
    """A client's LDAPMessage: SEQUENCE, messageID INTEGER, then a request's APPLICATION tag."""
    pos = _after_length(data)
    if pos is None or pos + 2 > len(data) or data[pos] != 0x02 or not 1 <= data[pos + 1] <= 4:
        return False
    op = pos + 2 + data[pos + 1]
    return op < len(data) and data[op] in _CLIENT_OPS


def _op_tag(message: bytes) -> int | None:
    """The protocolOp tag of a framed LDAPMessage (after the messageID INTEGER)."""
    pos = _after_length(message)
    if pos is None or pos + 2 > len(message) or message[pos] != 0x02:
        return None
    op = pos + 2 + message[pos + 1]
    return message[op] if op < len(message) else None


def _server_ops(chunk: bytes) -> list[str]:
    """The protocolOps of the first few LDAP messages of a server stream or datagram ([] if not
    LDAP): the first decoded, the next ones only framed and their tag checked."""
    ops: list[str] = []
    pos = 0
    for i in range(_MAX_CONFIRM):
        try:
            n = frame_ldap_message(chunk[pos:])
            if n is None:
                break
            message = chunk[pos : pos + n]
            tag = _op_tag(message)
            if i == 0:
                ops.append(parse_ldap_message(message).op)
            elif tag in _SERVER_OPS:
                ops.append(f"tag 0x{tag:02x}")
            else:
                break
        except NotThisProtocol:
            break
        pos += n
    return ops


def identify_ldap_passive(server_messages: Sequence[bytes], client_messages: Sequence[bytes]) -> Finding | None:
    """LDAP from the server's well-formed messages, with the NTLMSSP CHALLENGE of a SASL bind
    (GSS-SPNEGO or NTLM) when the conversation holds one; None when the server's bytes are not LDAP
    responses. Names no product (the bind alone does not tell Windows from Samba or OpenLDAP with
    Cyrus SASL; the OS build goes to the details)."""
    first = next((bytes(m) for m in server_messages if m), b"")
    ops = _server_ops(first)
    if not ops or ops[0].endswith("Request"):
        return None
    f = Finding(service="ldap", confidence=5)
    f.add("passive", "LDAP server messages: " + ", ".join(ops[:_MAX_CONFIRM]))
    f.details["passive_ops"] = ops[:_MAX_CONFIRM]
    record_passive_ntlm(f, server_messages, "NTLMSSP CHALLENGE in an LDAP SASL bind response")
    return f
