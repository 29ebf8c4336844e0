#!/usr/bin/env python3
"""Benchmark 2: fingerprint thousands of hosts, beside a bare asyncio loop and nmap -sV.

    sudo python bench/scale.py [--sizes 1024,16384] [--nmap-size 256] [--concurrency 512] [--per-port N]

Everything runs inside a network namespace this benchmark creates (``ip netns add ppbench-PID``)
and deletes at the end, even on failure or Ctrl-C. Inside it, ``lo`` is brought up, so the whole of
127.0.0.0/8 is local to the namespace and invisible from outside; real servers bind the wildcard
address there:

* Postfix (smtp 25), Dovecot (imap 143, pop3 110), nginx (http 80), Unbound (dns 53/udp; local
  data only: every name outside its one local zone is refused, nothing is ever recursed). These
  scale servers serve no TLS: the benchmark measures the scanner's connections and dialogues, not
  RSA handshakes.

The targets are 127.1.0.1, 127.1.0.2, ... (first N of them for a run of N). In the same invocation:

* ``fingerprint -n -o jsonl -p PORTS --concurrency C -iL TARGETS`` over each size;
* ``bench/bareloop.py`` (connect, read the first bytes, nothing else) with asyncio's loop and with
  uvloop over the same targets, ports and concurrency: the ceiling for Python here;
* ``nmap -n -Pn -sS -sU -sV`` over the first ``--nmap-size`` targets, and fingerprint over the same.

The servers are sized for the load (listen backlogs, process and client limits: SERVER_HEADROOM x
``--concurrency``; somaxconn inside the namespace). The bare loop is the reference: when it loses
more than ``--reference-tolerance`` of a port's services, the servers did not hold the load and the
benchmark stops there (exit status 2, the servers' logs copied to ``OUT/server-logs``).

Prints services per second, the ratio to the bare loop and to nmap, peak RSS and peak open file
descriptors of each run, failures, and ``ulimit -n``. With ``--per-port N`` it also scans N targets
one port at a time, fingerprint beside the uvloop loop, for the CPU each protocol costs. A port
whose probe is not registered (see ``fingerprint probes``) is left out, with a note.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, Measured, ensure_apt, fingerprint_cmd, machine, need_root, run_measured, table

#: port -> (transport, the probe that must identify it, the service name it reports)
SERVICES: dict[int, tuple[str, str]] = {25: ("tcp", "smtp"), 80: ("tcp", "http"), 110: ("tcp", "pop3"),
                                        143: ("tcp", "imap"), 53: ("udp", "dns")}
NMAP_NAMES = {"domain": "dns"}
FIRST = ipaddress.IPv4Address("127.1.0.1")


# ------------------------------------------------------------------ servers
# The servers must hold the load, or the benchmark measures their limits instead of the scanner
# (the 2026-12-07 run: one port lost as a whole at 16,384 targets, in the bare loop as well). Every
# contender keeps up to ``--concurrency`` connections open on one port at a time (the ports are
# scanned one after the other), and a connection aborted with RST frees its server slot a moment
# later, so each server gets room for SERVER_HEADROOM x the concurrency:
#
# * listen backlog: net.core.somaxconn and tcp_max_syn_backlog inside the namespace (both per
#   network namespace), nginx ``listen ... backlog=``; Postfix's master listens with a backlog of
#   the service's process limit, Dovecot's with process_limit x client_limit (capped by somaxconn);
# * processes: Postfix forks one smtpd per connection (default_process_limit), Dovecot's login
#   services run "high-performance" (service_count = 0: each process serves client_limit
#   connections), nginx serves worker_connections per worker;
# * DNS: Unbound with a 4 MiB socket receive buffer (so-rcvbuf). dnsmasq, used before, keeps the
#   kernel's default buffer (208 KiB, about 200 queries; net.core.rmem_default is read-only inside a
#   namespace) and lost 2% of the bare uvloop loop's queries at --concurrency 512 (UdpRcvbufErrors).
SERVER_HEADROOM = 2
#: the listen backlog asked of the namespace's kernel (somaxconn caps every listen() in it)
NS_SOMAXCONN = 65535
#: a port of the reference (bare loop) run may lose at most this share of its services (a loaded
#: server's odd slow reply) before the benchmark stops: above it, the servers are what is measured
REFERENCE_TOLERANCE = 0.005

NGINX_CONF = """\
worker_processes 2;
worker_rlimit_nofile {files};
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections {clients}; multi_accept on; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp/body; proxy_temp_path {d}/tmp/proxy; fastcgi_temp_path {d}/tmp/fcgi;
  uwsgi_temp_path {d}/tmp/uwsgi; scgi_temp_path {d}/tmp/scgi;
  server {{
    listen 80 backlog={backlog};
    server_name scale.test;
    location / {{
      default_type text/html;
      return 200 "<html><head><title>scale</title></head><body>scale</body></html>\\n";
    }}
  }}
}}
"""

UNBOUND_CONF = """\
server:
  # the wildcard address, answering from the address each query was sent to (IP_PKTINFO)
  interface-automatic: yes
  port: 53
  do-ip6: no
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{d}/unbound"
  pidfile: ""
  use-syslog: no
  logfile: "{d}/unbound.log"
  access-control: 127.0.0.0/8 allow
  # --concurrency queries may arrive at once: a buffer for all of them (capped by rmem_max)
  so-rcvbuf: 4m
  so-sndbuf: 4m
  num-threads: 1
  hide-identity: no
  # hostname.bind / id.server: this name, not the machine's
  identity: "ns.scale.test"
  # local data only: no recursion, no forwarding, every other name refused
  local-zone: "." refuse
  local-zone: "scale.test." static
  local-data: "scale.test. 300 IN SOA ns.scale.test. hostmaster.scale.test. 1 3600 600 86400 300"
  local-data: "www.scale.test. 300 IN A 127.0.0.1"
  local-data: "scale.test. 300 IN TXT \\"portproof scale\\""
remote-control:
  control-enable: no
"""

POSTFIX_MAIN = """\
compatibility_level = 3.6
queue_directory = {d}/postfix/queue
data_directory = {d}/postfix/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = {d}/postfix.log
maillog_file_prefixes = {d}, /var, /dev/stdout
myhostname = mail.scale.test
mydomain = scale.test
myorigin = $mydomain
mydestination = $myhostname, localhost
inet_interfaces = all
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_banner = $myhostname ESMTP $mail_name (Debian/GNU)
smtpd_tls_security_level = none
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
default_transport = error:no outbound mail
relay_transport = error:no outbound mail
local_transport = discard:scale
alias_maps =
alias_database =
local_recipient_maps =
biff = no
# one smtpd per connection: as many as the benchmark keeps open (also the smtp listen backlog);
# each serves many connections before it is replaced (no fork per connection once warm)
default_process_limit = {procs}
max_use = 10000
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_client_new_tls_session_rate_limit = 0
"""

POSTFIX_MASTER = """\
smtp      inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

DOVECOT_CONF = """\
base_dir = {d}/dovecot/base
state_dir = {d}/dovecot/state
instance_name = dovecot-scale
listen = *
protocols = imap pop3
log_path = {d}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:{d}/dovecot/mail/%u
first_valid_uid = 0
default_client_limit = {clients}
default_process_limit = {procs}
passdb {{
  driver = static
  args = password=scale
}}
userdb {{
  driver = static
  args = uid=dovenull gid=dovenull home={d}/dovecot/mail/%u
}}
# "high-performance" login processes: each serves many connections (no fork per connection)
service imap-login {{
  inet_listener imap {{
    port = 143
  }}
  service_count = 0
  process_min_avail = 2
  process_limit = 8
  client_limit = {clients}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 110
  }}
  service_count = 0
  process_min_avail = 2
  process_limit = 8
  client_limit = {clients}
}}
service anvil {{
  client_limit = {anvil}
}}
"""


@dataclass
class Namespace:
    """A network namespace of our own, its servers, and how to take them all down."""

    name: str
    work: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    created: bool = False

    def cmd(self, *args: str) -> list[str]:
        """``args`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *args]

    def create(self) -> None:
        subprocess.run(["ip", "netns", "add", self.name], check=True, timeout=30)
        self.created = True
        subprocess.run(self.cmd("ip", "link", "set", "lo", "up"), check=True, timeout=30)
        # per-namespace settings (the host's own are untouched): the listen backlog the servers
        # may ask for, half-open connections, and source ports for 4 x --concurrency sockets
        for key, value in (("net.core.somaxconn", str(NS_SOMAXCONN)), ("net.ipv4.tcp_max_syn_backlog", "65536"),
                           ("net.ipv4.ip_local_port_range", "1024 65000")):
            subprocess.run(self.cmd("sysctl", "-q", "-w", f"{key}={value}"), check=True, timeout=30)

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        log = open(self.work / f"{name}.out", "wb")
        self.procs.append(subprocess.Popen(self.cmd(*args), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                           start_new_session=True, env=env))
        log.close()

    def pids(self) -> list[int]:
        """Every process living in the namespace (all of them were started here by this benchmark)."""
        out = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True, timeout=30)
        return [int(p) for p in out.stdout.split() if p.isdigit() and int(p) != os.getpid()]

    def destroy(self) -> None:
        """Stop every server and delete the namespace (safe to call more than once)."""
        if not self.created:
            return
        pf = self.work / "postfix" / "etc"
        if pf.exists():
            try:
                subprocess.run(self.cmd("postfix", "-c", str(pf), "stop"), capture_output=True, timeout=30)
            except subprocess.TimeoutExpired:
                print("[bench] postfix stop timed out: its processes are killed below", flush=True)
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 3.0)):
            pids = self.pids()
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while pids and self.pids() and time.monotonic() < deadline:
                time.sleep(0.1)
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)
        self.created = False
        left = self.pids_after()
        print(f"[bench] namespace {self.name} deleted" + (f"; processes left: {left}" if left else ""), flush=True)

    def pids_after(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]


def write_configs(ns: Namespace, concurrency: int) -> None:
    """The servers' configurations, sized for ``concurrency`` connections at once (see SERVER_HEADROOM)."""
    d = ns.work
    room = max(1024, SERVER_HEADROOM * concurrency)
    limits = {"procs": room, "clients": room, "backlog": min(NS_SOMAXCONN, 4 * room), "files": 4 * room + 1024,
              "anvil": max(20000, 4 * room)}
    for sub in ("tmp", "unbound", "postfix/etc", "postfix/queue", "postfix/data", "dovecot/base", "dovecot/state",
                "dovecot/mail"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "nginx.conf").write_text(NGINX_CONF.format(d=d, **limits))
    (d / "postfix/etc/main.cf").write_text(POSTFIX_MAIN.format(d=d, **limits))
    (d / "postfix/etc/master.cf").write_text(POSTFIX_MASTER)
    shutil.chown(d / "postfix/data", "postfix")
    (d / "dovecot.conf").write_text(DOVECOT_CONF.format(d=d, **limits))
    (d / "unbound.conf").write_text(UNBOUND_CONF.format(d=d))
    shutil.chown(d / "dovecot/mail", "dovenull", "dovenull")
    os.chmod(d, 0o755)


def start_servers(ns: Namespace, ports: list[int]) -> None:
    d = ns.work
    if 80 in ports:
        ns.start("nginx", "nginx", "-p", str(d), "-e", str(d / "nginx-error.log"), "-c", str(d / "nginx.conf"),
                 "-g", "daemon off;")
    if 25 in ports:
        ns.start("postfix", "postfix", "-c", str(d / "postfix/etc"), "start-fg")
    if 110 in ports or 143 in ports:
        ns.start("dovecot", "dovecot", "-F", "-c", str(d / "dovecot.conf"))
    if 53 in ports:
        ns.start("unbound", "unbound", "-d", "-c", str(d / "unbound.conf"))


def ready(ns: Namespace, spec: str, wait: float = 60.0) -> dict[str, Any]:
    """Wait until the bare loop gets an answer from every port of the first target."""
    one = ns.work / "targets-1.txt"
    one.write_text(f"{FIRST}\n")
    deadline = time.monotonic() + wait
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        out = subprocess.run(ns.cmd(sys.executable, str(REPO / "bench/bareloop.py"), "-iL", str(one), "-p", spec,
                                    "--concurrency", "1", "--timeout", "2"), capture_output=True, text=True,
                             timeout=60)
        try:
            last = json.loads(out.stdout)
        except json.JSONDecodeError:
            last = {"error": out.stderr[-500:]}
        if last.get("ok") == last.get("services") and last.get("services"):
            return last
        time.sleep(0.5)
    raise RuntimeError(f"servers not ready after {wait:.0f} s: {last} (logs in {ns.work})")


# ------------------------------------------------------------------ measuring
@dataclass
class Row:
    """One measured run."""

    what: str
    targets: int
    services: int
    right: int
    failed: int
    m: Measured
    notes: str = ""
    #: bare loop only: outcome counts per "proto/port"
    by_port: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.right / self.m.wall if self.m.wall else 0.0


def fingerprint_counts(path: Path, expected: dict[tuple[int, str], str]) -> tuple[int, int, int, str]:
    """(records, right, failed, notes) of a fingerprint JSON-lines output."""
    records = right = failed = 0
    statuses: Counter[str] = Counter()
    verdicts: Counter[str] = Counter()
    emfile = 0
    with path.open() as fh:
        for line in fh:
            if not line.strip():
                continue
            r = json.loads(line)
            records += 1
            want = expected.get((int(r["port"]), r["transport"]))
            if r.get("service") and r.get("service") == want:
                right += 1
            else:
                failed += 1
                verdicts[f"{r.get('state')}/{r.get('verdict')}"] += 1
            for a in r.get("attempts") or []:
                if a.get("status") not in ("success", None):
                    statuses[a["status"]] += 1
                if "limit" in (a.get("error") or "") and "file" in (a.get("error") or "").lower():
                    emfile += 1
    notes = []
    if verdicts:
        notes.append("not identified: " + ", ".join(f"{k} {v}" for k, v in verdicts.most_common(4)))
    if statuses:
        notes.append("attempt statuses: " + ", ".join(f"{k} {v}" for k, v in statuses.most_common(4)))
    if emfile:
        notes.append(f"descriptor exhaustion: {emfile}")
    return records, right, failed, "; ".join(notes)


def nmap_counts(path: Path, expected: dict[tuple[int, str], str]) -> tuple[int, int, int, str]:
    """(ports, right, failed, notes) of an nmap XML output (table-only names do not count)."""
    import xml.etree.ElementTree as ET

    ports = right = 0
    other: Counter[str] = Counter()
    for port in ET.parse(path).getroot().iter("port"):
        ports += 1
        svc = port.find("service")
        st = port.find("state")
        want = expected.get((int(port.get("portid", "0")), port.get("protocol", "tcp")))
        name = svc.get("name") if svc is not None else None
        if svc is not None and svc.get("method") == "probed" and NMAP_NAMES.get(name or "", name) == want:
            right += 1
        else:
            other[f"{st.get('state') if st is not None else '?'}/{name}"] += 1
    notes = ("not identified: " + ", ".join(f"{k} {v}" for k, v in other.most_common(4))) if other else ""
    return ports, right, ports - right, notes


class ReferenceFailed(Exception):
    """The reference (bare loop) run failed: the servers, not the scanner, set the pace."""


def reference_problem(row: Row, tolerance: float) -> str | None:
    """Why a bare-loop run cannot serve as the reference, or None when it can.

    The bare loop only connects and reads the first bytes: a port where it loses more than
    ``tolerance`` of its services (or the run itself failed) means the servers could not take the
    load, and every figure of that size would measure them rather than the scanner."""
    if row.m.returncode != 0 or row.services == 0:
        return (f"{row.what} x{row.targets} failed (exit {row.m.returncode}"
                f"{', timed out' if row.m.timed_out else ''}, {row.services} services)")
    bad = []
    for port, outcomes in sorted(row.by_port.items()):
        total = sum(outcomes.values())
        lost = total - outcomes.get("ok", 0)
        if total and lost > tolerance * total:
            what = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()) if k != "ok")
            bad.append(f"{port}: {lost} of {total} failed ({what})")
    if not bad:
        return None
    return (f"{row.what} x{row.targets}: the reference run itself failed on " + "; ".join(bad)
            + f" (more than {tolerance:.1%} of a port). The servers did not hold the load (listen backlog, "
              "process or client limits, see SERVER_HEADROOM): figures of this size would measure them, "
              "not the scanner.")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM: leave through the same clean-up path as Ctrl-C


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 0 when every run completed."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--sizes", default="1024,16384", help="target counts (default %(default)s)")
    ap.add_argument("--nmap-size", type=int, default=256, help="targets for nmap -sV (0: skip nmap)")
    ap.add_argument("--concurrency", type=int, default=512, help="connections at once, every contender")
    ap.add_argument("--ports", default="T:25,80,110,143,U:53", help="ports (default %(default)s)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/portproof-bench/scale"))
    ap.add_argument("--timeout", type=float, default=1800.0, help="per run, seconds")
    ap.add_argument("--fast", action="store_true", help="also run fingerprint --fast at each size")
    ap.add_argument("--reference-tolerance", type=float, default=REFERENCE_TOLERANCE, metavar="SHARE",
                    help="stop when the bare loop loses more than this share of a port's services "
                         "(default %(default)s)")
    ap.add_argument("--per-port", type=int, default=0, metavar="N",
                    help="also scan N targets one port at a time (fingerprint and the uvloop loop): "
                         "CPU per service of each protocol (0: skip)")
    args = ap.parse_args(argv)
    need_root()
    sizes = sorted({max(1, min(int(s), 65000)) for s in args.sizes.split(",") if s.strip()})
    for binary in ("nginx", "postfix", "dovecot"):
        if not shutil.which(binary):
            sys.exit(f"{binary} missing: install the lab's packages first (bash tests/lab/up.sh --install-only)")
    if not Path("/usr/lib/dovecot/pop3-login").exists():
        sys.exit("dovecot-pop3d missing: bash tests/lab/up.sh --install-only")
    ensure_apt("unbound", "unbound")
    nmap = ensure_apt("nmap", "nmap") if args.nmap_size > 0 else None
    try:
        import uvloop  # noqa: F401

        have_uvloop = True
    except ImportError:
        print("[bench] uvloop not installed (pip install uvloop): the uvloop bare loop is skipped")
        have_uvloop = False

    fp = fingerprint_cmd()
    helptext = subprocess.run([*fp, "--help"], capture_output=True, text=True, timeout=120).stdout
    jobs_one = ["--jobs", "1"] if "--jobs" in helptext else []
    probes_out = subprocess.run([*fp, "probes", "--json"], capture_output=True, text=True, timeout=120)
    loaded = {p["name"] for p in json.loads(probes_out.stdout)["probes"]}
    wanted = []
    proto = "tcp"
    for item in args.ports.split(","):
        item = item.strip()
        if item[:2].upper() in ("T:", "U:"):
            proto = "tcp" if item[0].upper() == "T" else "udp"
            item = item[2:]
        port = int(item)
        if port not in SERVICES or SERVICES[port][0] != proto:
            sys.exit(f"no scale server for {proto}/{port}: choose among {SERVICES}")
        if SERVICES[port][1] not in loaded:
            print(f"[bench] NOTE probe {SERVICES[port][1]!r} is not registered: {proto}/{port} left out")
            continue
        wanted.append((port, proto))
    if not wanted:
        sys.exit("no port left to scan")
    spec = ",".join(f"{'T' if t == 'tcp' else 'U'}:{p}" for p, t in wanted)
    expected = {(p, t): SERVICES[p][1] for p, t in wanted}

    args.out.mkdir(parents=True, exist_ok=True)
    ns = Namespace(f"ppbench-{os.getpid()}", Path(f"/tmp/ppbench-{os.getpid()}"))
    ns.work.mkdir(parents=True, exist_ok=True)
    prev_term = signal.signal(signal.SIGTERM, _interrupt)
    rows: list[Row] = []
    per_port: list[tuple[tuple[int, str], Row, Row]] = []
    ok = True
    reference_failed = ""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        ns.create()
        write_configs(ns, args.concurrency)
        start_servers(ns, [p for p, _ in wanted])
        first = ready(ns, spec)
        print(f"[bench] {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  {machine()}", flush=True)
        print(f"[bench] namespace {ns.name}, servers ready ({first['outcomes']}); ports {spec}; "
              f"concurrency {args.concurrency}; ulimit -n {nofile[0]} (hard {nofile[1]})", flush=True)
        biggest = max([*sizes, args.nmap_size])
        all_targets = [str(FIRST + i) for i in range(biggest)]

        def targets_file(n: int) -> Path:
            f = ns.work / f"targets-{n}.txt"
            f.write_text("\n".join(all_targets[:n]) + "\n")
            return f

        def run_fp(n: int, one: tuple[int, str] | None = None, fast: bool = False) -> Row:
            tf = targets_file(n)
            sp, tag = (spec, "") if one is None else (f"{'T' if one[1] == 'tcp' else 'U'}:{one[0]}", f"-{one[0]}")
            tag += "-fast" if fast else ""
            want = expected if one is None else {one: expected[one]}
            out = args.out / f"fingerprint-{n}{tag}.jsonl"
            # one engine process (--jobs 1): the figures compare one event loop with the bare one
            cmd = ns.cmd(*fp, "-n", "--no-progress", *jobs_one, *(["--fast"] if fast else []), "-o", "jsonl",
                         "-p", sp, "--concurrency", str(args.concurrency), "-iL", str(tf))
            print(f"[bench] $ {' '.join(cmd)}", flush=True)
            m = run_measured(cmd, stdout=out, stderr=args.out / f"fingerprint-{n}{tag}.stderr", timeout=args.timeout,
                             sample_fds=True)
            records, right, failed, notes = fingerprint_counts(out, want)
            if records != n * len(want):
                notes = f"{records} records for {n * len(want)} services; " + notes
            return Row("fingerprint --fast" if fast else "fingerprint", n, records, right, failed, m, notes)

        def run_bare(n: int, uv: bool, one: tuple[int, str] | None = None) -> Row:
            tf = targets_file(n)
            sp, tag = (spec, "") if one is None else (f"{'T' if one[1] == 'tcp' else 'U'}:{one[0]}", f"-{one[0]}")
            out = args.out / f"bare-{'uvloop' if uv else 'asyncio'}-{n}{tag}.json"
            cmd = ns.cmd(sys.executable, str(REPO / "bench/bareloop.py"), "-iL", str(tf), "-p", sp,
                         "--concurrency", str(args.concurrency), *(["--uvloop"] if uv else []))
            m = run_measured(cmd, stdout=out, stderr=out.with_suffix(".stderr"), timeout=args.timeout,
                             sample_fds=True)
            res = json.loads(out.read_text() or "{}")
            bad = {k: v for k, v in res.get("outcomes", {}).items() if k != "ok"}
            row = Row(f"bare loop ({'uvloop' if uv else 'asyncio'})", n, res.get("services", 0), res.get("ok", 0),
                      sum(bad.values()), m, ", ".join(f"{k} {v}" for k, v in bad.items()),
                      by_port=res.get("by_port", {}))
            problem = reference_problem(row, args.reference_tolerance)
            if problem:
                raise ReferenceFailed(problem)
            return row

        if nmap:
            n = args.nmap_size
            rows.append(run_fp(n))
            xml = args.out / f"nmap-{n}.xml"
            cmd = ns.cmd(nmap, "-n", "-Pn", "-sS", *(["-sU"] if any(t == "udp" for _, t in wanted) else []), "-sV",
                         "-p", spec, "-iL", str(targets_file(n)), "-oX", str(xml))
            print(f"[bench] $ {' '.join(cmd)}", flush=True)
            m = run_measured(cmd, stdout=args.out / f"nmap-{n}.stdout", stderr=args.out / f"nmap-{n}.stderr",
                             timeout=args.timeout, sample_fds=True)
            ports, right, failed, notes = nmap_counts(xml, expected) if xml.exists() else (0, 0, 0, "no XML")
            rows.append(Row("nmap -sV", n, ports, right, failed, m, notes))
        for n in sizes:
            rows.append(run_bare(n, False))
            if have_uvloop:
                rows.append(run_bare(n, True))
            rows.append(run_fp(n))
            if args.fast:
                rows.append(run_fp(n, fast=True))
        if args.per_port > 0:
            for one in wanted:
                fpr = run_fp(args.per_port, one)
                bare = run_bare(args.per_port, have_uvloop, one)
                per_port.append((one, fpr, bare))
    except KeyboardInterrupt:
        print("[bench] interrupted", flush=True)
        ok = False
    except ReferenceFailed as exc:
        reference_failed = str(exc)
    finally:
        ns.destroy()
        if reference_failed:
            logs = args.out / "server-logs"
            logs.mkdir(parents=True, exist_ok=True)
            for log in ns.work.glob("*.log"):
                shutil.copy(log, logs / log.name)
            for log in ns.work.glob("*.out"):
                shutil.copy(log, logs / log.name)
        shutil.rmtree(ns.work, ignore_errors=True)
        signal.signal(signal.SIGTERM, prev_term)
    if reference_failed:
        print(f"[bench] STOPPED: {reference_failed} (server logs: {args.out / 'server-logs'})", file=sys.stderr,
              flush=True)
        return 2

    print()
    print(table(["run", "targets", "services", "right", "failed", "wall s", "right/s", "CPU s", "CPU ms/svc",
                 "peak RSS MiB", "peak fds"],
                [[r.what, r.targets, r.services, r.right, r.failed, f"{r.m.wall:.2f}", f"{r.rate:.0f}",
                  f"{r.m.user + r.m.system:.1f}", f"{(r.m.user + r.m.system) * 1000 / max(1, r.services):.2f}",
                  f"{r.m.maxrss_kib / 1024:.0f}", r.m.peak_fds] for r in rows]))
    for r in rows:
        if r.notes or r.m.returncode:
            print(f"  {r.what} x{r.targets}: exit {r.m.returncode}{' (timed out)' if r.m.timed_out else ''}; {r.notes}")
        ok = ok and r.m.returncode == 0
    if per_port:
        print()
        print(f"one port at a time, {args.per_port} targets (CPU ms per service includes the start-up):")

        def cpu_ms(r: Row) -> str:
            return f"{(r.m.user + r.m.system) * 1000 / max(1, r.services):.2f}"

        print(table(["port", "fingerprint right", "fingerprint right/s", "fingerprint CPU ms/svc", "bare right/s",
                     "bare CPU ms/svc", "ratio (right/s)"],
                    [[f"{t}/{p} {SERVICES[p][1]}", f"{f.right}/{f.services}", f"{f.rate:.0f}", cpu_ms(f),
                      f"{b.rate:.0f}", cpu_ms(b), f"{f.rate / b.rate:.0%}" if b.rate else "-"]
                     for (p, t), f, b in per_port]))
        for (p, t), f, b in per_port:
            for r in (f, b):
                if r.notes or r.m.returncode:
                    print(f"  {t}/{p} {r.what}: exit {r.m.returncode}; {r.notes}")
                ok = ok and r.m.returncode == 0
    print()
    by = {(r.what, r.targets): r for r in rows}
    for n in sizes:
        f = by.get(("fingerprint", n))
        if f is None:
            continue
        for loop in ("uvloop", "asyncio"):
            b = by.get((f"bare loop ({loop})", n))
            if b and b.rate:
                print(f"{n} targets: fingerprint {f.rate:.0f} services/s = {f.rate / b.rate:.0%} of the bare "
                      f"{loop} loop ({b.rate:.0f}/s)  (aim >= 60%)")
        ff = by.get(("fingerprint --fast", n))
        if ff is not None and f.services and ff.services:
            cpu, cpu_fast = ((r.m.user + r.m.system) * 1000 / r.services for r in (f, ff))
            print(f"{n} targets: CPU per service {cpu:.2f} ms, with --fast {cpu_fast:.2f} ms "
                  f"({cpu_fast / cpu:.0%} of the default)  (aim: <= 0.5 and <= 0.25 ms)")
    nf = by.get(("fingerprint", args.nmap_size))
    nm = by.get(("nmap -sV", args.nmap_size))
    if nf and nm and nm.rate:
        print(f"{args.nmap_size} targets: fingerprint {nf.m.wall:.2f} s vs nmap -sV {nm.m.wall:.2f} s: "
              f"{nm.m.wall / nf.m.wall:.1f}x faster; {nf.rate:.0f} vs {nm.rate:.1f} services/s")
    fps = sorted((r for r in rows if r.what == "fingerprint"), key=lambda r: r.targets)
    if len(fps) >= 2 and fps[-1].targets > fps[0].targets:
        lo, hi = fps[0], fps[-1]
        per = (hi.m.maxrss_kib - lo.m.maxrss_kib) / (hi.targets - lo.targets)
        print(f"memory: peak RSS {lo.m.maxrss_kib / 1024:.0f} MiB at {lo.targets} targets, "
              f"{hi.m.maxrss_kib / 1024:.0f} MiB at {hi.targets}: {per:.2f} KiB per extra target "
              f"({per / len(wanted):.2f} KiB per service)")
        print(f"descriptors: peak {max(r.m.peak_fds for r in fps)} open in fingerprint runs, ulimit -n {nofile[0]}")
    summary = [{"run": r.what, "targets": r.targets, "services": r.services, "right": r.right, "failed": r.failed,
                "wall": r.m.wall, "rate": r.rate, "cpu": r.m.user + r.m.system,
                "maxrss_kib": r.m.maxrss_kib, "peak_fds": r.m.peak_fds,
                "returncode": r.m.returncode, "notes": r.notes} for r in rows]
    per_port_summary = [{"port": p, "transport": t, "run": r.what, "targets": r.targets, "services": r.services,
                         "right": r.right, "wall": r.m.wall, "rate": r.rate, "cpu": r.m.user + r.m.system}
                        for (p, t), f, b in per_port for r in (f, b)]
    (args.out / "summary.json").write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                                                       "machine": machine(), "ports": spec,
                                                       "concurrency": args.concurrency, "ulimit_n": nofile[0],
                                                       "runs": summary, "per_port": per_port_summary},
                                                      indent=2) + "\n")
    print(f"outputs in {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
