"""nmap's service-probe database, read from the installed file at run time and matched in Python.

portproof's own probes go deep on a few protocols; breadth comes from the database every nmap
user already maintains: ``nmap-service-probes`` (Debian package ``nmap-common``,
``/usr/share/nmap/nmap-service-probes``). It is never copied into this repository: it is read
where it is installed, or where ``PORTPROOF_SERVICE_DB`` / the ``path`` argument points.

Cost: importing this package reads nothing. :func:`load` only checks that the file is readable;
the file is parsed on the first :meth:`ServiceDB.match` / :meth:`ServiceDB.probe` /
:meth:`ServiceDB.stats` (about 0.1 s), a probe's lines are indexed on its first use, and each
regex is compiled the first time a reply passes its literal checks.

    >>> db = default_db()                                     # doctest: +SKIP
    >>> db.match("NULL", b"220 mx ESMTP Exim 4.96 ...\\r\\n")    # doctest: +SKIP
    DBMatch(service='smtp', product='Exim smtpd', version='4.96', ..., line=...)
"""

from __future__ import annotations

import os
import threading

from scanner.servicedb.matcher import MAX_DATA, SLOW_SECONDS, DBMatch, ServiceDB, path_readable
from scanner.servicedb.names import service_name
from scanner.servicedb.parser import DBProbe

__all__ = [
    "DEFAULT_PATH",
    "ENV_VAR",
    "MAX_DATA",
    "SLOW_SECONDS",
    "DBMatch",
    "DBProbe",
    "ServiceDB",
    "default_db",
    "last_error",
    "load",
    "reset_default",
    "service_name",
]

#: where Debian's nmap-common installs the database
DEFAULT_PATH = "/usr/share/nmap/nmap-service-probes"
#: environment variable naming another database file
ENV_VAR = "PORTPROOF_SERVICE_DB"

_lock = threading.Lock()
_last_error: str | None = None
_default: ServiceDB | None = None
_default_loaded = False


def load(path: str | os.PathLike[str] | None = None) -> ServiceDB | None:
    """The database at ``path``, else at ``$PORTPROOF_SERVICE_DB``, else at :data:`DEFAULT_PATH`.

    Returns None (never raises) when the file is absent or unreadable; :func:`last_error` says
    why. The file is parsed later, on first use."""
    global _last_error
    chosen = os.fspath(path) if path is not None else (os.environ.get(ENV_VAR) or DEFAULT_PATH)
    why = path_readable(chosen)
    if why is not None:
        hint = " (install Debian's nmap-common, or set PORTPROOF_SERVICE_DB)" if chosen == DEFAULT_PATH else ""
        _last_error = why + hint
        return None
    _last_error = None
    return ServiceDB(chosen)


def default_db() -> ServiceDB | None:
    """The process-wide database (:func:`load` with no path, done once; None when absent)."""
    global _default, _default_loaded
    if not _default_loaded:
        with _lock:
            if not _default_loaded:
                _default = load()
                _default_loaded = True
    return _default


def reset_default() -> None:
    """Forget the process-wide database, so the next :func:`default_db` loads again (tests)."""
    global _default, _default_loaded
    with _lock:
        _default = None
        _default_loaded = False


def last_error() -> str | None:
    """Why the last :func:`load` returned None (None after a successful load)."""
    return _last_error
