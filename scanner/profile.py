"""Port profiles (what each port should carry) and port lists (``-p``).

A profile is a TOML file (see ``scanner/profiles/exchange-ad.toml``, the built-in default): a
``name``, a ``description`` and ``[[port]]`` tables with ``port``, ``transport``, ``service``,
``tls``, ``probe`` and ``description``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = [
    "DEFAULT_PROFILE",
    "PortEntry",
    "Profile",
    "ProfileError",
    "builtin_profiles",
    "load_profile",
    "parse_ports",
    "parse_range",
    "rpc_entries",
]

DEFAULT_PROFILE = "exchange-ad"
MAX_PORTS = 65536 * 2


class ProfileError(ValueError):
    """A profile file or a port list is malformed."""


@dataclass(frozen=True)
class PortEntry:
    """One port of a profile (or of a ``-p`` list, with no expectation)."""

    port: int
    transport: str = "tcp"
    service: str | None = None
    tls: bool = False
    probe: str | None = None
    description: str = ""


@dataclass(frozen=True)
class Profile:
    """A named list of expected services per port."""

    name: str
    description: str
    entries: tuple[PortEntry, ...]
    #: the RPC dynamic port range the profile documents (``rpc_range = "LO-HI"``), scanned only
    #: when the user asks for it (``--rpc-range``); None when the profile names none
    rpc_range: tuple[int, int] | None = None

    def lookup(self, port: int, transport: str) -> PortEntry | None:
        """The entry for ``port``/``transport``, if the profile lists it."""
        for e in self.entries:
            if e.port == port and e.transport == transport:
                return e
        return None


def _check_port(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        raise ProfileError(f"{where}: port must be an integer 1..65535, got {value!r}")
    return value


def parse_profile_text(text: str, origin: str) -> Profile:
    """Parse a profile from TOML text; ``origin`` names it in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{origin}: not valid TOML: {exc}") from exc
    ports = data.get("port")
    if not isinstance(ports, list) or not ports:
        raise ProfileError(f"{origin}: needs at least one [[port]] table")
    entries: list[PortEntry] = []
    for i, row in enumerate(ports, 1):
        where = f"{origin}: [[port]] #{i}"
        if not isinstance(row, dict):
            raise ProfileError(f"{where}: not a table")
        port = _check_port(row.get("port"), where)
        transport = row.get("transport", "tcp")
        if transport not in ("tcp", "udp"):
            raise ProfileError(f"{where}: transport must be tcp or udp")
        service = row.get("service") or None
        if service is not None and not isinstance(service, str):
            raise ProfileError(f"{where}: service must be a string")
        tls = row.get("tls", False)
        if not isinstance(tls, bool):
            raise ProfileError(f"{where}: tls must be true or false")
        probe = row.get("probe") or None
        entries.append(
            PortEntry(port, transport, service, tls, probe if isinstance(probe, str) else None,
                      str(row.get("description", "")))
        )
    rpc = data.get("rpc_range")
    if rpc is not None and not isinstance(rpc, str):
        raise ProfileError(f"{origin}: rpc_range must be a string LO-HI")
    return Profile(str(data.get("name", Path(origin).stem)), str(data.get("description", "")), tuple(entries),
                   parse_range(rpc, origin) if rpc else None)


def parse_range(spec: str, origin: str = "range") -> tuple[int, int]:
    """``"49152-65535"`` -> ``(49152, 65535)``; a :class:`ProfileError` for anything else."""
    lo_s, sep, hi_s = spec.strip().partition("-")
    try:
        lo, hi = int(lo_s), int(hi_s)
    except ValueError:
        raise ProfileError(f"{origin}: bad port range {spec!r} (want LO-HI)") from None
    if not sep or not 0 < lo <= hi < 65536:
        raise ProfileError(f"{origin}: bad port range {spec!r} (want LO-HI within 1-65535)")
    return lo, hi


def rpc_entries(lo: int, hi: int, have: Iterable[PortEntry] = ()) -> list[PortEntry]:
    """The RPC dynamic range ``lo..hi`` as profile entries (msrpc expected on each TCP port), leaving
    out ports ``have`` already lists."""
    taken = {(e.port, e.transport) for e in have}
    return [
        PortEntry(p, "tcp", "msrpc", False, "msrpc", "RPC dynamic range (ncacn_ip_tcp endpoint)")
        for p in range(lo, hi + 1)
        if (p, "tcp") not in taken
    ]


def builtin_profiles() -> list[Profile]:
    """Every built-in profile, the default first, then by name."""
    folder = resources.files("scanner").joinpath("profiles")
    names = sorted(f.name[:-5] for f in folder.iterdir() if f.name.endswith(".toml"))
    names.sort(key=lambda n: n != DEFAULT_PROFILE)
    return [load_profile(n) for n in names]


def load_profile(name_or_path: str | None = None) -> Profile:
    """Load the built-in profile ``name_or_path`` (default ``exchange-ad``) or a profile file."""
    name = name_or_path or DEFAULT_PROFILE
    builtin = resources.files("scanner").joinpath("profiles", f"{name}.toml")
    if "/" not in name and not name.endswith(".toml") and builtin.is_file():
        return parse_profile_text(builtin.read_text(encoding="utf-8"), f"built-in profile {name}")
    path = Path(name)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(f"cannot read profile {name}: {exc.strerror or exc}") from exc
    return parse_profile_text(text, str(path))


def parse_ports(spec: str, profile: Profile | None = None) -> list[PortEntry]:
    """Parse an nmap-style port list: ``25,110,389-390``, ``U:53,T:25``, ``T:1-100,U:53``.

    Ports the profile lists keep their expectation; others get none. Order follows the list,
    duplicates are dropped.
    """
    out: list[PortEntry] = []
    seen: set[tuple[int, str]] = set()
    transport = "tcp"
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        if item[:2].upper() in ("T:", "U:"):
            transport = "tcp" if item[0].upper() == "T" else "udp"
            item = item[2:]
        if "-" in item:
            lo_s, _, hi_s = item.partition("-")
            try:
                lo, hi = int(lo_s or 1), int(hi_s or 65535)
            except ValueError as exc:
                raise ProfileError(f"bad port range {raw!r}") from exc
            if not (0 < lo <= hi < 65536):
                raise ProfileError(f"bad port range {raw!r}")
            ports = range(lo, hi + 1)
        else:
            try:
                ports = range(_check_port(int(item), f"port {raw!r}"), int(item) + 1)
            except ValueError as exc:
                raise ProfileError(f"bad port {raw!r}") from exc
        for p in ports:
            key = (p, transport)
            if key in seen:
                continue
            seen.add(key)
            entry = profile.lookup(p, transport) if profile else None
            out.append(entry or PortEntry(p, transport))
            if len(out) > MAX_PORTS:
                raise ProfileError("too many ports")
    if not out:
        raise ProfileError(f"no ports in {spec!r}")
    return out
