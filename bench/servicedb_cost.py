#!/usr/bin/env python3
"""What nmap's service database costs us: parse, first use, and CPU per banner beside our probes.

    python bench/servicedb_cost.py [--db PATH] [--banners FILE] [--rounds N] [--no-live]

Reads the installed ``nmap-service-probes`` (``--db``, else ``$PORTPROOF_SERVICE_DB``, else
Debian's path; ``apt-get install nmap-common`` when absent) and prints, in one run:

* the cold parse (reading the 2.5 MB file into probes and match lines);
* the first use: the first match of every banner below, which builds each probe's index and
  compiles the regexes those banners reach (nothing else is compiled), and, for reference, the
  time to compile every line of the file (what an eager loader would pay);
* the warm CPU per banner (process time, µs: mean and p95 over ``--rounds`` rounds) of
  ``ServiceDB.match`` and of our own classifier for the same bytes (the probe module's pure
  parse + identify functions: ``smtp.parse_reply``+``identify``, ``pop3``/``imap``/``nntp``
  status + ``identify``, ``http.parse_http_response``+``parse_server_header``,
  ``dns.parse_dns_reply``+``identify``), and their ratio;
* what each of them named.

Banners: fetched live from the lab on loopback (greetings of 127.0.0.1:25/110/119/143, the replies
of nginx on 127.0.0.1:80 and Apache on 127.0.0.5:80 to nmap's GetRequest, the ``version.bind``
answers of the DNS servers on 127.0.0.1/.2/.3/.6/.7/.8 to nmap's DNSVersionBindReq; whatever does
not answer is left out), plus ``--banners FILE``: JSON lines ``{"protocol": "smtp", "probe":
"NULL", "data": "220 ...\\r\\n"}`` (``data``: one character per byte, latin-1). Everything shown is
escaped: banners never reach the terminal raw.

``--vs-nmap`` adds a fidelity check: every greeting (the lab's and :data:`TYPED_GREETINGS`) is
served by a small asyncio server on an ephemeral 127.0.0.1 port, ``nmap -sT -sV --version-trace``
(installed with apt-get when missing) scans those ports, and the line nmap's NULL probe matched is
compared with the line ``ServiceDB.match("NULL", ...)`` returns.

The machine is shared and noisy: compare the two columns of one run, not runs with each other.
Our HTTP parser caches the parse of a header block it has seen (an LRU), so repeated rounds of the
same reply flatter our column there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, ensure_apt, machine, table

sys.path.insert(0, str(REPO))

import scanner.servicedb as sdb

LIVE_TCP = [  # (protocol, host, port, nmap probe)
    ("smtp", "127.0.0.1", 25, "NULL"),
    ("pop3", "127.0.0.1", 110, "NULL"),
    ("imap", "127.0.0.1", 143, "NULL"),
    ("nntp", "127.0.0.1", 119, "NULL"),
    ("http", "127.0.0.1", 80, "GetRequest"),
    ("http", "127.0.0.5", 80, "GetRequest"),
]
LIVE_DNS = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.6", "127.0.0.7", "127.0.0.8"]
#: greetings typed from the products' default banner formats (inputs for --vs-nmap only)
TYPED_GREETINGS = [
    b"220 mx1.example.org ESMTP Exim 4.96 Mon, 07 Dec 2026 10:00:00 +0000\r\n",
    b"220 mail.example.org ESMTP Sendmail 8.17.1.9/8.17.1.9; Mon, 7 Dec 2026 10:00:00 GMT\r\n",
    b"220 mail.example.org ESMTP Postfix (Ubuntu)\r\n",
    b"220 host.example.org Microsoft ESMTP MAIL Service, Version: 6.0.3790.4675 ready at  Mon, 7 Dec 2026 "
    b"10:00:00 +0100 \r\n",
    b"220 mx.example.org ESMTP MDaemon 23.0.1; Mon, 07 Dec 2026 10:00:00 +0100\r\n",
    b"220 mail.example.org ESMTP OpenSMTPD\r\n",
    b"* OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR LOGIN-REFERRALS ID ENABLE IDLE AUTH=PLAIN] Dovecot ready.\r\n",
    b"* OK Microsoft Exchange Server 2003 IMAP4rev1 server version 6.5.7638.1 (host.example.org) ready.\r\n",
    b"* OK host.example.org Cyrus IMAP v3.6.1-Debian-3.6.1-4 server ready\r\n",
    b"+OK Dovecot ready.\r\n",
    b"+OK Microsoft Exchange Server 2003 POP3 server version 6.5.7638.1 (host.example.org) ready.\r\n",
    b"+OK Qpopper (version 4.1.0) at host.example.org starting.\r\n",
    b"200 news.example.org InterNetNews NNRP server INN 2.6.4 ready (posting ok)\r\n",
    b"SSH-2.0-OpenSSH_8.4p1 Debian-5+deb11u3\r\n",
    b"SSH-2.0-dropbear_2022.83\r\n",
    b"220 (vsFTPd 3.0.5)\r\n",
    b"220 ProFTPD Server (Debian) [::ffff:10.0.0.1]\r\n",
    b"220 Microsoft FTP Service\r\n",
    b"RFB 003.008\n",
]


def show(data: bytes | str | None, limit: int = 60) -> str:
    """Terminal-safe short form of network text."""
    if data is None:
        return "-"
    text = data.decode("latin-1") if isinstance(data, bytes) else data
    out = text.encode("ascii", "backslashreplace").decode("ascii")
    out = "".join(ch if 0x20 <= ord(ch) < 0x7F else f"\\x{ord(ch):02x}" for ch in out)
    return out if len(out) <= limit else out[: limit - 3] + "..."


def grab_tcp(host: str, port: int, payload: bytes, timeout: float = 3.0) -> bytes:
    """The greeting (empty payload) or the reply to ``payload``, from a loopback server."""
    assert host.startswith("127.")
    data = b""
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as s:
        if payload:
            s.sendall(payload)
        while time.monotonic() < deadline and len(data) < 65536:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
            if not payload and data.endswith(b"\n"):
                break
    return data


def grab_udp(host: str, payload: bytes, timeout: float = 2.0) -> bytes:
    """One datagram answering ``payload`` from ``host``:53 (loopback only)."""
    assert host.startswith("127.")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(payload, (host, 53))
        data, _ = s.recvfrom(65536)
    return data


def live_banners(db: sdb.ServiceDB) -> list[tuple[str, str, bytes, str]]:
    """(protocol, nmap probe, bytes, where) for every lab server that answers."""
    out = []
    for proto, host, port, probe_name in LIVE_TCP:
        probe = db.probe(probe_name)
        try:
            data = grab_tcp(host, port, probe.payload if probe else b"")
        except OSError as e:
            print(f"[bench] {host}:{port} skipped: {e}", flush=True)
            continue
        if data:
            out.append((proto, probe_name, data, f"{host}:{port}"))
    probe = db.probe("UDP:DNSVersionBindReq")
    for host in LIVE_DNS:
        if probe is None:
            break
        try:
            out.append(("dns", "UDP:DNSVersionBindReq", grab_udp(host, probe.payload), f"udp/{host}:53"))
        except OSError as e:
            print(f"[bench] udp/{host}:53 skipped: {e}", flush=True)
    return out


def file_banners(path: Path) -> list[tuple[str, str, bytes, str]]:
    """Banners from a JSON lines file (see the module docstring)."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        rec = json.loads(line)
        out.append((rec["protocol"], rec.get("probe", "NULL"), rec["data"].encode("latin-1"), f"{path.name}:{n}"))
    return out


def our_classifiers() -> dict[str, Callable[[bytes], tuple[str | None, str | None]]]:
    """Per protocol: our pure classifier for one reply, returning (product, version)."""
    from probes import dns, http, imap, nntp, pop3, smtp

    def f_smtp(data: bytes) -> tuple[str | None, str | None]:
        f = smtp.identify(smtp.parse_reply(data), None)
        return f.product, f.version

    def f_pop3(data: bytes) -> tuple[str | None, str | None]:
        f = pop3.identify(pop3.parse_status(data)[1], {})
        return f.product, f.version

    def f_imap(data: bytes) -> tuple[str | None, str | None]:
        f = imap.identify(imap.parse_greeting(data)[1], [], {})
        return f.product, f.version

    def f_nntp(data: bytes) -> tuple[str | None, str | None]:
        code, text = nntp.parse_status(data)
        f = nntp.identify(code, text, {})
        return f.product, f.version

    def f_http(data: bytes) -> tuple[str | None, str | None]:
        resp = http.parse_http_response(data)
        server = resp.header("Server")
        sp = http.parse_server_header(server) if server else None
        return (sp.product, sp.version) if sp else (None, None)

    def f_dns(data: bytes) -> tuple[str | None, str | None]:
        f = dns.identify([dns.parse_dns_reply(data)])
        return f.product, f.version

    return {"smtp": f_smtp, "pop3": f_pop3, "imap": f_imap, "nntp": f_nntp, "http": f_http, "dns": f_dns}


def cpu_us(fn: Callable[[], Any], rounds: int) -> list[float]:
    """Process CPU time of ``rounds`` calls, one sample per call, in µs."""
    samples = []
    clock = time.process_time_ns
    for _ in range(rounds):
        t0 = clock()
        fn()
        samples.append((clock() - t0) / 1000)
    return samples


def p95(values: list[float]) -> float:
    """95th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


_TRACE = re.compile(r"Service scan (?:(?:soft|hard) )?match \(Probe NULL matched with NULL line (\d+)\): "
                    r"127\.0\.0\.1:(\d+) is ")


async def _nmap_on(greetings: list[bytes], nmap: str) -> dict[int, int]:
    """Serve each greeting on its own ephemeral port; nmap's NULL-probe match line per greeting."""

    def server_for(banner: bytes) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                writer.write(banner)
                await writer.drain()
                await asyncio.wait_for(reader.read(4096), 8)
            except (OSError, TimeoutError):
                pass
            finally:
                writer.close()
        return handle

    servers = [await asyncio.start_server(server_for(b), "127.0.0.1", 0) for b in greetings]
    ports = [srv.sockets[0].getsockname()[1] for srv in servers]
    try:
        proc = await asyncio.create_subprocess_exec(
            nmap, "-n", "-Pn", "-sT", "-sV", "--version-trace", "-p", ",".join(map(str, ports)), "127.0.0.1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        out, _ = await asyncio.wait_for(proc.communicate(), 900)
    finally:
        for srv in servers:
            srv.close()
    by_port: dict[int, int] = {}
    for m in _TRACE.finditer(out.decode("latin-1")):
        by_port.setdefault(int(m.group(2)), int(m.group(1)))
    return {i: by_port[port] for i, port in enumerate(ports) if port in by_port}


def vs_nmap(db: sdb.ServiceDB, greetings: list[bytes]) -> None:
    """Print, per greeting, the line nmap's NULL probe matched beside ours."""
    nmap = ensure_apt("nmap", "nmap")
    t0 = time.monotonic()
    lines = asyncio.run(_nmap_on(greetings, nmap))
    rows = []
    same = 0
    for i, banner in enumerate(greetings):
        ours = db.match("NULL", banner)
        theirs = lines.get(i)
        agree = (ours.line if ours else None) == theirs
        same += agree
        rows.append([show(banner, 50), theirs or "-", f"{ours.line} {show(ours.product, 28)}" if ours else "-",
                     "same" if agree else "DIFFERENT"])
    print(table(["greeting (escaped)", "nmap line", "our line and product", ""], rows))
    print(f"\nsame line as nmap -sV on {same} of {len(greetings)} greetings (nmap ran "
          f"{time.monotonic() - t0:.0f} s)\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", help="the nmap-service-probes file (default: $PORTPROOF_SERVICE_DB, Debian's path)")
    ap.add_argument("--banners", type=Path, help="JSON lines of banners to add")
    ap.add_argument("--rounds", type=int, default=300, help="warm rounds per banner (default 300)")
    ap.add_argument("--no-live", action="store_true", help="do not fetch banners from the lab")
    ap.add_argument("--vs-nmap", action="store_true", help="also compare the NULL-probe lines with nmap -sV's")
    args = ap.parse_args()

    if args.db is None and not os.environ.get(sdb.ENV_VAR) and not Path(sdb.DEFAULT_PATH).exists():
        ensure_apt("nmap", "nmap-common")  # nmap depends on nmap-common: the file comes with it
    db = sdb.load(args.db)
    if db is None:
        sys.exit(f"no service database: {sdb.last_error()}")
    print(f"machine: {machine()}")
    print(f"database: {db.path}\n")

    t0 = time.process_time()
    stats = db.stats()
    parse_ms = (time.process_time() - t0) * 1000

    banners = [] if args.no_live else live_banners(db)
    if args.banners:
        banners += file_banners(args.banners)
    if not banners:
        sys.exit("no banners: start the lab (tests/lab/up.sh) or give --banners FILE")

    # first use: index builds and the compiles these banners need
    t0 = time.process_time()
    for _, probe, data, _ in banners:
        db.match(probe, data)
    first_ms = (time.process_time() - t0) * 1000
    compiled_first = db.stats()["compiled"]

    ours = our_classifiers()
    rows = []
    names = []
    all_db: list[float] = []
    all_ours: list[float] = []
    for proto, probe, data, where in banners:
        got = db.match(probe, data)
        db_samples = cpu_us(partial(db.match, probe, data), args.rounds)
        all_db += db_samples
        fn = ours.get(proto)
        our_named: tuple[str | None, str | None] | str = "-"
        our_samples: list[float] = []
        if fn is not None:
            try:
                our_named = fn(data)
                our_samples = cpu_us(partial(fn, data), args.rounds)
                all_ours += our_samples
            except Exception as e:  # an API that moved under the bench: say so, do not stop
                our_named = f"n/a ({type(e).__name__})"
        db_mean = statistics.fmean(db_samples)
        our_mean = statistics.fmean(our_samples) if our_samples else None
        rows.append([
            where, proto, len(data),
            f"{db_mean:.1f}", f"{p95(db_samples):.1f}",
            f"{our_mean:.1f}" if our_mean else "-", f"{p95(our_samples):.1f}" if our_samples else "-",
            f"{db_mean / our_mean:.1f}x" if our_mean else "-",
        ])
        db_named = (f"{got.service} {show(got.product, 30)} {show(got.version, 24)} "
                    f"({'soft' if got.soft else 'hard'}, {got.probe}, line {got.line})") if got else "nothing"
        if isinstance(our_named, tuple):
            our_text = f"{show(our_named[0], 30)} {show(our_named[1], 24)}"
        else:
            our_text = our_named
        names.append([where, show(data, 44), db_named, our_text])

    print(table(["banner", "proto", "bytes", "db µs mean", "db µs p95", "ours µs mean", "ours µs p95", "db/ours"],
                rows))
    print()
    print(table(["banner", "bytes (escaped)", "database says", "ours says"], names))
    print()
    t0 = time.process_time()
    failures = db.compile_all()
    all_ms = (time.process_time() - t0) * 1000
    stats = db.stats()
    total = stats["matches"] + stats["softmatches"]
    summary = [
        ["cold parse (CPU)", f"{parse_ms:.0f} ms", f"{stats['lines']} lines, {stats['probes']} probes, "
                                                   f"{stats['matches']} match + {stats['softmatches']} softmatch, "
                                                   f"{stats['parse_errors']} parse errors"],
        ["first use (CPU)", f"{first_ms:.0f} ms", f"{len(banners)} banners: index builds + {compiled_first} regexes "
                                                  "compiled"],
        ["compile every line (CPU)", f"{all_ms:.0f} ms", f"{stats['compiled']}/{total} compile "
                                                         f"({100 * stats['compiled'] / total:.2f}%), "
                                                         f"{len(failures)} fail"],
        ["warm, all banners", f"{statistics.fmean(all_db):.1f} µs",
         f"mean per banner (p95 {p95(all_db):.1f} µs); ours {statistics.fmean(all_ours):.1f} µs "
         f"(p95 {p95(all_ours):.1f}): ratio {statistics.fmean(all_db) / statistics.fmean(all_ours):.1f}x"
         if all_ours else "ours: -"],
    ]
    print(table(["what", "cost", "detail"], summary))
    if failures:
        print("\ncompile failures by reason:")
        for reason, count in db.failure_reasons().most_common(10):
            print(f"  {count:5d}  {show(reason, 100)}")
    if stats["slow"]:
        print(f"\nquarantined as slow (> {sdb.SLOW_SECONDS * 1000:.0f} ms on one reply): {stats['slow']} lines")
    if args.vs_nmap:
        print()
        greetings = [data for _, probe, data, _ in banners if probe == "NULL"] + TYPED_GREETINGS
        vs_nmap(db, greetings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
