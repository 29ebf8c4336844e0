"""CPU budgets: hostile inputs built to be expensive stay cheap (framing, decoding, details).

The fuzz suite (test_fuzz_parsers.py) checks that every target returns or refuses within a loose
time bound; this file gives the worst cases we know a CPU budget:

* every target of ``fuzz_targets``, fed its seeds and their 64 KiB repetitions, stays under
  :data:`CALL_BUDGET` of CPU per call (heavy decoders run only under size caps);
* the built-in framers, fed a large message one byte at a time through the runner (a server
  dripping it), cost linear time: under :data:`PER_BYTE` of CPU per byte;
* the worst single messages of the heavy decoders (a 990 KB rootDSE of 330,000 tiny values, a DNS
  reply of 4,000 records) decode well under 50 ms and give bounded details.
"""

from __future__ import annotations

import gc
import json
import time

import pytest
from fuzz_targets import Target, build_targets

from scanner.testing import feed_bytewise

TARGETS = build_targets()
#: CPU one call of a fuzz target may take on the inputs below (seconds)
CALL_BUDGET = 0.05
#: CPU per byte of a message framed from a one-byte-at-a-time drip (all costs in: runner, cursor)
PER_BYTE = 20e-6


def _cpu(fn: object, *args: object) -> float:
    # a full collection of the whole test session's heap (thousands of tests' objects) is not the
    # call's cost: collect before, and keep the collector out of the measured call
    gc.collect()
    gc.disable()
    try:
        t0 = time.process_time()
        try:
            fn(*args)  # type: ignore[operator]
        except Exception:  # refusals are fine here; the other fuzz tests judge the exception types
            pass
        return time.process_time() - t0
    finally:
        gc.enable()


#: over the 50 ms per call: scapy's NDR decoder costs ~1.1 ms per ept_lookup entry (a Samba DC's
#: reply of 53 entries: 58-65 ms). The live engine runs that step off the event loop
#: (``Recv(offload=True)``, tests/hostile/test_offload.py); its own, looser bound below still fails
#: on a regression.
OVER_BUDGET = {"msrpc.dialogue": 0.25}


def _worst(target: Target) -> tuple[float, int]:
    inputs = [s for s in target.seeds if s][:8]
    inputs += [(s * (65536 // len(s) + 1))[:65536] for s in inputs[:4]]
    _cpu(target.fn, inputs[0] if inputs else b"")  # first-use imports are not the call's cost
    return max((_cpu(target.fn, data), len(data)) for data in inputs) if inputs else (0.0, 0)


@pytest.mark.parametrize("target", [t for t in TARGETS if t.name not in OVER_BUDGET],
                         ids=[t.name for t in TARGETS if t.name not in OVER_BUDGET])
def test_fuzz_target_cpu_budget(target: Target) -> None:
    worst = _worst(target)
    assert worst[0] < CALL_BUDGET, f"{target.name}: {worst[0] * 1000:.1f} ms of CPU on {worst[1]} bytes"


@pytest.mark.parametrize("name", sorted(OVER_BUDGET))
def test_known_over_budget_targets_stay_within_their_own_bound(name: str) -> None:
    target = next(t for t in TARGETS if t.name == name)
    worst = _worst(target)
    assert worst[0] < OVER_BUDGET[name], f"{name}: {worst[0] * 1000:.1f} ms of CPU on {worst[1]} bytes"


def _framer_cases() -> list[tuple[str, object, bytes]]:
    from probes.dns import frame_dns_tcp
    from probes.http import frame_http_response
    from probes.ldap import frame_ldap_message
    from probes.msrpc import frame_dcerpc_reply
    from probes.tsap import frame_tpkt
    from scanner.textproto import frame_dot_block, frame_imap_tagged, frame_line, frame_smtp_reply

    smtp = b"".join(b"250-%s\r\n" % (b"X" * 58) for _ in range(220)) + b"250 end\r\n"
    pop3 = b"+OK\r\n" + b"".join(b"%d 4096\r\n" % i for i in range(1, 1500)) + b".\r\n"
    imap = b"* 1 FETCH (BODY[] {10000}\r\n" + b"a" * 10000 + b")\r\na1 OK done\r\n"
    chunk = b"64\r\n" + b"c" * 100 + b"\r\n"
    http = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 230 + b"0\r\n\r\n"
    # an LDAPMessage of 10,004 bytes: SEQUENCE { messageID 1, [APPLICATION 4] { 9,993 bytes } }
    ber = b"\x30\x82\x27\x10\x02\x01\x01\x64\x82\x27\x09" + b"\x00" * 9993
    dns = (20000).to_bytes(2, "big") + b"\x00\x01\x81\x80" + b"\x00" * 19996

    def frag(flags: int) -> bytes:
        # DCE/RPC response header (little-endian data representation), frag_len 4096
        head = bytes([5, 0, 2, flags, 0x10, 0, 0, 0]) + (4096).to_bytes(2, "little") + b"\x00\x00"
        return head + (1).to_bytes(4, "little") + b"\x00" * (4096 - 16)

    dcerpc = frag(1) + frag(0) * 3 + frag(2)  # first, three middle and the last fragment
    tpkt = b"\x03\x00\x27\x10\x02\xf0\x80" + b"\x00" * (10000 - 7)
    return [
        ("line", frame_line, b"x" * 8000 + b"\n"),
        ("smtp", frame_smtp_reply, smtp),
        ("dot-block", frame_dot_block, pop3),
        ("imap-literal", frame_imap_tagged(b"a1"), imap),
        ("http-chunked", frame_http_response, http),
        ("ber", frame_ldap_message, ber),
        ("dns-tcp", frame_dns_tcp, dns),
        ("dcerpc-fragments", frame_dcerpc_reply, dcerpc),
        ("tpkt", frame_tpkt, tpkt),
    ]


@pytest.mark.parametrize(("name", "framer", "message"), _framer_cases(), ids=[c[0] for c in _framer_cases()])
def test_dripped_framing_is_linear(name: str, framer: object, message: bytes) -> None:
    feed_bytewise(framer, message[:64])  # warm-up (lazy imports)
    t0 = time.process_time()
    n = feed_bytewise(framer, message)  # type: ignore[arg-type]
    spent = time.process_time() - t0
    assert n == len(message), (name, n, len(message))
    assert spent < PER_BYTE * len(message), f"{name}: {spent:.3f} s for {len(message)} bytes"


def _ber(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        return bytes([tag, n]) + value
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + value


def test_huge_root_dse_is_decoded_within_budget_and_details_bounded() -> None:
    from probes.ldap import MAX_VALUES_PER_ATTRIBUTE, LDAPProbe, parse_ldap_message
    from scanner.runner import DETAILS_CAP
    from scanner.testing import run_dialogue

    values = b"".join(_ber(0x04, b"a") for _ in range(330_000))
    attrs = (_ber(0x30, _ber(0x04, b"vendorName") + _ber(0x31, _ber(0x04, b"Hostile")))
             + _ber(0x30, _ber(0x04, b"supportedControl") + _ber(0x31, values)))
    entry = _ber(0x30, _ber(0x02, b"\x01") + _ber(0x64, _ber(0x04, b"") + _ber(0x30, attrs)))
    done = _ber(0x30, _ber(0x02, b"\x01") + _ber(0x65, _ber(0x0A, b"\x00") + _ber(0x04, b"") + _ber(0x04, b"")))
    assert len(entry) > 980_000
    parse_ldap_message(done)  # warm-up: ldap3/pyasn1 load lazily
    t0 = time.process_time()
    info = parse_ldap_message(entry)
    spent = time.process_time() - t0
    assert spent < 0.05, f"{spent * 1000:.1f} ms"  # was 4.2 s
    assert info.trimmed and len(info.attributes["supportedControl"]) == MAX_VALUES_PER_ATTRIBUTE
    t0 = time.process_time()
    run = run_dialogue(LDAPProbe(), entry + done, port=389)
    spent = time.process_time() - t0
    assert run.finding is not None and run.finding.service == "ldap", run.error
    size = len(json.dumps(run.finding.details))
    assert size < DETAILS_CAP and run.finding.details.get("root_dse_trimmed") is True  # was 3.3 MB
    assert spent < 0.5, f"{spent:.2f} s"


def test_dns_reply_with_thousands_of_records_is_decoded_within_budget() -> None:
    import dns.message
    import dns.rrset

    from probes.dns import MAX_DECODE_RECORDS, parse_dns_reply

    query = dns.message.make_query("example.com", "A")
    resp = dns.message.make_response(query)
    resp.answer.append(dns.rrset.from_text("example.com.", 60, "IN", "A",
                                           *[f"10.0.{i // 256}.{i % 256}" for i in range(4000)]))
    wire = resp.to_wire(max_size=65535)
    parse_dns_reply(wire)  # warm-up
    t0 = time.process_time()
    reply = parse_dns_reply(wire)
    spent = time.process_time() - t0
    assert spent < 0.05, f"{spent * 1000:.1f} ms"  # dnspython alone: ~175 ms for the whole message
    assert reply.dropped >= 4000 - MAX_DECODE_RECORDS
