"""The ``fingerprint`` CLI against hostile servers: escaped terminal output, Ctrl-C, --resume, ulimit -n.

Every test runs the CLI in a subprocess (``python -m scanner.cli``) against scenario servers on
127.0.0.1 started in this process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import hostile_kit as hk
import pytest

FAST = ["-n", "--no-progress", "--greeting-wait", "1", "--read-timeout", "1", "--connect-timeout", "2",
        "--port-timeout", "10"]


def _no_raw_controls(text: str) -> None:
    bad = hk.raw_control_bytes(text)
    assert not bad, f"raw control characters in terminal output: {bad[:10]}"


@pytest.mark.parametrize("verbose", [[], ["-v"]], ids=["table", "table-verbose"])
def test_table_escapes_hostile_text(serve: Callable[..., hk.FakeServer], verbose: list[str]) -> None:
    """Escapes, NULs, invalid UTF-8, bidi overrides and a fake result row come out escaped."""
    evil, evil_smtp = serve(hk.evil_text), serve(hk.evil_smtp)
    proc = hk.run_cli(["127.0.0.1", "-p", f"T:{evil.port},T:{evil_smtp.port}", "--probe", "smtp", "-o", "table",
                       *FAST, *verbose])
    assert proc.returncode == 0, proc.stderr
    _no_raw_controls(proc.stdout)
    _no_raw_controls(proc.stderr)
    out = proc.stdout
    assert "\\x1b" in out  # shown, escaped
    assert "smtp" in out and "FAKE confirmed" in out
    if verbose:
        assert "220 evil\\x1b[31mRED" in out  # evidence rows, escaped
    # the fake row stays inside its cell: no output line starts like a result row of port 25
    assert not any(line.lstrip("│┃| ").startswith("25/tcp") for line in out.splitlines())
    assert f"{evil_smtp.port}/tcp" in out and f"{evil.port}/tcp" in out


def test_jsonl_keeps_exact_bytes(serve: Callable[..., hk.FakeServer]) -> None:
    """JSON keeps the server's text exactly (escaping is the terminal renderer's job only)."""
    evil = serve(hk.evil_text)
    proc = hk.run_cli(["127.0.0.1", "-p", f"T:{evil.port}", "--probe", "smtp", "-o", "jsonl", *FAST])
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(proc.stdout.splitlines()[0])
    assert bytes.fromhex(rec["details"]["banner_hex"]).startswith(b"\x1b[2J\x1b[1;1H\x00\xff\xfe")
    assert rec["details"]["banner"].startswith("\x1b[2J")


def _start_cli(args: list[str], stdout: int | object = subprocess.PIPE) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(hk.REPO))
    return subprocess.Popen([sys.executable, "-m", "scanner.cli", *args], cwd=hk.REPO, env=env, text=True,
                            stdout=stdout, stderr=subprocess.PIPE)  # type: ignore[arg-type]


def _wait_for_records(path: Path, n: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("\n") >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} records in {path} after {timeout} s")


def _interrupted_scan(serve: Callable[..., hk.FakeServer], out: Path, fmt: str) -> tuple[
        subprocess.CompletedProcess[str], list[str], int, int]:
    """Scan 8 addresses x (neighbour, silent port) one at a time; SIGINT after a few results."""
    good, silent = serve(hk.pop3_good), serve(hk.silent)
    ports = f"T:{good.port},T:{silent.port}"
    args = ["127.0.0.1-8", "-p", ports, "--probe", "pop3", "-o", fmt, "--concurrency", "1", *FAST]
    with out.open("w") as fh:
        proc = _start_cli(args, stdout=fh)
        if fmt == "jsonl":
            _wait_for_records(out, 3)
        else:
            time.sleep(2.5)
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    done = subprocess.CompletedProcess(args, proc.returncode, out.read_text(), err)
    return done, args, good.port, silent.port


def test_sigint_jsonl_keeps_results_and_says_what_is_missing(serve: Callable[..., hk.FakeServer],
                                                            tmp_path: Path) -> None:
    """Ctrl-C: exit 130, every finished result is in the JSON lines, stderr lists the rest."""
    out = tmp_path / "scan.jsonl"
    proc, _, _, _ = _interrupted_scan(serve, out, "jsonl")
    assert proc.returncode == 130, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert 3 <= len(records) < 16
    assert "interrupted:" in proc.stderr and "not scanned" in proc.stderr
    n_missing = 16 - len(records)
    assert f"{len(records)} of 16 ports scanned, {n_missing} not scanned" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_sigint_table_prints_results_so_far(serve: Callable[..., hk.FakeServer], tmp_path: Path) -> None:
    """Ctrl-C with the table output: the table of finished ports is still printed, exit 130."""
    proc, _, good_port, _ = _interrupted_scan(serve, tmp_path / "scan.txt", "table")
    assert proc.returncode == 130, proc.stderr
    assert f"{good_port}/tcp" in proc.stdout and "pop3" in proc.stdout
    assert "not scanned" in proc.stderr and "Traceback" not in proc.stderr
    _no_raw_controls(proc.stdout)


def test_resume_skips_finished_ports(serve: Callable[..., hk.FakeServer], tmp_path: Path) -> None:
    """--resume FILE after a Ctrl-C: only the missing triples are scanned, appended to FILE."""
    out = tmp_path / "scan.jsonl"
    first, args, good_port, _silent_port = _interrupted_scan(serve, out, "jsonl")
    assert first.returncode == 130
    before = [json.loads(line) for line in out.read_text().splitlines()]
    done_before = {(r["address"], r["port"], r["transport"]) for r in before}
    # a record cut in half by a kill must not break the resume
    with out.open("a") as fh:
        fh.write('{"target": "127.0.0.1-8", "addr')
    i = args.index("-o")
    resume_args = [*args[:i], "-o", "jsonl", *args[i + 2:], "--resume", str(out)]
    proc = _start_cli(resume_args)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    new = [json.loads(line) for line in stdout.splitlines()]
    new_keys = {(r["address"], r["port"], r["transport"]) for r in new}
    assert not new_keys & done_before, "a finished port was scanned again"
    assert len(new) == 16 - len(done_before)
    assert "resuming:" in stderr
    lines = out.read_text().splitlines()
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            assert line.startswith('{"target": "127.0.0.1-8", "addr')  # the cut record, left as it was
    keys = [(r["address"], r["port"], r["transport"]) for r in parsed]
    assert len(keys) == len(set(keys)) == 16, "FILE must hold every port exactly once"
    good = [r for r in parsed if r["address"] == "127.0.0.1" and r["port"] == good_port]
    assert good and good[0]["service"] == "pop3"
    # resuming a finished scan scans nothing
    again = _start_cli(resume_args)
    stdout2, stderr2 = again.communicate(timeout=60)
    assert again.returncode == 0 and stdout2.strip() == "", stderr2


def test_more_targets_than_ulimit(serve: Callable[..., hk.FakeServer]) -> None:
    """254 targets, 256 connections wanted, ``ulimit -n 100``: the engine stays under and says so."""
    good = serve(hk.pop3_good)
    cmd = (f"ulimit -n 100 && exec {sys.executable} -m scanner.cli 127.0.0.0/24 -p T:{good.port} "
           f"--probe pop3 -o jsonl --concurrency 256 --per-host 16 " + " ".join(FAST))
    env = dict(os.environ, PYTHONPATH=str(hk.REPO))
    proc = subprocess.run(["bash", "-c", cmd], cwd=hk.REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "open-file limit is 100" in proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(records) == 254  # a /24 without its network and broadcast addresses
    errors = [r for r in records if r["verdict"] == "error" or any(
        "limit" in (a.get("error") or "") or a["status"] == "connection-error" for a in r["attempts"])]
    assert not errors, errors[:3]
    served = [r for r in records if r["address"] == "127.0.0.1"]
    assert served[0]["service"] == "pop3"
    assert sum(r["verdict"] == "closed" for r in records) >= 248


def _tls_profile(path: Path, port: int) -> Path:
    """A profile saying ``port`` carries IMAP inside implicit TLS (like 993), so the engine opens
    the port with a TLS handshake first (engine: ``tls_first = entry.tls or ...``)."""
    path.write_text(f'name = "hostile-tls"\ndescription = "implicit TLS on an ephemeral port"\n\n'
                    f'[[port]]\nport = {port}\ntransport = "tcp"\nservice = "imap"\ntls = true\n'
                    f'probe = "imap"\ndescription = "IMAPS, but the server never answers the ClientHello"\n')
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "table"])
def test_sigint_during_tls_handshake(serve: Callable[..., hk.FakeServer], tmp_path: Path, fmt: str) -> None:
    """Ctrl-C while the engine waits for a ServerHello that never comes: exit 130 at once, the
    finished port's result printed, the summary names the port left unscanned."""
    import threading

    hello = threading.Event()
    good, hang = serve(hk.pop3_good), serve(hk.tls_hello_hang(hello))
    profile = _tls_profile(tmp_path / "tls.toml", hang.port)
    out = tmp_path / f"scan.{fmt}"
    args = ["127.0.0.1", "-p", f"T:{good.port},T:{hang.port}", "--profile", str(profile), "--probe", "pop3",
            "--probe", "imap", "-o", fmt, *FAST]
    with out.open("w") as fh:
        proc = _start_cli(args, stdout=fh)
        try:
            # the handshake has started (ClientHello seen) and the neighbour is done (the table
            # prints only at the end: there the neighbour gets a fixed second)
            assert hello.wait(20), "no ClientHello reached the hanging TLS server"
            if fmt == "jsonl":
                _wait_for_records(out, 1)
            else:
                time.sleep(1.0)
            assert proc.poll() is None, "the scan ended before the signal: the handshake did not hang"
            t_sig = time.monotonic()
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    after = time.monotonic() - t_sig
    # the engine's TLS handshake limit is 5 s: an exit well before it means the signal cut the
    # handshake, not its timeout
    assert after < 3.0, f"exit took {after:.1f} s after SIGINT"
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    assert "interrupted:" in err and "1 of 2 ports scanned, 1 not scanned" in err, err
    assert str(hang.port) in err, err  # the summary lists the port that was not scanned
    text = out.read_text()
    if fmt == "jsonl":
        (rec,) = [json.loads(line) for line in text.splitlines()]
        assert rec["port"] == good.port and rec["service"] == "pop3" and rec["product"] == "Dovecot"
    else:
        assert f"{good.port}/tcp" in text and "pop3" in text
        assert f"{hang.port}/tcp" not in text
        _no_raw_controls(text)
