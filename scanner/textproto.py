"""Framers and small parsers for line-based text protocols (SMTP, POP3, IMAP, NNTP, banners).

Part of the stable probe API. Every framer follows the :data:`scanner.api.Framer` contract:
return the length of the first complete message, ``None`` for "need more", or raise
:class:`scanner.api.NotThisProtocol`. Every framer bounds what it accepts (line length, line count)
so a hostile peer cannot make it buffer forever.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from scanner.api import Finding, FrameCursor, Framer, NotThisProtocol, ResumableFramer

__all__ = [
    "MAX_LINE",
    "MAX_LINES",
    "DotBlockFramer",
    "IMAPTaggedFramer",
    "LineFramer",
    "SMTPReplyFramer",
    "BannerRule",
    "decode_cstring",
    "decode_text",
    "frame_dot_block",
    "frame_imap_tagged",
    "frame_line",
    "frame_smtp_reply",
    "looks_like_version",
    "match_banner",
    "rule_name",
    "split_lines",
]

#: longest line any text framer accepts (RFC 5321 allows 512; servers send longer banners)
MAX_LINE = 8192
#: most lines in one multi-line reply
MAX_LINES = 2000


class _LineWalker:
    """Walks the complete lines of a growing buffer once each (the shared part of the cursors).

    ``pos`` is where the next unfinished line starts, ``scan`` how far that line was already
    searched for its LF: a byte is examined once however the bytes arrive.
    """

    __slots__ = ("lines", "max_line", "pos", "scan")

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self.pos = 0
        self.scan = 0
        self.lines = 0

    def next_line(self, buf: bytes | bytearray) -> int | None:
        """The end (after LF) of the next complete line starting at ``pos``; None: not complete yet."""
        start = self.pos
        end = buf.find(b"\n", max(self.scan, start), start + self.max_line + 1)
        if end < 0:
            if len(buf) - start > self.max_line:
                raise NotThisProtocol(f"line longer than {self.max_line} bytes")
            self.scan = len(buf)
            return None
        self.lines += 1
        if self.lines > MAX_LINES:
            raise NotThisProtocol(f"more than {MAX_LINES} lines in one reply")
        self.pos = self.scan = end + 1
        return end + 1


class _LineCursor(_LineWalker):
    __slots__ = ()

    def feed(self, buf: bytes | bytearray) -> int | None:
        end = buf.find(b"\n", self.scan, self.max_line + 1)
        if end < 0:
            if len(buf) > self.max_line:
                raise NotThisProtocol(f"no line end within {self.max_line} bytes")
            self.scan = len(buf)
            return None
        return end + 1


class LineFramer(ResumableFramer):
    """Frame one line ending in LF (CRLF or bare LF), at most ``max_line`` bytes."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line

    def cursor(self) -> FrameCursor:
        return _LineCursor(self.max_line)

    def __call__(self, buf: bytes, max_line: int | None = None) -> int | None:
        """Frame ``buf`` whole; ``max_line`` overrides the framer's limit (older call style)."""
        return _LineCursor(self.max_line if max_line is None else max_line).feed(buf)


_SMTP_LINE = re.compile(rb"[2-5][0-9][0-9]([ -]|\r?\n)")
_SMTP_PREFIX = re.compile(rb"^[2-5]?[0-9]?[0-9]?$")


class _SMTPCursor(_LineWalker):
    __slots__ = ("head_ok",)

    def __init__(self, max_line: int) -> None:
        super().__init__(max_line)
        self.head_ok = False

    def feed(self, buf: bytes | bytearray) -> int | None:
        if not self.head_ok:
            if len(buf) >= 4 and not _SMTP_LINE.match(buf[:5] if len(buf) >= 5 else bytes(buf) + b" "):
                raise NotThisProtocol("not a three-digit reply line")
            if len(buf) < 4 and not _SMTP_PREFIX.match(buf):
                raise NotThisProtocol("not a three-digit reply line")
            self.head_ok = len(buf) >= 5
        code = buf[:3]
        while True:
            start = self.pos
            end = self.next_line(buf)
            if end is None:
                return None
            line = buf[start:end]
            if line[:3] != code or not _SMTP_LINE.match(line[:5] if len(line) >= 5 else line):
                raise NotThisProtocol("reply line with a different code")
            if line[3:4] != b"-":
                return end


class SMTPReplyFramer(ResumableFramer):
    """Frame an SMTP-style (RFC 5321 §4.2) reply: ``ddd-`` lines ending with a ``ddd `` line.

    Also serves FTP-like and the Exchange link-state banners. All lines must carry the same code.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line

    def cursor(self) -> FrameCursor:
        return _SMTPCursor(self.max_line)

    def __call__(self, buf: bytes, max_line: int | None = None) -> int | None:
        """Frame ``buf`` whole; ``max_line`` overrides the framer's limit (older call style)."""
        return _SMTPCursor(self.max_line if max_line is None else max_line).feed(buf)


class _DotBlockCursor(_LineWalker):
    __slots__ = ()

    def feed(self, buf: bytes | bytearray) -> int | None:
        while True:
            start = self.pos
            end = self.next_line(buf)
            if end is None:
                return None
            if start == 0:
                if buf.startswith(b"-ERR") or buf[:1] in (b"4", b"5"):
                    return end
            elif buf[start:end].rstrip(b"\r\n") == b".":
                return end


class DotBlockFramer(ResumableFramer):
    """Frame a POP3/NNTP multi-line block: a status line, then lines up to a lone ``.`` line.

    A status line that says the command failed (``-ERR``, or an NNTP 4xx/5xx code) has no block:
    the message is that line alone.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line

    def cursor(self) -> FrameCursor:
        return _DotBlockCursor(self.max_line)

    def __call__(self, buf: bytes, max_line: int | None = None) -> int | None:
        """Frame ``buf`` whole; ``max_line`` overrides the framer's limit (older call style)."""
        return _DotBlockCursor(self.max_line if max_line is None else max_line).feed(buf)


#: frame one line ending in LF (CRLF or bare LF); ``frame_line(buf, max_line=N)`` also works
frame_line = LineFramer()
#: frame one SMTP-style multi-line reply (see :class:`SMTPReplyFramer`)
frame_smtp_reply = SMTPReplyFramer()
#: frame one POP3/NNTP dot-terminated block (see :class:`DotBlockFramer`)
frame_dot_block = DotBlockFramer()


_LITERAL = re.compile(rb"\{(\d{1,9})\+?\}\r?\n$")
#: largest IMAP literal a response may announce
MAX_LITERAL = 16 * 1024 * 1024


class _IMAPCursor(_LineWalker):
    __slots__ = ("prefix", "skip_to")

    def __init__(self, prefix: bytes, max_line: int) -> None:
        super().__init__(max_line)
        self.prefix = prefix
        #: the end of a literal being received (0: none)
        self.skip_to = 0

    def feed(self, buf: bytes | bytearray) -> int | None:
        while True:
            if self.skip_to:
                if len(buf) < self.skip_to:
                    return None
                self.pos = self.scan = self.skip_to
                self.skip_to = 0
            start = self.pos
            end = self.next_line(buf)
            if end is None:
                return None
            line = buf[start:end]
            # a line that starts after a literal continues the line the literal sits in
            if start == 0 or buf[start - 1 : start] == b"\n":
                if line.startswith(self.prefix):
                    return end
                if self.lines == 1 and not (line.startswith(b"* ") or line.startswith(b"+")):
                    raise NotThisProtocol("IMAP response line is neither untagged nor tagged")
            literal = _LITERAL.search(line)
            if literal:
                size = int(literal.group(1))
                if size > MAX_LITERAL:
                    raise NotThisProtocol("IMAP literal too large")
                self.skip_to = end + size
                if self.skip_to == end:
                    self.skip_to = 0


class IMAPTaggedFramer(ResumableFramer):
    """Frame an IMAP response that ends with the tagged line of ``tag``.

    Untagged lines before it are part of the message; literals (``{n}`` at a line end followed by
    ``n`` bytes) are skipped so a literal's content is never taken for a tagged line.
    """

    def __init__(self, tag: bytes, max_line: int = MAX_LINE) -> None:
        self.prefix = tag + b" "
        self.max_line = max_line
        self.__qualname__ = f"frame_imap_tagged({tag!r})"

    def cursor(self) -> FrameCursor:
        return _IMAPCursor(self.prefix, self.max_line)


def frame_imap_tagged(tag: bytes, max_line: int = MAX_LINE) -> Framer:
    """Make a framer for an IMAP response that ends with the tagged line of ``tag``
    (see :class:`IMAPTaggedFramer`)."""
    return IMAPTaggedFramer(tag, max_line)



class BannerRule(NamedTuple):
    """One row of a probe's banner table: a rule that names a product from the product's own words.

    ``rule_id`` is stable and readable (``exchange-2003-greeting``); :func:`match_banner` records it
    on the finding as ``portproof:<probe>/<rule_id>`` so every claim says which rule made it.
    ``version`` is the regex group holding the version (None: the banner shows none); a captured
    text that does not look like a version (:func:`looks_like_version`) is never claimed.
    """

    rule_id: str
    rx: re.Pattern[str]
    product: str
    version: int | str | None = None


#: a version starts with a digit (``4.96``, ``8.14.4/8.14.4``, ``2007f.404``, ``6.0.3790.1830``);
#: words such as "ready" or "server" are not versions
_VERSION_LIKE = re.compile(r"v?\d[\w.\-+~/]{0,63}")


def looks_like_version(text: str | None) -> bool:
    """True when ``text`` looks like a version: a digit first (an optional ``v`` before it)."""
    return bool(text) and _VERSION_LIKE.fullmatch(text or "") is not None


def rule_name(probe: str, rule_id: str) -> str:
    """The provenance string of one of our rules: ``portproof:<probe>/<rule_id>``."""
    return f"portproof:{probe}/{rule_id}"


def match_banner(rules: Sequence[BannerRule], text: str, finding: Finding, probe: str) -> re.Match[str] | None:
    """Apply the first rule whose regex matches ``text``: set the product, the version (when the
    rule's group matched something that looks like a version), confidence 10 and
    ``finding.rule`` (``portproof:<probe>/<rule_id>``) on ``finding``; return the match (None: no
    rule matched and ``finding`` is untouched)."""
    for rule in rules:
        m = rule.rx.search(text)
        if m:
            finding.product = rule.product
            finding.version = None
            if rule.version is not None:
                value = m.group(rule.version)
                if looks_like_version(value):
                    finding.version = value
            finding.confidence = 10
            finding.rule = rule_name(probe, rule.rule_id)
            return m
    return None


def split_lines(message: bytes) -> list[str]:
    """Split a framed text message into decoded lines without their line ends."""
    return [decode_text(line) for line in message.replace(b"\r\n", b"\n").split(b"\n") if line != b""]


def decode_text(data: bytes) -> str:
    """Decode protocol text: UTF-8 when valid, else latin-1 (never fails, never loses a byte)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def decode_cstring(data: bytes) -> str:
    """Decode a NUL-terminated or NUL-padded field of a binary protocol (an S7 SZL text, a DCE/RPC
    tower's pipe name): the bytes before the first NUL, latin-1 (never fails, one char per byte)."""
    return bytes(data).split(b"\x00", 1)[0].decode("latin-1")
