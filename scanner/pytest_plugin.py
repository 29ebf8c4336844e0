"""pytest plugin of the probe test kit (part of the stable API).

Loaded through the ``pytest11`` entry point of the portproof distribution, so any project with
portproof installed gets these fixtures without a ``conftest.py``. Without the entry point (or
to be explicit), ``pytest -p scanner.pytest_plugin``.

Fixtures (each returns the helper of :mod:`scanner.testing` of the same name):

* ``probe_contract``: ``probe_contract(probe, transcripts=[...])`` raises when the probe breaks
  the contract (:func:`scanner.testing.assert_probe_contract`) and returns the report;
* ``run_dialogue``: drive a dialogue over recorded bytes (:func:`scanner.testing.run_dialogue`);
* ``feed_bytewise``: feed a framer one byte at a time (:func:`scanner.testing.feed_bytewise`);
* ``replay_pcap``: run a capture through probes (:func:`scanner.testing.replay_pcap`);
* ``probe_registry``: the registry as ``fingerprint`` loads it (session scope).

A test that takes an argument named ``registered_probe`` is run once per registered probe
(built-in and third-party), with the probe's name as the test id.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from scanner import testing
from scanner.registry import Registry, load_registry

__all__ = ["feed_bytewise", "probe_contract", "probe_registry", "replay_pcap", "run_dialogue"]


@pytest.fixture
def probe_contract() -> Callable[..., testing.ContractReport]:
    """:func:`scanner.testing.assert_probe_contract`."""
    return testing.assert_probe_contract


@pytest.fixture
def run_dialogue() -> Callable[..., testing.DialogueRun]:
    """:func:`scanner.testing.run_dialogue`."""
    return testing.run_dialogue


@pytest.fixture
def feed_bytewise() -> Callable[..., int | None]:
    """:func:`scanner.testing.feed_bytewise`."""
    return testing.feed_bytewise


@pytest.fixture
def replay_pcap() -> Callable[..., Any]:
    """:func:`scanner.testing.replay_pcap`."""
    return testing.replay_pcap


@pytest.fixture(scope="session")
def probe_registry() -> Registry:
    """The registry loaded the way the ``fingerprint`` command loads it (entry points, plugin path)."""
    return load_registry()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``registered_probe`` over every probe the registry loads."""
    if "registered_probe" in metafunc.fixturenames:
        probes = load_registry().probes
        metafunc.parametrize("registered_probe", probes, ids=[p.name for p in probes])
