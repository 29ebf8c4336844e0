"""The ``fingerprint`` command line.

    fingerprint TARGET... [-p PORTS] [--profile FILE] [-o table|jsonl|json] [-oX FILE] ...
    fingerprint replay FILE_OR_DIR... [-o ...]
    fingerprint probes [--json]
    fingerprint schema

Heavy modules (scapy, rich, cryptography) are imported only when needed so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from scanner import __version__

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

SUBCOMMANDS = ("scan", "replay", "probes", "profiles", "schema")


def _err(msg: str) -> None:
    from scanner.safe import safe_text

    sys.stderr.write(f"fingerprint: {safe_text(msg, 2000)}\n")


def _say_breadth(handle: Any) -> None:
    """Say once, on standard error, that the service database is missing (not when turned off).
    Finding the file is cheap: it is parsed only when a port needs it."""
    if handle.enabled and handle.get() is None:
        _err(f"breadth reduced: {handle.problem}; only portproof's own rules named products "
             "(--service-db FILE to use another file, --no-service-db to silence this)")


def _add_common(p: argparse.ArgumentParser) -> None:
    out = p.add_argument_group("output")
    out.add_argument("-o", "--output", choices=("table", "jsonl", "json"), default="table",
                     help="output format on standard output (default: table)")
    out.add_argument("-oX", dest="xml", metavar="FILE", help="also write nmap-compatible XML to FILE")
    out.add_argument("-v", "--verbose", action="count", default=0,
                     help="show evidence and probe tracebacks (table), keep tracebacks (JSON)")
    plug = p.add_argument_group("probes and plugins")
    plug.add_argument("--probe", action="append", default=[], metavar="NAME",
                      help="use only this probe (repeatable)")
    plug.add_argument("--exclude-probe", action="append", default=[], metavar="NAME",
                      help="do not use this probe (repeatable)")
    plug.add_argument("--require-probes", metavar="A,B", help="fail unless these probes are loaded")
    plug.add_argument("--strict-plugins", action="store_true", help="a plugin that fails to load is fatal")
    plug.add_argument("--plugin-path", action="append", default=[], metavar="PATH",
                      help="load probe modules from a file or folder (development; also PORTPROOF_PLUGIN_PATH)")
    db = p.add_argument_group("service database (breadth beyond our own rules)")
    db.add_argument("--service-db", metavar="FILE",
                    help="nmap-service-probes file read at run time (default: $PORTPROOF_SERVICE_DB, then "
                    "/usr/share/nmap/nmap-service-probes from Debian's nmap-common)")
    db.add_argument("--no-service-db", action="store_true",
                    help="name products only from portproof's own rules (no service database)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of a scan (``fingerprint [scan] TARGET...``)."""
    p = argparse.ArgumentParser(
        prog="fingerprint",
        description="Confirm the real service behind each port: protocol, product, version, TLS facts, "
        "and whether it is what the port profile says it should carry.",
        epilog="Other commands: 'fingerprint replay FILE...' (pcap/pcapng), 'fingerprint probes' (list "
        "probes), 'fingerprint schema' (JSON Schema of the output).",
    )
    p.add_argument("targets", nargs="*", metavar="TARGET",
                   help="address, host name, CIDR (127.0.0.0/29) or range (127.0.0.1-5)")
    p.add_argument("--version", action="version", version=f"portproof {__version__}")
    t = p.add_argument_group("targets and ports")
    t.add_argument("-iL", dest="input_list", metavar="FILE", help="read targets from FILE ('-' for stdin)")
    t.add_argument("-n", dest="no_resolve", action="store_true", help="never resolve host names")
    t.add_argument("-p", "--ports", metavar="PORTS",
                   help="ports instead of the profile's: 25,110,389-390 or U:53,T:25")
    t.add_argument("--profile", metavar="NAME|FILE",
                   help="port profile (default: built-in exchange-ad; 'fingerprint profiles' lists them)")
    t.add_argument("--rpc-range", metavar="LO-HI|profile",
                   help="also scan this RPC dynamic port range, expecting msrpc on each port ('profile': "
                        "the profile's own rpc_range, ad-dc: 49152-65535)")
    s = p.add_argument_group("scheduling")
    s.add_argument("--fast", action="store_true", help="only probes hinted for each port (no slow lane)")
    s.add_argument("--intensity", type=int, default=7, choices=range(1, 10), metavar="1-9",
                   help="slow lane: also try probes of rarity <= N on each port (default 7)")
    s.add_argument("--no-nmap-probes", action="store_true",
                   help="slow lane: do not send the service database's own probes (nmap's) on ports ours "
                   "could not name (--no-service-db implies it)")
    s.add_argument("--concurrency", type=int, default=256, metavar="N", help="connections at once (default 256)")
    s.add_argument("--per-host", type=int, default=16, metavar="N", help="ports of one host at once (default 16)")
    s.add_argument("--rate", type=float, default=0.0, metavar="N", help="new connections per second (0: no limit)")
    s.add_argument("--connect-timeout", type=float, default=3.0, metavar="S")
    s.add_argument("--read-timeout", type=float, default=5.0, metavar="S")
    s.add_argument("--slow-read-timeout", type=float, default=2.0, metavar="S",
                   help="read timeout of probes not hinted for the port (slow lane)")
    s.add_argument("--greeting-wait", type=float, default=3.0, metavar="S",
                   help="wait for a greeting on ports whose probe expects the server to speak first")
    s.add_argument("--port-timeout", type=float, default=60.0, metavar="S", help="total time per port")
    s.add_argument("--udp-timeout", type=float, default=1.0, metavar="S")
    s.add_argument("--seed", type=int, default=0, help="seed of request ids (replayable requests)")
    s.add_argument("--client-name", default="portproof.invalid", help="name sent in EHLO and similar")
    s.add_argument("--record", metavar="FILE",
                   help="write the scan's conversations to a pcapng file, TLS as on the wire with its "
                        "session keys (Decryption Secrets Blocks: replay and Wireshark decrypt it)")
    s.add_argument("--resume", metavar="FILE",
                   help="continue an interrupted scan: skip the address/port/transport triples already in the "
                   "JSON-lines FILE and append the new results to FILE (standard output as with -o)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    d = p.add_argument_group("processes and machines (scanner/shard.py)")
    d.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="engine processes, each scanning whole hosts (default: the number of cores, at most one "
                        "per 256 ports; 1: one process; never more than the hosts); --concurrency and --rate are "
                        "split between them")
    d.add_argument("--scheduler", metavar="ADDRESS",
                   help="scan on a Dask cluster (tcp://HOST:8786, started with 'dask scheduler' and 'dask worker'; "
                        "needs pip install 'portproof[cluster]')")
    _add_common(p)
    return p


def _load_registry(args: argparse.Namespace) -> Any:
    from scanner.registry import PluginError, load_registry

    try:
        reg = load_registry(strict=args.strict_plugins, plugin_paths=args.plugin_path)
    except PluginError as exc:
        _err(str(exc))
        raise SystemExit(EXIT_ERROR) from exc
    for e in reg.errors:
        _err(f"plugin skipped: {e.entry_point} from {e.distribution}: {e.error}")
    names = {p.name for p in reg.probes}
    wanted = [n.strip() for n in (args.require_probes or "").split(",") if n.strip()]
    wanted += list(args.probe)
    missing = [n for n in wanted if n not in names]
    if missing:
        _err(f"required probe(s) not loaded: {', '.join(missing)} (loaded: {', '.join(sorted(names))})")
        raise SystemExit(EXIT_ERROR)
    return reg


class _Progress:
    """A progress bar on stderr for long scans and replays (only on a terminal).

    ``in_bytes``: the total is a byte count (replay: bytes of the captures), shown as such, with
    the text of :meth:`update` beside the bar.
    """

    def __init__(self, total: int, enabled: bool, label: str = "scanning", in_bytes: bool = False) -> None:
        self.bar: Any = None
        if enabled and total > 8 and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                MofNCompleteColumn,
                Progress,
                ProgressColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            count: tuple[ProgressColumn, ...] = (
                (DownloadColumn(), TextColumn("{task.description}")) if in_bytes else (MofNCompleteColumn(),)
            )
            self.bar = Progress(label, BarColumn(), *count, TimeElapsedColumn(),
                                console=Console(stderr=True), transient=True)
            self.task = self.bar.add_task("" if in_bytes else "scan", total=total)
            self.bar.start()

    def update(self, completed: int, note: str) -> None:
        """Set the bar to ``completed`` with ``note`` beside it (text we made, never peer bytes)."""
        if self.bar is not None:
            self.bar.update(self.task, completed=completed, description=note)

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, n)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _emit(results: list[Any], args: argparse.Namespace, meta: dict[str, Any], streamed: bool) -> None:
    from scanner.output import render_table, results_to_json

    if args.output == "table":
        render_table(results, verbose=bool(args.verbose))
    elif args.output == "json":
        sys.stdout.write(results_to_json(results, meta, verbose=bool(args.verbose)) + "\n")
    elif not streamed:
        from scanner.output import JSONLinesWriter

        w = JSONLinesWriter(sys.stdout, bool(args.verbose))
        for r in results:
            w(r)


def cmd_scan(argv: Sequence[str]) -> int:
    """``fingerprint [scan] TARGET...``"""
    args = build_parser().parse_args(argv)
    from scanner.engine import Scanner, ScanOptions, _new_loop
    from scanner.profile import ProfileError, load_profile, parse_ports, parse_range, rpc_entries
    from scanner.targets import TargetError, expand_targets, read_target_file

    specs = list(args.targets)
    try:
        if args.input_list:
            specs += read_target_file(args.input_list)
        if not specs:
            _err("no targets given (try: fingerprint 127.0.0.1)")
            return EXIT_USAGE
        profile = load_profile(args.profile)
        entries = parse_ports(args.ports, profile) if args.ports else list(profile.entries)
        if args.rpc_range:
            if args.rpc_range == "profile":
                if profile.rpc_range is None:
                    raise ProfileError(f"profile {profile.name} names no rpc_range: give --rpc-range LO-HI")
                lo, hi = profile.rpc_range
            else:
                lo, hi = parse_range(args.rpc_range, "--rpc-range")
            entries += rpc_entries(lo, hi, entries)
        targets = expand_targets(specs, resolve=not args.no_resolve)
    except (ProfileError, TargetError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    registry = _load_registry(args)
    from scanner.shard import default_jobs, host_count

    jobs = args.jobs if args.jobs is not None else default_jobs(len(targets) * len(entries))
    jobs = min(max(1, jobs), max(1, host_count(targets)))
    sharded = bool(args.scheduler) or jobs > 1  # scanner/shard.py runs the engine elsewhere
    recorder = None
    if args.record and not sharded:
        from scanner.replay.pcapwriter import PcapRecorder

        try:
            recorder = PcapRecorder(args.record)
        except OSError as exc:
            _err(f"cannot write {args.record}: {exc.strerror or exc}")
            return EXIT_USAGE
    options = ScanOptions(
        connect_timeout=args.connect_timeout, read_timeout=args.read_timeout, greeting_wait=args.greeting_wait,
        port_timeout=args.port_timeout, slow_read_timeout=args.slow_read_timeout, udp_timeout=args.udp_timeout,
        concurrency=max(1, args.concurrency),
        per_host=max(1, args.per_host), rate=args.rate, fast=args.fast, intensity=args.intensity,
        probes=tuple(args.probe), exclude=tuple(args.exclude_probe), seed=args.seed,
        client_name=args.client_name, resolve=not args.no_resolve, recorder=recorder,
        service_db=args.service_db, use_service_db=not args.no_service_db,
        nmap_probes=not (args.no_nmap_probes or args.no_service_db),
    )
    results: list[Any] = []
    progress = _Progress(len(targets) * len(entries), not args.no_progress)
    writer = None
    if args.output == "jsonl":
        from scanner.output import JSONLinesWriter

        writer = JSONLinesWriter(sys.stdout, bool(args.verbose))

    # streamed JSON lines need no copy of the results (flat memory on large scans), except for -oX
    keep = not (writer is not None and not args.xml)
    options.keep_results = keep
    done = _PortBitmap(targets, entries)  # for the interruption summary: one bit per port, not a key

    def on_result(r: Any) -> None:
        done.add(r.address, r.port, r.transport)
        if keep:
            results.append(r)
        if writer is not None:
            writer(r)
        if not sharded:  # sharded: the processes report progress as ports finish
            progress.advance()

    skip: frozenset[tuple[str, int, str]] = frozenset()
    resume_fh = None
    if args.resume:
        from scanner.output import JSONLinesWriter

        try:
            skip = _read_resume(args.resume)
            resume_fh = _open_resume(args.resume)
        except OSError as exc:
            _err(f"cannot resume from {args.resume}: {exc.strerror or exc}")
            return EXIT_USAGE
        resume_writer = JSONLinesWriter(resume_fh, bool(args.verbose))
        _err(f"resuming: {len(skip)} port(s) already in {args.resume} are skipped")
        first = on_result

        def on_result(r: Any) -> None:
            resume_writer(r)
            first(r)

    start = time.time()
    code = EXIT_OK
    if sharded:
        code, notes, service_db = _scan_sharded(args, options, targets, entries, skip, on_result, progress, jobs,
                                                  registry)
        if resume_fh is not None:
            resume_fh.close()
    else:
        scanner = Scanner(registry, options, on_result)
        import asyncio

        try:
            with asyncio.Runner(loop_factory=lambda: _new_loop(recorder is not None)) as runner:
                runner.run(scanner.run(targets, entries, skip))
        except KeyboardInterrupt:
            code = EXIT_INTERRUPTED
        finally:
            progress.stop()
            if recorder is not None:
                recorder.close()
            if resume_fh is not None:
                resume_fh.close()
        notes, service_db = scanner.notes, scanner.service_db
    end = time.time()
    if service_db is None:  # the sharded run could not start (said why)
        return code
    if not sharded and args.output == "json":
        from scanner.output import sort_results

        # the order of the table and -oX, and of sharded runs (scanner/shard.py), at any --jobs
        results = sort_results(results)
    for note in notes:
        _err(note)
    _say_breadth(service_db)
    meta = {"scanner": "portproof", "version": __version__, "args": list(argv), "start": start, "end": end,
            "profile": profile.name, "interrupted": code == EXIT_INTERRUPTED}
    _emit(results, args, meta, streamed=writer is not None)
    if args.xml:
        from scanner.output import write_nmap_xml

        write_nmap_xml(results, args.xml, " ".join(["fingerprint", *argv]), start, end)
    if code == EXIT_INTERRUPTED:
        for key in skip:
            done.add(*key)
        _err(_unscanned_summary(targets, entries, done))
    return code


def _scan_sharded(
    args: argparse.Namespace, options: Any, targets: list[Any], entries: list[Any],
    skip: frozenset[tuple[str, int, str]], on_result: Any, progress: _Progress, jobs: int, registry: Any,
) -> tuple[int, list[str], Any]:
    """``--jobs N`` (N > 1) or ``--scheduler``: the scan through :mod:`scanner.shard`; (exit code,
    engine notes, a service database handle for the breadth note)."""
    from scanner.breadth import DatabaseHandle
    from scanner.shard import RegistryArgs, ScanJob, ShardError, scan_dask, scan_local

    if args.record and not args.scheduler:
        try:  # the processes write parts beside it; the parent joins them into this file
            open(args.record, "wb").close()
        except OSError as exc:
            _err(f"cannot write {args.record}: {exc.strerror or exc}")
            return EXIT_USAGE, [], None
    expect = tuple(sorted(p.name for p in registry.probes))
    job = ScanJob(options=options, entries=tuple(entries),
                  registry=RegistryArgs(bool(args.strict_plugins), tuple(args.plugin_path), expect), record=args.record)
    try:
        if args.scheduler:
            outcome = scan_dask(job, targets, args.scheduler, on_result, progress.advance, skip)
        else:
            outcome = scan_local(job, targets, jobs, on_result, progress.advance, skip)
    except ShardError as exc:
        _err(str(exc))
        return EXIT_ERROR, [], None  # None: nothing ran
    except KeyboardInterrupt:  # a second Ctrl-C while the processes were being stopped
        return EXIT_INTERRUPTED, [], DatabaseHandle(args.service_db, not args.no_service_db)
    finally:
        progress.stop()
    for e in outcome.errors:
        _err(f"not scanned: {e}")
    code = EXIT_INTERRUPTED if outcome.interrupted else EXIT_ERROR if outcome.errors else EXIT_OK
    return code, outcome.notes, DatabaseHandle(args.service_db, not args.no_service_db)


class _PortBitmap:
    """Which (address, port, transport) of a scan are done: one bit per port of targets x entries.

    The streamed JSON-lines output promises memory that does not grow with the number of results;
    a set of keys would cost about 150 bytes per port, this costs one bit (16,000 hosts x 22 ports:
    44 KB), next to the index of each address and port that the target and port lists already imply.
    """

    def __init__(self, targets: Sequence[Any], entries: Sequence[Any]) -> None:
        self._t: dict[str, int] = {}
        for t in targets:
            self._t.setdefault(t.address, len(self._t))
        self._e: dict[tuple[int, str], int] = {}
        for e in entries:
            self._e.setdefault((e.port, e.transport), len(self._e))
        self._bits = bytearray((len(self._t) * len(self._e) + 7) // 8)

    def _index(self, address: str, port: int, transport: str) -> int | None:
        t, e = self._t.get(address), self._e.get((port, transport))
        return None if t is None or e is None else t * len(self._e) + e

    def add(self, address: str, port: int, transport: str) -> None:
        """Mark one port done (a key outside the scan is ignored)."""
        i = self._index(address, port, transport)
        if i is not None:
            self._bits[i >> 3] |= 1 << (i & 7)

    def __contains__(self, key: tuple[str, int, str]) -> bool:
        i = self._index(*key)
        return i is not None and bool(self._bits[i >> 3] & (1 << (i & 7)))


def _read_resume(path: str) -> frozenset[tuple[str, int, str]]:
    """The (address, port, transport) triples already in a JSON-lines output (missing file: none).

    Results with the verdict ``error`` (the scan itself failed there) are scanned again; lines that
    do not parse (a record cut by a kill) are ignored.
    """
    import json

    done: set[tuple[str, int, str]] = set()
    try:
        fh = open(path, encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return frozenset()
    with fh:
        for line in fh:
            try:
                rec = json.loads(line)
                key = (str(rec["address"]), int(rec["port"]), str(rec["transport"]))
            except (ValueError, KeyError, TypeError):
                continue
            if rec.get("verdict") != "error":
                done.add(key)
    return frozenset(done)


def _open_resume(path: str) -> Any:
    """Open ``path`` for appending JSON lines, first ending a record cut short by an interruption."""
    fh = open(path, "a+b")
    try:
        if fh.seek(0, os.SEEK_END) > 0:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                fh.write(b"\n")
    finally:
        fh.close()
    return open(path, "a", encoding="utf-8")


def _unscanned_summary(targets: Sequence[Any], entries: Sequence[Any], done: _PortBitmap) -> str:
    """One paragraph for stderr: how many ports were not scanned, and which (the first few)."""
    total = len(targets) * len(entries)
    missing = [f"{t.address}:{e.port}/{e.transport}" for e in entries for t in targets
               if (t.address, e.port, e.transport) not in done]
    text = f"interrupted: {total - len(missing)} of {total} ports scanned, {len(missing)} not scanned"
    if missing:
        shown = ", ".join(missing[:20])
        more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
        text += f": {shown}{more} (continue with --resume FILE on a JSON-lines output)"
    return text


def cmd_probes(argv: Sequence[str]) -> int:
    """``fingerprint probes``: list every probe and where it comes from; ``probes new NAME``: scaffold one."""
    if argv and argv[0] == "new":
        from scanner.scaffold import main as scaffold_main

        return scaffold_main(argv[1:])
    p = argparse.ArgumentParser(prog="fingerprint probes", description="List the probes the registry loads.",
                                epilog="'fingerprint probes new NAME [--dir DIR]' writes a new probe plugin package.")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.add_argument("--strict-plugins", action="store_true")
    p.add_argument("--plugin-path", action="append", default=[])
    p.add_argument("--probe", action="append", default=[])
    p.add_argument("--require-probes")
    args = p.parse_args(argv)
    reg = _load_registry(args)
    rows = [
        {
            "name": i.probe.name,
            "distribution": i.distribution,
            "version": i.version,
            "builtin": i.builtin,
            "transports": list(i.probe.transports),
            "ports": list(i.probe.ports),
            "tls_ports": list(i.probe.tls_ports),
            "server_first": i.probe.server_first,
            "rarity": i.probe.rarity,
            "summary": i.probe.summary,
        }
        for i in reg.infos
    ]
    if args.json:
        import json

        print(json.dumps({"probes": rows, "errors": [e.__dict__ for e in reg.errors]}, indent=2))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    from scanner.safe import safe_text

    table = Table(title="probes")
    for col in ("name", "distribution", "transport", "ports", "rarity", "built-in", "summary"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["name"], safe_text(f"{r['distribution']} {r['version']}".strip(), 60),
                      "/".join(r["transports"]), ",".join(map(str, r["ports"])), str(r["rarity"]),
                      "yes" if r["builtin"] else "no", safe_text(r["summary"], 100))
    Console(highlight=False).print(table)
    return EXIT_OK


def cmd_profiles(argv: Sequence[str]) -> int:
    """``fingerprint profiles [NAME...]``: the built-in port profiles and their ports."""
    p = argparse.ArgumentParser(prog="fingerprint profiles",
                                description="List the built-in port profiles with what each port should carry.")
    p.add_argument("names", nargs="*", metavar="NAME", help="only these profiles")
    p.add_argument("--json", action="store_true", help="JSON instead of tables")
    args = p.parse_args(argv)
    from scanner.profile import builtin_profiles

    profiles = builtin_profiles()
    known = [pr.name for pr in profiles]
    unknown = [n for n in args.names if n not in known]
    if unknown:
        _err(f"no built-in profile {', '.join(unknown)} (built-in: {', '.join(known)})")
        return EXIT_USAGE
    if args.names:
        profiles = [pr for pr in profiles if pr.name in args.names]
    if args.json:
        import json

        print(json.dumps({"profiles": [
            {"name": pr.name, "description": pr.description,
             "rpc_range": f"{pr.rpc_range[0]}-{pr.rpc_range[1]}" if pr.rpc_range else None,
             "ports": [{"port": e.port, "transport": e.transport, "service": e.service, "tls": e.tls,
                        "probe": e.probe, "description": e.description} for e in pr.entries]}
            for pr in profiles]}, indent=2))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    for pr in profiles:
        default = " (default)" if pr.name == known[0] else ""
        title = f"{pr.name}{default}: {pr.description}"
        table = Table(title=title, title_justify="left")
        for col in ("port", "expected", "tls", "probe", "description"):
            table.add_column(col, overflow="fold")
        for e in pr.entries:
            table.add_row(f"{e.port}/{e.transport}", e.service or "", "implicit" if e.tls else "",
                          e.probe or "-", e.description)
        if pr.rpc_range:
            table.caption = (f"RPC dynamic range {pr.rpc_range[0]}-{pr.rpc_range[1]} (msrpc), scanned with "
                             f"--rpc-range profile or --rpc-range LO-HI")
        console.print(table)
    return EXIT_OK


def cmd_schema(argv: Sequence[str]) -> int:
    """``fingerprint schema``: print the JSON Schema of one output record."""
    from scanner.schema import schema_json

    sys.stdout.write(schema_json())
    return EXIT_OK


def cmd_replay(argv: Sequence[str]) -> int:
    """``fingerprint replay FILE_OR_DIR...``"""
    p = argparse.ArgumentParser(prog="fingerprint replay",
                                description="Identify services offline from pcap/pcapng captures.")
    p.add_argument("paths", nargs="+", metavar="FILE_OR_DIR")
    p.add_argument("--profile", metavar="NAME|FILE",
                   help="port profile giving each port's expectation (default: built-in exchange-ad)")
    p.add_argument("--tls-keylog", metavar="FILE",
                   help="NSS key log (SSLKEYLOGFILE) to decrypt TLS with; pcapng files' own "
                        "Decryption Secrets Blocks are always used")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="replay on a Dask cluster, one task per file (the workers must read the same paths; "
                        "needs pip install 'portproof[cluster]')")
    p.add_argument("--jobs", type=int, default=0, metavar="N",
                   help="local processes replaying files in parallel (default 0: one per core; 1: no extra process)")
    p.add_argument("--split-mb", type=int, default=0, metavar="MB",
                   help="with --jobs: also split files of MB MiB or more over the processes, flows hashed by "
                        "endpoint (default 0: off; every process reads the whole file, so this pays only when "
                        "identification, not reading, dominates)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress line on stderr (bytes read, packets/s, endpoints found)")
    _add_common(p)
    args = p.parse_args(argv)
    registry = _load_registry(args)
    try:
        from scanner.replay import replay_paths
    except ImportError as exc:
        _err(f"replay is not available: {exc}")
        return EXIT_ERROR
    results: list[Any] = []
    writer = None
    if args.output == "jsonl":
        from scanner.output import JSONLinesWriter

        writer = JSONLinesWriter(sys.stdout, bool(args.verbose))

    from scanner.engine import apply_profile
    from scanner.profile import ProfileError, load_profile

    try:
        profile = load_profile(args.profile)
    except ProfileError as exc:
        _err(str(exc))
        return EXIT_USAGE

    def on_result(r: Any) -> None:
        r = apply_profile(r, profile)
        results.append(r)
        if writer is not None:
            writer(r)

    tls_keys = None
    if args.tls_keylog:
        from scanner.replay.keylog import KeyLog

        tls_keys = KeyLog()
        try:
            tls_keys.add_file(args.tls_keylog)
        except OSError as exc:
            _err(f"cannot read {args.tls_keylog}: {exc.strerror or exc}")
            return EXIT_USAGE
        if not tls_keys:
            _err(f"{args.tls_keylog}: no TLS secrets in NSS key log format")
            return EXIT_USAGE

    start = time.time()
    probes = registry.select(args.probe, args.exclude_probe).probes
    from scanner.breadth import DatabaseHandle

    service_db = DatabaseHandle(args.service_db, not args.no_service_db)
    if args.jobs < 0:
        _err("--jobs must be 0 (one per core) or more")
        return EXIT_USAGE
    from scanner.replay import ReplayProgress, capture_files

    total = sum(os.path.getsize(f) for f in capture_files(args.paths) if os.path.isfile(f))
    bar = _Progress(total, not args.no_progress and not args.scheduler, label="replaying", in_bytes=True)
    t0 = time.monotonic()

    def on_progress(p: ReplayProgress) -> None:
        rate = p.packets / max(time.monotonic() - t0, 1e-3)
        bar.update(p.done_bytes, f"{p.packets:,} packets, {rate:,.0f}/s, {p.endpoints:,} endpoints")

    try:
        if args.scheduler:
            report = _replay_dask(args, on_result, registry)
            if report is None:
                return EXIT_ERROR
        else:
            report = replay_paths(list(args.paths), probes, on_result=on_result, service_db=service_db,
                                  tls_keys=tls_keys, jobs=args.jobs,
                                  progress=on_progress if bar.bar is not None else None,
                                  split_bytes=args.split_mb * 1024 * 1024 if args.split_mb > 0 else None)
    except KeyboardInterrupt:
        bar.stop()
        _emit(results, args, {"interrupted": True}, streamed=writer is not None)
        return EXIT_INTERRUPTED
    bar.stop()
    end = time.time()
    for e in getattr(report, "errors", []):
        _err(str(e))
    _say_breadth(service_db)
    meta = {"scanner": "portproof", "version": __version__, "args": ["replay", *argv], "start": start,
            "end": end}
    _emit(results, args, meta, streamed=writer is not None)
    if args.xml:
        from scanner.output import write_nmap_xml

        write_nmap_xml(results, args.xml, " ".join(["fingerprint", "replay", *argv]), start, end)
    read_any = getattr(report, "packets", 1) > 0 or bool(results)
    return EXIT_OK if read_any else EXIT_ERROR


def _replay_dask(args: argparse.Namespace, on_result: Any, registry: Any) -> Any:
    """``replay --scheduler``: one Dask task per capture file (scanner/shard.py), results in file
    order; an object with the read errors and the packet count, or None when the cluster failed."""
    from types import SimpleNamespace

    from scanner.shard import RegistryArgs, ReplayJob, ShardError, replay_dask

    keylog = None
    if args.tls_keylog:
        with open(args.tls_keylog, "rb") as fh:  # read above already: the workers get its text
            keylog = fh.read()
    expect = tuple(sorted(p.name for p in registry.probes))
    job = ReplayJob(registry=RegistryArgs(bool(args.strict_plugins), tuple(args.plugin_path), expect),
                    probes=tuple(args.probe), exclude=tuple(args.exclude_probe), service_db=args.service_db,
                    use_service_db=not args.no_service_db, tls_keylog=keylog)
    try:
        errors, packets, interrupted = replay_dask(job, list(args.paths), args.scheduler, on_result)
    except ShardError as exc:
        _err(str(exc))
        return None
    if interrupted:
        raise KeyboardInterrupt
    return SimpleNamespace(errors=errors, packets=packets)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fingerprint`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] in SUBCOMMANDS:
            cmd, rest = args[0], args[1:]
            if cmd == "replay":
                return cmd_replay(rest)
            if cmd == "probes":
                return cmd_probes(rest)
            if cmd == "profiles":
                return cmd_profiles(rest)
            if cmd == "schema":
                return cmd_schema(rest)
            return cmd_scan(rest)
        return cmd_scan(args)
    except BrokenPipeError:
        # output piped into head & co.: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
