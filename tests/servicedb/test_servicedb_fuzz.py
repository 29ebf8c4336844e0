"""Hostile and random input for scanner.servicedb: the matcher on arbitrary replies, the PCRE
converter on arbitrary pattern text, and the soundness of the literal pre-filter (a line the
filter skips must be a line whose regex cannot match)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from scanner.servicedb import DBMatch, ServiceDB, load
from scanner.servicedb.literals import analyse, quick_prefix
from scanner.servicedb.pcre import Unsupported, convert

DEBIAN = Path("/usr/share/nmap/nmap-service-probes")
SEEDS = [
    b"220 mail.example.test ESMTP Postfix (Debian/GNU)\r\n",
    b"+OK Dovecot ready.\r\n",
    b"* OK IMAP4rev1 server ready\r\n",
    b"200 news InterNetNews NNRP server INN 2.7.1 ready (posting ok)\r\n",
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nContent-Length: 0\r\n\r\n",
    b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n",
    b"\x00\x06\x85\x00\x00\x01\x00\x01\x00\x00\x00\x00\x07version\x04bind\x00\x00\x10\x00\x03",
]


@pytest.fixture(scope="module")
def debian() -> ServiceDB:
    """The installed database (a missing file fails, as in test_servicedb)."""
    db = load(DEBIAN)
    if db is None:
        pytest.fail("nmap-service-probes missing (apt-get install nmap-common)")
    return db


def _well_formed(m: DBMatch | None) -> None:
    if m is None:
        return
    assert m.service and m.line > 0 and m.rule == f"nmap-service-probes:{m.line}"
    for value in (m.product, m.version, m.info, m.hostname, m.ostype, m.devicetype):
        assert value is None or (isinstance(value, str) and value == value.strip())
    assert all(c.startswith("cpe:/") for c in m.cpe)


def _mutated(seed: bytes, cuts: list[int], junk: bytes) -> bytes:
    out = bytearray(seed)
    for c in cuts:
        if out:
            out[c % len(out)] = junk[c % len(junk)] if junk else 0
    return bytes(out)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.sampled_from(SEEDS),
    cuts=st.lists(st.integers(min_value=0, max_value=4096), max_size=6),
    junk=st.binary(min_size=1, max_size=64),
    tail=st.binary(max_size=512),
    probe=st.sampled_from(["NULL", "GetRequest", "UDP:DNSVersionBindReq", "GenericLines", "SSLSessionReq"]),
)
def test_matcher_on_hostile_replies(debian: ServiceDB, seed: bytes, cuts: list[int], junk: bytes, tail: bytes,
                                    probe: str) -> None:
    _well_formed(debian.match(probe, _mutated(seed, cuts, junk) + tail))
    _well_formed(debian.match(probe, tail, tls=True))


_TOKENS = ["a", "b", "c", "ab", r"\.", ".", "[ab]", "[^a]", r"\d", "(", ")", "(?:", "(?=a)", "?", "*", "+",
           "{2}", "{0,2}", "{1,}", "|", "$", r"\b", "x", r"\x61", r"\Qa.\E", "??", "*+"]


@settings(max_examples=400, deadline=None)
@given(
    tokens=st.lists(st.sampled_from(_TOKENS), min_size=1, max_size=10),
    anchored=st.booleans(),
    icase=st.booleans(),
    subject=st.binary(max_size=12).map(lambda b: bytes(b"abcx.1A"[v % 7] for v in b)),
)
def test_literal_filter_never_skips_a_match(tokens: list[str], anchored: bool, icase: bool, subject: bytes) -> None:
    pattern = ("^" if anchored else "") + "".join(tokens)
    try:
        rx = re.compile(convert(pattern).encode("latin-1"), re.IGNORECASE if icase else 0)
    except (Unsupported, re.error):
        assume(False)
        return
    if rx.search(subject) is None:
        return
    facts = analyse(pattern, icase)
    hay = subject.lower() if icase else subject
    if facts.anchored:
        assert hay.startswith(facts.prefix), (pattern, subject, facts)
    for lit in facts.required:
        assert lit in hay, (pattern, subject, facts)
    assert hay.startswith(quick_prefix(pattern, icase)), (pattern, subject)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=40))
def test_converter_raises_only_unsupported(pattern: str) -> None:
    try:
        text = convert(pattern)
    except Unsupported:
        return
    try:
        re.compile(text.encode("latin-1"))
    except re.error:
        pass  # reported as a compile failure with Python's reason
    analyse(pattern, False)
