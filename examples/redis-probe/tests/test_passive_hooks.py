"""The plugin's passive hooks (pcap replay of conversations it did not lead), on the recorded
transcripts of a real Debian redis-server 7.0.15 (``data/``)."""

from __future__ import annotations

from pathlib import Path

from portproof_redis.probe import RedisProbe, build_command, client_commands

DATA = Path(__file__).parent / "data"
OPEN = (DATA / "redis-7.0.15-ping-info.bin").read_bytes()
NOAUTH = (DATA / "redis-7.0.15-noauth.bin").read_bytes()
SESSION = build_command("PING") + build_command("INFO", "server")


def test_client_hint() -> None:
    """RESP command arrays with a Redis command name, and nothing else."""
    cases = [
        (build_command("PING"), True),
        (build_command("SET", "k", "v"), True),
        (build_command("hello", "3"), True),  # command names are case-insensitive
        (b"*1\r\n$4\r\nPIN", False),  # the length says 4, the window holds 3
        (b"*1\r\n$5\r\nPING\r\n", False),  # declared length does not fit the name
        (build_command("NOTACOMMAND"), False),
        (b"GET / HTTP/1.1\r\n", False),
        (b"", False),
    ]
    for first, mine in cases:
        assert RedisProbe().client_hint(first[:64]) is mine, first


def test_identify_passive() -> None:
    """Version from an INFO reply; NOAUTH; client only; foreign bytes on either side give None."""
    probe = RedisProbe()
    f = probe.identify_passive([OPEN], [SESSION])
    assert f is not None and (f.service, f.product, f.version) == ("redis", "Redis", "7.0.15")
    assert f.details["client_commands"] == ["PING", "INFO"]

    f = probe.identify_passive([NOAUTH], [build_command("PING")])
    assert f is not None and (f.product, f.version) == ("Redis", None)
    assert f.details["auth_required"] is True

    f = probe.identify_passive([], [SESSION])
    assert f is not None and f.product is None and f.confidence <= 3

    for server, client in [
        ([OPEN], [b"GET / HTTP/1.1\r\n\r\n"]),  # the client does not speak RESP commands
        ([b"HTTP/1.1 200 OK\r\n\r\n"], [SESSION]),  # the server does not answer in RESP
        ([], [b"\x00\x01junk"]),
        ([], []),
    ]:
        assert probe.identify_passive(server, client) is None, (server, client)
    assert client_commands(SESSION) == ["PING", "INFO"]
    assert client_commands(b"+OK\r\n") == []
