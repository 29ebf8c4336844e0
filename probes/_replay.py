"""Helpers the built-in probes share for pcap replay (``ProbeContext.replay`` and the passive hooks).

Not a probe module (the leading underscore keeps the registry and the plugin scans away from it).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence

from scanner.api import Dialogue, Finding, NotThisProtocol, ProbeContext
from scanner.ntlm import MAX_CHALLENGE, NTLMSSP_SIGNATURE, NTLMChallenge, NTLMError, parse_challenge
from scanner.textproto import decode_text

__all__ = [
    "MAX_NTLM_SCAN",
    "client_commands",
    "find_ntlm_challenges",
    "keep_greeting_in_replay",
    "passive_text_finding",
    "record_passive_ntlm",
]

#: bytes of a captured stream searched for NTLMSSP CHALLENGE messages (an authentication happens
#: near a connection's start; a bulk transfer after it is not searched)
MAX_NTLM_SCAN = 256 * 1024
#: CHALLENGE messages read from one stream at most (a client may retry its bind a few times)
MAX_NTLM_FOUND = 4
#: a CHALLENGE as raw bytes: the signature followed by MessageType 2 (little-endian uint32)
_RAW_CHALLENGE = NTLMSSP_SIGNATURE + b"\x02\x00\x00\x00"
#: the same 12 bytes in base64, as text protocols carry them (SMTP ``334 TlRMTVNTUAACAAAA...``,
#: IMAP ``+ TlRM...``, HTTP ``WWW-Authenticate: NTLM TlRM...``): 12 bytes are whole base64
#: quanta, so the encoding of every CHALLENGE starts with these 16 characters
_B64_CHALLENGE = base64.b64encode(_RAW_CHALLENGE)
_B64_RUN = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
#: client command lines read from a client-only conversation at most, and their longest length
_MAX_CLIENT_LINES = 32
_MAX_CLIENT_LINE = 1024
#: a command verb: letters (and a few with digits or dashes, such as ``X-EXPS``)
_VERB = re.compile(r"[A-Za-z][A-Za-z0-9-]{1,15}")


def keep_greeting_in_replay(ctx: ProbeContext, finding: Finding, rest: Dialogue, greeting_confirms: bool) -> Dialogue:
    """Run ``rest`` (the dialogue after a greeting that already confirmed the protocol).

    Live, a reply that does not fit is a reason to doubt the protocol, so :class:`NotThisProtocol`
    propagates. In a replay the captured client sent *its own* commands, not ours: a reply that
    does not fit our command says nothing against the greeting, so the finding stored so far
    (``ctx.partial``, else ``finding``) is returned, with a note saying where the replay stopped.
    Only when ``greeting_confirms``: the greeting alone names the protocol or the product (a bare
    ``220`` is also how FTP greets, so it is not enough).
    """
    try:
        return (yield from rest)
    except NotThisProtocol as exc:
        if not ctx.replay or not greeting_confirms:
            raise
        kept = ctx.partial or finding
        kept.details["replay_stopped"] = f"the captured client's conversation differs from ours: {exc}"[:300]
        return kept


def find_ntlm_challenges(messages: Sequence[bytes]) -> list[NTLMChallenge]:
    """Every well-formed NTLMSSP CHALLENGE (MS-NLMP 2.2.1.2) in captured server bytes.

    Found wherever the protocol carries it: raw inside binary framing (an LDAP SASL bind
    response's ``serverSaslCreds``, SPNEGO, a DCE/RPC auth verifier, an SMB security blob) or
    base64-encoded in a text protocol's line or header. Bounded: the first :data:`MAX_NTLM_SCAN`
    bytes of each message, :data:`MAX_NTLM_FOUND` challenges; a malformed candidate is skipped
    (the signature alone proves nothing).
    """
    found: list[NTLMChallenge] = []
    for message in messages:
        data = bytes(message[:MAX_NTLM_SCAN])
        for needle, decode in ((_RAW_CHALLENGE, False), (_B64_CHALLENGE, True)):
            start = data.find(needle)
            while start >= 0 and len(found) < MAX_NTLM_FOUND:
                if decode:
                    run = _B64_RUN.match(data, start, start + 2 * MAX_CHALLENGE)
                    text = run.group(0) if run else b""
                    try:
                        blob = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
                    except (binascii.Error, ValueError):
                        blob = b""
                else:
                    # the message's real length is unknown inside its carrier: parse_challenge
                    # reads the fields' offsets and ignores what follows
                    blob = data[start : start + MAX_CHALLENGE]
                try:
                    chal = parse_challenge(blob)
                except NTLMError:
                    pass
                else:
                    if chal not in found:
                        found.append(chal)
                start = data.find(needle, start + len(needle))
    return found


def record_passive_ntlm(finding: Finding, messages: Sequence[bytes], source: str) -> NTLMChallenge | None:
    """Record the first NTLMSSP CHALLENGE of the captured server bytes on ``finding`` (details
    ``ntlm`` and ``windows_release``, host facts ``ntlm_*``/``windows_version``, evidence from
    ``source``, the summary as extrainfo when it has none). Names no product: NTLM is spoken by
    Windows, Samba and Cyrus SASL alike. Returns the challenge, or None when there is none."""
    challenges = find_ntlm_challenges(messages)
    if not challenges:
        return None
    chal = challenges[0]
    finding.details["ntlm"] = chal.as_dict()
    if len(challenges) > 1:
        finding.details["ntlm_challenges_seen"] = len(challenges)
    summary = chal.summary()
    finding.add(source, summary or f"NTLMSSP CHALLENGE, flags 0x{chal.flags:08x}")
    finding.host_facts.update(chal.host_facts())
    if chal.windows_version:
        finding.details["windows_release"] = chal.windows_version
    if summary and not finding.extrainfo:
        finding.extrainfo = summary
    return chal


def client_commands(client_messages: Sequence[bytes], *, tagged: bool = False) -> list[tuple[str, str]]:
    """The command lines of a text protocol's client, as (VERB upper-cased, argument) pairs.

    Reads at most :data:`_MAX_CLIENT_LINES` lines of :data:`_MAX_CLIENT_LINE` bytes from the first
    client element; ``tagged``: every line starts with an IMAP tag, skipped. A line that is not
    ``VERB [argument]`` ends the list (message content, binary data).
    """
    if not client_messages:
        return []
    out: list[tuple[str, str]] = []
    data = bytes(client_messages[0][: _MAX_CLIENT_LINES * _MAX_CLIENT_LINE])
    for raw in data.split(b"\n")[:_MAX_CLIENT_LINES]:
        line = decode_text(raw[:_MAX_CLIENT_LINE]).rstrip("\r")
        if not line:
            continue
        parts = line.split(None, 2 if tagged else 1)
        if tagged:
            parts = parts[1:]
        if not parts or not _VERB.fullmatch(parts[0]):
            break
        out.append((parts[0].upper(), parts[1] if len(parts) > 1 else ""))
    return out


def passive_text_finding(
    service: str,
    server_messages: Sequence[bytes],
    client_messages: Sequence[bytes],
    *,
    greets: Callable[[bytes], bool],
    first_verbs: frozenset[str],
    verbs: frozenset[str],
    ntlm_source: str,
    tagged: bool = False,
    stop_verbs: frozenset[str] = frozenset(),
) -> Finding | None:
    """A server-first text protocol's passive identification (SMTP, IMAP, POP3).

    The client's command lines must speak the protocol: the first is one of ``first_verbs`` and
    most of them are ``verbs`` (reading stops after one of ``stop_verbs``, such as SMTP's ``DATA``,
    whose content follows). With server bytes, ``greets`` (the probe's ``match``) must accept the
    greeting too (a bare ``220`` is also FTP's: the greeting alone proves nothing), and an NTLMSSP
    CHALLENGE of an ``AUTH NTLM`` exchange is read (base64 in a ``334``/``+`` line). Without (only
    the client was captured), the finding is low-confidence and names no product.
    """
    commands = client_commands(client_messages, tagged=tagged)
    for i, (verb, _arg) in enumerate(commands):
        if verb in stop_verbs:
            commands = commands[: i + 1]
            break
    if not commands or commands[0][0] not in first_verbs:
        return None
    known = [c for c in commands if c[0] in verbs]
    if 2 * len(known) < len(commands):
        return None
    said = " / ".join(f"{verb} {arg}".strip()[:80] for verb, arg in commands[:4])
    if any(server_messages):
        first = next(m for m in server_messages if m)
        if not greets(bytes(first[:4096])):
            return None
        f = Finding(service=service, confidence=4)
        f.add("greeting", first.split(b"\n", 1)[0][:200])
        f.add("client", said)
        record_passive_ntlm(f, server_messages, ntlm_source)
        return f
    f = Finding(service=service, confidence=3)
    f.details["client_commands"] = [verb for verb, _ in commands]
    f.add("client", said)
    return f
