"""Tests of the Redis probe with portproof's test kit (scanner.testing) only.

The transcripts in ``data/`` are the bytes a real Debian redis-server 7.0.15 sent to this probe on
loopback (one without a password, one started with ``--requirepass``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from scanner.api import NotThisProtocol, RecvClosed
from scanner.testing import Transcript, assert_probe_contract, feed_bytewise, run_dialogue

from portproof_redis.probe import (
    RedisProbe,
    RespError,
    build_command,
    frame_resp,
    identify,
    parse_info,
    parse_resp,
)

DATA = Path(__file__).parent / "data"
OPEN = (DATA / "redis-7.0.15-ping-info.bin").read_bytes()
NOAUTH = (DATA / "redis-7.0.15-noauth.bin").read_bytes()


def test_build_command_is_a_resp_array() -> None:
    """What redis-cli sends for ``INFO server``."""
    assert build_command("INFO", "server") == b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n"


@pytest.mark.parametrize(
    "message",
    [
        b"+PONG\r\n",
        b"-NOAUTH Authentication required.\r\n",
        b":42\r\n",
        b"$-1\r\n",
        b"$5\r\nhello\r\n",
        b"*2\r\n$3\r\nfoo\r\n:1\r\n",
        b"*1\r\n*1\r\n+x\r\n",
        b"%1\r\n+server\r\n+redis\r\n",
    ],
)
def test_frame_resp_bytewise(message: bytes) -> None:
    """Every RESP type frames the same one byte at a time; trailing bytes stay out."""
    assert feed_bytewise(frame_resp, message + b"+next\r\n") == len(message)


def test_frame_resp_real_reply() -> None:
    """The recorded +PONG and the INFO bulk string are two messages."""
    first = frame_resp(OPEN)
    assert first == len(b"+PONG\r\n")
    assert frame_resp(OPEN[first:]) == len(OPEN) - first


@pytest.mark.parametrize(
    "junk",
    [
        b"HTTP/1.1 400 Bad Request\r\n",
        b"$99999999\r\n",
        b"*-7\r\n",
        b"*1\r\n" * 10,
        b"$5\r\nhelloXX",
        b"+" + b"a" * 9000,
    ],
)
def test_frame_resp_rejects(junk: bytes) -> None:
    """Other protocols, hostile lengths and endless lines are NotThisProtocol."""
    with pytest.raises(NotThisProtocol):
        frame_resp(junk)


def test_parse_resp_types() -> None:
    """Simple strings, errors, integers, bulk strings, arrays."""
    assert parse_resp(b"+PONG\r\n") == "PONG"
    assert parse_resp(b"-NOAUTH Authentication required.\r\n") == RespError("NOAUTH", "Authentication required.")
    assert parse_resp(b":7\r\n") == 7
    assert parse_resp(b"$-1\r\n") is None
    assert parse_resp(b"*2\r\n$3\r\nfoo\r\n:1\r\n") == [b"foo", 1]


def test_parse_info_and_identify_real_reply() -> None:
    """The INFO server body of the real server gives product, version, mode and OS."""
    body = parse_resp(OPEN[frame_resp(OPEN) or 0 :])
    assert isinstance(body, bytes)
    info = parse_info(body)
    finding = identify(info)
    assert (finding.product, finding.version) == ("Redis", info.fields["redis_version"])
    assert finding.details["redis_mode"] == "standalone"
    assert finding.extrainfo == info.fields["os"]


def test_identify_names_a_fork() -> None:
    """A fork that says its name in server_name is reported under that name."""
    info = parse_info(b"# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.0.1\r\n")
    assert (identify(info).product, identify(info).version) == ("Valkey", "8.0.1")


def test_dialogue_open_server() -> None:
    """Replay of the real server without a password: Redis with its version, PING then INFO sent."""
    run = run_dialogue(RedisProbe(), OPEN, port=6379)
    assert run.ok, run.error
    assert run.finding is not None
    assert run.finding.service == "redis" and run.finding.product == "Redis"
    assert run.finding.version == parse_info(OPEN.split(b"\r\n", 2)[2]).fields["redis_version"]
    assert run.finding.details["auth_required"] is False
    assert run.sent == [build_command("PING"), build_command("INFO", "server")]


def test_dialogue_password_required() -> None:
    """Replay of the real server with requirepass: still Redis, no version, auth_required."""
    run = run_dialogue(RedisProbe(), NOAUTH, port=6379)
    assert run.ok, run.error
    assert run.finding is not None
    assert (run.finding.product, run.finding.version) == ("Redis", None)
    assert run.finding.details["auth_required"] is True
    assert run.sent == [build_command("PING")]


def test_dialogue_hangs_up_after_pong() -> None:
    """A server that closes after +PONG is still Redis (the partial finding is kept)."""
    run = run_dialogue(RedisProbe(), b"+PONG\r\n")
    assert run.ok and run.finding is not None and run.finding.version is None


@pytest.mark.parametrize("other", [b"+OK Dovecot ready.\r\n", b"-ERR unknown command\r\n", b"220 mail ESMTP\r\n"])
def test_dialogue_other_protocols(other: bytes) -> None:
    """POP3's +OK / -ERR and SMTP's greeting are not Redis."""
    run = run_dialogue(RedisProbe(), other)
    assert isinstance(run.error, NotThisProtocol)


def test_dialogue_silent_server() -> None:
    """No answer at all: a step error, no finding."""
    run = run_dialogue(RedisProbe(), b"")
    assert isinstance(run.error, RecvClosed) and run.finding is None


def test_contract() -> None:
    """The contract every registered probe must pass, fed the real transcripts as well."""
    report = assert_probe_contract(
        RedisProbe(), transcripts=[Transcript(OPEN, port=6379, name="open"), Transcript(NOAUTH, name="noauth")]
    )
    assert report.runs > 20 and report.framer_calls > 0
