"""Property tests: every framer and parser of bytes returns a result or says "not this protocol".

For each target of ``fuzz_targets`` hypothesis feeds random bytes and mutations of real messages
(bit flips, byte overwrites, truncation, insertion, duplication, length-field extremes) and checks
that the target either returns or raises one of its allowed exceptions, within a time bound.
Framers are also checked for their contract: ``None`` or a length in ``1..len(buf)``.
"""

from __future__ import annotations

import struct
import time

import pytest
from fuzz_targets import Target, build_targets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TARGETS = build_targets()
#: one call may not take longer than this (seconds): a hostile message must not stall a scan
TIME_BOUND = 2.0
EXAMPLES = 150

_EXTREMES = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\x00\x00", b"\xff\xff", b"\x80\x00\x00\x00",
             b"\xff\xff\xff\xff", b"\x84\x80\x00\x00\x00", b"\xc0\x0c", b"\r\n", b"\n", b".\r\n", b"{99999999}\r\n"]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A real message with a few mutations, or random bytes."""
    usable = [s for s in seeds if s]
    if not usable or draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=2048))
    buf = bytearray(draw(st.sampled_from(usable)))
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.integers(0, 5))
        pos = draw(st.integers(0, max(0, len(buf) - 1)))
        if kind == 0 and buf:
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == 1 and buf:
            buf[pos] = draw(st.integers(0, 255))
        elif kind == 2:
            del buf[draw(st.integers(0, len(buf))):]
        elif kind == 3:
            buf[pos:pos] = draw(st.sampled_from(_EXTREMES))
        elif kind == 4 and buf:
            end = min(len(buf), pos + draw(st.integers(1, 64)))
            buf[pos:pos] = buf[pos:end] * draw(st.integers(1, 4))
        elif kind == 5 and len(buf) > pos + 4:
            buf[pos:pos + 4] = struct.pack("!I", draw(st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 65535])))
    return bytes(buf[:65536])


def _call(target: Target, data: bytes) -> None:
    t0 = time.monotonic()
    try:
        result = target.fn(data)
    except target.ok:
        result = None
    elapsed = time.monotonic() - t0
    assert elapsed < TIME_BOUND, f"{target.name} took {elapsed:.2f} s on {len(data)} bytes"
    if ".frame" in target.name and result is not None:
        assert isinstance(result, int) and 0 < result <= len(data), (target.name, result, len(data))


#: targets with a known bug found by this suite (strict: the test fails once the bug is fixed,
#: so the mark gets removed); the reason names the bug
#: targets with a known, not yet fixed bug (strict xfail: the mark must go when the bug is fixed)
KNOWN_BUGS: dict[str, str] = {}


def _params(targets: list[Target]) -> list[object]:
    return [pytest.param(t, id=t.name, marks=pytest.mark.xfail(reason=KNOWN_BUGS[t.name], strict=True))
            if t.name in KNOWN_BUGS else pytest.param(t, id=t.name) for t in targets]


@pytest.mark.parametrize("target", _params(TARGETS))
def test_fuzz_target(target: Target) -> None:
    """Random and mutated real messages: a result or the allowed exception, nothing else."""

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(mutated(target.seeds))
    def run(data: bytes) -> None:
        _call(target, data)

    run()


@pytest.mark.parametrize("target", _params([t for t in TARGETS if t.seeds]))
def test_seeds_and_every_prefix(target: Target) -> None:
    """Every seed, and every prefix of it (a message cut anywhere), is handled cleanly."""
    for seed in target.seeds:
        step = max(1, len(seed) // 300)
        for i in range(0, len(seed) + 1, step):
            _call(target, seed[:i])


def test_targets_cover_the_tree() -> None:
    """The fuzz suite covers the text framers and the four mail probes at least."""
    names = {t.name for t in TARGETS}
    for must in ("textproto.frame_smtp_reply", "smtp.dialogue", "imap.dialogue", "pop3.dialogue",
                 "nntp.dialogue"):
        assert must in names
