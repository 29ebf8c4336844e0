"""Redis probe (an example third-party portproof plugin).

Default ports: 6379 (plain). Client speaks first.

Sends: ``PING`` as a RESP array (``*1\\r\\n$4\\r\\nPING\\r\\n``); when the server answers
``+PONG``, ``INFO server`` (same encoding). Never authenticates, never reads or writes a key.

Replay (passive hooks): ``client_hint`` claims a connection whose client opens with a RESP command
array (``*N``, ``$len``, a Redis command name); ``identify_passive`` names Redis from another
client's conversation (RESP commands one way, RESP replies the other; the version when an ``INFO``
reply is in it), or from the client's commands alone when only its side was captured.

Collects: whether the server wants a password (``-NOAUTH``) or refuses the client
(``-DENIED``: protected mode); from ``INFO server``: the product (Redis, or the fork named by
``server_name``: Valkey, KeyDB...), ``redis_version``, ``redis_mode`` (standalone, cluster,
sentinel), ``os``, ``arch_bits``, ``tcp_port``, ``gcc_version``, ``multiplexing_api``.

RESP (the REdis Serialization Protocol) is framed here by :func:`frame_resp`, written for this
plugin: the bounds are the plugin's own (nesting depth, element count, bulk size).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from scanner.api import Dialogue, Finding, NotThisProtocol, Probe, ProbeContext, Recv, RecvClosed, Send

__all__ = [
    "MAX_BULK",
    "RedisInfo",
    "RedisProbe",
    "RespError",
    "build_command",
    "client_commands",
    "frame_resp",
    "identify",
    "parse_info",
    "parse_resp",
]

#: largest bulk string accepted (INFO server is about 1 KiB; INFO all a few KiB)
MAX_BULK = 256 * 1024
#: most elements in one array (and deepest nesting) accepted from a server
MAX_ELEMENTS = 1024
MAX_DEPTH = 4
#: longest simple line (+OK, -ERR ..., :123, $len, *len)
MAX_LINE = 4096

# RESP2 types plus the RESP3 ones a server may send unasked (HELLO 3 is never sent here).
_LINE_TYPES = frozenset(b"+-:_,#(")
_BLOB_TYPES = frozenset(b"$!=")
_AGG_TYPES = frozenset(b"*%~>|")


def build_command(*args: str) -> bytes:
    """Encode a command as a RESP array of bulk strings (what redis-cli sends)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode("utf-8")
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _line_end(buf: bytes, pos: int) -> int | None:
    """Index just past the CRLF of the line starting at ``pos``; None when not yet complete."""
    end = buf.find(b"\r\n", pos, pos + MAX_LINE + 2)
    if end < 0:
        if len(buf) - pos > MAX_LINE + 1:
            raise NotThisProtocol(f"RESP line longer than {MAX_LINE} bytes")
        return None
    return end + 2


def _int_field(buf: bytes, start: int, end: int) -> int:
    raw = buf[start:end]
    if not re.fullmatch(rb"-?[0-9]{1,19}", raw):
        raise NotThisProtocol(f"bad RESP length {raw[:20]!r}")
    return int(raw)


def _frame_value(buf: bytes, pos: int, depth: int) -> int | None:
    """End offset of the RESP value at ``pos``, None when incomplete."""
    if pos >= len(buf):
        return None
    kind = buf[pos]
    if kind in _LINE_TYPES:
        return _line_end(buf, pos + 1)
    if kind in _BLOB_TYPES:
        end = _line_end(buf, pos + 1)
        if end is None:
            return None
        size = _int_field(buf, pos + 1, end - 2)
        if size == -1 and kind == ord("$"):  # RESP2 null bulk string
            return end
        if not 0 <= size <= MAX_BULK:
            raise NotThisProtocol(f"RESP bulk length {size} out of bounds")
        if len(buf) < end + size + 2:
            return None
        if buf[end + size : end + size + 2] != b"\r\n":
            raise NotThisProtocol("RESP bulk string not followed by CRLF")
        return end + size + 2
    if kind in _AGG_TYPES:
        if depth >= MAX_DEPTH:
            raise NotThisProtocol("RESP nesting too deep")
        end = _line_end(buf, pos + 1)
        if end is None:
            return None
        count = _int_field(buf, pos + 1, end - 2)
        if count == -1 and kind == ord("*"):  # RESP2 null array
            return end
        if not 0 <= count <= MAX_ELEMENTS:
            raise NotThisProtocol(f"RESP element count {count} out of bounds")
        if kind in b"%|":  # maps and attributes hold key/value pairs
            count *= 2
        for _ in range(count):
            nxt = _frame_value(buf, end, depth + 1)
            if nxt is None:
                return None
            end = nxt
        return end
    raise NotThisProtocol(f"not a RESP type byte: {bytes([kind])!r}")


def frame_resp(buf: bytes) -> int | None:
    """Frame one RESP value: the length of the first complete value, None for "need more"."""
    return _frame_value(buf, 0, 0)


@dataclass(frozen=True)
class RespError:
    """A RESP error reply (``-NOAUTH Authentication required.``): its code and its text."""

    code: str
    message: str


def parse_resp(msg: bytes) -> str | int | bytes | RespError | list[object] | None:
    """Parse one framed RESP value (simple string, error, integer, bulk string, array)."""
    if not msg:
        raise NotThisProtocol("empty RESP message")
    kind, end = msg[0:1], msg.find(b"\r\n")
    if end < 0:
        raise NotThisProtocol("RESP value without CRLF")
    head = msg[1:end]
    if kind == b"+":
        return head.decode("utf-8", "replace")
    if kind == b"-":
        text = head.decode("utf-8", "replace")
        code, _, rest = text.partition(" ")
        return RespError(code, rest)
    if kind == b":":
        return _int_field(msg, 1, end)
    if kind == b"$":
        size = _int_field(msg, 1, end)
        return None if size < 0 else msg[end + 2 : end + 2 + size]
    if kind == b"*":
        count = _int_field(msg, 1, end)
        if count < 0:
            return None
        items: list[object] = []
        pos = end + 2
        for _ in range(min(count, MAX_ELEMENTS)):
            nxt = _frame_value(msg, pos, 1)
            if nxt is None:
                raise NotThisProtocol("truncated RESP array")
            items.append(parse_resp(msg[pos:nxt]))
            pos = nxt
        return items
    raise NotThisProtocol(f"unsupported RESP type {kind!r}")


@dataclass
class RedisInfo:
    """The ``INFO server`` section: ``key:value`` lines grouped under ``# Section`` headers."""

    fields: dict[str, str] = field(default_factory=dict)

    @property
    def version(self) -> str | None:
        """``redis_version`` (forks such as Valkey keep reporting a Redis-compatible one)."""
        return self.fields.get("valkey_version") or self.fields.get("redis_version")


def parse_info(text: bytes) -> RedisInfo:
    """Parse the body of an INFO reply (a bulk string) into its fields (bounded)."""
    info = RedisInfo()
    for raw in text.split(b"\r\n")[:500]:
        line = raw.decode("utf-8", "replace")
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if sep and key and len(key) < 64:
            info.fields[key] = value[:256]
    return info


_KEEP = ("redis_version", "redis_mode", "os", "arch_bits", "tcp_port", "gcc_version", "multiplexing_api",
         "server_name", "valkey_version", "redis_build_id")


def identify(info: RedisInfo) -> Finding:
    """The finding for a server that answered ``INFO server``."""
    if "redis_version" not in info.fields:
        raise NotThisProtocol("INFO reply without redis_version")
    product = {"valkey": "Valkey", "keydb": "KeyDB"}.get(info.fields.get("server_name", "").lower(), "Redis")
    f = Finding(service="redis", product=product, version=info.version, confidence=10)
    f.add("INFO server redis_version", info.fields["redis_version"])
    for key in _KEEP:
        if key in info.fields:
            f.details[key] = info.fields[key]
    if "os" in info.fields:
        f.extrainfo = info.fields["os"]
    return f


#: command names a Redis client opens with or commonly sends (redis.io/commands; the ones a
#: conversation starts with: HELLO, AUTH, PING, INFO, CLIENT, SELECT, then data commands)
_COMMANDS = frozenset(
    {
        "HELLO", "AUTH", "PING", "INFO", "CLIENT", "SELECT", "COMMAND", "CONFIG", "QUIT", "ECHO",
        "GET", "SET", "DEL", "EXISTS", "EXPIRE", "TTL", "INCR", "DECR", "MGET", "MSET", "KEYS", "SCAN",
        "TYPE", "HGET", "HSET", "HGETALL", "LPUSH", "RPUSH", "LPOP", "RPOP", "LRANGE", "SADD", "SMEMBERS",
        "ZADD", "ZRANGE", "PUBLISH", "SUBSCRIBE", "PSUBSCRIBE", "MULTI", "EXEC", "WATCH", "EVAL",
        "EVALSHA", "DBSIZE", "FLUSHDB", "SETEX", "SETNX", "APPEND", "STRLEN", "XADD", "XREAD",
    }
)
#: the head of a RESP command array: ``*<count>\r\n$<length>\r\n<name>``
_COMMAND_HEAD = re.compile(rb"\*([1-9][0-9]{0,3})\r\n\$([1-9][0-9]?)\r\n([A-Za-z]{1,20})")
#: RESP values read from one side of a captured conversation at most
MAX_PASSIVE_VALUES = 64


def _resp_values(data: bytes) -> list[object]:
    """The RESP values a captured stream starts with (at most :data:`MAX_PASSIVE_VALUES`); [] when
    its first bytes are not RESP. A value cut by the capture's end stops the list."""
    values: list[object] = []
    pos = 0
    for _ in range(MAX_PASSIVE_VALUES):
        if pos >= len(data):
            break
        try:
            end = _frame_value(data, pos, 0)
            if end is None:
                break
            values.append(parse_resp(data[pos:end]))
        except NotThisProtocol:
            return values if values else []
        pos = end
    return values


def client_commands(data: bytes) -> list[str]:
    """The command names (upper-cased) of a client's RESP command arrays, in order; [] as soon as
    a value is not an array of bulk strings (not a Redis client)."""
    names: list[str] = []
    for value in _resp_values(data):
        if not isinstance(value, list) or not value or not all(isinstance(v, bytes) for v in value):
            return []
        names.append(bytes(value[0]).decode("latin-1").upper()[:32])
    return names


#: error codes only Redis (and its forks) answer PING with
_REDIS_ERRORS = frozenset({"NOAUTH", "DENIED", "LOADING", "BUSY", "MASTERDOWN"})


class RedisProbe(Probe):
    """Redis: PING, then INFO server for the version; reports a password or protected mode."""

    name = "redis"
    services = ("redis",)
    transports = ("tcp",)
    ports = (6379,)
    tls_ports = ()
    server_first = False
    rarity = 8
    summary = "Redis PING + INFO server: redis_version, mode, OS; NOAUTH / protected mode"

    # ------------------------------------------------------------ passive hooks (pcap replay)
    def client_hint(self, first_client_bytes: bytes) -> bool:
        """A RESP command array: ``*N``, ``$len``, then a Redis command name of that length."""
        m = _COMMAND_HEAD.match(first_client_bytes)
        if m is None or int(m.group(2)) != len(m.group(3)):
            return False
        return m.group(3).upper().decode("ascii") in _COMMANDS

    def identify_passive(self, server_messages: Sequence[bytes], client_messages: Sequence[bytes]) -> Finding | None:
        """Redis from another client's conversation: its RESP commands, the server's RESP replies
        (every reply must frame and parse; an ``INFO`` reply names the version). With no server
        bytes, the commands alone (portproof then marks the result "only the client was seen")."""
        commands = client_commands(client_messages[0] if client_messages else b"")
        if not commands or commands[0] not in _COMMANDS:
            return None
        server = next((bytes(m) for m in server_messages if m), b"")
        if not server:
            f = Finding(service="redis", confidence=3)
            f.details["client_commands"] = commands[:16]
            f.add("client RESP commands", " ".join(commands[:8]))
            return f
        replies = _resp_values(server)
        if not replies:
            return None
        # RESP commands answered by RESP replies: Redis's protocol (rule: this hook)
        f = Finding(service="redis", product="Redis", confidence=6, rule="redis:passive-resp-conversation")
        for reply in replies:
            if isinstance(reply, bytes) and b"redis_version:" in reply:
                try:
                    f = identify(parse_info(reply))
                except NotThisProtocol:
                    continue
                break
            if isinstance(reply, RespError) and reply.code in _REDIS_ERRORS:
                f.details["auth_required"] = reply.code == "NOAUTH"
        f.details["client_commands"] = commands[:16]
        f.add("passive", f"{len(commands)} RESP command(s) ({' '.join(commands[:8])}), {len(replies)} RESP reply(ies)")
        return f

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        """PING; on +PONG, INFO server."""
        yield Send(build_command("PING"))
        pong = parse_resp((yield Recv(frame_resp, max_size=MAX_LINE + 2)))
        if isinstance(pong, RespError):
            # only Redis's own error codes: a plain "-ERR" is what many line protocols say
            if pong.code not in _REDIS_ERRORS:
                raise NotThisProtocol(f"unexpected RESP error {pong.code!r} to PING")
            f = Finding(service="redis", product="Redis", confidence=7)
            f.add("PING", f"-{pong.code} {pong.message}")
            f.details["auth_required"] = pong.code == "NOAUTH"
            f.details["protected_mode"] = pong.code == "DENIED"
            return f
        if pong != "PONG":
            raise NotThisProtocol("PING not answered with +PONG")
        f = ctx.found(Finding(service="redis", product="Redis", confidence=8))
        f.add("PING", "+PONG")
        f.details["auth_required"] = False
        yield Send(build_command("INFO", "server"))
        try:
            reply = parse_resp((yield Recv(frame_resp, max_size=MAX_BULK + 64)))
        except RecvClosed:
            return f  # answered PING, then hung up: still Redis, no version
        if isinstance(reply, RespError):
            f.details["info_error"] = f"{reply.code} {reply.message}"[:200]
            return f
        if not isinstance(reply, bytes):
            raise NotThisProtocol("INFO not answered with a bulk string")
        found = identify(parse_info(reply))
        found.evidence[:0] = f.evidence
        found.details["auth_required"] = False
        return ctx.found(found)
