"""Certificate facts from DER bytes (with ``cryptography``), shared by live scans and pcap replay."""

from __future__ import annotations

import datetime as dt
import hashlib

from scanner.results import CertFacts

__all__ = ["cert_facts"]


def _name(n: object) -> str:
    try:
        return str(n.rfc4514_string())  # type: ignore[attr-defined]
    except Exception:  # malformed names: keep going
        return "?"


def cert_facts(der: bytes, now: dt.datetime | None = None) -> CertFacts:
    """Parse a DER certificate into :class:`CertFacts`; raises ``ValueError`` if it is not one."""
    import warnings

    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

    with warnings.catch_warnings():
        # odd but real certificates (Samba's has a negative serial) must not print to the terminal
        warnings.simplefilter("ignore")
        cert = x509.load_der_x509_certificate(der)
        serial = cert.serial_number
    sans: list[str] = []
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans += [f"DNS:{v}" for v in ext.get_values_for_type(x509.DNSName)]
        sans += [f"IP:{v}" for v in ext.get_values_for_type(x509.IPAddress)]
        sans += [f"email:{v}" for v in ext.get_values_for_type(x509.RFC822Name)]
    except (x509.ExtensionNotFound, ValueError):
        pass
    key_desc: str | None = None
    pub = None
    try:
        pub = cert.public_key()
        if isinstance(pub, rsa.RSAPublicKey):
            key_desc = f"RSA {pub.key_size}"
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            key_desc = f"EC {pub.curve.name}"
        elif isinstance(pub, ed25519.Ed25519PublicKey):
            key_desc = "Ed25519"
        elif isinstance(pub, ed448.Ed448PublicKey):
            key_desc = "Ed448"
        elif isinstance(pub, dsa.DSAPublicKey):
            key_desc = f"DSA {pub.key_size}"
    except Exception:
        key_desc = None
    self_signed = cert.issuer == cert.subject
    if self_signed and pub is not None:
        try:
            cert.verify_directly_issued_by(cert)
        except Exception:
            self_signed = False
    sig: str | None
    try:
        sig = cert.signature_algorithm_oid._name
    except Exception:
        sig = None
    nb = cert.not_valid_before_utc
    na = cert.not_valid_after_utc
    now = now or dt.datetime.now(dt.UTC)
    return CertFacts(
        subject=_name(cert.subject),
        issuer=_name(cert.issuer),
        sans=sans,
        not_before=nb.isoformat(),
        not_after=na.isoformat(),
        serial=format(serial, "x") if serial >= 0 else "-" + format(-serial, "x"),
        sha256=hashlib.sha256(der).hexdigest(),
        self_signed=self_signed,
        key=key_desc,
        signature_algorithm=sig,
        expired=now > na,
    )
