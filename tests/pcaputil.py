"""Test helper: pull one server's TCP byte stream out of a small public capture (scapy, tests only)."""

from __future__ import annotations

from pathlib import Path

import pytest

#: the public captures the tests read, shipped with the tests (MANIFEST.tsv there: source, licence, sha256)
CORPUS = Path(__file__).resolve().parent / "data" / "pcaps-public"


def corpus_file(name: str) -> Path:
    """Path of a public capture in ``tests/data/pcaps-public``; a missing file fails the test (never a skip)."""
    path = CORPUS / name
    if not path.is_file():
        pytest.fail(f"public capture {path} is missing: the test data ships with the tests")
    return path


def server_stream(name: str, port: int, server: str | None = None, first_flow_only: bool = True) -> bytes:
    """The payload the server (``server``:``port``) sent, in sequence order, from its first flow."""
    from scapy.all import IP, TCP, IPv6, Padding, rdpcap  # heavy: tests only

    pkts = rdpcap(str(corpus_file(name)))
    flows: dict[tuple[str, int], dict[int, bytes]] = {}
    order: list[tuple[str, int]] = []
    for p in pkts:
        if TCP not in p:
            continue
        ip = p[IP] if IP in p else (p[IPv6] if IPv6 in p else None)
        if ip is None or p[TCP].sport != port or (server and ip.src != server):
            continue
        key = (ip.dst, p[TCP].dport)
        if key not in flows:
            flows[key] = {}
            order.append(key)
        payload = bytes(p[TCP].payload)
        if Padding in p:  # Ethernet padding is not TCP payload
            pad = bytes(p[Padding])
            payload = payload[: len(payload) - len(pad)] if pad and payload.endswith(pad) else payload
        if payload:
            flows[key].setdefault(p[TCP].seq, payload)
    if not order:
        raise AssertionError(f"no server stream for port {port} in {name}")
    key = next((k for k in order if flows[k]), order[0]) if first_flow_only else order[0]
    segs = flows[key]
    out = b"".join(segs[s] for s in sorted(segs))
    return out
