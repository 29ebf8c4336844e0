"""Framers and small parsers for line-based text protocols (SMTP, POP3, IMAP, NNTP, banners).

Part of the stable probe API. Every framer follows the :data:`scanner.api.Framer` contract:
return the length of the first complete message, ``None`` for "need more", or raise
:class:`scanner.api.NotThisProtocol`. Every framer bounds what it accepts (line length, line count)
so a hostile peer cannot make it buffer forever.
"""

from __future__ import annotations

import re

from scanner.api import Finding, Framer, NotThisProtocol

__all__ = [
    "MAX_LINE",
    "MAX_LINES",
    "decode_text",
    "frame_dot_block",
    "frame_imap_tagged",
    "frame_line",
    "frame_smtp_reply",
    "match_banner",
    "split_lines",
]

#: longest line any text framer accepts (RFC 5321 allows 512; servers send longer banners)
MAX_LINE = 8192
#: most lines in one multi-line reply
MAX_LINES = 2000


def frame_line(buf: bytes, max_line: int = MAX_LINE) -> int | None:
    """Frame one line ending in LF (CRLF or bare LF)."""
    end = buf.find(b"\n", 0, max_line + 1)
    if end < 0:
        if len(buf) > max_line:
            raise NotThisProtocol(f"no line end within {max_line} bytes")
        return None
    return end + 1


def _iter_lines(buf: bytes, max_line: int) -> list[tuple[int, int]]:
    """Complete lines of ``buf`` as (start, end-after-LF) spans, bounded by ``max_line``."""
    spans: list[tuple[int, int]] = []
    pos = 0
    while True:
        end = buf.find(b"\n", pos, pos + max_line + 1)
        if end < 0:
            if len(buf) - pos > max_line:
                raise NotThisProtocol(f"line longer than {max_line} bytes")
            return spans
        spans.append((pos, end + 1))
        pos = end + 1
        if len(spans) > MAX_LINES:
            raise NotThisProtocol(f"more than {MAX_LINES} lines in one reply")


_SMTP_LINE = re.compile(rb"[2-5][0-9][0-9]([ -]|\r?\n)")


def frame_smtp_reply(buf: bytes, max_line: int = MAX_LINE) -> int | None:
    """Frame an SMTP-style (RFC 5321 §4.2) reply: ``ddd-`` lines ending with a ``ddd `` line.

    Also serves FTP-like and the Exchange link-state banners. All lines must carry the same code.
    """
    if len(buf) >= 4 and not _SMTP_LINE.match(buf[:5] if len(buf) >= 5 else buf + b" "):
        raise NotThisProtocol("not a three-digit reply line")
    if len(buf) < 4 and not re.match(rb"^[2-5]?[0-9]?[0-9]?$", buf):
        raise NotThisProtocol("not a three-digit reply line")
    code = buf[:3]
    for start, end in _iter_lines(buf, max_line):
        line = buf[start:end]
        if line[:3] != code or not _SMTP_LINE.match(line[:5] if len(line) >= 5 else line):
            raise NotThisProtocol("reply line with a different code")
        if line[3:4] != b"-":
            return end
    return None


def frame_dot_block(buf: bytes, max_line: int = MAX_LINE) -> int | None:
    """Frame a POP3/NNTP multi-line block: a status line, then lines up to a lone ``.`` line.

    A status line that says the command failed (``-ERR``, or an NNTP 4xx/5xx code) has no block:
    the message is that line alone.
    """
    spans = _iter_lines(buf, max_line)
    if not spans:
        return None
    first = buf[spans[0][0] : spans[0][1]]
    if first.startswith(b"-ERR") or first[:1] in (b"4", b"5"):
        return spans[0][1]
    for start, end in spans[1:]:
        if buf[start:end].rstrip(b"\r\n") == b".":
            return end
    return None


_LITERAL = re.compile(rb"\{(\d{1,9})\+?\}\r?\n$")


def frame_imap_tagged(tag: bytes, max_line: int = MAX_LINE) -> Framer:
    """Make a framer for an IMAP response that ends with the tagged line of ``tag``.

    Untagged lines before it are part of the message; literals (``{n}`` at a line end followed by
    ``n`` bytes) are skipped so a literal's content is never taken for a tagged line.
    """
    prefix = tag + b" "

    def framer(buf: bytes) -> int | None:
        pos = 0
        lines = 0
        while True:
            end = buf.find(b"\n", pos, pos + max_line + 1)
            if end < 0:
                if len(buf) - pos > max_line:
                    raise NotThisProtocol(f"IMAP line longer than {max_line} bytes")
                return None
            line = buf[pos : end + 1]
            if pos == 0 or buf[pos - 1 : pos] == b"\n":
                if line.startswith(prefix):
                    return end + 1
                if lines == 0 and not (line.startswith(b"* ") or line.startswith(b"+")):
                    raise NotThisProtocol("IMAP response line is neither untagged nor tagged")
            lines += 1
            if lines > MAX_LINES:
                raise NotThisProtocol("too many IMAP response lines")
            literal = _LITERAL.search(line)
            pos = end + 1
            if literal:
                size = int(literal.group(1))
                if size > 16 * 1024 * 1024:
                    raise NotThisProtocol("IMAP literal too large")
                if len(buf) < pos + size:
                    return None
                pos += size

    return framer



#: a banner table row: (regex over the banner text, product, version group or None)
BannerRule = tuple[re.Pattern[str], str, int | None]


def match_banner(rules: list[BannerRule], text: str, finding: Finding) -> re.Match[str] | None:
    """Apply the first rule whose regex matches ``text``: set the product, the version (when the
    rule's group matched) and confidence 10 on ``finding``; return the match (None: no rule)."""
    for rx, product, vgroup in rules:
        m = rx.search(text)
        if m:
            finding.product = product
            if vgroup is not None and m.group(vgroup):
                finding.version = m.group(vgroup)
            finding.confidence = 10
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
