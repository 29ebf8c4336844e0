"""resvc probe: the Exchange routing engine's link-state greeting on 691.

No real server exists that can run here (Exchange 2000/2003 only), so the transcripts are built
from the published banner format (nmap's service signature for 691):
``{GUID} NODEINFO (n) {n}Version: X Microsoft Routing Server ready``.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probes.resvc import MAX_BANNER, ResvcProbe, frame_resvc_banner, parse_resvc_banner
from scanner.api import MessageTooLarge, NotThisProtocol, RecvClosed
from scanner.testing import feed_bytewise, run_dialogue

GUID = "{5D5A1A3B-09C1-4C3E-9E0B-2F4C6A8B1C2D}"
BANNER = f"{GUID} NODEINFO (1) {{1}}Version: 6.0.6249.0 Microsoft Routing Server ready\r\n".encode()


def test_match_and_dialogue() -> None:
    probe = ResvcProbe()
    assert probe.match(BANNER)
    run = run_dialogue(probe, BANNER, port=691)
    assert run.ok and run.finding is not None
    f = run.finding
    assert f.service == "resvc" and f.version == "6.0.6249.0" and f.confidence == 10
    assert f.details["guid"] == GUID.strip("{}").lower() and f.details["nodeinfo"] == 1
    assert run.sent == []  # banner only
    assert feed_bytewise(frame_resvc_banner, BANNER) == len(BANNER)


@pytest.mark.parametrize(
    "greeting",
    [
        b"220 mail.example.test Microsoft ESMTP MAIL Service ready\r\n",
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"{not-a-guid} NODEINFO (1) {1}Version: 6 Microsoft Routing Server ready\r\n",
    ],
)
def test_other_greetings_are_not_resvc(greeting: bytes) -> None:
    with pytest.raises(NotThisProtocol):
        parse_resvc_banner(greeting)
    run = run_dialogue(ResvcProbe(), greeting, port=691)
    assert isinstance(run.error, NotThisProtocol)


def test_smtp_greeting_is_left_to_smtp() -> None:
    assert not ResvcProbe().match(b"220 mail.example.test ESMTP\r\n")


def test_long_and_unterminated() -> None:
    with pytest.raises(NotThisProtocol):
        frame_resvc_banner(b"A" * (MAX_BANNER + 10))
    run = run_dialogue(ResvcProbe(), BANNER[:-2], port=691)
    assert isinstance(run.error, RecvClosed | MessageTooLarge)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz(data: bytes) -> None:
    try:
        n = frame_resvc_banner(data)
        if n:
            parse_resvc_banner(data[:n])
    except NotThisProtocol:
        pass
    ResvcProbe().match(data)
