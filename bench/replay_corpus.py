"""Accuracy of ``fingerprint replay`` on the public reference captures (tests/data/pcaps-public).

For every server endpoint listed in MANIFEST.tsv: is the protocol right, and the product right
where the manifest names one? Prints one row per endpoint (truth | found) and the totals. Rows
whose protocol no registered probe covers are shown but not counted in the "probed" totals.

    python bench/replay_corpus.py [CORPUS_DIR] [--all-probes]

``--all-probes`` imports every module under probes/ instead of the registry's entry points (useful
while probes are being added and the package is not reinstalled).
"""

from __future__ import annotations

import argparse
import csv
import importlib
import inspect
import pkgutil
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scanner.api import Probe
from scanner.replay import replay_paths
from scanner.results import ScanResult

DEFAULT = Path(__file__).resolve().parents[1] / "tests" / "data" / "pcaps-public"

#: the service a manifest endpoint should get, by port (and by the protocol column for odd ports)
PORT_SERVICE = {
    25: "smtp",
    465: "smtp",
    587: "smtp",
    110: "pop3",
    995: "pop3",
    143: "imap",
    993: "imap",
    119: "nntp",
    563: "nntp",
    389: "ldap",
    636: "ldap",
    3268: "ldap",
    53: "dns",
    135: "msrpc",
    80: "http",
    443: "http",
    102: "tsap",
    445: "smb",
    88: "kerberos",
    21: "ftp",
    22: "ssh",
    123: "ntp",
}
KEYWORDS = [("dns", "dns"), ("ms-rpc", "msrpc"), ("smtp", "smtp"), ("ldap", "ldap"), ("http", "http")]


def all_probes() -> list[Probe]:
    """Every Probe subclass defined under probes/ (without the registry)."""
    import probes

    out: list[Probe] = []
    for mod in pkgutil.iter_modules(probes.__path__):
        try:
            m = importlib.import_module(f"probes.{mod.name}")
        except Exception as exc:
            print(f"(probe module {mod.name} not loaded: {exc})", file=sys.stderr)
            continue
        for _, cls in inspect.getmembers(m, inspect.isclass):
            if issubclass(cls, Probe) and cls is not Probe and cls.__module__ == m.__name__ and cls.name:
                out.append(cls())
    return out


def parse_endpoint(text: str) -> tuple[str, int, str]:
    """'[2001:db8::1]:53/udp' or '10.0.0.1:25/tcp' -> (address, port, transport)."""
    m = re.fullmatch(r"\[?([0-9a-fA-F:.]+?)\]?:(\d+)/(tcp|udp)", text.strip())
    if not m:
        raise ValueError(text)
    return m.group(1), int(m.group(2)), m.group(3)


def expected_service(port: int, protocol: str) -> str | None:
    if port in PORT_SERVICE:
        return PORT_SERVICE[port]
    low = protocol.lower()
    if port >= 49152 and "rpc" in low:
        return "msrpc"
    for word, service in KEYWORDS:
        if word in low:
            return service
    return None


#: labels the manifest uses inside parentheses for one service of a multi-service file
LABELS = {"msrpc": ("EPM", "RPC"), "dns": ("DNS",), "http": ("HTTP",), "smtp": ("SMTP",), "ldap": ("LDAP",)}
#: the manifest's product for this endpoint cannot be told (several products, none labelled for it)
UNKNOWN = "?"


def expected_product(product_col: str, addr: str, service: str | None) -> str | None:
    """The manifest's product for ``addr`` (None: the bytes name none; UNKNOWN: not attributable)."""
    parts = [p.strip() for p in product_col.split(";") if p.strip()]
    chosen: str | None = parts[0] if len(parts) == 1 else None
    if chosen is None:
        chosen = next((p for p in parts if re.search(rf"[(\s,]{re.escape(addr)}[),\s]", p)), None)
    if chosen is None and service in LABELS:
        chosen = next((p for p in parts if any(f"({lab}" in p for lab in LABELS[service])), None)
    if chosen is None:
        return UNKNOWN
    chosen = re.sub(r"\s*\([^)]*\)\s*$", "", chosen).strip()
    if chosen.lower().startswith("unidentified") or "inferred" in product_col.lower():
        return None
    return chosen or None


def product_matches(found: str | None, truth: str | None) -> bool:
    if found is None or truth is None:
        return found is None and truth is None
    tokens = [t for t in re.findall(r"[a-z0-9&]+", found.lower()) if len(t) >= 3 and t not in ("httpd", "server")]
    low = truth.lower()
    return bool(tokens) and tokens[0] in low


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="?", default=str(DEFAULT))
    ap.add_argument("--all-probes", action="store_true")
    args = ap.parse_args()
    corpus = Path(args.corpus)
    manifest = corpus / "MANIFEST.tsv"
    if not manifest.exists():
        print(f"no MANIFEST.tsv in {corpus}", file=sys.stderr)
        return 2
    if args.all_probes:
        probes = all_probes()
    else:
        from scanner.registry import load_probes

        probes = list(load_probes())
    covered = {s for p in probes for s in p.services}
    print(f"probes: {', '.join(sorted(p.name for p in probes))}\n")
    rows = list(csv.DictReader(manifest.open(newline=""), delimiter="\t"))
    totals = dict(endpoints=0, probed=0, proto_ok=0, named=0, product_ok=0, false_product=0, files=0)
    hdr = f"{'file':44} {'endpoint':32} {'truth':26} | {'found':40} ok"
    print(hdr)
    print("-" * len(hdr))
    for row in rows:
        path = corpus / row["file"]
        report = replay_paths([str(path)], probes)
        totals["files"] += 1
        found: dict[tuple[str, int, str], ScanResult] = {(r.address, r.port, r.transport): r for r in report.results}
        for ep in row["server_endpoints"].split(";"):
            addr, port, transport = parse_endpoint(ep)
            svc = expected_service(port, row["protocol"])
            prod = expected_product(row["product"], addr, svc)
            res = found.get((addr, port, transport))
            totals["endpoints"] += 1
            probed = svc in covered
            got_svc = res.service if res else None
            got_prod = res.product if res else None
            marks = []
            if probed:
                totals["probed"] += 1
                ok = got_svc == svc
                totals["proto_ok"] += ok
                marks.append("P" if ok else "p!")
                if prod not in (None, UNKNOWN):
                    totals["named"] += 1
                    pok = ok and product_matches(got_prod, prod)
                    totals["product_ok"] += pok
                    marks.append("N" if pok else "n!")
            if prod is None and got_prod is not None:
                totals["false_product"] += 1
                marks.append("FALSE-PRODUCT")
            if not probed:
                marks.append("(no probe)")
            truth = f"{svc}/{(prod or '-')[:20]}"
            got = "-" if res is None else f"{got_svc or res.verdict}/{(got_prod or '-')[:28]}"
            ep_text = f"{addr}:{port}/{transport}"
            print(f"{row['file'][:44]:44} {ep_text:32} {truth:26} | {got:40} {' '.join(marks)}")
        for err in report.errors:
            print(f"    error: {err}")
    print()
    print(f"files {totals['files']}, endpoints {totals['endpoints']}, with a probed protocol {totals['probed']}")
    print(f"protocol right: {totals['proto_ok']}/{totals['probed']}")
    print(f"product right (where the manifest names one): {totals['product_ok']}/{totals['named']}")
    print(f"product named where the manifest says the bytes name none: {totals['false_product']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
