"""Helpers shared by the benchmarks: measured child processes, tool checks, plain-text tables.

Every benchmark runs its contenders as child processes and measures them the same way: wall time
from fork to exit, the child's peak RSS (``wait4`` rusage), and optionally the peak number of open
file descriptors (``/proc/PID/fd``, sampled every 20 ms while it runs).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Measured:
    """One finished child process and what it cost."""

    cmd: list[str]
    returncode: int
    wall: float
    #: peak resident set size of the child, KiB (ru_maxrss of its rusage)
    maxrss_kib: int
    user: float
    system: float
    #: most descriptors the child held at once (sampled), -1 when not sampled
    peak_fds: int = -1
    timed_out: bool = False


def _count_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def run_measured(
    cmd: Sequence[str],
    *,
    stdout: Path | None = None,
    stderr: Path | None = None,
    timeout: float = 600.0,
    sample_fds: bool = False,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Measured:
    """Run ``cmd`` to completion (bounded by ``timeout``) and measure it; output goes to files."""
    out = open(stdout, "wb") if stdout else subprocess.DEVNULL
    err = open(stderr, "wb") if stderr else subprocess.DEVNULL
    try:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                cwd=cwd, start_new_session=True)
        box: dict[str, object] = {}

        def reap() -> None:
            _, status, ru = os.wait4(proc.pid, 0)
            box["t1"] = time.perf_counter()
            box["status"] = status
            box["ru"] = ru

        waiter = threading.Thread(target=reap, daemon=True)
        waiter.start()
        peak = -1
        deadline = t0 + timeout
        timed_out = False
        while waiter.is_alive():
            if sample_fds:
                peak = max(peak, _count_fds(proc.pid))
            waiter.join(0.02)
            if time.perf_counter() > deadline and waiter.is_alive():
                timed_out = True
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                waiter.join(10)
                break
        proc.returncode = -9 if timed_out else os.waitstatus_to_exitcode(box["status"])  # type: ignore[arg-type]
        ru = box.get("ru")
        t1 = float(box.get("t1", time.perf_counter()))  # type: ignore[arg-type]
        return Measured(
            cmd=list(cmd),
            returncode=proc.returncode,
            wall=t1 - t0,
            maxrss_kib=int(getattr(ru, "ru_maxrss", 0)),
            user=float(getattr(ru, "ru_utime", 0.0)),
            system=float(getattr(ru, "ru_stime", 0.0)),
            peak_fds=peak,
            timed_out=timed_out,
        )
    finally:
        for f in (out, err):
            if hasattr(f, "close"):
                f.close()


def need_root() -> None:
    """Exit with a clear message unless running as root (raw sockets, namespaces, the lab)."""
    if os.geteuid() != 0:
        sys.exit("this benchmark needs root (nmap -sS, network namespaces, the lab harness)")


def ensure_apt(binary: str, package: str) -> str:
    """Path of ``binary``; installs the Debian ``package`` with apt-get when it is missing."""
    path = shutil.which(binary)
    if path:
        return path
    print(f"[bench] {binary} missing: apt-get install {package}", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    proc = subprocess.run(["apt-get", "install", "-y", "-q", package], env=env, capture_output=True, text=True,
                          timeout=900)
    if proc.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=900)
        proc = subprocess.run(["apt-get", "install", "-y", "-q", package], env=env, capture_output=True,
                              text=True, timeout=900)
    path = shutil.which(binary)
    if not path:
        sys.exit(f"could not install {package} (apt-get: {proc.stderr[-500:]}); install it by hand")
    return path


def fingerprint_cmd() -> list[str]:
    """The ``fingerprint`` console script, resolved past a pyenv shim (the shim costs ~0.1 s)."""
    exe = Path(sys.executable).parent / "fingerprint"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("fingerprint")
    if found:
        return [found]
    return [sys.executable, "-m", "scanner.cli"]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain fixed-width text table (stdout may be a file or a CI log: no colours)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, r in enumerate(cells):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine() -> str:
    """One line about this machine (CPU model, cores, memory, kernel, Python)."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {mem} RAM, Linux {os.uname().release}, "
            f"Python {sys.version.split()[0]}")
