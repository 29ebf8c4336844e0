"""Target parsing: IPv4/IPv6 addresses, host names, CIDR blocks, ranges, ``-iL`` files.

Names are resolved once (with the system resolver) and only when the user gave a name; ``-n``
forbids resolving. The number of addresses is bounded so a typo (``/8``) cannot explode memory.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = ["MAX_TARGETS", "Target", "TargetError", "expand_targets", "read_target_file"]

MAX_TARGETS = 1 << 20


class TargetError(ValueError):
    """A target could not be parsed or resolved."""


@dataclass(frozen=True)
class Target:
    """One address to scan, with the text the user gave for it."""

    spec: str
    address: str
    hostname: str | None = None


def _parse_range(spec: str) -> Iterator[str] | None:
    """``10.0.0.1-20`` or ``10.0.0.1-10.0.0.20`` (IPv4 only), else None."""
    if "-" not in spec or ":" in spec:
        return None
    first, _, last = spec.partition("-")
    try:
        start = ipaddress.IPv4Address(first)
    except ValueError:
        return None
    try:
        end = ipaddress.IPv4Address(last) if "." in last else ipaddress.IPv4Address(
            first.rsplit(".", 1)[0] + "." + last
        )
    except ValueError as exc:
        raise TargetError(f"bad address range {spec!r}") from exc
    if end < start:
        raise TargetError(f"address range {spec!r} ends before it starts")
    if int(end) - int(start) >= MAX_TARGETS:
        raise TargetError(f"address range {spec!r} is larger than {MAX_TARGETS} addresses")
    return (str(ipaddress.IPv4Address(i)) for i in range(int(start), int(end) + 1))


def _expand_one(spec: str, resolve: bool) -> Iterator[Target]:
    text = spec.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        addr = ipaddress.ip_address(text)
        yield Target(spec, str(addr))
        return
    except ValueError:
        pass
    if "/" in text:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError as exc:
            raise TargetError(f"bad network {spec!r}: {exc}") from exc
        if net.num_addresses > MAX_TARGETS:
            raise TargetError(f"network {spec!r} is larger than {MAX_TARGETS} addresses")
        hosts = list(net.hosts()) if net.num_addresses > 2 else list(net)
        for host in hosts:
            yield Target(spec, str(host))
        return
    rng = _parse_range(text)
    if rng is not None:
        for a in rng:
            yield Target(spec, a)
        return
    if not resolve:
        raise TargetError(f"{spec!r} is a name and -n forbids resolving it")
    try:
        infos = socket.getaddrinfo(text, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetError(f"cannot resolve {spec!r}: {exc}") from exc
    if not infos:
        raise TargetError(f"cannot resolve {spec!r}")
    # first address, IPv4 preferred like most scanners
    infos.sort(key=lambda i: 0 if i[0] == socket.AF_INET else 1)
    yield Target(spec, str(infos[0][4][0]), hostname=text)


def expand_targets(specs: Iterable[str], resolve: bool = True) -> list[Target]:
    """Expand target specs into addresses (deduplicated, order kept)."""
    out: list[Target] = []
    seen: set[str] = set()
    for spec in specs:
        for t in _expand_one(spec, resolve):
            if t.address in seen:
                continue
            seen.add(t.address)
            out.append(t)
            if len(out) > MAX_TARGETS:
                raise TargetError(f"more than {MAX_TARGETS} targets")
    return out


def read_target_file(path: str) -> list[str]:
    """Read ``-iL`` target specs: whitespace-separated, ``#`` comments; ``-`` is standard input."""
    import sys

    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    except OSError as exc:
        raise TargetError(f"cannot read target list {path}: {exc.strerror or exc}") from exc
    specs: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        specs.extend(line.split())
    return specs
