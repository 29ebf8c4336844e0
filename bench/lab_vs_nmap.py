#!/usr/bin/env python3
"""Benchmark 1: portproof against ``nmap -sV`` on the real-server lab, scored on the lab's ground truth.

    sudo python bench/lab_vs_nmap.py [--truth FILE] [--out DIR] [--nmap-xml FILE] [--skip-nmap]
    sudo python bench/lab_vs_nmap.py --truth bench/dc_truth.toml     # the domain controller's other
                                       # services (Kerberos, kpasswd, SMB), Redis, FTP and SSH daemons

Brings the lab up (``tests/lab/up.sh``) when it is not running and stops it again at the end (a
running lab is left running). Then, in the same invocation and one after the other:

* ``fingerprint -n -o jsonl 127.0.0.1 127.0.0.2`` (the default profile's ports);
* ``nmap -n -Pn -sS -sU -sV -p <the same ports> 127.0.0.1 127.0.0.2 -oX DIR/nmap.xml``;

and compares both with ``bench/lab_truth.toml`` (or ``--truth FILE``: a truth file may name its own
``profile`` and ``ports``, which both tools then scan). Prints one row per port (truth | nmap | portproof),
then totals (protocol, product and version right, wrong claims, closed ports seen closed) and both
wall times with their ratio. Scores: ``+`` right, ``.`` nothing claimed, ``x`` wrong claim, for
protocol / product / version in that order. An nmap service name that comes from its port table
(``method="table"``, printed with a ``?``) is not a claim.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, Measured, ensure_apt, fingerprint_cmd, machine, need_root, run_measured, table

LAB_DIR = REPO / "tests" / "lab"
LAB_STATE = Path(os.environ.get("LAB_STATE", "/tmp/portproof-lab"))
TRUTH = Path(__file__).resolve().parent / "lab_truth.toml"

#: nmap service names -> the names portproof's probes use
NMAP_NAMES = {
    "domain": "dns", "iso-tsap": "tsap", "imaps": "imap", "pop3s": "pop3", "smtps": "smtp",
    "submission": "smtp", "nntps": "nntp", "snews": "nntp", "https": "http", "http-proxy": "http",
    "ldapssl": "ldap", "globalcatLDAP": "ldap", "globalcatLDAPssl": "ldap", "epmap": "msrpc",
    "resvc": "resvc", "ulp": "uls", "kerberos-sec": "kerberos", "kpasswd5": "kpasswd", "netbios-ssn": "smb",
    "microsoft-ds": "smb",
}


@dataclass
class Claim:
    """What one tool said about one port."""

    state: str = "-"
    protocol: str | None = None
    product: str | None = None
    version: str | None = None
    note: str = ""

    def text(self) -> str:
        if self.state not in ("open",):
            return self.state
        parts = [self.protocol or (f"{self.note}?" if self.note else "?")]
        if self.product:
            parts.append(self.product)
        if self.version:
            parts.append(self.version)
        return " ".join(parts)


@dataclass
class Truth:
    """One port of the lab: the server really there (or closed)."""

    address: str
    port: int
    transport: str
    protocol: str | None = None
    tls: str = "none"
    product: str | None = None
    version: str | None = None
    match: str | None = None
    also_versions: tuple[str, ...] = ()

    def text(self) -> str:
        if self.protocol is None:
            return "closed"
        return f"{self.protocol} {self.product} {self.version}" + (" (TLS)" if self.tls == "implicit" else "")


# ------------------------------------------------------------------ truth
def load_truth(path: Path, entries: list[tuple[int, str]]) -> tuple[list[str], list[Truth], list[str]]:
    """Hosts, one Truth per host x profile port, and warnings where installed versions differ."""
    data = tomllib.loads(path.read_text())
    servers = data["servers"]
    hosts: list[str] = list(data["hosts"])
    rows: dict[tuple[str, int, str], Truth] = {}
    for h in hosts:
        for port, transport in entries:
            rows[(h, port, transport)] = Truth(h, port, transport)
    for p in data["port"]:
        s = servers[p["server"]]
        key = (p["address"], int(p["port"]), p["transport"])
        if key not in rows:
            continue  # a lab port outside the profile (not scanned by either tool)
        rows[key] = Truth(*key, protocol=p["protocol"], tls=p["tls"], product=s["product"], version=s["version"],
                          match=s["match"], also_versions=tuple(s.get("also_versions", ())))
    warnings = []
    for name, s in servers.items():
        installed = installed_version(s)
        if installed is None:
            warnings.append(f"{name}: cannot read the installed version of {s.get('deb') or s.get('pip')}")
        elif not version_right(installed, s["version"]):
            warnings.append(f"{name}: truth says {s['version']}, installed is {installed}: fix lab_truth.toml")
    return hosts, list(rows.values()), warnings


def installed_version(server: dict[str, str]) -> str | None:
    """The installed version of the server's Debian package or lab-venv pip package."""
    try:
        if "deb" in server:
            out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", server["deb"]], capture_output=True,
                                 text=True, timeout=30)
            v = out.stdout.strip()
            v = v.split(":", 1)[1] if ":" in v else v  # epoch
            return v or None
        pip = Path(os.environ.get("LAB_VENV", str(LAB_STATE / "venv"))) / "bin" / "pip"
        out = subprocess.run([str(pip), "show", server["pip"]], capture_output=True, text=True, timeout=60)
        m = re.search(r"^Version: (\S+)", out.stdout, re.M)
        return m.group(1) if m else None
    except (OSError, subprocess.SubprocessError):
        return None


def version_right(claimed: str, truth: str) -> bool:
    """``claimed`` names ``truth`` ("9.18.49-1~deb12u3" names 9.18.49; "2.2.X - 2.3.X" does not name 2.5.13)."""
    c = claimed.strip()
    for prefix in ("v", "version "):
        if c.lower().startswith(prefix):
            c = c[len(prefix):]
    return c.startswith(truth) and (len(c) == len(truth) or not c[len(truth)].isdigit())


# ------------------------------------------------------------------ the lab
def lab_running() -> bool:
    """True when the lab's Samba (its slowest server) runs: the same test as tests/conftest.py."""
    try:
        pid = int((LAB_STATE / "run" / "pids" / "samba.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    return Path(f"/proc/{pid}").exists()


def lab_up() -> None:
    print("[bench] lab not running: bash tests/lab/up.sh", flush=True)
    env = dict(os.environ, LAB_STATE=str(LAB_STATE))
    proc = subprocess.run(["bash", str(LAB_DIR / "up.sh")], env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        sys.exit(f"lab failed to start:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def lab_down() -> None:
    print("[bench] stopping the lab this benchmark started: bash tests/lab/down.sh", flush=True)
    env = dict(os.environ, LAB_STATE=str(LAB_STATE))
    subprocess.run(["bash", str(LAB_DIR / "down.sh")], env=env, capture_output=True, timeout=300)


def listening(truth: list[Truth]) -> list[str]:
    """TCP ports the truth says are open but do not accept a connection (lab not fully up)."""
    missing = []
    for t in truth:
        if t.protocol is None or t.transport != "tcp":
            continue
        try:
            with socket.create_connection((t.address, t.port), timeout=2):
                pass
        except OSError:
            missing.append(f"{t.address}:{t.port}")
    return missing


# ------------------------------------------------------------------ the two tools
def parse_portproof(path: Path) -> dict[tuple[str, int, str], Claim]:
    """portproof's JSON lines -> one claim per (address, port, transport)."""
    claims = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        state = r.get("state") or "-"
        state = {"unknown": "error"}.get(state, state)
        verdict = r.get("verdict") or ""
        claims[(r["address"], int(r["port"]), r["transport"])] = Claim(
            state=state, protocol=r.get("service"), product=r.get("product"), version=r.get("version"),
            note="unidentified" if verdict == "unidentified" else "",
        )
    return claims


def parse_nmap(path: Path) -> dict[tuple[str, int, str], Claim]:
    """nmap's XML -> one claim per (address, port, transport); table-only service names are no claim."""
    claims = {}
    root = ET.parse(path).getroot()
    for host in root.iter("host"):
        addr_el = host.find("address[@addrtype='ipv4']")
        if addr_el is None:
            continue
        addr = addr_el.get("addr", "")
        for port in host.iter("port"):
            st = port.find("state")
            svc = port.find("service")
            c = Claim(state=st.get("state", "-") if st is not None else "-")
            if svc is not None:
                name = svc.get("name")
                if svc.get("method") == "probed" and name:
                    c.protocol = NMAP_NAMES.get(name, name)
                    c.product = svc.get("product")
                    c.version = svc.get("version")
                elif name:
                    c.note = name  # guessed from the port number only
            claims[(addr, int(port.get("portid", "0")), port.get("protocol", "tcp"))] = c
    return claims


def score(truth: Truth, claim: Claim | None) -> tuple[str, dict[str, int]]:
    """Marks ("+" right, "." no claim, "x" wrong) for protocol/product/version, and counters."""
    c = claim or Claim()
    n = {"proto": 0, "product": 0, "version": 0, "wrong_product": 0, "wrong_version": 0, "closed": 0}
    if truth.protocol is None:
        ok = c.state == "closed"
        n["closed"] = int(ok)
        if c.product:
            n["wrong_product"] = 1
        return ("+" if ok else "x") + ("x" if c.product else ""), n
    marks = ""
    if c.state == "open" and c.protocol:
        ok = c.protocol == truth.protocol
        n["proto"] = int(ok)
        marks += "+" if ok else "x"
    else:
        marks += "."
    if c.product:
        ok = bool(re.search(truth.match or "$^", c.product, re.I))
        n["product"] = int(ok)
        n["wrong_product"] = int(not ok)
        marks += "+" if ok else "x"
    else:
        marks += "."
    if c.version:
        ok = any(version_right(c.version, v) for v in (truth.version, *truth.also_versions) if v)
        n["version"] = int(ok)
        n["wrong_version"] = int(not ok)
        marks += "+" if ok else "x"
    else:
        marks += "."
    return marks, n


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 0 when both tools ran."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--truth", type=Path, default=TRUTH, help="ground truth (default %(default)s)")
    ap.add_argument("--out", type=Path, help="outputs (default /tmp/portproof-bench/<truth file's stem>)")
    ap.add_argument("--nmap-xml", type=Path, help="reuse this nmap XML instead of running nmap (no nmap timing)")
    ap.add_argument("--skip-nmap", action="store_true", help="only portproof")
    ap.add_argument("--timeout", type=float, default=900.0, help="per tool, seconds")
    ap.add_argument("--baseline", metavar="GIT_REF",
                    help="also run portproof as of GIT_REF (a git worktree) on the same ports, in the same "
                    "run, and print the CPU per open service of both (e.g. --baseline HEAD~5)")
    args = ap.parse_args(argv)
    need_root()
    nmap = None if (args.skip_nmap or args.nmap_xml) else ensure_apt("nmap", "nmap")
    args.out = args.out or Path("/tmp/portproof-bench") / ("lab" if args.truth == TRUTH else args.truth.stem)
    args.out.mkdir(parents=True, exist_ok=True)

    sys.path.insert(0, str(REPO))
    from scanner.profile import load_profile, parse_ports

    meta = tomllib.loads(args.truth.read_text())
    profile = load_profile(meta.get("profile"))
    chosen = parse_ports(meta["ports"], profile) if meta.get("ports") else list(profile.entries)
    entries = [(e.port, e.transport) for e in chosen]
    # the portproof options that give the truth file's profile and ports (none for the default)
    args.scope = [*(["--profile", meta["profile"]] if meta.get("profile") else []),
                  *(["-p", meta["ports"]] if meta.get("ports") else [])]
    hosts, truth, warnings = load_truth(args.truth, entries)
    for w in warnings:
        print(f"[bench] WARNING {w}", flush=True)
    tcp = sorted({p for p, t in entries if t == "tcp"})
    udp = sorted({p for p, t in entries if t == "udp"})
    spec = ",".join(filter(None, ["T:" + ",".join(map(str, tcp)) if tcp else "",
                                  "U:" + ",".join(map(str, udp)) if udp else ""]))

    started = False
    if not lab_running():
        lab_up()
        started = True
    try:
        missing = listening(truth)
        if missing:
            print(f"[bench] WARNING lab ports not listening: {' '.join(missing)}", flush=True)
        print(f"[bench] {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  {machine()}", flush=True)
        pp_cmd = [*fingerprint_cmd(), "-n", "--no-progress", "-o", "jsonl", *args.scope, *hosts]
        print(f"[bench] $ {' '.join(pp_cmd)}", flush=True)
        pp = run_measured(pp_cmd, stdout=args.out / "portproof.jsonl", stderr=args.out / "portproof.stderr",
                          timeout=args.timeout)
        base: Measured | None = None
        if args.baseline:
            base = _run_baseline(args.baseline, hosts, args)
        nm: Measured | None = None
        xml = args.nmap_xml or args.out / "nmap.xml"
        if nmap:
            nm_cmd = [nmap, "-n", "-Pn", "-sS", "-sU", "-sV", "-p", spec, *hosts, "-oX", str(xml)]
            print(f"[bench] $ {' '.join(nm_cmd)}", flush=True)
            nm = run_measured(nm_cmd, stdout=args.out / "nmap.stdout", stderr=args.out / "nmap.stderr",
                              timeout=args.timeout)
    finally:
        if started:
            lab_down()

    pp_claims = parse_portproof(args.out / "portproof.jsonl")
    nm_claims = parse_nmap(xml) if (nm is not None or args.nmap_xml) and xml.exists() else {}
    rows = []
    totals = {"nmap": dict.fromkeys(("proto", "product", "version", "wrong_product", "wrong_version", "closed"), 0),
              "portproof": dict.fromkeys(("proto", "product", "version", "wrong_product", "wrong_version", "closed"),
                                         0)}
    order = {p: i for i, p in enumerate(sorted({p for p, _ in entries}))}
    for t in sorted(truth, key=lambda t: (t.address, order[t.port], t.transport)):
        key = (t.address, t.port, t.transport)
        nmark, ncount = score(t, nm_claims.get(key)) if nm_claims else ("", {})
        pmark, pcount = score(t, pp_claims.get(key))
        for k, v in ncount.items():
            totals["nmap"][k] += v
        for k, v in pcount.items():
            totals["portproof"][k] += v
        rows.append([t.address, f"{t.port}/{t.transport}", t.text(),
                     (nm_claims.get(key) or Claim()).text() if nm_claims else "(not run)", nmark,
                     (pp_claims.get(key) or Claim()).text(), pmark])
    print()
    print(table(["address", "port", "truth", "nmap -sV", "", "portproof", ""], rows))
    n_open = sum(1 for t in truth if t.protocol)
    n_closed = len(truth) - n_open
    n_ver = sum(1 for t in truth if t.protocol and t.version)
    labels = [("proto", f"protocol right (of {n_open} open)"), ("product", f"product right (of {n_open})"),
              ("version", f"version right (of {n_ver})"), ("wrong_product", "wrong product claims"),
              ("wrong_version", "wrong version claims"), ("closed", f"closed seen closed (of {n_closed})")]
    trows = [[label, totals["nmap"][k] if nm_claims else "-", totals["portproof"][k]] for k, label in labels]
    trows.append(["wall time, s", f"{nm.wall:.2f}" if nm else "-", f"{pp.wall:.2f}"])
    trows.append(["peak RSS, MiB", f"{nm.maxrss_kib / 1024:.0f}" if nm else "-", f"{pp.maxrss_kib / 1024:.0f}"])
    trows.append(["exit status", nm.returncode if nm else "-", pp.returncode])
    pp_cpu = pp.user + pp.system
    trows.append(["CPU (user+sys), s", f"{nm.user + nm.system:.2f}" if nm else "-", f"{pp_cpu:.2f}"])
    print()
    print(table(["total", "nmap -sV", "portproof"], trows))
    per = 1000 * pp_cpu / max(1, n_open)
    print(f"\nCPU per open service: portproof {per:.1f} ms ({pp_cpu:.2f} s over {n_open} open services, "
          "process start-up included)")
    if base is not None:
        bcpu = base.user + base.system
        bper = 1000 * bcpu / max(1, n_open)
        print(f"baseline {args.baseline}: {bper:.1f} ms per open service ({bcpu:.2f} s); "
              f"now/baseline = {pp_cpu / bcpu:.2f} (aim <= 1.10)")
    if nm:
        print(f"\nspeed: portproof is {nm.wall / pp.wall:.1f}x faster than nmap -sV "
              f"({pp.wall:.2f} s vs {nm.wall:.2f} s, same ports, same hosts, same run; aim >= 20x)")
    elif args.nmap_xml:
        print(f"\n(nmap results reused from {args.nmap_xml}: not timed in this run)")
    bugs = [k for k, c in pp_claims.items() if c.state == "error"]
    if bugs:
        print(f"portproof errors on: {bugs}")
    print(f"outputs in {args.out}")
    summary = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(), "totals": totals,
               "portproof_wall": pp.wall, "nmap_wall": nm.wall if nm else None, "portproof_cpu": pp_cpu,
               "baseline_cpu": (base.user + base.system) if base else None,
               "portproof_maxrss_kib": pp.maxrss_kib, "nmap_maxrss_kib": nm.maxrss_kib if nm else None}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if pp.returncode == 0 and (nm is None or nm.returncode == 0) else 1


def _run_baseline(ref: str, hosts: list[str], args: argparse.Namespace) -> Measured:
    """portproof as of ``ref``, from a temporary git worktree, on the same hosts (CPU comparison)."""
    tmp = Path(tempfile.mkdtemp(prefix="portproof-baseline-"))
    tree = tmp / "tree"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(tree), ref], check=True)
    try:
        cmd = [sys.executable, "-c", "from scanner.cli import main; raise SystemExit(main())",
               "-n", "--no-progress", "-o", "jsonl", *args.scope, *hosts]
        print(f"[bench] $ (baseline {ref}) {' '.join(cmd[3:])}", flush=True)
        env = dict(os.environ, PYTHONPATH=str(tree))
        return run_measured(cmd, stdout=args.out / "baseline.jsonl", stderr=args.out / "baseline.stderr",
                            timeout=args.timeout, env=env, cwd=tree)
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
