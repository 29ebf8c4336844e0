"""The probe contract: run over EVERY registered probe (built-in and third-party), and proven able to
fail on probes that break each rule (tests/plugins/data/bad_probes)."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from scanner.api import Probe
from scanner.registry import load_registry
from scanner.testing import (
    ContractError,
    Transcript,
    assert_probe_contract,
    check_probe_contract,
    hostile_streams,
    io_import_problems,
    replay_pcap,
    run_dialogue,
)

from .helpers import DATA, REPO, clean_env, load_file

REGISTRY = load_registry()


@pytest.mark.parametrize("probe", REGISTRY.probes, ids=[p.name for p in REGISTRY.probes])
def test_registered_probe_passes_the_contract(probe: Probe) -> None:
    """Every probe the registry loads (entry points and PORTPROOF_PLUGIN_PATH) passes the contract."""
    report = assert_probe_contract(probe)
    assert report.runs >= 20 and report.framer_calls > 0


def test_registry_loads_without_errors() -> None:
    """No installed plugin fails to load (a broken one would be skipped silently by a scan)."""
    assert not REGISTRY.errors, [(e.entry_point, e.distribution, e.error) for e in REGISTRY.errors]


def _bad(file: str, cls: str) -> Probe:
    module = load_file(DATA / "bad_probes" / file)
    probe: Probe = getattr(module, cls)()
    return probe


@pytest.mark.parametrize(
    ("file", "cls", "expected"),
    [
        ("io_probe.py", "SocketProbe", "imports socket: probes are sans-I/O"),
        ("random_probe.py", "GlobalRandomProbe", "requests differ between two runs"),
        ("fragile_probe.py", "FragileProbe", "raised IndexError"),
        ("framer_probe.py", "ZeroFramerProbe", "returned 0 for a buffer"),
        ("framer_probe.py", "AsciiFramerProbe", "raised UnicodeDecodeError"),
        ("loop_probe.py", "LoopProbe", "took more than"),
        ("wrong_service_probe.py", "WrongServiceProbe", "is not in the declared services"),
        ("wrong_service_probe.py", "WrongServiceProbe", "not JSON-serialisable"),
    ],
)
def test_contract_catches(file: str, cls: str, expected: str) -> None:
    """Each rule, broken on purpose, is reported."""
    report = check_probe_contract(_bad(file, cls), time_limit=0.5)
    assert not report.ok
    assert any(expected in p for p in report.problems), report.problems
    with pytest.raises(ContractError, match="breaks the contract"):
        report.raise_for_problems()


def test_contract_catches_invalid_facts() -> None:
    class NoFacts(Probe):
        name = "UPPER"

        def dialogue(self, ctx):  # type: ignore[no-untyped-def]
            yield from ()

    problems = check_probe_contract(NoFacts()).problems
    assert any("name 'UPPER'" in p for p in problems) and any("services" in p for p in problems)


def test_import_check_reads_the_source_without_running_it(tmp_path: Path) -> None:
    """asyncio/ssl through ``from``, ``__import__`` and importlib; scapy at module level; own-package modules."""
    pkg = tmp_path / "fakeplug"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "wire.py").write_text("import asyncio\n")
    src = textwrap.dedent('''\
        """Header."""
        from ssl import SSLContext
        import scapy.all
        from . import wire
        from typing import TYPE_CHECKING

        def lazy():
            from scapy.layers.dcerpc import DceRpc5
            return __import__("socket"), __import__("importlib").import_module("selectors")
        ''')
    (pkg / "probe.py").write_text(src)
    modules = {}
    for name, file in (("fakeplug", "__init__.py"), ("fakeplug.wire", "wire.py"), ("fakeplug.probe", "probe.py")):
        mod = types.ModuleType(name)
        mod.__file__ = str(pkg / file)
        if name == "fakeplug":
            mod.__path__ = [str(pkg)]
        modules[name] = mod
    cls = type("P", (Probe,), {"__module__": "fakeplug.probe"})
    saved = {k: sys.modules.get(k) for k in modules}
    sys.modules.update(modules)
    try:
        problems = io_import_problems(cls)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    text = "\n".join(problems)
    assert "probe.py:2) imports ssl" in text
    assert "probe.py:3) imports scapy at module level" in text
    assert "probe.py:8) imports scapy at module level" not in text  # lazy import inside a function is fine
    assert "imports socket" in text and "imports selectors" in text
    assert "fakeplug.wire (wire.py:1) imports asyncio" in text


def test_clean_probe_with_transcripts_passes() -> None:
    """A real transcript drives the dialogue deeper; the redis example still passes (and reaches INFO)."""
    module = load_file(REPO / "examples/redis-probe/portproof_redis/probe.py", "portproof_test_redis_probe")
    data = (REPO / "examples/redis-probe/tests/data/redis-7.0.15-ping-info.bin").read_bytes()
    report = check_probe_contract(module.RedisProbe(), transcripts=[Transcript(data, port=6379)])
    assert report.ok, report.problems


def test_hostile_streams_are_seeded() -> None:
    assert hostile_streams(3) == hostile_streams(3)
    assert hostile_streams(3) != hostile_streams(4)


def test_run_dialogue_rejects_a_framer_returning_zero() -> None:
    """The kit enforces the engine's framer rule (0 would loop on empty messages)."""
    with pytest.raises(TypeError, match="returned 0"):
        run_dialogue(_bad("framer_probe.py", "ZeroFramerProbe"), b"x\r\n")


def test_global_random_state_is_restored() -> None:
    random.seed(1234)
    expected = random.random()
    random.seed(1234)
    check_probe_contract(_bad("random_probe.py", "GlobalRandomProbe"))
    assert random.random() == expected


PCAPS = REPO / "tests" / "data" / "pcaps-public"  # shipped with the tests (MANIFEST.tsv)


def test_replay_pcap_through_a_probe() -> None:
    """The kit's pcap helper runs a public capture through one probe (expectations from MANIFEST.tsv)."""
    pcap = PCAPS / "smtp-exim-4.94.2-loopback-prdr.pcap"
    manifest = PCAPS / "MANIFEST.tsv"
    row = next(line.split("\t") for line in manifest.read_text().splitlines() if line.startswith(pcap.name + "\t"))
    smtp = REGISTRY.get("smtp")
    assert smtp is not None
    (result,) = replay_pcap(smtp, pcap)
    assert (result.service, result.product, result.version) == ("smtp", row[3], row[4])
    assert f"{result.address}:{result.port}/tcp" == row[2]


def test_pytest_plugin_fixtures(tmp_path: Path) -> None:
    """The pytest11 plugin gives plugin authors the kit as fixtures (loaded with -p when not installed)."""
    from importlib.metadata import entry_points

    installed = any(e.value == "scanner.pytest_plugin" for e in entry_points(group="pytest11"))
    (tmp_path / "test_kit.py").write_text(textwrap.dedent('''\
        from scanner.api import Probe


        def test_fixtures(probe_contract, run_dialogue, feed_bytewise, replay_pcap, probe_registry):
            smtp = probe_registry.get("smtp")
            report = probe_contract(smtp)
            assert report.ok
            run = run_dialogue(smtp, b"220 mx ESMTP Postfix\\r\\n250 mx\\r\\n", port=25)
            assert run.finding.product == "Postfix"
            assert feed_bytewise(lambda b: b.find(b"\\n") + 1 or None, b"ab\\ncd") == 3


        def test_every_registered_probe(registered_probe):
            assert isinstance(registered_probe, Probe)
        '''))
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_kit.py")]
    if not installed:
        args[3:3] = ["-p", "scanner.pytest_plugin"]
    proc = subprocess.run(args, cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert f"{1 + len(REGISTRY.probes)} passed" in proc.stdout
