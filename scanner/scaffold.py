"""``fingerprint probes new NAME [--dir DIR]``: write a ready-to-install probe plugin package.

The package holds ``pyproject.toml`` (with the ``portproof.probes`` entry point), the probe module
(docstring header, ``build_*`` / ``frame_*`` / ``parse_*`` functions and one :class:`~scanner.api.Probe`
subclass with its dialogue), a test file using :mod:`scanner.testing`, and a README. Installed as
is (``pip install ./NAME``), ``fingerprint probes`` lists it and its tests pass; the author then
replaces the placeholder protocol with theirs.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["NAME_RE", "ScaffoldError", "main", "render", "write_plugin"]

#: a probe name the scaffold accepts: also a Python identifier, so module and entry point agree
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,23}$")


class ScaffoldError(Exception):
    """The plugin cannot be written (bad name, destination not empty)."""


_PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "portproof probe for the {name} protocol"
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["portproof>=0.1"]

[project.optional-dependencies]
test = ["pytest>=7"]

# The line that makes portproof find the probe: NAME = "module:Class".
[project.entry-points."portproof.probes"]
{name} = "{package}.probe:{cls}"

[tool.setuptools]
packages = ["{package}"]

[tool.pytest.ini_options]
testpaths = ["tests"]

[tool.ruff]
line-length = 120
target-version = "py311"

[tool.ruff.lint]
select = ["E", "F", "W", "I", "B", "UP", "RUF"]

[tool.ruff.lint.isort]
known-first-party = ["{package}"]
known-third-party = ["scanner"]
'''

_INIT = '''\
"""portproof plugin: the {name} probe."""

from {package}.probe import {cls}

__all__ = ["{cls}"]
'''

_PROBE = '''\
"""{title} probe (a portproof plugin).

Default ports: none declared yet (set ``ports``); client speaks first.

Sends: ``HELLO <nonce>`` (the nonce comes from ``ctx.rng``, so requests are replayable), then
``QUIT``. Never authenticates.

Collects: the server's answer line ``{upper} <product>/<version> <text>``: the product, the version
and the text.

Written by ``fingerprint probes new {name}`` as a skeleton: replace the placeholder protocol with
yours and keep the shape (pure ``build_*`` / ``frame_*`` / ``parse_*`` functions, one Probe class
whose dialogue yields Send / Recv / StartTLS steps). No socket, asyncio or ssl import here: the
engine does all the I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from scanner.api import Dialogue, Finding, NotThisProtocol, Probe, ProbeContext, Recv, Send
from scanner.textproto import decode_text, frame_line

__all__ = [
    "MAX_LINE",
    "{cls}",
    "{reply_cls}",
    "build_hello",
    "frame_message",
    "parse_reply",
]

#: longest answer line accepted (a framer must bound what it buffers)
MAX_LINE = 1024

#: the answer line: the protocol's keyword, then optionally product/version, then free text
_REPLY = re.compile(
    r"^{upper} (?:(?P<product>[\\w.\\-]+)/(?P<version>[\\w.\\-]+))?\\s*(?P<text>.*)$"
)


@dataclass(frozen=True)
class {reply_cls}:
    """One answer line of the server."""

    #: the product named in the answer, if any
    product: str | None
    #: its version, if any
    version: str | None
    #: the rest of the line
    text: str


def build_hello(nonce: int) -> bytes:
    """The HELLO request, carrying a 32-bit nonce (take it from ``ctx.rng``)."""
    return b"HELLO %08x\\r\\n" % (nonce & 0xFFFFFFFF)


def frame_message(buf: bytes) -> int | None:
    """Frame one answer line (CRLF or LF); NotThisProtocol past :data:`MAX_LINE` bytes."""
    return frame_line(buf, MAX_LINE)


def parse_reply(msg: bytes) -> {reply_cls}:
    """Parse one framed answer line; NotThisProtocol when it is not this protocol."""
    m = _REPLY.match(decode_text(msg).rstrip("\\r\\n"))
    if m is None:
        raise NotThisProtocol("not a {upper} answer line")
    return {reply_cls}(m.group("product"), m.group("version"), m.group("text"))


class {cls}(Probe):
    """{title}: HELLO, read the answer line (product/version), QUIT."""

    name = "{name}"
    services = ("{name}",)
    transports = ("tcp",)
    ports = ()
    tls_ports = ()
    server_first = False
    rarity = 9
    summary = "{title} HELLO: product and version from the answer line"

    def dialogue(self, ctx: ProbeContext) -> Dialogue:
        """HELLO; the answer names the product; QUIT."""
        yield Send(build_hello(ctx.rng.getrandbits(32)))
        reply = parse_reply((yield Recv(frame_message, max_size=MAX_LINE + 2)))
        finding = ctx.found(Finding(service="{name}", product=reply.product, version=reply.version,
                                    confidence=10 if reply.product else 7))
        finding.add("HELLO answer", reply.text if not reply.product else f"{{reply.product}}/{{reply.version}}")
        finding.details["text"] = reply.text
        yield Send(b"QUIT\\r\\n")
        return finding
'''

_TEST = '''\
"""Tests of the {name} probe with portproof's test kit (scanner.testing)."""

from __future__ import annotations

import random

from scanner.api import NotThisProtocol
from scanner.registry import load_registry
from scanner.testing import Transcript, assert_probe_contract, feed_bytewise, run_dialogue

from {package}.probe import (
    {cls},
    build_hello,
    frame_message,
    parse_reply,
)

# A made-up answer in the skeleton's placeholder protocol: replace it with bytes recorded from your
# real server (and keep one file per server version under tests/data/).
ANSWER = b"{upper} {name}-server/1.2.3 ready\\r\\n"


def test_frame_message_bytewise() -> None:
    """Segment boundaries do not change the framing; bytes past the message stay out."""
    assert feed_bytewise(frame_message, ANSWER + b"next") == len(ANSWER)


def test_parse_reply() -> None:
    """The product and version come from the answer line."""
    reply = parse_reply(ANSWER)
    assert reply.product == "{name}-server"
    assert (reply.version, reply.text) == ("1.2.3", "ready")


def test_dialogue_over_transcript() -> None:
    """Replay the recorded answer: the finding names the product; HELLO carries the seeded nonce."""
    run = run_dialogue({cls}(), ANSWER, seed=7)
    assert run.ok, run.error
    assert run.finding is not None
    assert run.finding.service == "{name}"
    assert run.finding.product == "{name}-server"
    assert run.finding.version == "1.2.3"
    assert run.sent[0] == build_hello(random.Random(7).getrandbits(32))


def test_other_protocol_is_not_this_protocol() -> None:
    """An HTTP server's answer is rejected cleanly."""
    run = run_dialogue({cls}(), b"HTTP/1.1 400 Bad Request\\r\\n\\r\\n")
    assert isinstance(run.error, NotThisProtocol)


def test_contract() -> None:
    """The contract every registered probe must pass (facts, no I/O imports, determinism, hostile bytes)."""
    assert_probe_contract({cls}(), transcripts=[Transcript(ANSWER)])


def test_registered() -> None:
    """Installed, the entry point makes portproof load the probe."""
    reg = load_registry()
    assert reg.get("{name}") is not None, [e.error for e in reg.errors]
'''

_README = '''\
# {dist}: a portproof probe for {title}

A third-party probe for [portproof](https://example.invalid/portproof) (`fingerprint`), written
from the skeleton of `fingerprint probes new {name}`.

## Use

    pip install .                # or: pip install -e .  while developing
    fingerprint probes           # lists "{name}", with this distribution's name and version
    fingerprint 127.0.0.1 -p 4000 --probe {name}

During development, without installing: `fingerprint --plugin-path {package}/probe.py ...`
(or `PORTPROOF_PLUGIN_PATH={package}/probe.py`).

## Test

    pip install -e '.[test]'
    python -m pytest

The tests use portproof's test kit (`scanner.testing`): replay recorded bytes through the
dialogue, feed framers byte by byte, and the contract every registered probe must pass.

## Next steps

1. Replace the placeholder protocol in `{package}/probe.py` (HELLO / `{upper} product/version`)
   with yours; update the module docstring (ports, what it sends, what it collects).
2. Record your real server's answers into `tests/data/` and replay them in the tests.
3. Set `ports`, `rarity` and `summary`; see portproof's `docs/plugins.md`.
'''


def render(name: str) -> dict[str, str]:
    """The files of the plugin package for probe ``name``: relative path -> text."""
    if not NAME_RE.match(name):
        raise ScaffoldError(f"probe name {name!r} must match {NAME_RE.pattern} (lowercase, digits, underscore)")
    words = name.split("_")
    values = {
        "name": name,
        "dist": "portproof-" + name.replace("_", "-"),
        "package": f"portproof_{name}",
        "cls": "".join(w.capitalize() for w in words) + "Probe",
        "reply_cls": "".join(w.capitalize() for w in words) + "Reply",
        "title": " ".join(w.capitalize() for w in words),
        "upper": name.upper(),
    }
    pkg = values["package"]
    return {
        "pyproject.toml": _PYPROJECT.format(**values),
        "README.md": _README.format(**values),
        f"{pkg}/__init__.py": _INIT.format(**values),
        f"{pkg}/probe.py": _PROBE.format(**values),
        f"tests/test_{name}.py": _TEST.format(**values),
    }


def write_plugin(name: str, dest: Path, *, force: bool = False) -> list[Path]:
    """Write the plugin package for ``name`` into ``dest`` (created); return the files written."""
    files = render(name)
    if dest.exists() and any(dest.iterdir()) and not force:
        raise ScaffoldError(f"{dest} exists and is not empty (use --force to write into it)")
    written = []
    for rel, text in files.items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str]) -> int:
    """``fingerprint probes new NAME [--dir DIR] [--force]``; returns the exit code."""
    p = argparse.ArgumentParser(
        prog="fingerprint probes new",
        description="Write a ready-to-install probe plugin package (pyproject with the entry point, "
        "probe module skeleton, tests, README).",
    )
    p.add_argument("name", help="probe name: lowercase letters, digits, underscore (e.g. redis)")
    p.add_argument("--dir", metavar="DIR", help="package folder to write (default: ./NAME)")
    p.add_argument("--force", action="store_true", help="write into an existing non-empty folder")
    args = p.parse_args(list(argv))
    dest = Path(args.dir) if args.dir else Path(args.name)
    try:
        written = write_plugin(args.name, dest, force=args.force)
    except (ScaffoldError, OSError) as exc:
        sys.stderr.write(f"fingerprint probes new: {exc}\n")
        return 2 if isinstance(exc, ScaffoldError) else 1
    for path in written:
        print(path)
    # "pip install demo" would ask PyPI: say ./demo
    where = str(dest) if dest.is_absolute() or str(dest).startswith(".") else f"./{dest}"
    print(f"\nnext: pip install {where} && fingerprint probes   (tests: cd {where} && python -m pytest)")
    return 0
