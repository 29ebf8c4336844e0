"""``Recv(offload=True)``: a heavy decode runs in a worker thread, so the one event loop keeps serving
every other connection (issue 15: heavy decoders under a size cap or off the loop).

Two ports on loopback fake servers (an edge case, not a protocol: each answers one line):
one whose probe burns CPU after its ``Recv`` (standing in for scapy's NDR decode of a long endpoint
list), one that answers after a short delay. With ``offload`` the second port finishes in about its
own delay; without it (the control, same scan otherwise) it waits for the decode: so the test fails
if the engine stops offloading.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

import pytest

from scanner.api import Dialogue, Finding, Probe, ProbeContext, Recv, Send
from scanner.engine import scan_sync
from scanner.registry import ProbeInfo, Registry
from scanner.textproto import frame_line

HEAVY_SECONDS = 1.5
DELAY = 0.3


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    n = 0
    while time.process_time() < end:  # pure-Python work holding the GIL, like a decoder
        n += 1


def _probe(offload: bool, ports: tuple[int, ...]) -> Probe:
    class Heavy(Probe):
        name: ClassVar[str] = "heavyline"
        services: ClassVar[tuple[str, ...]] = ("heavyline",)
        server_first: ClassVar[bool] = False
        rarity: ClassVar[int] = 1
        summary: ClassVar[str] = "asks, reads one line; a decode of HEAVY_SECONDS when the line says heavy"

        def dialogue(self, ctx: ProbeContext) -> Dialogue:
            yield Send(b"go\r\n")
            line = yield Recv(frame_line, offload=offload)
            if line.startswith(b"heavy"):
                _burn(HEAVY_SECONDS)
            return Finding(service="heavyline", confidence=5)

    Heavy.ports = ports
    return Heavy()


def _scan(serve: Any, offload: bool) -> dict[str, float]:
    async def heavy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"heavy\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    async def delayed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        await asyncio.sleep(DELAY)
        writer.write(b"light\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    h, d = serve(heavy), serve(delayed)
    probe = _probe(offload, (h.port, d.port))
    registry = Registry(infos=[ProbeInfo(probe, "test", "0", False, "tests/hostile/test_offload.py")])
    results = scan_sync(["127.0.0.1"], ports=f"T:{h.port},T:{d.port}", registry=registry, greeting_wait=0.05,
                        short_wait=0.05, read_timeout=3.0, port_timeout=10.0)
    by_port = {r.port: r for r in results}
    assert by_port[h.port].service == "heavyline" and by_port[d.port].service == "heavyline", results
    return {"heavy": by_port[h.port].elapsed, "delayed": by_port[d.port].elapsed}


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "control-on-the-loop"])
def test_heavy_decode_does_not_stall_other_ports(serve: Any, offload: bool) -> None:
    took = _scan(serve, offload)
    assert took["heavy"] >= HEAVY_SECONDS * 0.9, took
    if offload:
        assert took["delayed"] < DELAY + 0.5, took  # served while the decode ran in a thread
    else:
        assert took["delayed"] >= HEAVY_SECONDS * 0.8, took  # the control: the loop was held
