"""Cheap facts about a PCRE pattern that let the matcher skip most regexes without running them.

For each match line we want, without compiling it:

- whether it is anchored (``^`` first, no top-level ``|``),
- its literal prefix (the bytes right after ``^`` up to the first non-literal item), and
- the literal runs every match must contain (top-level literals not made optional by a
  quantifier).

A banner is then offered only to the lines whose prefix it starts with (a dict lookup per prefix
length) and whose required literals it contains (``bytes in bytes``); the regex is compiled and run
only after both checks pass. The analysis is conservative: anything it does not understand ends the
current literal run, and a top-level alternation makes the pattern "no facts" (always tried).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Facts", "analyse", "quick_prefix"]

#: one token of a PCRE pattern: a run of plain literal characters, an escape, a class, a
#: quantifier, or any other single character
_TOKEN = re.compile(
    r"(?P<run>(?:[^\\\[\](){}*+?.^$|]|\\[^A-Za-z0-9]|\\[rntafe]|\\x[0-9a-fA-F]{2}|\\0(?![0-7]))+)"
    r"|(?P<esc>\\(?:Q.*?(?:\\E|\Z)|x\{[^}]*\}|x[0-9a-fA-F]{0,2}|0[0-7]{0,2}|[1-9][0-9]*"
    r"|[gk]\{[^}]*\}|k<[^>]*>|[pP]\{[^}]*\}|.))"
    r"|(?P<cls>\[\^?\]?(?:\[:\^?[a-z]+:\]|\\.|[^\]\\])*\])"
    r"|(?P<quant>\{\d+(?:,\d*)?\}|[*+?])"
    r"|(?P<other>.)",
    re.S,
)
#: the escapes a run token may hold (each one literal byte)
_RUN_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|.)", re.S)
_INLINE_OPTION = re.compile(r"\(\?[a-zA-Z]*(?:-[a-zA-Z]*)?\)")
_SIMPLE = {"a": 0x07, "e": 0x1B, "f": 0x0C, "n": 0x0A, "r": 0x0D, "t": 0x09}
_HEX = "0123456789abcdefABCDEF"
#: escapes that match one item of a set (non-literal but harmless to skip)
_SET_ESCAPES = set("dDwWsShHvVN")
#: zero-width escapes: end the run but nothing to skip
_ZERO_WIDTH = set("bBAzZG")


@dataclass(frozen=True, slots=True)
class Facts:
    """What :func:`analyse` learnt about one pattern."""

    #: the pattern can only match at offset 0
    anchored: bool
    #: literal bytes every match starts with (lower-cased for a case-insensitive pattern)
    prefix: bytes
    #: literal runs every match contains (lower-cased when case-insensitive), longest first
    required: tuple[bytes, ...]


NO_FACTS = Facts(False, b"", ())


def _skip_class(p: str, i: int) -> int:
    """Index after the class starting at ``p[i] == '['``; -1 when unterminated."""
    i += 1
    if i < len(p) and p[i] == "^":
        i += 1
    if i < len(p) and p[i] == "]":
        i += 1
    while i < len(p):
        c = p[i]
        if c == "\\":
            i += 2
            continue
        if c == "[" and p.startswith("[:", i):
            end = p.find(":]", i + 2)
            if end > 0:
                i = end + 2
                continue
        if c == "]":
            return i + 1
        i += 1
    return -1


def _top_level_bar(p: str) -> bool:
    """True when ``p`` has an alternation ``|`` outside every group and class."""
    i = 0
    depth = 0
    while i < len(p):
        c = p[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            i = _skip_class(p, i)
            if i < 0:
                return True
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            return True
        i += 1
    return False


def _literal_escape(p: str, i: int) -> tuple[int, int] | None:
    r"""At ``p[i] == '\\'``: (byte, next index) when the escape is one literal byte, else None."""
    if i + 1 >= len(p):
        return None
    e = p[i + 1]
    if e in _SIMPLE:
        return _SIMPLE[e], i + 2
    if e == "x":
        j = i + 2
        if j < len(p) and p[j] == "{":
            return None
        k = j
        while k < len(p) and k < j + 2 and p[k] in _HEX:
            k += 1
        return (int(p[j:k], 16) if k > j else 0), k
    if e == "0":
        k = i + 2
        while k < len(p) and k < i + 4 and p[k] in "01234567":
            k += 1
        return int(p[i + 1 : k], 8), k
    if e.isascii() and e.isalnum():
        return None
    return ord(e) & 0xFF, i + 2


def _unescape(m: re.Match[str]) -> str:
    e = m.group(1)
    if len(e) == 3:
        return chr(int(e[1:], 16))
    if e in _SIMPLE:
        return chr(_SIMPLE[e])
    return "\x00" if e == "0" else e


def _run_bytes(text: str) -> bytes:
    """The bytes a run token stands for (plain characters and one-byte escapes)."""
    if "\\" in text:
        text = _RUN_ESCAPE.sub(_unescape, text)
    return text.encode("latin-1")


_LEAD = re.compile(
    r"\^((?:[^\\\[\](){}*+?.^$|]|\\[^A-Za-z0-9]|\\[rntafe]|\\x[0-9a-fA-F]{2}|\\0(?![0-7]))*)(\{0|[?*]?)"
)


def quick_prefix(pattern: str, ignorecase: bool) -> bytes:
    """The literal prefix of an anchored pattern (b"" when none or not anchored), much cheaper
    than :func:`analyse`; it is always a prefix of ``analyse(...).prefix``."""
    m = _LEAD.match(pattern)
    if not m or not m.group(1):
        return b""
    if ("|" in pattern and _top_level_bar(pattern)) or ("(?" in pattern and _INLINE_OPTION.search(pattern)):
        return b""
    run = _run_bytes(m.group(1))
    if m.group(2):
        # the last byte is optional ("a?", "a*", "a{0,n}")
        run = run[:-1]
    return run.lower() if ignorecase else run


def analyse(pattern: str, ignorecase: bool) -> Facts:
    """Facts about a PCRE pattern (latin-1 text); :data:`NO_FACTS` when it cannot tell."""
    p = pattern
    if "|" in p and _top_level_bar(p):
        return NO_FACTS
    if "(?" in p and _INLINE_OPTION.search(p):
        # (?i) / (?x) change how the rest reads; rare enough to try such lines always
        return NO_FACTS
    anchored = p.startswith("^")
    toks = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(p, 1 if anchored else 0)]
    runs: list[bytes] = []
    cur = bytearray()
    prefix: bytes | None = None if anchored else b""

    def end_run() -> None:
        nonlocal prefix
        if prefix is None:
            prefix = bytes(cur)
        if len(cur) >= 2:
            runs.append(bytes(cur))
        cur.clear()

    def quantifier(i: int) -> tuple[str, int]:
        """("", i) when toks[i] is no quantifier, else ("opt" | "rep", index after it)."""
        if i >= len(toks) or toks[i][0] != "quant":
            return "", i
        q = toks[i][1]
        i += 1
        if i < len(toks) and toks[i][1] in ("?", "+"):
            i += 1  # lazy or possessive mark
        return ("opt" if q in ("*", "?") or q.startswith(("{0,", "{0}")) else "rep"), i

    i = 0
    n = len(toks)
    while i < n:
        kind, text = toks[i]
        i += 1
        literal: int | None = None
        if kind == "run":
            q, i = quantifier(i)
            run = _run_bytes(text)
            if not q:
                cur.extend(run)
                continue
            cur.extend(run[:-1])
            literal = run[-1]
        elif kind == "esc":
            if text.startswith("\\Q"):
                # quoted literal text: take it and stop (a quantifier may follow its last byte)
                body = text[2:-2] if text.endswith("\\E") else text[2:]
                cur.extend(body[:-1].encode("latin-1"))
                end_run()
                break
            got = _literal_escape(text, 0)
            if got is not None and got[1] == len(text):
                literal = got[0]
            elif text[1:2] in _ZERO_WIDTH:
                end_run()
                continue
            elif text[1:2] not in _SET_ESCAPES:
                # back references, \g, \k, \p, \x{..}: stop here (what came before stays true)
                end_run()
                break
            q, i = quantifier(i)
        elif kind == "other" and text == "(":
            depth = 1
            while i < n and depth:
                k, t = toks[i]
                i += 1
                if k == "other":
                    depth += 1 if t == "(" else -1 if t == ")" else 0
            if depth:
                break
            q, i = quantifier(i)
        elif kind == "other" and text in "^$":
            end_run()
            continue
        elif kind == "quant" or (kind == "other" and text in ")|"):
            # nothing we understood before it: stop
            break
        elif kind == "other" and text != ".":
            literal = ord(text) & 0xFF
            q, i = quantifier(i)
        else:
            # a class or "."
            q, i = quantifier(i)
        if literal is None:
            end_run()
        elif q == "opt":
            end_run()
        else:
            cur.append(literal)
            if q == "rep":
                end_run()
    end_run()
    fold = (lambda b: b.lower()) if ignorecase else (lambda b: b)
    required = tuple(sorted({fold(r) for r in runs}, key=len, reverse=True))
    return Facts(anchored=anchored, prefix=fold(prefix or b""), required=required)
