"""Property test of ``scanner.safe.safe_text``: nothing a terminal acts on survives it."""

from __future__ import annotations

import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.safe import safe_text

_BAD_CATEGORIES = {"Cc", "Cf", "Co", "Cs", "Zl", "Zp"}


def _clean(text: str) -> bool:
    return all(ch.isprintable() and unicodedata.category(ch) not in _BAD_CATEGORIES for ch in text)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), st.binary().map(lambda b: b.decode("latin-1")), st.binary()),
       st.integers(1, 300))
def test_safe_text_escapes_everything(value: str | bytes, limit: int) -> None:
    """Any input (text, latin-1 text, raw bytes) comes out printable, bounded, with no controls."""
    out = safe_text(value, limit)
    assert _clean(out), [hex(ord(c)) for c in out if not _clean(c)]
    assert len(out) <= limit + 11  # one escape (at most \\U0010ffff) and the cut marker past the limit


def test_safe_text_known_attacks() -> None:
    """Colours, OSC titles, CSI (C1), bidi overrides, line separators, NUL: all shown as escapes."""
    out = safe_text("a\x1b[31mb\x1b]0;t\x07\x9b2J\u202e\u2028\x00\\", 500)
    assert out == "a\\x1b[31mb\\x1b]0;t\\x07\\x9b2J\\u202e\\u2028\\x00\\\\"
