"""Make network-supplied text safe for a terminal.

Everything a server sent is shown with control bytes, escape sequences, bidi overrides and other
invisible code points written as escapes (``\\x1b``, ``\\u202e``), so a hostile banner can neither
move the cursor, change colours, hide text nor fake a second result line. JSON output keeps the
exact text (JSON escapes control characters itself); only terminal renderers call this.
"""

from __future__ import annotations

import unicodedata

__all__ = ["safe_text"]

def _escape_char(ch: str) -> str:
    cp = ord(ch)
    if cp < 0x100:
        return f"\\x{cp:02x}"
    if cp < 0x10000:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


def safe_text(text: str | bytes | None, limit: int = 200) -> str:
    """Escape control and invisible characters and cut to ``limit`` characters (with a marker).

    An escape is never split: the output holds at most ``limit`` characters plus the marker "…",
    which appears only when something was cut."""
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "backslashreplace")
    out: list[str] = []
    n = 0
    for ch in text:
        if ch == "\\":
            piece = "\\\\"
        elif ch.isprintable() and unicodedata.category(ch) not in ("Cf", "Co", "Cs", "Zl", "Zp"):
            piece = ch
        else:
            piece = _escape_char(ch)
        n += len(piece)
        if n > limit:
            out.append("…")
            break
        out.append(piece)
    return "".join(out)
