"""TLS session secrets: the NSS key log format, its capture during ``--record`` and the pcapng DSB.

**Format.** The NSS key log (what ``SSLKEYLOGFILE`` and ``ssl.SSLContext.keylog_filename`` write,
and what Wireshark reads) is one secret per line: ``LABEL <client_random hex> <secret hex>``. The
client random (32 bytes, from the ClientHello) names the connection. TLS 1.2 and older log
``CLIENT_RANDOM`` (the 48-byte master secret); TLS 1.3 logs ``CLIENT_HANDSHAKE_TRAFFIC_SECRET``,
``SERVER_HANDSHAKE_TRAFFIC_SECRET``, ``CLIENT_TRAFFIC_SECRET_0``, ``SERVER_TRAFFIC_SECRET_0`` (and
``EXPORTER_SECRET``, ``CLIENT_EARLY_TRAFFIC_SECRET``, unused here).

**Capture without a file.** Python offers no key log callback, only a file name that OpenSSL
appends to (``keylog_filename``, opened once with ``fopen(..., "a")`` and flushed after every
line). :class:`KeyLogCapture` gives it the name of an anonymous in-memory file instead: a
``memfd_create`` file reached through ``/proc/self/fd/N``. It has no name in any file system, lives
in RAM, and disappears when its last descriptor closes, so the secrets exist only in this process
and in the pcapng file that asked for them. Where ``memfd_create`` is missing (not Linux), the
fallback is a file in a private directory (``mkdtemp``: mode 0700) deleted on :meth:`close`.

**pcapng.** A Decryption Secrets Block (block type 0x0000000A) carries a secrets type
(``0x544C534B``, "TLSK": an NSS key log), the length of the secrets, the key log text padded to 32
bits, and the block length again. Wireshark reads such blocks before the packets that follow them
(``editcap --inject-secrets tls,FILE`` writes the same).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import struct
import tempfile

__all__ = [
    "BLOCK_DSB",
    "SECRETS_TLS",
    "KeyLog",
    "KeyLogCapture",
    "dsb_block",
    "parse_dsb",
]

#: pcapng block type of a Decryption Secrets Block
BLOCK_DSB = 0x0000000A
#: secrets type of an NSS key log ("TLSK")
SECRETS_TLS = 0x544C534B
#: lines of key log kept at most (a 1 GB capture holds a few 100k connections at most)
MAX_SECRETS = 1_000_000
#: key log bytes read from one DSB or file at most
MAX_KEYLOG_BYTES = 256 * 1024 * 1024
#: labels kept: the ones decryption uses
LABELS = frozenset(
    {
        "CLIENT_RANDOM",
        "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
        "SERVER_HANDSHAKE_TRAFFIC_SECRET",
        "CLIENT_TRAFFIC_SECRET_0",
        "SERVER_TRAFFIC_SECRET_0",
    }
)
_LINE = re.compile(rb"^([A-Z_0-9]{1,48}) ([0-9a-fA-F]{64}) ([0-9a-fA-F]{32,256})$")


class KeyLog:
    """The secrets of an NSS key log, by client random: ``keys[client_random][label] = secret``."""

    def __init__(self) -> None:
        self.keys: dict[bytes, dict[str, bytes]] = {}
        self.lines = 0
        #: lines that were not key log lines (counted, never echoed: they may be anything)
        self.bad = 0

    def __len__(self) -> int:
        return len(self.keys)

    def __bool__(self) -> bool:
        return bool(self.keys)

    def add_text(self, text: bytes | str) -> int:
        """Add the secrets of key log text (comments and unknown labels skipped); return how many."""
        if isinstance(text, str):
            text = text.encode("ascii", "replace")
        added = 0
        for raw in text[:MAX_KEYLOG_BYTES].splitlines():
            line = raw.strip()
            if not line or line.startswith(b"#"):
                continue
            m = _LINE.match(line)
            if m is None:
                self.bad += 1
                continue
            label = m.group(1).decode()
            if label not in LABELS or self.lines >= MAX_SECRETS:
                continue
            self.keys.setdefault(bytes.fromhex(m.group(2).decode()), {})[label] = bytes.fromhex(m.group(3).decode())
            self.lines += 1
            added += 1
        return added

    def add_file(self, path: str | os.PathLike[str]) -> int:
        """Add the secrets of an NSS key log file (``SSLKEYLOGFILE``); return how many."""
        with open(path, "rb") as f:
            return self.add_text(f.read(MAX_KEYLOG_BYTES))

    def get(self, client_random: bytes) -> dict[str, bytes] | None:
        """The secrets logged for the connection whose ClientHello carried ``client_random``."""
        return self.keys.get(client_random)


def dsb_block(keylog_text: bytes) -> bytes:
    """A little-endian pcapng Decryption Secrets Block holding an NSS key log."""
    pad = b"\x00" * (-len(keylog_text) % 4)
    total = 12 + 8 + len(keylog_text) + len(pad)
    # block type, block total length, secrets type, secrets length, secrets (padded), total length
    return (
        struct.pack("<IIII", BLOCK_DSB, total, SECRETS_TLS, len(keylog_text))
        + keylog_text
        + pad
        + struct.pack("<I", total)
    )


def parse_dsb(body: bytes, endian: str = "<") -> bytes | None:
    """The key log text of a DSB's body (the bytes after the block length), None if not TLS keys.

    ``endian``: ``"<"`` or ``">"`` (or scapy's ``"!"``), the byte order of the section.
    """
    if len(body) < 8:
        return None
    stype, slen = struct.unpack(endian + "II", body[:8])
    if stype != SECRETS_TLS or slen > len(body) - 8 or slen > MAX_KEYLOG_BYTES:
        return None
    return body[8 : 8 + slen]


class KeyLogCapture:
    """Somewhere for OpenSSL to write a key log that is not a file on disk (see the module doc).

    :attr:`path` goes to ``SSLContext.keylog_filename``; :meth:`drain` returns the complete lines
    written since the last call; :meth:`close` frees everything.
    """

    def __init__(self) -> None:
        self._fd: int | None = None
        self._dir: str | None = None
        self._offset = 0
        self.in_memory = False
        memfd = getattr(os, "memfd_create", None)
        if memfd is not None:
            with contextlib.suppress(OSError):
                fd = memfd("portproof-tls-keylog", getattr(os, "MFD_CLOEXEC", 0))
                if os.path.exists(f"/proc/self/fd/{fd}"):
                    self._fd, self.path, self.in_memory = fd, f"/proc/self/fd/{fd}", True
                else:
                    os.close(fd)
        if self._fd is None:
            self._dir = tempfile.mkdtemp(prefix="portproof-keylog-")  # mode 0700
            self.path = os.path.join(self._dir, "keylog.txt")
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)

    def drain(self) -> bytes:
        """Key log lines written since the last call (complete lines only; comments included)."""
        if self._fd is None:
            return b""
        size = os.fstat(self._fd).st_size
        if size <= self._offset:
            return b""
        data = os.pread(self._fd, size - self._offset, self._offset)
        end = data.rfind(b"\n") + 1  # a line being written is left for the next call
        self._offset += end
        return data[:end]

    def close(self) -> None:
        """Free the in-memory file (or delete the private directory)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
