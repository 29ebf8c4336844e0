"""Renderers: terminal table, JSON lines, JSON, and nmap-compatible XML.

Observers in the sslyze sense: the engine hands each :class:`ScanResult` to a writer; the writers
never reach back into the engine. The terminal table escapes every network string
(:func:`scanner.safe.safe_text`); JSON keeps the exact text.
"""

from __future__ import annotations

import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import IO, Any

import msgspec

from scanner import __version__
from scanner.results import ScanResult
from scanner.safe import safe_text

__all__ = ["JSONLinesWriter", "render_table", "result_to_dict", "results_to_json", "write_nmap_xml"]

_ENCODER = msgspec.json.Encoder()


def result_to_dict(result: ScanResult, verbose: bool = False) -> dict[str, Any]:
    """The JSON object of a result (tracebacks only with ``verbose``)."""
    data: dict[str, Any] = msgspec.to_builtins(result)
    if not verbose:
        for a in data.get("attempts", []):
            a.pop("traceback", None)
    return data


class JSONLinesWriter:
    """Write one JSON object per result, flushed at once (so an interrupted scan keeps them)."""

    def __init__(self, stream: IO[str], verbose: bool = False) -> None:
        self.stream = stream
        self.verbose = verbose

    def __call__(self, result: ScanResult) -> None:
        if self.verbose or not any(a.traceback for a in result.attempts):
            # nothing to drop: encode the struct itself (the same JSON as result_to_dict's, without
            # building the intermediate dicts)
            data = _ENCODER.encode(result)
        else:
            data = _ENCODER.encode(result_to_dict(result, self.verbose))
        self.stream.write(data.decode() + "\n")
        self.stream.flush()


def results_to_json(results: Iterable[ScanResult], meta: dict[str, Any], verbose: bool = False) -> str:
    """One JSON document: scan metadata and the list of results."""
    doc = dict(meta, results=[result_to_dict(r, verbose) for r in results])
    return msgspec.json.format(_ENCODER.encode(doc)).decode()


def _sort_key(r: ScanResult) -> tuple[Any, ...]:
    return (":" in r.address, _addr_int(r.address), r.address, r.port, r.transport)


def _addr_int(address: str) -> int:
    import ipaddress

    try:
        return int(ipaddress.ip_address(address))
    except ValueError:
        return 0


def sort_results(results: Iterable[ScanResult]) -> list[ScanResult]:
    """Results ordered by address, port, transport."""
    return sorted(results, key=_sort_key)


_VERDICT_STYLE = {
    "confirmed": "green",
    "identified": "cyan",
    "unexpected": "bold yellow",
    "unidentified": "magenta",
    "closed": "dim",
    "filtered": "dim",
    "error": "bold red",
}


def _product(r: ScanResult) -> str:
    parts = [p for p in (r.product, r.version) if p]
    text = " ".join(parts)
    if r.extrainfo:
        text = f"{text} ({r.extrainfo})" if text else r.extrainfo
    if not text and r.verdict == "unidentified" and r.details.get("banner"):
        text = "banner: " + str(r.details["banner"])
    return text


def _tls(r: ScanResult) -> str:
    if r.tls is None:
        return ""
    text = f"{r.tls.mode} {r.tls.version or ''}".strip()
    if r.tls.certificate is not None:
        subject = r.tls.certificate.subject
        cn = next((p[3:] for p in subject.split(",") if p.startswith("CN=")), subject)
        text += f" {cn}{' (self-signed)' if r.tls.certificate.self_signed else ''}"
    return text


def render_table(results: Iterable[ScanResult], stream: IO[str] | None = None, verbose: bool = False) -> None:
    """Print the readable table (one row per port) with rich, every network string escaped."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    out = stream or sys.stdout
    width = None if out.isatty() else 200
    console = Console(file=out, highlight=False, soft_wrap=False, width=width)
    rows = sort_results(results)
    by_host: dict[str, list[ScanResult]] = {}
    for r in rows:
        by_host.setdefault(r.address, []).append(r)
    for address, host_rows in by_host.items():
        target = host_rows[0].target
        title = address if target == address else f"{safe_text(target, 80)} ({address})"
        table = Table(title=Text(title, style="bold"), title_justify="left", expand=False)
        for col in ("port", "state", "expected", "found", "product / version", "tls", "verdict"):
            table.add_column(col, overflow="fold")
        for r in host_rows:
            expected = (r.expected or "") + (" (tls)" if r.expected_tls else "")
            table.add_row(
                Text(f"{r.port}/{r.transport}"),
                Text(r.state),
                Text(expected),
                Text(safe_text(r.service or "", 40)),
                Text(safe_text(_product(r), 90)),
                Text(safe_text(_tls(r), 80)),
                Text(r.verdict, style=_VERDICT_STYLE.get(r.verdict, "")),
            )
            if verbose:
                if r.rule:
                    table.add_row("", "", "", Text("rule", style="dim"),
                                  Text(safe_text(r.rule, 120), style="dim"), "", "")
                for e in r.evidence[:6]:
                    table.add_row("", "", "", Text(safe_text(e.source, 30), style="dim"),
                                  Text(safe_text(e.value, 120), style="dim"), "", "")
                for a in r.attempts:
                    if a.traceback:
                        table.add_row("", "", "", Text(f"{a.probe} probe-bug", style="red"),
                                      Text(safe_text(a.traceback[-600:], 600), style="red"), "", "")
        console.print(table)
    if not by_host:
        console.print("no results")


def write_nmap_xml(results: Iterable[ScanResult], path: str, args: str, start: float, end: float) -> None:
    """Write nmap-compatible XML (nmap.dtd: host/ports/port/state/service) for existing tooling."""
    root = ET.Element(
        "nmaprun",
        scanner="portproof",
        args=args,
        start=str(int(start)),
        startstr=time.ctime(start),
        version=__version__,
        xmloutputversion="1.05",
    )
    ET.SubElement(root, "verbose", level="0")
    ET.SubElement(root, "debugging", level="0")
    by_host: dict[str, list[ScanResult]] = {}
    for r in sort_results(results):
        by_host.setdefault(r.address, []).append(r)
    for address, rows in by_host.items():
        host = ET.SubElement(root, "host", starttime=str(int(start)), endtime=str(int(end)))
        up = any(r.state in ("open", "closed") for r in rows)
        ET.SubElement(host, "status", state="up" if up else "unknown", reason="user-set", reason_ttl="0")
        ET.SubElement(host, "address", addr=address, addrtype="ipv6" if ":" in address else "ipv4")
        target = rows[0].target
        if target != address:
            hostnames = ET.SubElement(host, "hostnames")
            ET.SubElement(hostnames, "hostname", name=_xml_safe(target), type="user")
        ports = ET.SubElement(host, "ports")
        for r in rows:
            port = ET.SubElement(ports, "port", protocol=r.transport, portid=str(r.port))
            reason = {"open": "syn-ack", "closed": "conn-refused", "filtered": "no-response",
                      "open|filtered": "no-response"}.get(r.state, "unknown")
            ET.SubElement(port, "state", state=r.state, reason=reason, reason_ttl="0")
            svc: dict[str, str] = {}
            if r.service:
                svc = {"name": r.service, "method": "probed", "conf": str(max(1, min(10, r.confidence)))}
                if r.product:
                    svc["product"] = _xml_safe(r.product)
                if r.version:
                    svc["version"] = _xml_safe(r.version)
                if r.extrainfo:
                    svc["extrainfo"] = _xml_safe(r.extrainfo)
                if r.tls is not None and r.tls.mode == "implicit":
                    svc["tunnel"] = "ssl"
            elif r.expected:
                svc = {"name": r.expected, "method": "table", "conf": "3"}
            if svc:
                ET.SubElement(port, "service", svc)
    runstats = ET.SubElement(root, "runstats")
    ET.SubElement(runstats, "finished", time=str(int(end)), timestr=time.ctime(end),
                  elapsed=f"{end - start:.2f}", exit="success")
    ET.SubElement(runstats, "hosts", up=str(len(by_host)), down="0", total=str(len(by_host)))
    tree = ET.ElementTree(root)
    ET.indent(tree)
    with open(path, "wb") as fh:
        fh.write(b'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE nmaprun>\n')
        tree.write(fh, encoding="utf-8", xml_declaration=False)
        fh.write(b"\n")


def _xml_safe(text: str) -> str:
    """XML 1.0 cannot carry most control characters: escape them visibly."""
    return "".join(
        ch if ch in "\t\n\r" or (0x20 <= ord(ch) < 0xD800) or (0xE000 <= ord(ch) < 0xFFFE) else f"\\x{ord(ch):02x}"
        for ch in text
    )
