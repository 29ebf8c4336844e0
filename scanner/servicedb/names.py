"""nmap service names to portproof's (the names of our probes), with the TLS they imply."""

from __future__ import annotations

__all__ = ["service_name"]

#: nmap service name -> (our name, TLS implied). Names not listed are kept as nmap spells them.
_MAP: dict[str, tuple[str, bool]] = {
    "domain": ("dns", False),
    "domain-s": ("dns", True),
    "iso-tsap": ("tsap", False),
    "smtp": ("smtp", False),
    "submission": ("smtp", False),
    "smtps": ("smtp", True),
    "imap": ("imap", False),
    "imaps": ("imap", True),
    "pop3": ("pop3", False),
    "pop3s": ("pop3", True),
    "nntp": ("nntp", False),
    "nntps": ("nntp", True),
    "snews": ("nntp", True),
    "http": ("http", False),
    "https": ("http", True),
    "http-alt": ("http", False),
    "http-proxy": ("http", False),
    "https-alt": ("http", True),
    "ldap": ("ldap", False),
    "ldaps": ("ldap", True),
    "globalcatLDAP": ("ldap", False),
    "globalcatLDAPssl": ("ldap", True),
    "msrpc": ("msrpc", False),
    "msexch-routing": ("resvc", False),
    # the domain controller's other services (the ad-dc profile's names)
    "kerberos-sec": ("kerberos", False),
    "kerberos": ("kerberos", False),
    "kpasswd5": ("kpasswd", False),
    "kpasswd": ("kpasswd", False),
    "netbios-ssn": ("smb", False),
    "microsoft-ds": ("smb", False),
    "ms-wbt-server": ("rdp", False),
}


def service_name(nmap_service: str) -> tuple[str, bool]:
    """Our name for an nmap service name, and whether it implies TLS.

    ``ssl/<name>`` (nmap's way of naming a service found inside TLS) maps like ``<name>`` with TLS:
    ``ssl/http`` -> ``("http", True)``, ``imaps`` -> ``("imap", True)``, ``domain`` ->
    ``("dns", False)``; a name we have no probe for stays as it is (``ftp`` -> ``("ftp", False)``).
    """
    tls = False
    name = nmap_service
    if name.startswith("ssl/"):
        tls = True
        name = name[4:]
    ours, implied = _MAP.get(name, (name, False))
    return ours, tls or implied
