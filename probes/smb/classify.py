"""What the SMB replies say about the product: Samba or Windows, each claim by a named rule (pure
functions). Part of the :mod:`probes.smb` package.

Rules (``portproof:smb/<id>``), strongest first; each would be right on servers never seen here:

* ``smb1-native-lanman-samba``: an SMB1 session setup's NativeLanMan ``Samba <version>``. Samba's
  ``smbd`` writes ``"Samba " + samba_version_string()`` there (source3/smbd/sesssetup.c,
  ``push_signature``), so the version is the server's own. Its NativeOS says ``Windows 6.1``
  (the announced NetBIOS version), which is why NativeOS alone never names Windows.
* ``smb1-native-lanman-windows``: a NativeLanMan that starts with ``Windows`` (``Windows Server
  2003 5.2``, ``Windows 2000 LAN Manager``): Samba never writes one; the OS is NativeOS's text.
* ``server-guid-samba-netbios-name``: the NEGOTIATE's server GUID is the server's NetBIOS name in
  lower case, NUL-padded to 16 bytes. Samba's ``negprot_spnego()`` (source3/smbd/negprot.c) builds
  it that way for SMB1 and SMB2 alike; Windows uses a random GUID (UuidCreate), which has this
  shape with odds below 1e-9. It also gives the NetBIOS name.
* ``ntlm-version-samba``: the NTLM CHALLENGE's VERSION 6.1 build 0, Samba's fixed value (no
  Windows release has build 0; see :attr:`scanner.ntlm.NTLMChallenge.looks_like_samba`).
* ``ntlm-version-windows``: a VERSION that is a known Windows build names the release; the
  version reported is the build (``10.0.14393``), as the msrpc probe does.

No rule guesses a Samba version from SMB2: nothing in an SMB2 negotiate or an NTLM challenge
carries it (nmap's ``Samba smbd 4.6.2`` for the lab's 4.17.12 is such a guess).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from probes.smb.wire import SMB1Negotiate, SMB1SessionSetup, SMB2Negotiate
from scanner.ntlm import NTLMChallenge

__all__ = [
    "SAMBA",
    "WINDOWS",
    "SMBClaim",
    "claim_product",
    "samba_guid_name",
]

SAMBA = "Samba smbd"
WINDOWS = "Microsoft Windows SMB"

_SAMBA_LANMAN = re.compile(
    r"Samba (?P<version>\d{1,2}\.\d{1,3}(?:\.\d{1,3})?[a-z]?)(?P<extra>[-+~ ][\x20-\x7e]{0,64})?"
)


@dataclass
class SMBClaim:
    """The product claim, the rule that made it, and the reasons and conflicts behind it."""

    product: str | None = None
    version: str | None = None
    rule: str | None = None
    confidence: int = 8
    #: (evidence source, text) of every rule that fired, the deciding one first
    reasons: list[tuple[str, str]] = field(default_factory=list)
    #: rules that disagree with the claim (recorded, never applied)
    conflicts: list[str] = field(default_factory=list)
    #: the OS the server names (SMB1 NativeOS of Windows, the NTLM Windows release)
    os: str | None = None
    #: extra words a Samba NativeLanMan carried after its version (``-Debian``)
    build_extra: str | None = None


def samba_guid_name(guid: bytes | None) -> str | None:
    """The NetBIOS name in a Samba-shaped server GUID (lower-case printable ASCII, then only NULs),
    or None when the GUID does not have that shape."""
    if guid is None or len(guid) != 16:
        return None
    name, _, rest = guid.partition(b"\x00")
    if not name or len(name) > 15 or rest.strip(b"\x00"):
        return None
    if not all(0x21 <= c <= 0x7E and not 0x41 <= c <= 0x5A for c in name):
        return None
    return name.decode("ascii")


def _rule(rule_id: str) -> str:
    return f"portproof:smb/{rule_id}"


def claim_product(
    smb2: SMB2Negotiate | None,
    smb1: SMB1Negotiate | None,
    session: SMB1SessionSetup | None,
    challenge: NTLMChallenge | None,
) -> SMBClaim:
    """Apply the rules of the module docstring; the first that fires names the product, the
    others add reasons or conflicts."""
    claim = SMBClaim()
    said: list[tuple[str, str | None, str, str, str]] = []  # (product, version, rule id, source, text)
    if session is not None and session.native_lanman:
        lanman = session.native_lanman
        m = _SAMBA_LANMAN.match(lanman)
        if m is not None:
            claim.build_extra = (m.group("extra") or "").strip(" -+~") or None
            said.append((SAMBA, m.group("version"), "smb1-native-lanman-samba", "SMB1 NativeLanMan", lanman))
        elif lanman.startswith("Windows"):
            claim.os = session.native_os or lanman
            said.append((WINDOWS, None, "smb1-native-lanman-windows", "SMB1 NativeLanMan",
                         f"{lanman} (NativeOS {session.native_os!r})"))
    guid = smb2.server_guid if smb2 is not None else smb1.server_guid if smb1 is not None else None
    name = samba_guid_name(guid)
    if name is not None:
        said.append((SAMBA, None, "server-guid-samba-netbios-name", "server GUID",
                     f"the NetBIOS name {name!r} in lower case, NUL-padded (Samba's negprot_spnego)"))
    if challenge is not None:
        if challenge.looks_like_samba:
            said.append((SAMBA, None, "ntlm-version-samba", "NTLM VERSION",
                         "6.1 build 0: Samba's fixed value (no Windows release has build 0)"))
        elif challenge.windows_version:
            claim.os = claim.os or challenge.windows_version
            said.append((WINDOWS, challenge.os_version_text, "ntlm-version-windows", "NTLM VERSION",
                         f"{challenge.os_version_text}: {challenge.windows_version}"))
    if not said:
        return claim
    product, version, rule_id, _source, _text = said[0]
    claim.product, claim.rule = product, _rule(rule_id)
    claim.confidence = 10 if rule_id == "smb1-native-lanman-samba" else 9
    claim.version = version
    for other_product, other_version, other_id, source, text in said:
        if other_product == product:
            claim.reasons.append((source, text))
            if claim.version is None and other_version is not None:
                claim.version = other_version
        else:
            claim.conflicts.append(f"{_rule(other_id)} says {other_product}: {text}")
    if product == SAMBA:
        claim.os = None  # Samba's NativeOS "Windows 6.1" and NTLM 6.1.0 name no OS
    return claim
