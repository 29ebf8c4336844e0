"""A probe whose declared facts are invalid (the registry must refuse it)."""

from __future__ import annotations

from scanner.api import Dialogue, Finding, Probe, ProbeContext


class InvalidFactsProbe(Probe):
    """Bad name, no services, port 0, rarity out of range."""

    name = "Bad Name"
    services = ()
    ports = (0,)
    rarity = 12
    summary = "invalid"

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        """Never used."""
        yield from ()
        return Finding(service="x")


def not_a_probe() -> None:
    """An entry point may only name a Probe subclass or instance."""
