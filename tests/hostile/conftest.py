"""Fixtures of the hostile-server suite: start scenario servers on 127.0.0.1, stop them after."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hostile_kit import FakeServer, FakeUDPServer, Handler, UDPHandler, make_self_signed, tls_context_for


@pytest.fixture
def serve() -> Iterator[Callable[..., FakeServer]]:
    """``serve(handler, tls=False)`` starts a scenario server and returns it (stopped at teardown)."""
    servers: list[FakeServer] = []
    tmp: list[Path] = []

    def start(handler: Handler, tls_dir: Path | None = None) -> FakeServer:
        ctx = None
        if tls_dir is not None:
            cert, key = make_self_signed(tls_dir)
            ctx = tls_context_for(cert, key)
            tmp.append(tls_dir)
        srv = FakeServer(handler, ctx).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


@pytest.fixture
def serve_udp() -> Iterator[Callable[..., FakeUDPServer]]:
    """``serve_udp(handler)`` starts a UDP scenario server and returns it (stopped at teardown)."""
    servers: list[FakeUDPServer] = []

    def start(handler: UDPHandler) -> FakeUDPServer:
        srv = FakeUDPServer(handler).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()
