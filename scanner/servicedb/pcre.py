"""PCRE pattern text to Python ``re`` pattern text (bytes semantics).

nmap compiles every ``m<d>...<d>`` of ``nmap-service-probes`` with PCRE, with no option but the
line's ``i`` (PCRE_CASELESS) and ``s`` (PCRE_DOTALL) flags. Python's ``re`` (3.11 and later) reads
most of that syntax the same way, atomic groups and possessive quantifiers included; this module
rewrites what it reads differently or lacks, and raises :class:`Unsupported` with a short reason
for what it cannot express:

- anchors: PCRE ``\\z`` is Python ``\\Z``; PCRE ``\\Z`` (end, or before a final newline) becomes
  ``(?=\\n?\\Z)``; ``\\G`` is ``\\A`` (the subject is always matched from offset 0). ``$`` is left
  alone: without PCRE_MULTILINE/PCRE_DOLLAR_ENDONLY both engines match it at the end or before a
  final ``\\n``.
- character types Python lacks: ``\\h \\H \\v \\V \\R \\N`` (PCRE ``\\v`` is vertical space, Python
  ``\\v`` a single VT byte), ``\\e``, ``\\cX``, ``\\o{...}``, ``\\x{...}``, one-digit ``\\xH``,
  octal escapes, ``\\Q...\\E`` quoting, POSIX classes ``[[:alpha:]]`` (ASCII, PCRE's default
  tables);
- classes: every literal inside ``[...]`` is written escaped, so a ``-`` next to ``\\w`` stays a
  hyphen (PCRE) instead of a bad range (Python), and ``[[``/``--``/``&&``/``||``/``~~`` never
  trigger Python's nested-set warnings;
- groups: ``(?<name>``, ``(?'name'``, ``\\k<name>``, ``\\g{n}``/``\\g{-n}``/``\\gn``; an inline option
  ``(?i)`` after the start of the pattern (Python only accepts global flags at the start) becomes a
  scoped ``(?i:...)`` running to the end of its enclosing group, re-opened after each ``|`` of that
  group as PCRE scopes it; ``(?#...)`` comments are dropped;
- backslash-digits: ``\\N`` is a back reference when the pattern has that many groups (or N < 10),
  else octal (PCRE's rule); ``{`` that does not start a PCRE quantifier is a literal (Python would
  read ``x{,3}`` as a quantifier).

Unsupported (raise): recursion and subroutine calls, ``(?|``, ``(*VERB)``, ``\\K``, ``\\X``, ``\\C``,
``\\p{..}``/``\\P{..}``, ``(?U)``/``(?J)``/``(?X)``, negated POSIX classes, code points above 0xFF.
Whatever survives this rewrite and still fails ``re.compile`` (variable-width look-behind,
forward references) is reported by the caller with Python's own message.
"""

from __future__ import annotations

import re

__all__ = ["Unsupported", "convert"]


class Unsupported(ValueError):
    """A PCRE construct this converter cannot express in Python ``re``; ``str()`` is the reason."""


#: POSIX class bodies as Python class items (ASCII: nmap uses PCRE's default "C" tables)
_POSIX = {
    "alpha": r"a-zA-Z",
    "digit": r"0-9",
    "alnum": r"a-zA-Z0-9",
    "upper": r"A-Z",
    "lower": r"a-z",
    "space": r"\t\n\x0b\x0c\r\x20",
    "blank": r"\x20\t",
    "punct": r"!-/:-@\[-`{-~",
    "xdigit": r"0-9A-Fa-f",
    "word": r"\w",
    "cntrl": r"\x00-\x1f\x7f",
    "print": r"\x20-\x7e",
    "graph": r"\x21-\x7e",
    "ascii": r"\x00-\x7f",
}

#: PCRE escapes that stand for a set of characters, as class items (outside a class: wrapped in [])
_SET_ESCAPES = {
    "d": r"\d", "D": r"\D", "w": r"\w", "W": r"\W", "s": r"\s", "S": r"\S",
    # horizontal / vertical white space (8-bit, non-UTF mode: the Latin-1 code points only)
    "h": r"\t\x20\xa0", "v": r"\n\x0b\x0c\r\x85",
}
_NEG_SETS = {"H": r"\t\x20\xa0", "V": r"\n\x0b\x0c\r\x85", "N": r"\n"}

_SIMPLE = {"a": 0x07, "e": 0x1B, "f": 0x0C, "n": 0x0A, "r": 0x0D, "t": 0x09}
_UNSUPPORTED_ESCAPES = {
    "K": r"\K (match start reset)",
    "X": r"\X (extended grapheme)",
    "C": r"\C (single code unit)",
    "p": r"\p{..} (Unicode property)",
    "P": r"\P{..} (Unicode property)",
    "L": r"\L (case folding escape)",
    "l": r"\l (case folding escape)",
    "U": r"\U (case folding escape)",
    "u": r"\u (case folding escape)",
}
_QUANT = re.compile(r"\{(\d+)(,(\d*))?\}")
_NAMED_GROUP = re.compile(r"\(\?(?:P?<([A-Za-z_]\w*)>|'([A-Za-z_]\w*)')")
_NAMED_REF = re.compile(r"\(\?P=([A-Za-z_]\w*)\)")
_CONDITION = re.compile(r"\(\?\((\d+|<[A-Za-z_]\w*>|'[A-Za-z_]\w*'|[A-Za-z_]\w*)\)")
_GREF = re.compile(r"\{(-?\d+|[A-Za-z_]\w*)\}|(-?\d+)")
_KREF = re.compile(r"<([A-Za-z_]\w*)>|'([A-Za-z_]\w*)'|\{([A-Za-z_]\w*)\}")
_GROUP_FLAGS = re.compile(r"\(\?([imsxJUX]*)(?:-([imsxJUX]*))?([:)])")
_HEX = "0123456789abcdefABCDEF"
#: control bytes that keep their familiar escape in the output (valid in and out of a class)
_READABLE = {"\n": r"\n", "\r": r"\r", "\t": r"\t", "\x0c": r"\f", "\x07": r"\a"}
_OCT = "01234567"


def _lit(code: int) -> str:
    """One literal byte as Python pattern text that means exactly that byte, in or out of a class."""
    c = chr(code)
    if c.isascii() and c.isalnum():
        return c
    if c in _READABLE:
        return _READABLE[c]
    if 0x21 <= code <= 0x7E or code == 0x20:
        return "\\" + c
    return f"\\x{code:02x}"


def _count_groups(pat: str) -> int:
    """Capturing groups in a PCRE pattern (for the back-reference/octal decision of ``\\NN``)."""
    n = 0
    i = 0
    in_class = False
    while i < len(pat):
        c = pat[i]
        if c == "\\":
            if pat.startswith("Q", i + 1):
                end = pat.find("\\E", i + 2)
                i = len(pat) if end < 0 else end + 2
                continue
            i += 2
            continue
        if in_class:
            if c == "[" and pat.startswith("[:", i):
                end = pat.find(":]", i + 2)
                i = i + 1 if end < 0 else end + 2
                continue
            if c == "]":
                in_class = False
        elif c == "[":
            in_class = True
            if pat.startswith("^", i + 1):
                i += 1
            if pat.startswith("]", i + 1):
                i += 1
        elif c == "(":
            if pat.startswith(("(?<=", "(?<!"), i):
                pass
            elif pat.startswith(("(?<", "(?'", "(?P<"), i) or not pat.startswith(("(?", "(*"), i):
                n += 1
        i += 1
    return n


class _Converter:
    """One pass over a PCRE pattern, writing Python pattern text (see the module docstring)."""

    def __init__(self, pat: str) -> None:
        self.p = pat
        self.i = 0
        self.out: list[str] = []
        self.ngroups = _count_groups(pat)
        #: per open group: the scoped-flag groups opened inside it by a mid-pattern ``(?i)``
        self.frames: list[list[str]] = [[]]

    # -- helpers -------------------------------------------------------------------------------
    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.p[j] if j < len(self.p) else ""

    def fail(self, why: str) -> Unsupported:
        return Unsupported(f"{why} at offset {self.i}")

    def read_hex_escape(self) -> int:
        r"""At the char after ``\x``: PCRE's ``\x{hhh}``, ``\xhh``, ``\xh`` or bare ``\x`` (NUL)."""
        p = self.p
        if self.peek() == "{":
            end = p.find("}", self.i)
            body = p[self.i + 1 : end] if end > 0 else ""
            if end < 0 or not body or any(ch not in _HEX for ch in body):
                raise self.fail(r"bad \x{...}")
            self.i = end + 1
            value = int(body, 16)
            if value > 0xFF:
                raise self.fail(r"\x{...} above 0xFF in a byte pattern")
            return value
        j = self.i
        while j < len(p) and j < self.i + 2 and p[j] in _HEX:
            j += 1
        value = int(p[self.i : j], 16) if j > self.i else 0
        self.i = j
        return value

    def read_octal(self, maxlen: int) -> int:
        j = self.i
        while j < len(self.p) and j < self.i + maxlen and self.p[j] in _OCT:
            j += 1
        value = int(self.p[self.i : j] or "0", 8)
        self.i = j
        return value & 0xFF if value <= 0x1FF else self._too_big()

    def _too_big(self) -> int:
        raise self.fail("octal escape above 0xFF")

    # -- escapes ---------------------------------------------------------------------------------
    def escape(self, in_class: bool) -> tuple[str, str]:
        r"""Read one escape (``self.i`` at the char after ``\``); return (kind, text).

        kind is ``"char"`` (text is one literal byte as Python text), ``"set"`` (class items,
        without brackets), ``"neg"`` (class items of a negated set), ``"raw"`` (Python text to
        emit as is, outside a class only) or ``"none"`` (emit nothing)."""
        c = self.peek()
        if not c:
            raise self.fail("pattern ends with a backslash")
        self.i += 1
        if c in _SET_ESCAPES:
            return "set", _SET_ESCAPES[c]
        if c in _NEG_SETS:
            if c == "N" and self.peek() == "{":
                raise self.fail(r"\N{name}")
            if in_class:
                raise self.fail(f"\\{c} inside a class")
            return "neg", _NEG_SETS[c]
        if c in _SIMPLE:
            return "char", _lit(_SIMPLE[c])
        if c == "x":
            return "char", _lit(self.read_hex_escape())
        if c == "c":
            ch = self.peek()
            if not ch or ord(ch) > 0x7F:
                raise self.fail(r"bad \c")
            self.i += 1
            return "char", _lit(ord(ch.upper()) ^ 0x40)
        if c == "o" and self.peek() == "{":
            end = self.p.find("}", self.i)
            body = self.p[self.i + 1 : end] if end > 0 else ""
            if end < 0 or not body or any(ch not in _OCT for ch in body):
                raise self.fail(r"bad \o{...}")
            self.i = end + 1
            value = int(body, 8)
            if value > 0xFF:
                raise self.fail(r"\o{...} above 0xFF")
            return "char", _lit(value)
        if c == "0":
            return "char", _lit(self.read_octal(2))
        if c.isdigit():
            self.i -= 1
            return self.digits(in_class)
        if c == "b" and in_class:
            return "char", _lit(0x08)
        if c in "QE":
            return ("quote" if c == "Q" else "none"), ""
        if in_class:
            if c.isascii() and c.isalpha() and c in _UNSUPPORTED_ESCAPES:
                raise self.fail(_UNSUPPORTED_ESCAPES[c])
            return "char", _lit(ord(c))
        if c in "bBAz":
            return "raw", "\\Z" if c == "z" else "\\" + c
        if c == "Z":
            return "raw", r"(?=\n?\Z)"
        if c == "G":
            return "raw", r"\A"
        if c == "R":
            return "raw", r"(?:\r\n|[\n\x0b\x0c\r\x85])"
        if c == "g":
            return "raw", self.gref()
        if c == "k":
            return "raw", self.kref()
        if c in _UNSUPPORTED_ESCAPES:
            raise self.fail(_UNSUPPORTED_ESCAPES[c])
        # PCRE (without PCRE_EXTRA) reads any other escaped character as itself
        return "char", _lit(ord(c))

    def digits(self, in_class: bool) -> tuple[str, str]:
        r"""``\1``..``\99...``: back reference or octal, by PCRE's rule."""
        p = self.p
        j = self.i
        while j < len(p) and p[j].isdigit():
            j += 1
        number = int(p[self.i : j])
        if number in (8, 9) and number > self.ngroups:
            # neither a group nor octal: PCRE reads "\8" / "\9" as the literal digit
            self.i += 1
            return "char", _lit(ord(p[self.i - 1]))
        if not in_class and (number < 10 or number <= self.ngroups):
            self.i = j
            if number > self.ngroups:
                raise self.fail(f"back reference to group {number}, which does not exist")
            return "raw", f"(?:\\{number})"
        if p[self.i] in "89":
            # "\8..." past the group count: not octal either, the literal digit
            self.i += 1
            return "char", _lit(ord(p[self.i - 1]))
        return "char", _lit(self.read_octal(3))

    def gref(self) -> str:
        r"""``\g{n}``, ``\g{-n}``, ``\gn``, ``\g-n``, ``\g{name}`` (at the char after ``\g``)."""
        p = self.p
        m = _GREF.match(p, self.i)
        if not m:
            raise self.fail(r"bad \g reference")
        self.i = m.end()
        ref = m.group(1) or m.group(2)
        if ref[0].isalpha() or ref[0] == "_":
            return f"(?P={ref})"
        n = int(ref)
        if n < 0:
            n = _count_groups(p[: m.start()]) + 1 + n
        if n <= 0 or n > self.ngroups:
            raise self.fail(f"\\g reference to group {ref}")
        return f"(?:\\{n})"

    def kref(self) -> str:
        r"""``\k<name>``, ``\k'name'``, ``\k{name}`` (at the char after ``\k``)."""
        m = _KREF.match(self.p, self.i)
        if not m:
            raise self.fail(r"bad \k reference")
        self.i = m.end()
        return f"(?P={m.group(1) or m.group(2) or m.group(3)})"

    # -- classes ---------------------------------------------------------------------------------
    def char_class(self) -> str:
        """At the char after ``[``: read up to the closing ``]``; return the Python class."""
        p = self.p
        out = ["["]
        if self.peek() == "^":
            out.append("^")
            self.i += 1
        #: items as (kind, text); kind "char" (one byte, can be a range end) or "set"
        items: list[tuple[str, str]] = []
        first = True
        while True:
            if self.i >= len(p):
                raise self.fail("missing ] for a character class")
            c = p[self.i]
            if c == "]" and not first:
                self.i += 1
                break
            first = False
            if c == "[" and p.startswith(("[:", "[.", "[="), self.i):
                end = p.find(p[self.i + 1] + "]", self.i + 2)
                if end > 0:
                    name = p[self.i + 2 : end]
                    if p[self.i + 1] != ":":
                        raise self.fail("POSIX collating element")
                    if name.startswith("^"):
                        raise self.fail("negated POSIX class")
                    if name not in _POSIX:
                        raise self.fail(f"unknown POSIX class {name!r}")
                    items.append(("set", _POSIX[name]))
                    self.i = end + 2
                    continue
            if c == "\\":
                self.i += 1
                kind, text = self.escape(in_class=True)
                if kind == "quote":
                    end = p.find("\\E", self.i)
                    end = len(p) if end < 0 else end
                    items.extend(("char", _lit(ord(ch))) for ch in p[self.i : end])
                    self.i = min(len(p), end + 2)
                elif kind != "none":
                    items.append((kind, text))
                continue
            items.append(("dash" if c == "-" else "char", _lit(ord(c))))
            self.i += 1
        # PCRE: an unescaped "-" makes a range only between two single characters ("a-c-e" is a-c,
        # "-", e); beside a set like \w, first or last, it is a literal hyphen
        k = 0
        while k < len(items):
            kind, text = items[k]
            if kind == "char" and k + 2 < len(items) and items[k + 1][0] == "dash" and items[k + 2][0] == "char":
                out.append(f"{text}-{items[k + 2][1]}")
                k += 3
                continue
            out.append(text)
            k += 1
        out.append("]")
        return "".join(out)

    # -- main loop -------------------------------------------------------------------------------
    def run(self) -> str:
        p = self.p
        out = self.out
        while self.i < len(p):
            c = p[self.i]
            if c == "\\":
                self.i += 1
                kind, text = self.escape(in_class=False)
                if kind == "quote":
                    end = p.find("\\E", self.i)
                    end = len(p) if end < 0 else end
                    out.append("".join(_lit(ord(ch)) for ch in p[self.i : end]))
                    self.i = min(len(p), end + 2)
                elif kind == "set":
                    out.append(text if text.startswith("\\") and len(text) == 2 else f"[{text}]")
                elif kind == "neg":
                    out.append(f"[^{text}]")
                elif kind != "none":
                    out.append(text)
            elif c == "[":
                self.i += 1
                out.append(self.char_class())
            elif c == "(":
                self.open_group()
            elif c == ")":
                if len(self.frames) == 1:
                    raise self.fail("unmatched )")
                frame = self.frames.pop()
                out.append(")" * len(frame))
                out.append(")")
                self.i += 1
            elif c == "|":
                frame = self.frames[-1]
                out.append(")" * len(frame))
                out.append("|")
                out.extend(f"(?{flags}:" for flags in frame)
                self.i += 1
            elif c == "{":
                m = _QUANT.match(p, self.i)
                if m:
                    out.append(m.group(0))
                    self.i = m.end()
                else:
                    out.append("\\{")
                    self.i += 1
            elif c == "}":
                out.append("\\}")
                self.i += 1
            else:
                out.append(c if c.isascii() and c != "\x00" else _lit(ord(c)))
                self.i += 1
        if len(self.frames) != 1:
            raise self.fail("missing )")
        out.append(")" * len(self.frames[0]))
        return "".join(out)

    def open_group(self) -> None:
        p = self.p
        i = self.i
        out = self.out
        if p.startswith("(*", i):
            raise self.fail("(*VERB)")
        if not p.startswith("(?", i):
            out.append("(")
            self.frames.append([])
            self.i += 1
            return
        rest = p[i + 2 : i + 4]
        if rest.startswith("#"):
            end = p.find(")", i)
            if end < 0:
                raise self.fail("unterminated (?#")
            self.i = end + 1
            return
        for head in ("(?:", "(?=", "(?!", "(?<=", "(?<!", "(?>"):
            if p.startswith(head, i):
                out.append(head)
                self.frames.append([])
                self.i += len(head)
                return
        m = _NAMED_GROUP.match(p, i)
        if m:
            out.append(f"(?P<{m.group(1) or m.group(2)}>")
            self.frames.append([])
            self.i = m.end()
            return
        m = _NAMED_REF.match(p, i)
        if m:
            out.append(m.group(0))
            self.i = m.end()
            return
        m = _CONDITION.match(p, i)
        if m:
            ref = m.group(1).strip("<>'")
            if ref == "R" or (ref.startswith("R") and ref[1:].isdigit()):
                raise self.fail("recursion condition")
            out.append(f"(?({ref})")
            self.frames.append([])
            self.i = m.end()
            return
        m = _GROUP_FLAGS.match(p, i)
        if m:
            on, off, closer = m.group(1), m.group(2) or "", m.group(3)
            bad = set(on + off) & set("JUX")
            if bad:
                raise self.fail(f"option (?{''.join(sorted(bad))}) has no Python equivalent")
            flags = on + (f"-{off}" if off else "")
            self.i = m.end()
            if closer == ":":
                out.append(f"(?{flags}:")
                self.frames.append([])
            elif not flags:
                pass
            elif i == 0 and not off:
                out.append(f"(?{on})")
            else:
                # a mid-pattern option runs to the end of the enclosing group (PCRE)
                out.append(f"(?{flags}:")
                self.frames[-1].append(flags)
            return
        raise self.fail(f"group syntax {p[i:i + 4]!r}")


def convert(pattern: str) -> str:
    """Rewrite PCRE pattern text (latin-1 decoded bytes) as Python ``re`` pattern text.

    The result, encoded as latin-1, compiles as a bytes pattern with the same meaning (flags
    ``i``/``s`` are passed separately as ``re.IGNORECASE``/``re.DOTALL``). Raises
    :class:`Unsupported` with the reason when a construct has no Python equivalent."""
    return _Converter(pattern).run()
