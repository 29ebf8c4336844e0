"""What Kerberos and kpasswd replies say about the implementation behind them. Part of the
:mod:`probes.kerberos` package.

Every rule reads behaviour the implementations' own source fixes, so it holds on servers never
seen here; each names its source:

* ``heimdal-etext``: Heimdal's KDC answers an AS-REQ without pre-authentication for a principal
  that needs it with e-text "Need to use PA-ENC-TIMESTAMP/PA-PK-AS-REQ" (``kdc/kerberos5.c``,
  ``_kdc_as_rep``: the literal string; Heimdal 1.x to 7.x and the copy embedded in Samba 4,
  ``third_party/heimdal/kdc/kerberos5.c``; seen from the lab's Samba 4.17 AD DC).
  The same source answers an AS-REQ that names no client with e-text "No client in request"
  (every Heimdal since 0.x; KRB_ERR_GENERIC in old releases, KDC_ERR_C_PRINCIPAL_UNKNOWN in 7+;
  seen from the lab's Samba): the probe asks it when the realm is unknown.
* ``samba-ad-krbtgt``: Heimdal wording *and* a single-component client principal ``krbtgt`` that
  exists (pre-authentication asked, not C_PRINCIPAL_UNKNOWN). A plain Heimdal or MIT database has
  no such principal (their ticket-granting service is ``krbtgt/REALM``); an Active Directory always
  holds the ``krbtgt`` user account (MS-ADTS 6.1.1.6.x: the KRBTGT account every domain has), and
  Microsoft's KDC never sends Heimdal's e-text: Heimdal serving an AD directory is Samba's AD DC.
* ``mit-status-etext``: MIT krb5's KDC copies its internal status word into e-text
  (``src/kdc/do_as_req.c``, ``prepare_error_as``: ``errpkt.text = string2data(status)``), upper-case
  words with underscores such as ``CLIENT_NOT_FOUND`` and ``NEEDED_PREAUTH``.
* ``ms-krbtgt-revoked``: Microsoft's KDC answers an AS-REQ for the (always disabled) AD
  ``krbtgt`` account with KDC_ERR_CLIENT_REVOKED (18) and no e-text, before any pre-authentication
  check (the behaviour user-enumeration tools such as kerbrute read as "disabled account"); Samba
  asks for pre-authentication instead (lab), MIT and Heimdal do not know the principal.
* ``samba-ntstatus`` (kpasswd): Samba's kpasswd service puts an NTSTATUS name in the result string
  ("gensec_update failed - NT_STATUS_LOGON_FAILURE", ``source4/kdc/kpasswd-service*.c`` with
  ``nt_errstr()``); the ``NT_STATUS_`` spelling is Samba's own (Windows' headers say ``STATUS_``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from probes.kerberos.wire import KdcReply, KpasswdReply, KrbError

__all__ = [
    "HEIMDAL_NO_CLIENT_TEXT",
    "HEIMDAL_PREAUTH_TEXT",
    "KdcVerdict",
    "classify_kdc",
    "classify_kpasswd",
]

#: Heimdal's e-text for KDC_ERR_PREAUTH_REQUIRED (kdc/kerberos5.c)
HEIMDAL_PREAUTH_TEXT = "Need to use PA-ENC-TIMESTAMP/PA-PK-AS-REQ"
#: Heimdal's e-text for an AS-REQ without cname (kdc/kerberos5.c)
HEIMDAL_NO_CLIENT_TEXT = "No client in request"
#: MIT's status words an AS-REQ without pre-authentication meets (src/kdc/do_as_req.c)
_MIT_STATUS = frozenset({"CLIENT_NOT_FOUND", "NULL_CLIENT", "NEEDED_PREAUTH", "CLIENT_REVOKED", "LOOKING_UP_CLIENT"})
#: the shape of every MIT status word (KDC_ERR_* names are not e-text)
_MIT_STATUS_SHAPE = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")

PRODUCT_HEIMDAL = "Heimdal KDC"
PRODUCT_SAMBA = "Samba AD DC KDC (Heimdal)"
PRODUCT_MIT = "MIT Kerberos KDC"
PRODUCT_MICROSOFT = "Microsoft Windows KDC"


@dataclass(slots=True)
class KdcVerdict:
    """The product a KDC's replies name, the rule that named it, and why."""

    product: str | None = None
    rule: str | None = None
    confidence: int = 8
    reasons: list[str] = field(default_factory=list)


def _etexts(*replies: KrbError | KdcReply | None) -> list[str]:
    return [r.e_text for r in replies if isinstance(r, KrbError) and r.e_text]


def classify_kdc(
    first: KrbError | KdcReply, krbtgt: KrbError | KdcReply | None, nameless: KrbError | KdcReply | None = None
) -> KdcVerdict:
    """Name the KDC from the reply to the made-up principal (``first``) and, when they were asked,
    the reply for the AD ``krbtgt`` account (``krbtgt``) and the one to a request naming no client
    (``nameless``). See the module docstring for the rules."""
    verdict = KdcVerdict()
    texts = _etexts(first, krbtgt, nameless)
    heimdal = [t for t in texts if t.startswith(HEIMDAL_PREAUTH_TEXT) or t == HEIMDAL_NO_CLIENT_TEXT]
    if heimdal:
        verdict.reasons.append(f"e-text {heimdal[0]!r}: Heimdal's wording (kdc/kerberos5.c)")
        if isinstance(nameless, KrbError) and nameless.e_text == HEIMDAL_NO_CLIENT_TEXT:
            # the code beside the same text moved from KRB_ERR_GENERIC (Heimdal up to 7.x: seen
            # from Debian's heimdal-kdc 7.8) to KDC_ERR_C_PRINCIPAL_UNKNOWN (Heimdal 8, and the
            # Heimdal Samba 4.16+ embeds): evidence of the generation, never a version claim
            era = {60: "Heimdal 7.x or older", 6: "Heimdal 8 generation (or Samba's embedded copy)"}
            if nameless.error_code in era:
                verdict.reasons.append(f"{nameless.error_name} beside that text: {era[nameless.error_code]}")
        if isinstance(krbtgt, KrbError) and krbtgt.error_code in (24, 25):
            verdict.product, verdict.rule, verdict.confidence = PRODUCT_SAMBA, "samba-ad-krbtgt", 9
            verdict.reasons.append(
                "the single-component principal 'krbtgt' exists (pre-authentication asked): the AD "
                "KRBTGT account, so a Heimdal KDC serving an Active Directory: Samba AD DC"
            )
        else:
            verdict.product, verdict.rule, verdict.confidence = PRODUCT_HEIMDAL, "heimdal-etext", 9
        return verdict
    mit = [t for t in texts if t in _MIT_STATUS or (_MIT_STATUS_SHAPE.fullmatch(t) and not t.startswith("KDC_ERR"))]
    if mit:
        verdict.product, verdict.rule = PRODUCT_MIT, "mit-status-etext"
        verdict.confidence = 9 if mit[0] in _MIT_STATUS else 7
        verdict.reasons.append(f"e-text {mit[0]!r}: MIT's KDC status word (src/kdc/do_as_req.c)")
        return verdict
    if isinstance(krbtgt, KrbError) and krbtgt.error_code == 18 and not texts:
        verdict.product, verdict.rule, verdict.confidence = PRODUCT_MICROSOFT, "ms-krbtgt-revoked", 7
        verdict.reasons.append(
            "AD 'krbtgt' account answered KDC_ERR_CLIENT_REVOKED without e-text (disabled account "
            "reported before pre-authentication): Microsoft's KDC"
        )
        if krbtgt.ntstatus is not None:
            verdict.reasons.append(f"MS-KILE KERB-EXT-ERROR NTSTATUS {krbtgt.ntstatus:#010x}")
        return verdict
    for reply in (first, krbtgt):
        if isinstance(reply, KrbError) and reply.kerb_error_data_type is not None:
            verdict.reasons.append(
                f"e-data is an MS-KILE KERB-ERROR-DATA (data-type {reply.kerb_error_data_type}): "
                "Microsoft's extended error (not decisive alone)"
            )
    return verdict


def classify_kpasswd(reply: KpasswdReply) -> KdcVerdict:
    """Name the kpasswd server from its error reply (see the module docstring)."""
    verdict = KdcVerdict()
    err = reply.error
    if err is None:
        return verdict
    if err.result_string and "NT_STATUS_" in err.result_string:
        verdict.product, verdict.rule, verdict.confidence = "Samba kpasswd", "samba-ntstatus", 9
        verdict.reasons.append(f"result string {err.result_string!r}: Samba's NT_STATUS_ spelling")
    return verdict
