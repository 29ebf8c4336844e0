"""Streaming reader of an ``nmap-service-probes`` file (nmap's service database).

The format (nmap's "nmap-service-probes File Format" documentation) is line oriented; blank lines
and lines starting with ``#`` are ignored, every other line is one directive:

    Exclude <port spec>                      once, before the first Probe
    Probe <TCP|UDP> <name> q<d><payload><d> [no-payload]
    ports <list>    sslports <list>          comma separated ports and ranges: 21-25,53,80
    rarity <1-9>    totalwaitms <ms>    tcpwrappedms <ms>
    fallback <probe>[,<probe>...]
    match <service> m<d><regex><d>[is] [p<d>..<d>] [v..] [i..] [h..] [o..] [d..] [cpe:<d>..<d>[a]]
    softmatch <service> m<d><regex><d>[is] (version fields are allowed and ignored by nmap)

``<d>`` is any delimiter character; the text between the delimiters is taken verbatim up to the
next occurrence of the delimiter (there is no escaping of the delimiter itself, which is why the
file uses ``m|..|``, ``m=..=``, ``m%..%``...). The payload uses C escapes (``\\0 \\a \\b \\f \\n \\r
\\t \\v \\\\ \\xHH``). Every match/softmatch belongs to the Probe above it and keeps its line number,
which names the rule in our evidence ("nmap-service-probes:<line>").

The file is read as bytes and decoded as latin-1 (one character per byte), so a regex meaning byte
0xE9 stays byte 0xE9. A line that does not parse is counted with its reason and skipped; nothing
here raises on file content.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["DBProbe", "ParseResult", "RawMatch", "parse_lines", "parse_match", "parse_ports", "probe_key", "unescape_c"]

#: version-info templates a match line may carry (nmap: p v i h o d and cpe:)
FIELDS = ("p", "v", "i", "h", "o", "d")


@dataclass(frozen=True, slots=True)
class DBProbe:
    """One ``Probe`` of the database and the directives that followed it."""

    #: "TCP" or "UDP"
    protocol: str
    #: the probe's name (``NULL``, ``GetRequest``, ``DNSVersionBindReqTCP``...)
    name: str
    #: the bytes nmap sends (empty for NULL), C escapes decoded
    payload: bytes
    #: line of the Probe directive
    line: int
    #: ports on which nmap expects this probe to work, plain and inside TLS
    ports: frozenset[int] = frozenset()
    sslports: frozenset[int] = frozenset()
    #: nmap's rarity (1 = common .. 9 = rare); 5 when the file gives none (nmap's default)
    rarity: int = 5
    totalwaitms: int | None = None
    tcpwrappedms: int | None = None
    #: probes whose matches are tried after this one's (before NULL's, for TCP)
    fallback: tuple[str, ...] = ()
    #: the Probe line's ``no-payload`` flag (newer nmap: UDP payload only sent by the payload module)
    no_payload: bool = False


@dataclass(slots=True)
class RawMatch:
    """One match/softmatch line as written (the regex is compiled later, on first use)."""

    service: str
    soft: bool
    #: PCRE source, latin-1 text
    pattern: str
    ignorecase: bool
    dotall: bool
    #: p/v/i/h/o/d templates (latin-1 text), absent ones missing
    templates: dict[str, str]
    #: ``cpe:/...`` templates, in line order, each with the ``cpe:/`` prefix
    cpe: tuple[str, ...]
    line: int
    probe: str


@dataclass
class ParseResult:
    """Everything read from one file."""

    #: probes in file order (the NULL probe included)
    probes: list[DBProbe] = field(default_factory=list)
    #: per probe name (and protocol, as "TCP:NAME"), its match lines in file order
    matches: dict[str, list[RawMatch]] = field(default_factory=dict)
    #: the Exclude directive's text, if any
    exclude: str | None = None
    lines: int = 0
    nmatch: int = 0
    nsoft: int = 0
    #: reason -> count of lines skipped
    errors: Counter[str] = field(default_factory=Counter)
    #: the first lines skipped, (line, reason), at most ``MAX_KEPT_ERRORS``
    error_lines: list[tuple[int, str]] = field(default_factory=list)


MAX_KEPT_ERRORS = 200

_C_ESCAPES = {"0": 0, "a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 0x5C}
_HEX2 = re.compile(r"[0-9A-Fa-f]{2}")


def unescape_c(text: str) -> bytes:
    r"""Decode nmap's C-style escapes (probe payloads, ``$SUBST`` strings) to bytes.

    ``\0 \a \b \f \n \r \t \v \\ \xHH``; any other escaped character stands for itself (``\|``,
    ``\"``). Raises ValueError on a bad ``\x`` or a trailing backslash."""
    out = bytearray()
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c != "\\":
            out.append(ord(c) & 0xFF)
            i += 1
            continue
        if i + 1 >= n:
            raise ValueError("trailing backslash")
        e = text[i + 1]
        if e in _C_ESCAPES:
            out.append(_C_ESCAPES[e])
            i += 2
        elif e == "x":
            if not _HEX2.fullmatch(text, i + 2, i + 4):
                raise ValueError(r"bad \x escape")
            out.append(int(text[i + 2 : i + 4], 16))
            i += 4
        else:
            out.append(ord(e) & 0xFF)
            i += 2
    return bytes(out)


def parse_ports(text: str) -> frozenset[int]:
    """``21-25,53,80`` -> the set of ports; raises ValueError on a bad list (nmap's rules)."""
    ports: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise ValueError("empty port list item")
        lo_s, dash, hi_s = part.partition("-")
        if not lo_s.strip().isdigit() or (dash and not hi_s.strip().isdigit()):
            raise ValueError(f"bad port item {part!r}")
        lo = int(lo_s)
        hi = int(hi_s) if dash else lo
        if not 0 <= lo <= hi <= 65535:
            raise ValueError(f"bad port range {part!r}")
        ports.update(range(lo, hi + 1))
    return frozenset(ports)


def _template(text: str, pos: int) -> tuple[str, str, str, int] | None:
    """Read one ``<mode><d>body<d><flags>`` at ``pos`` (after blanks): (mode, body, flags, end).

    None at the end of the line; ValueError when the template is malformed (nmap's
    next_template: the mode is letters and ':'; the delimiter is the next character)."""
    n = len(text)
    while pos < n and text[pos] in " \t\r\n":
        pos += 1
    if pos >= n:
        return None
    q = pos
    while q < n and (text[q].isalpha() or text[q] == ":"):
        q += 1
    if q >= n or text[q] in " \t\r\n" or q == pos:
        raise ValueError("template without delimiter")
    delim = text[q]
    end = text.find(delim, q + 1)
    if end < 0:
        raise ValueError(f"unterminated {text[pos:q]}{delim}..{delim}")
    body = text[q + 1 : end]
    f = end + 1
    while f < n and text[f].isalpha():
        f += 1
    return text[pos:q], body, text[end + 1 : f], f


def parse_match(line: str, lineno: int, probe: str) -> RawMatch:
    """Parse one ``match``/``softmatch`` line; ValueError (with the reason) when malformed."""
    soft = line.startswith("softmatch ")
    rest = line[10:] if soft else line[6:]
    rest = rest.lstrip(" ")
    sp = rest.find(" ")
    if sp <= 0:
        raise ValueError("no service name")
    service = rest[:sp]
    got = _template(rest, sp)
    if got is None or got[0] != "m":
        raise ValueError("pattern must be m<d>...<d>")
    _, pattern, flags, pos = got
    bad = set(flags) - {"i", "s"}
    if bad:
        raise ValueError(f"illegal regex option {''.join(sorted(bad))!r}")
    templates: dict[str, str] = {}
    cpe: list[str] = []
    while True:
        got = _template(rest, pos)
        if got is None:
            break
        mode, body, _flags, pos = got
        if mode in FIELDS:
            # a repeated field replaces the earlier one (nmap does the same)
            templates[mode] = body
        elif mode == "cpe:":
            # the trailing "a" flag of cpe:/.../a is nmap's "also match the CPE name" marker; the
            # value itself is what matters here
            cpe.append("cpe:/" + body)
        else:
            raise ValueError(f"unknown template {mode!r}")
    return RawMatch(
        service=service,
        soft=soft,
        pattern=pattern,
        ignorecase="i" in flags,
        dotall="s" in flags,
        templates=templates,
        cpe=tuple(cpe),
        line=lineno,
        probe=probe,
    )


def _parse_probe_line(text: str, lineno: int) -> DBProbe:
    """``TCP <name> q<d>payload<d> [no-payload]`` (the text after ``Probe ``)."""
    proto, sp, rest = text.partition(" ")
    if proto not in ("TCP", "UDP") or not sp:
        raise ValueError("protocol must be TCP or UDP")
    name, sp, rest = rest.partition(" ")
    if not name or not name[0].isalnum() or not sp:
        raise ValueError("bad probe name")
    if len(rest) < 2 or rest[0] != "q":
        raise ValueError("probe string must be q<d>...<d>")
    delim = rest[1]
    end = rest.find(delim, 2)
    if end < 0:
        raise ValueError("unterminated probe string")
    payload = unescape_c(rest[2:end])
    tail = rest[end + 1 :].split()
    return DBProbe(protocol=proto, name=name, payload=payload, line=lineno, no_payload="no-payload" in tail)


def probe_key(protocol: str, name: str) -> str:
    """Key of a probe in :attr:`ParseResult.matches`: ``TCP:NULL``, ``UDP:DNSVersionBindReq``."""
    return f"{protocol}:{name}"


def parse_lines(lines: Iterable[bytes]) -> ParseResult:
    """Parse the file's lines (bytes, as read in binary mode) into probes and raw match lines."""
    res = ParseResult()
    probe: DBProbe | None = None
    #: the directives read since the Probe line, applied when the next Probe (or the end) comes
    facts: dict[str, Any] = {}

    def close() -> None:
        nonlocal probe
        if probe is not None:
            res.probes.append(replace(probe, **facts))
        probe = None
        facts.clear()

    def bad(lineno: int, reason: str) -> None:
        res.errors[reason] += 1
        if len(res.error_lines) < MAX_KEPT_ERRORS:
            res.error_lines.append((lineno, reason))

    lineno = 0
    for raw in lines:
        lineno += 1
        line = raw.decode("latin-1").rstrip("\r\n")
        if not line or line[0] == "#" or not line.strip():
            continue
        word, _, arg = line.partition(" ")
        try:
            if word in ("match", "softmatch"):
                if probe is None:
                    raise ValueError("match before any Probe")
                m = parse_match(line, lineno, probe.name)
                res.matches.setdefault(probe_key(probe.protocol, probe.name), []).append(m)
                if m.soft:
                    res.nsoft += 1
                else:
                    res.nmatch += 1
            elif word == "Probe":
                close()
                probe = _parse_probe_line(arg, lineno)
                key = probe_key(probe.protocol, probe.name)
                if any(probe_key(p.protocol, p.name) == key for p in res.probes):
                    probe = None
                    raise ValueError("duplicate Probe name")
                res.matches.setdefault(key, [])
            elif word == "Exclude":
                if res.exclude is not None or res.probes or probe is not None:
                    raise ValueError("Exclude must come once, before the probes")
                res.exclude = arg.strip()
            elif word in ("ports", "sslports", "rarity", "totalwaitms", "tcpwrappedms", "fallback"):
                if probe is None:
                    raise ValueError(f"{word} before any Probe")
                if word in ("ports", "sslports"):
                    facts[word] = parse_ports(arg)
                elif word == "fallback":
                    names = tuple(x for x in re.split(r"[,\s]+", arg) if x)
                    if not names:
                        raise ValueError("empty fallback")
                    facts[word] = names
                else:
                    value = int(arg.strip())
                    if word == "rarity" and not 1 <= value <= 9:
                        raise ValueError("rarity must be 1-9")
                    if word != "rarity" and not 100 <= value <= 300000:
                        raise ValueError(f"{word} must be 100-300000 ms")
                    facts[word] = value
            else:
                raise ValueError(f"unknown directive {word[:20]!r}")
        except ValueError as e:
            bad(lineno, str(e) or type(e).__name__)
    close()
    res.lines = lineno
    return res
