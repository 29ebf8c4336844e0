#!/usr/bin/env python3
"""The ceiling for Python on this machine: a bare asyncio connect-and-read loop (no probes, no framing).

    python bench/bareloop.py -iL TARGETS -p T:25,80,110,143,U:53 [--concurrency N] [--uvloop]

For every target x port, with N connections at once (the same worker-pool shape as the engine):
TCP: connect, send a fixed request where the client speaks first (``HEAD / HTTP/1.0`` on 80, 443
and 8080), read the first bytes (up to 4096, 3 s), abort (RST, as the engine does); UDP 53: send one
fixed DNS query (``version.bind CH TXT``) on a connected socket and wait for one datagram (1 s).
Prints one JSON object: counts (in all and per ``proto/port`` in ``by_port``), wall time and rate.
Used by bench/scale.py (which stops when a port fails here: the servers, not the scanner, would be
measured); also usable alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

#: DNS query: id 0x5050, no flags, one question: version.bind CH TXT
DNS_QUERY = bytes.fromhex("505000000001000000000000") + b"\x07version\x04bind\x00" + struct.pack(">HH", 16, 3)
HTTP_PORTS = {80, 443, 8080}
HTTP_REQUEST = b"HEAD / HTTP/1.0\r\n\r\n"


def parse_ports(spec: str) -> list[tuple[int, str]]:
    """``T:25,80,U:53`` (or ``25,80``: TCP) -> [(25, "tcp"), (80, "tcp"), (53, "udp")]."""
    out: list[tuple[int, str]] = []
    proto = "tcp"
    for item in spec.split(","):
        item = item.strip()
        if item[:2].upper() in ("T:", "U:"):
            proto = "tcp" if item[0].upper() == "T" else "udp"
            item = item[2:]
        if item:
            out.append((int(item), proto))
    return out


class _Datagram(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.got.done():
            self.got.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.got.done():
            self.got.set_exception(exc)


async def one_tcp(addr: str, port: int, timeout: float) -> str:
    """Connect, (send,) read the first bytes; return an outcome name."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(addr, port), timeout)
    except TimeoutError:
        return "connect-timeout"
    except ConnectionRefusedError:
        return "refused"
    except OSError as exc:
        return f"oserror-{exc.errno}"
    try:
        if port in HTTP_PORTS:
            writer.write(HTTP_REQUEST)
        data = await asyncio.wait_for(reader.read(4096), timeout)
        return "ok" if data else "eof"
    except TimeoutError:
        return "read-timeout"
    except OSError as exc:
        return f"oserror-{exc.errno}"
    finally:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()


async def one_udp(addr: str, port: int, timeout: float) -> str:
    """Send the DNS query on a connected UDP socket; wait for one datagram."""
    loop = asyncio.get_running_loop()
    try:
        transport, proto = await loop.create_datagram_endpoint(_Datagram, remote_addr=(addr, port))
    except OSError as exc:
        return f"oserror-{exc.errno}"
    try:
        transport.sendto(DNS_QUERY)
        data = await asyncio.wait_for(proto.got, timeout)
        return "ok" if data else "empty"
    except TimeoutError:
        return "udp-timeout"
    except OSError:
        return "refused"
    finally:
        transport.close()


async def run(
    targets: list[str], ports: list[tuple[int, str]], concurrency: int, timeout: float
) -> dict[str, Counter[str]]:
    """Every target x port with ``concurrency`` workers; outcome counts per ``proto/port``."""
    items: Iterator[tuple[str, int, str]] = ((t, p, proto) for p, proto in ports for t in targets)
    counts: dict[str, Counter[str]] = {f"{proto}/{p}": Counter() for p, proto in ports}

    async def worker() -> None:
        for addr, port, proto in items:
            if proto == "udp":
                counts[f"udp/{port}"][await one_udp(addr, port, timeout / 3)] += 1
            else:
                counts[f"tcp/{port}"][await one_tcp(addr, port, timeout)] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return counts


def main(argv: list[str] | None = None) -> int:
    """Run the loop and print its JSON summary."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("-iL", dest="targets", type=Path, required=True, help="file with one address per line")
    ap.add_argument("-p", dest="ports", default="T:25,80,110,143,U:53")
    ap.add_argument("--concurrency", type=int, default=512)
    ap.add_argument("--timeout", type=float, default=3.0)
    ap.add_argument("--uvloop", action="store_true", help="run on uvloop instead of asyncio's own loop")
    args = ap.parse_args(argv)
    targets = [ln.strip() for ln in args.targets.read_text().splitlines() if ln.strip()][: 1 << 20]
    ports = parse_ports(args.ports)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, args.concurrency + 128))
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    loop_factory = None
    if args.uvloop:
        import uvloop

        loop_factory = uvloop.new_event_loop
    t0 = time.perf_counter()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        by_port = runner.run(run(targets, ports, max(1, args.concurrency), args.timeout))
    wall = time.perf_counter() - t0
    counts: Counter[str] = Counter()
    for c in by_port.values():
        counts.update(c)
    total = sum(counts.values())
    json.dump({"loop": "uvloop" if args.uvloop else "asyncio", "targets": len(targets), "services": total,
               "ok": counts["ok"], "outcomes": dict(counts),
               "by_port": {k: dict(v) for k, v in by_port.items()}, "wall": wall,
               "rate_ok": counts["ok"] / wall if wall else 0.0,
               "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
