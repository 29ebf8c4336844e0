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
    s.add_argument("--record", metavar="FILE", help="write the scan's conversations to a pcap file")
    s.add_argument("--resume", metavar="FILE",
                   help="continue an interrupted scan: skip the address/port/transport triples already in the "
                   "JSON-lines FILE and append the new results to FILE (standard output as with -o)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
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
    """A progress bar on stderr for long scans (only on a terminal)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar: Any = None
        if enabled and total > 8 and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            self.bar = Progress("scanning", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                console=Console(stderr=True), transient=True)
            self.task = self.bar.add_task("scan", total=total)
            self.bar.start()

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

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
    recorder = None
    if args.record:
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

    scanner = Scanner(registry, options, on_result)
    start = time.time()
    code = EXIT_OK
    import asyncio

    try:
        with asyncio.Runner(loop_factory=_new_loop) as runner:
            runner.run(scanner.run(targets, entries, skip))
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    finally:
        progress.stop()
        if recorder is not None:
            recorder.close()
        if resume_fh is not None:
            resume_fh.close()
    end = time.time()
    for note in scanner.notes:
        _err(note)
    _say_breadth(scanner.service_db)
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

    start = time.time()
    probes = registry.select(args.probe, args.exclude_probe).probes
    from scanner.breadth import DatabaseHandle

    service_db = DatabaseHandle(args.service_db, not args.no_service_db)
    try:
        report = replay_paths(list(args.paths), probes, on_result=on_result, service_db=service_db)
    except KeyboardInterrupt:
        _emit(results, args, {"interrupted": True}, streamed=writer is not None)
        return EXIT_INTERRUPTED
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
