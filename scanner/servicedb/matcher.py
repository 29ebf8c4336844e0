"""The service database: lazy parse, lazy compile, indexed matching, version-field substitution.

Matching follows nmap's service scan (``service_scan.cc``, "Technique Described" in nmap's book):

- a reply to probe P is tried against P's match lines in file order, then against the lines of
  each probe named by P's ``fallback`` directive, then (TCP only) against the NULL probe's lines;
  the NULL probe falls back to nothing;
- the first hard ``match`` whose regex matches wins;
- a ``softmatch`` names the service only. nmap then keeps probing for a hard match of that
  service; here, within the one reply we hold, the search goes on through the remaining lines,
  considering only hard matches of the soft-matched service, and the softmatch is returned when
  none matches;
- the regex runs on the reply as received (``pcre_exec`` on the whole buffer, unanchored unless
  the pattern says ``^``), here on at most :data:`MAX_DATA` bytes.

Version fields (``p/ v/ i/ h/ o/ d/ cpe:/``) are filled as nmap fills them: ``$1``..``$9``,
``$P(n)`` (printable bytes of group n), ``$SUBST(n,"from","to")``, ``$I(n,">")``/``$I(n,"<")``
(group n as an unsigned big/little-endian integer); trailing blanks and commas are trimmed; a
field that refers to a group the match did not reach, or that would not fit nmap's buffer
(product, version, hostname and CPE 80 bytes, info 256, OS and device type 32), is left empty.
Substituted values inside a CPE are lower-cased and escaped as CPE requires.

Leading blanks of a filled field are trimmed too (nmap's own output does so for host names).

Speed: each probe's lines are indexed by their literal prefix (up to 64 bytes, see
:mod:`scanner.servicedb.literals`), so a banner is only offered to the lines whose prefix it
starts with, plus the lines that have no prefix; within one prefix, lines are filed by a rare
4-byte substring of their required literals (one set intersection with the reply's substrings),
and a line's required literals are checked with ``in`` before its regex is compiled (once per
process) and run. A line whose regex runs longer than :data:`SLOW_SECONDS` on a reply twice is
quarantined for the rest of the process (Python's ``re`` cannot be interrupted; the data cap and
the quarantine bound the damage: on 16 KB of hostile single-line data, three SMTP lines of nmap
7.93's file backtrack quadratically for about a second, and only once their literals are present).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Final

from scanner.servicedb.literals import Facts, analyse, quick_prefix
from scanner.servicedb.parser import DBProbe, ParseResult, RawMatch, parse_lines, probe_key, unescape_c
from scanner.servicedb.pcre import Unsupported, convert

__all__ = ["MAX_DATA", "SLOW_SECONDS", "DBMatch", "ServiceDB"]

#: bytes of a reply that the regexes see (nmap reads at most ~4 KB per probe before giving up)
MAX_DATA: Final = 16 * 1024
#: a line whose regex runs longer than this on a reply, twice, is quarantined for the process
SLOW_SECONDS: Final = 0.05
_STRIKES: Final = 2
#: at most this many prefix bytes make an index key
_KEY_MAX: Final = 64
#: length of the substrings that split large buckets, and what "large" means
_GRAM: Final = 4
_SMALL_BUCKET: Final = 12
#: nmap's buffer size per version field (bytes, NUL included)
_FIELD_LIMITS: Final = {"p": 80, "v": 80, "i": 256, "h": 80, "o": 32, "d": 32}
_CPE_LIMIT: Final = 80
_CPE_SPECIAL: Final = frozenset(b":/?#[]@!$&'()*+,;=%<>\"")
_CMD: Final = re.compile(r"([A-Za-z]+)\(")
#: an integer argument of a substitution command (C strtol, base 0)
_INT: Final = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F]+|0[0-7]*|[1-9]\d*)")


@dataclass(frozen=True, slots=True)
class DBMatch:
    """What one line of the service database says about a reply."""

    #: nmap's service name ("smtp", "ftp", "domain", "ssl/http"...); "ssl/" is prefixed when the
    #: reply came through TLS (``tls=True``), as nmap reports a service found inside its SSL tunnel
    service: str
    product: str | None
    version: str | None
    #: nmap's extra info (``i/``)
    info: str | None
    #: ``h/``
    hostname: str | None
    #: ``o/``
    ostype: str | None
    #: ``d/``
    devicetype: str | None
    #: ``cpe:/...`` names, in line order
    cpe: tuple[str, ...]
    #: a softmatch: the service is known; a product, when given, is the line's generic name
    soft: bool
    #: the probe whose match list held the line (may be a fallback probe or NULL)
    probe: str
    #: line number in the file
    line: int

    @property
    def rule(self) -> str:
        """The rule that made this claim, as evidence: ``nmap-service-probes:<line>``."""
        return f"nmap-service-probes:{self.line}"


class _Rule:
    """One match line with its lazily computed facts and lazily compiled regex."""

    __slots__ = ("facts", "raw", "rx", "slow", "strikes", "tail")

    def __init__(self, raw: RawMatch) -> None:
        self.raw = raw
        self.facts: Facts | None = None
        #: required literals beyond the indexed prefix
        self.tail: tuple[bytes, ...] = ()
        #: None: not compiled yet; False: does not compile; else the compiled pattern
        self.rx: re.Pattern[bytes] | bool | None = None
        #: runs that took longer than SLOW_SECONDS; at _STRIKES the line is quarantined (slow)
        self.strikes = 0
        self.slow = False

    def ensure_facts(self) -> Facts:
        facts = self.facts
        if facts is None:
            facts = analyse(self.raw.pattern, self.raw.ignorecase)
            self.tail = tuple(r for r in facts.required if not (facts.anchored and facts.prefix.startswith(r)))
            self.facts = facts
        return facts


#: one rule as the index sees it: (rule index, literals the data must contain)
_Entry = tuple[int, tuple[bytes, ...]]


class _Grams:
    """The 4-byte substrings of one reply, computed once per :meth:`ServiceDB.match` call."""

    __slots__ = ("_sets", "data", "low")

    def __init__(self, data: bytes, low: bytes) -> None:
        self.data = data
        self.low = low
        self._sets: dict[bool, frozenset[bytes]] = {}

    def of(self, icase: bool) -> frozenset[bytes]:
        got = self._sets.get(icase)
        if got is None:
            hay = self.low if icase else self.data
            got = frozenset([hay[i : i + _GRAM] for i in range(len(hay) - _GRAM + 1)])
            self._sets[icase] = got
        return got


class _Bucket:
    """Rules that share one index key (or have none), split by a rare 4-gram of their literals.

    Built on its first scan (most buckets of a probe are never touched). A rule whose literals
    hold a 4-byte gram is filed under its rarest gram in the bucket: it is looked at only when the
    reply contains that gram (one set intersection for the whole bucket); the others are checked
    one by one."""

    __slots__ = ("by_gram", "gram_keys", "icase", "idxs", "plain", "rules")

    def __init__(self, rules: list[_Rule], idxs: list[int], icase: bool) -> None:
        self.rules = rules
        self.idxs = idxs
        self.icase = icase
        self.plain: tuple[_Entry, ...] | None = None
        self.by_gram: dict[bytes, list[_Entry]] = {}
        self.gram_keys: frozenset[bytes] = frozenset()

    def _build(self) -> tuple[_Entry, ...]:
        entries: list[_Entry] = []
        freq: Counter[bytes] = Counter()
        for idx in self.idxs:
            rule = self.rules[idx]
            facts = rule.ensure_facts()
            lits = rule.tail
            if facts.anchored and len(facts.prefix) > _KEY_MAX:
                # the key is only the start of the prefix: the data must hold the whole prefix
                lits = (facts.prefix, *lits)
            entries.append((idx, lits))
            freq.update({lit[k : k + _GRAM] for lit in lits for k in range(len(lit) - _GRAM + 1)})
        plain: list[_Entry] = []
        by_gram: dict[bytes, list[_Entry]] = {}
        for entry in entries:
            grams = [lit[k : k + _GRAM] for lit in entry[1] for k in range(len(lit) - _GRAM + 1)]
            if len(entries) < _SMALL_BUCKET or not grams:
                plain.append(entry)
            else:
                by_gram.setdefault(min(grams, key=lambda g: freq[g]), []).append(entry)
        self.by_gram = by_gram
        self.gram_keys = frozenset(by_gram)
        self.plain = tuple(plain)
        return self.plain

    def scan(self, grams: _Grams, found: list[int]) -> None:
        """Append to ``found`` the rules of this bucket whose literals the reply contains."""
        plain = self.plain
        if plain is None:
            plain = self._build()
        hay = grams.low if self.icase else grams.data
        for idx, lits in plain:
            for lit in lits:
                if lit not in hay:
                    break
            else:
                found.append(idx)
        if self.gram_keys:
            for gram in self.gram_keys & grams.of(self.icase):
                for idx, lits in self.by_gram[gram]:
                    for lit in lits:
                        if lit not in hay:
                            break
                    else:
                        found.append(idx)


class _ProbeIndex:
    """A probe's rules and the index over them (built on the probe's first use).

    Rules are filed by their literal prefix (anchored rules: the bytes after ``^``, at most
    :data:`_KEY_MAX`), case-sensitive and case-insensitive apart; a reply looks up each prefix
    length it is long enough for. Rules without a prefix are always looked at. Within a bucket,
    :class:`_Bucket` narrows by 4-grams."""

    __slots__ = ("always", "by_len", "by_len_i", "lengths", "lengths_i", "rules")

    def __init__(self, raws: list[RawMatch], prefixes: dict[int, bytes] | None = None) -> None:
        self.rules = [_Rule(r) for r in raws]
        groups: dict[tuple[bool, bytes], list[int]] = {}
        for idx, raw in enumerate(raws):
            known = prefixes.get(raw.line) if prefixes else None
            key = (known if known is not None else quick_prefix(raw.pattern, raw.ignorecase))[:_KEY_MAX]
            groups.setdefault((raw.ignorecase, key), []).append(idx)
        self.by_len: dict[int, dict[bytes, _Bucket]] = {}
        self.by_len_i: dict[int, dict[bytes, _Bucket]] = {}
        always = []
        for (icase, key), idxs in groups.items():
            bucket = _Bucket(self.rules, idxs, icase)
            if not key:
                always.append(bucket)
            else:
                (self.by_len_i if icase else self.by_len).setdefault(len(key), {})[key] = bucket
        self.always = tuple(always)
        self.lengths = tuple(sorted(self.by_len))
        self.lengths_i = tuple(sorted(self.by_len_i))

    def candidates(self, grams: _Grams) -> list[int]:
        """Indexes, in file order, of the rules whose literal checks the reply passes."""
        data, low = grams.data, grams.low
        found: list[int] = []
        n = len(data)
        for bucket in self.always:
            bucket.scan(grams, found)
        for length in self.lengths:
            if length > n:
                break
            hit = self.by_len[length].get(data[:length])
            if hit:
                hit.scan(grams, found)
        for length in self.lengths_i:
            if length > n:
                break
            hit = self.by_len_i[length].get(low[:length])
            if hit:
                hit.scan(grams, found)
        found.sort()
        return found


def _transform_cpe(value: bytes) -> bytes:
    """A substituted value made safe inside a CPE name (nmap's transform_cpe)."""
    out = bytearray()
    for b in value:
        if b in _CPE_SPECIAL:
            out += b"%%%02X" % b
        elif b == 0x20:
            out.append(0x5F)
        else:
            out += bytes((b,)).lower()
    return bytes(out)


def _parse_args(text: str, pos: int) -> tuple[list[int | bytes], int] | None:
    """Arguments of ``$CMD(`` from ``pos`` (after the parenthesis): ints and "strings"; the index
    after ``)``. None when malformed (nmap then drops the field)."""
    args: list[int | bytes] = []
    n = len(text)
    while pos < n and text[pos] != ")":
        while pos < n and text[pos] in " \t":
            pos += 1
        if pos >= n:
            return None
        if text[pos] == ")":
            break
        if text[pos] == '"':
            j = pos + 1
            while j < n and not (text[j] == '"' and (text[j - 1] != "\\" or text[j - 2 : j] == "\\\\")):
                j += 1
            if j >= n:
                return None
            try:
                args.append(unescape_c(text[pos + 1 : j]))
            except ValueError:
                return None
            pos = j + 1
        else:
            m = _INT.match(text, pos)
            if not m:
                return None
            args.append(int(m.group(0), 0))
            pos = m.end()
        while pos < n and text[pos] not in ",)":
            pos += 1
        if pos < n and text[pos] == ",":
            pos += 1
    if pos >= n:
        return None
    return args, pos + 1


def _group(m: re.Match[bytes], reached: int, n: object) -> bytes | None:
    """Group ``n`` of ``m`` as nmap reads it: None past the groups the match reached."""
    if not isinstance(n, int) or not 1 <= n <= 9 or n >= reached:
        return None
    return m.group(n) or b""


def _substitute(template: str, m: re.Match[bytes], reached: int, cpe: bool) -> bytes | None:
    """Fill one version template from a match (None: the field is dropped, as nmap drops it)."""
    out = bytearray()
    i = 0
    n = len(template)
    while i < n:
        j = template.find("$", i)
        if j < 0:
            out += template[i:].encode("latin-1")
            break
        out += template[i:j].encode("latin-1")
        if j + 1 < n and template[j + 1].isdigit():
            value = _group(m, reached, int(template[j + 1]))
            i = j + 2
        else:
            cm = _CMD.match(template, j + 1)
            if not cm:
                return None
            parsed = _parse_args(template, cm.end())
            if parsed is None:
                return None
            args, i = parsed
            value = _command(cm.group(1), args, m, reached)
        if value is None:
            return None
        out += _transform_cpe(value) if cpe else value
    # nmap trims trailing blanks and commas; leading blanks are trimmed too (a capture like
    # "([\s-]\S+)" would otherwise start a host name with a space)
    return bytes(out).rstrip(b" \t\r\n\v\f,").lstrip(b" \t\r\n\v\f")


def _command(name: str, args: list[int | bytes], m: re.Match[bytes], reached: int) -> bytes | None:
    """``$P(n)``, ``$SUBST(n,"from","to")``, ``$I(n,">")``; None when the call is not valid."""
    if not args:
        return None
    group = _group(m, reached, args[0])
    if group is None:
        return None
    if name == "P" and len(args) == 1:
        # printable ASCII only: collapses "W\0O\0R\0K\0" to "WORK"
        return bytes(b for b in group if 0x20 <= b <= 0x7E)
    if name == "SUBST" and len(args) == 3 and isinstance(args[1], bytes) and isinstance(args[2], bytes):
        if not args[1]:
            return group
        return group.replace(args[1], args[2])
    if name == "I" and len(args) == 2 and args[1] in (b">", b"<"):
        if not 1 <= len(group) <= 8:
            return None
        return str(int.from_bytes(group, "big" if args[1] == b">" else "little")).encode()
    return None


def _fields(raw: RawMatch, m: re.Match[bytes]) -> tuple[dict[str, str | None], tuple[str, ...]]:
    """The version fields (by template letter) and CPE names of a match line, filled from ``m``."""
    # imported here: scanner.textproto pulls in the probe API, which a bare import of this
    # package (the CLI's --help path) must not pay for
    from scanner.textproto import decode_text

    # nmap's "nummatches": the highest group that took part, plus one
    reached = 1
    for k in range(len(m.regs) - 1, 0, -1):
        if m.regs[k][0] >= 0:
            reached = k + 1
            break
    out: dict[str, str | None] = {}
    for key, limit in _FIELD_LIMITS.items():
        template = raw.templates.get(key)
        value = _substitute(template, m, reached, cpe=False) if template is not None else None
        out[key] = decode_text(value) if value and len(value) < limit - 1 else None
    cpes = []
    for template in raw.cpe:
        value = _substitute(template, m, reached, cpe=True)
        if value and len(value) < _CPE_LIMIT - 1:
            cpes.append(decode_text(value))
    return out, tuple(cpes)


#: bump when the parsed structures change shape (old cache files are then ignored)
_CACHE_FORMAT: Final = 1


def _cache_file(path: str) -> str | None:
    """The parse cache of ``path``: ``$PORTPROOF_CACHE_DIR`` (or ``$XDG_CACHE_HOME/portproof``, or
    ``~/.cache/portproof``), named after the file's path, size and modification time, so a changed
    or upgraded database is parsed anew. ``PORTPROOF_CACHE_DIR=""`` turns the cache off."""
    base = os.environ.get("PORTPROOF_CACHE_DIR")
    if base == "":
        return None
    if base is None:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "portproof")
    try:
        st = os.stat(path)
    except OSError:
        return None
    import hashlib

    ident = f"{_CACHE_FORMAT}:{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}".encode()
    return os.path.join(base, f"servicedb-{hashlib.sha256(ident).hexdigest()[:24]}.pickle")


def _cache_load(path: str) -> tuple[ParseResult, dict[int, bytes], str] | None:
    """The cached parse of ``path`` (None: no usable cache). Only a file this user owns and nobody
    else may write is read: it is a pickle, and a pickle is code."""
    cache = _cache_file(path)
    if cache is None:
        return None
    try:
        st = os.stat(cache)
        if st.st_uid != os.getuid() or st.st_mode & 0o022:
            return None
        import pickle

        with open(cache, "rb") as f:
            fmt, parsed, prefixes = pickle.load(f)
    except (OSError, ValueError, EOFError, TypeError, AttributeError, ImportError, IndexError):
        return None
    except Exception:  # an unreadable pickle of any kind: parse the file instead
        return None
    if fmt != _CACHE_FORMAT or not isinstance(parsed, ParseResult) or not isinstance(prefixes, dict):
        return None
    return parsed, prefixes, cache


def _cache_store(path: str, parsed: ParseResult, prefixes: dict[int, bytes]) -> str | None:
    """Write the parse cache (atomically; any failure just means no cache)."""
    cache = _cache_file(path)
    if cache is None or parsed.nmatch == 0:
        return None
    import pickle
    import tempfile

    try:
        os.makedirs(os.path.dirname(cache), mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(cache), prefix=".servicedb-")
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump((_CACHE_FORMAT, parsed, prefixes), f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, cache)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except (OSError, pickle.PicklingError):
        return None
    return cache


class ServiceDB:
    """An ``nmap-service-probes`` file, parsed on first use and matched on demand.

    Thread-safe: the parse and each probe's index are built once under a lock; a regex compiled
    twice by two threads at once gives the same pattern (the last assignment wins)."""

    def __init__(self, path: str) -> None:
        #: the file this database reads
        self.path = path
        self._lock = threading.Lock()
        self._parsed: ParseResult | None = None
        #: each match line's literal prefix (line -> bytes), kept in the parse cache
        self._prefixes: dict[int, bytes] = {}
        #: where the parse cache was read from or written to (None: no cache used)
        self.cache_path: str | None = None
        self._probes: dict[str, DBProbe] = {}
        self._index: dict[str, _ProbeIndex] = {}
        self._chains: dict[str, tuple[str, ...]] = {}
        self._services: dict[str, frozenset[str]] = {}
        self._failed: dict[int, str] = {}
        self._compiled = 0
        self._slow: list[int] = []
        #: seconds spent reading the file (0 until parsed)
        self.parse_seconds = 0.0
        self.read_error: str | None = None

    # -- loading ---------------------------------------------------------------------------------
    def _ensure(self) -> ParseResult:
        parsed = self._parsed
        if parsed is not None:
            return parsed
        with self._lock:
            if self._parsed is None:
                t0 = time.perf_counter()
                cached = _cache_load(self.path)
                if cached is not None:
                    parsed, self._prefixes, self.cache_path = cached
                else:
                    try:
                        with open(self.path, "rb") as f:
                            parsed = parse_lines(f)
                    except OSError as e:
                        self.read_error = f"{self.path}: {e.strerror or e}"
                        parsed = ParseResult()
                    else:
                        self._prefixes = {
                            r.line: quick_prefix(r.pattern, r.ignorecase) for rs in parsed.matches.values() for r in rs
                        }
                        self.cache_path = _cache_store(self.path, parsed, self._prefixes)
                self._probes = {probe_key(p.protocol, p.name): p for p in parsed.probes}
                self.parse_seconds = time.perf_counter() - t0
                self._parsed = parsed
            return self._parsed

    def _key(self, name: str) -> str | None:
        """The probe key for ``NAME`` (TCP first, then UDP) or ``TCP:NAME``/``UDP:NAME``."""
        self._ensure()
        if name[:4] in ("TCP:", "UDP:"):
            return name if name in self._probes else None
        for proto in ("TCP", "UDP"):
            key = probe_key(proto, name)
            if key in self._probes:
                return key
        return None

    def _chain(self, key: str) -> tuple[str, ...]:
        """The probes whose lines a reply to ``key`` is tried against, in order (nmap's fallbacks)."""
        chain = self._chains.get(key)
        if chain is not None:
            return chain
        probe = self._probes[key]
        out = [key]
        if probe.name != "NULL":
            for name in probe.fallback:
                # the same protocol first; else the other one: the file's DNSVersionBindReqTCP
                # falls back to the UDP DNSVersionBindReq, whose lines are written to match the
                # TCP reply too ("All legitimate 'domain' matchlines for this probe should be
                # placed in the UDP DNSVersionBindReq probe section")
                other = "UDP" if probe.protocol == "TCP" else "TCP"
                for fk in (probe_key(probe.protocol, name), probe_key(other, name)):
                    if fk in self._probes:
                        if fk not in out:
                            out.append(fk)
                        break
            null = probe_key("TCP", "NULL")
            if probe.protocol == "TCP" and null in self._probes and null not in out:
                out.append(null)
        chain = tuple(out)
        self._chains[key] = chain
        return chain

    def _probe_index(self, key: str) -> _ProbeIndex:
        idx = self._index.get(key)
        if idx is not None:
            return idx
        with self._lock:
            idx = self._index.get(key)
            if idx is None:
                parsed = self._ensure()
                idx = _ProbeIndex(parsed.matches.get(key, []), self._prefixes)
                self._index[key] = idx
        return idx

    def _compile(self, rule: _Rule) -> re.Pattern[bytes] | None:
        rx = rule.rx
        if rx is None:
            raw = rule.raw
            try:
                text = convert(raw.pattern)
                flags = (re.IGNORECASE if raw.ignorecase else 0) | (re.DOTALL if raw.dotall else 0)
                rx = re.compile(text.encode("latin-1"), flags)
                self._compiled += 1
            except (Unsupported, re.error, ValueError, OverflowError, RecursionError) as e:
                rx = False
                self._failed[raw.line] = f"{type(e).__name__}: {e}"
            rule.rx = rx
        return rx if isinstance(rx, re.Pattern) else None

    # -- public ----------------------------------------------------------------------------------
    def probe(self, name: str) -> DBProbe | None:
        """The Probe directive ``name`` (``NULL``, ``GetRequest``, ``UDP:DNSVersionBindReq``...)."""
        key = self._key(name)
        return self._probes[key] if key else None

    def probes(self) -> list[DBProbe]:
        """Every probe of the file, in file order."""
        return list(self._ensure().probes)

    def services(self, name: str) -> frozenset[str]:
        """The services the probe's own match lines (hard and soft) can name: nmap's
        ``serviceIsPossible``, by which a softmatch narrows the probes still worth sending.
        Empty for an unknown probe."""
        key = self._key(name)
        if key is None:
            return frozenset()
        found = self._services.get(key)
        if found is None:
            found = frozenset(m.service for m in self._ensure().matches.get(key, []))
            self._services[key] = found
        return found

    @property
    def exclude(self) -> str | None:
        """The file's ``Exclude`` port spec (ports nmap never version-probes, e.g. ``T:9100-9107``)."""
        return self._ensure().exclude

    def match(self, probe: str, data: bytes, *, tls: bool = False) -> DBMatch | None:
        """What the database says about ``data``, the reply to ``probe`` (nmap's rules, see the
        module docstring); None when no line matches or the probe is unknown. ``tls``: the reply
        came through TLS (the service is reported as ``ssl/<service>``)."""
        key = self._key(probe)
        if key is None or not data:
            return None
        data = data[:MAX_DATA]
        grams = _Grams(data, data.lower())
        soft: tuple[_Rule, re.Match[bytes]] | None = None
        for chain_key in self._chain(key):
            index = self._probe_index(chain_key)
            rules = index.rules
            for idx in index.candidates(grams):
                rule = rules[idx]
                raw = rule.raw
                if rule.slow or (soft is not None and (raw.soft or raw.service != soft[0].raw.service)):
                    continue
                rx = self._compile(rule)
                if rx is None:
                    continue
                t0 = time.perf_counter()
                m = rx.match(data) if rule.facts and rule.facts.anchored else rx.search(data)
                if time.perf_counter() - t0 > SLOW_SECONDS:
                    # wall time (a CPU clock costs 10x more per call): one slow run may be the
                    # machine's fault, two are the pattern's
                    rule.strikes += 1
                    if rule.strikes >= _STRIKES:
                        rule.slow = True
                        self._slow.append(raw.line)
                if m is None:
                    continue
                if not raw.soft:
                    return self._result(raw, m, tls)
                if soft is None:
                    soft = (rule, m)
        if soft is not None:
            return self._result(soft[0].raw, soft[1], tls)
        return None

    @staticmethod
    def _result(raw: RawMatch, m: re.Match[bytes], tls: bool) -> DBMatch:
        service = raw.service
        if tls and not service.startswith("ssl/"):
            service = "ssl/" + service
        # a softmatch line may carry templates too (130 do in nmap 7.93's file); nmap reports
        # them, and so do we, with soft=True
        f, cpe = _fields(raw, m)
        return DBMatch(
            service=service,
            product=f["p"],
            version=f["v"],
            info=f["i"],
            hostname=f["h"],
            ostype=f["o"],
            devicetype=f["d"],
            cpe=cpe,
            soft=raw.soft,
            probe=raw.probe,
            line=raw.line,
        )

    def compile_all(self) -> dict[int, str]:
        """Compile every line now (tests, benchmarks); returns line -> reason for those that fail."""
        parsed = self._ensure()
        for key in parsed.matches:
            for rule in self._probe_index(key).rules:
                self._compile(rule)
        return dict(self._failed)

    def failures(self) -> dict[int, str]:
        """Lines whose regex did not compile so far (line -> reason)."""
        return dict(self._failed)

    def parse_errors(self) -> list[tuple[int, str]]:
        """Lines skipped by the parser, (line, reason) (the first ones, see the parser's cap)."""
        return list(self._ensure().error_lines)

    def stats(self) -> dict[str, int]:
        """Counts: lines read, probes, matches, softmatches, parse errors, regexes compiled so far,
        failed to compile, quarantined as slow."""
        parsed = self._ensure()
        return {
            "lines": parsed.lines,
            "probes": len(parsed.probes),
            "matches": parsed.nmatch,
            "softmatches": parsed.nsoft,
            "parse_errors": sum(parsed.errors.values()),
            "compiled": self._compiled,
            "failed": len(self._failed),
            "slow": len(self._slow),
        }

    def failure_reasons(self) -> Counter[str]:
        """Compile failures grouped by reason (offsets and numbers stripped)."""
        return Counter(re.sub(r"\d+", "N", r) for r in self._failed.values())

    def __repr__(self) -> str:
        return f"ServiceDB({self.path!r})"


def path_readable(path: str) -> str | None:
    """None when ``path`` is a readable regular file, else why not."""
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        return f"{path}: {e.strerror or e}"
    if not os.path.isfile(path):
        return f"{path}: not a regular file"
    return None
