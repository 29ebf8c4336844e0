#!/usr/bin/env bash
# The test command (README): on a fresh Debian 12 machine, as root, install everything the tests need
# (the Python package with its test extras, the Debian packages of the lab's real servers and the lab's
# own Python venv), check lint and types, then run pytest. The pytest session starts the lab once
# (tests/conftest.py -> tests/lab/up.sh, loopback only) and stops it at the end.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
log() { printf '[tests %(%H:%M:%S)T] %s\n' -1 "$*"; }

log "pip install -e .[test]"
"$PY" -m pip install -q --disable-pip-version-check -e ".[test]" 2>&1 | grep -v "Running pip as the 'root' user" || true
"$PY" -c "import scanner, probes, scapy, dns, ldap3, pytest" || { echo "python packages missing" >&2; exit 1; }

log "lab install (Debian packages of the real servers, lab venv)"
bash tests/lab/up.sh --install-only

log "ruff"
dirs=(); for d in scanner probes tests bench examples; do [ -d "$d" ] && dirs+=("$d"); done
"$PY" -m ruff check "${dirs[@]}"
log "mypy"
"$PY" -m mypy

log "pytest"
set +e
"$PY" -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
# pytest exit 5 = no tests collected: that is a failure here, never a pass
[ "$rc" = 5 ] && { echo "pytest collected no tests" >&2; exit 1; }
exit "$rc"
