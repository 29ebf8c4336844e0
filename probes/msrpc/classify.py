"""What the endpoint map says: the server roles and the product its registered interfaces imply (pure
functions). Part of the :mod:`probes.msrpc` package."""

from __future__ import annotations

from probes.msrpc.wire import (
    EXCHANGE,
    SAMBA_ONLY,
    WINDOWS_ONLY,
    Endpoint,
)

__all__ = [
    "infer_product",
    "infer_roles",
]


# ---------------------------------------------------------------- inference


def infer_roles(endpoints: list[Endpoint]) -> list[str]:
    """Roles the registered interfaces imply: domain-controller, exchange, dns-server, ..."""
    names = {e.name for e in endpoints if e.name}
    roles = []
    if {"drsuapi", "netlogon"} <= names:
        roles.append("domain-controller")
    if names & EXCHANGE:
        roles.append("exchange")
    if "dnsserver" in names:
        roles.append("dns-server")
    if "icertpassage" in names:
        roles.append("certificate-authority")
    if "spoolss" in names or "iremotewinspool" in names:
        roles.append("print-server")
    return roles


def infer_product(endpoints: list[Endpoint], behaviour: str | None) -> tuple[str | None, list[str]]:
    """Tell Samba from Windows; returns (product or None, reasons).

    ``behaviour`` is ``"samba-paging"`` when the first reply held entries with a non-null handle
    and the next call answered ``ept_s_not_registered`` (Samba's way of ending the list), or
    ``"not-registered-with-entries"`` when one reply carried entries *and* that status.
    """
    names = {e.name for e in endpoints if e.name}
    reasons: list[str] = []
    samba = sorted(names & SAMBA_ONLY)
    windows = sorted(names & WINDOWS_ONLY)
    if samba:
        reasons.append("Samba-only interfaces registered: " + ", ".join(samba))
    if behaviour == "samba-paging":
        reasons.append(
            "list ended with ept_s_not_registered after a reply that already held every entry"
        )
    elif behaviour == "not-registered-with-entries":
        reasons.append("one reply carried every entry together with ept_s_not_registered")
    if windows:
        reasons.append("Windows-only interfaces registered: " + ", ".join(windows))
    if samba or (behaviour is not None and not windows):
        return "Samba", reasons
    if windows:
        return "Microsoft Windows RPC", reasons
    return None, reasons


