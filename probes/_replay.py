"""Helpers the built-in probes share for pcap replay (``ProbeContext.replay``).

Not a probe module (the leading underscore keeps the registry and the plugin scans away from it).
"""

from __future__ import annotations

from scanner.api import Dialogue, Finding, NotThisProtocol, ProbeContext

__all__ = ["keep_greeting_in_replay"]


def keep_greeting_in_replay(ctx: ProbeContext, finding: Finding, rest: Dialogue, greeting_confirms: bool) -> Dialogue:
    """Run ``rest`` (the dialogue after a greeting that already confirmed the protocol).

    Live, a reply that does not fit is a reason to doubt the protocol, so :class:`NotThisProtocol`
    propagates. In a replay the captured client sent *its own* commands, not ours: a reply that
    does not fit our command says nothing against the greeting, so the finding stored so far
    (``ctx.partial``, else ``finding``) is returned, with a note saying where the replay stopped.
    Only when ``greeting_confirms``: the greeting alone names the protocol or the product (a bare
    ``220`` is also how FTP greets, so it is not enough).
    """
    try:
        return (yield from rest)
    except NotThisProtocol as exc:
        if not ctx.replay or not greeting_confirms:
            raise
        kept = ctx.partial or finding
        kept.details["replay_stopped"] = f"the captured client's conversation differs from ours: {exc}"[:300]
        return kept
