#!/usr/bin/env bash
# The test command (README): on a fresh Debian 12 machine, as root, install everything the tests need
# (the Python package with its test extras, the Debian packages of the lab's real servers and the lab's
# own Python venv, the test tools), check lint and types, then run pytest. The pytest session starts
# the lab once (tests/conftest.py -> tests/lab/up.sh, loopback only) and stops it at the end.
#
# The Python side goes to whichever interpreter "python3" is (or $PYTHON): the system one, or the one
# of an activated virtual environment (python3 -m venv /tmp/v && . /tmp/v/bin/activate && bash
# tests/run.sh). The tests' own helper venvs see the packages of that interpreter (tests/plugins/helpers.py).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
log() { printf '[tests %(%H:%M:%S)T] %s\n' -1 "$*"; }
apt_install() {  # apt_install PKG...: install Debian packages (refreshing the lists once if needed)
  local out=${TMPDIR:-/tmp}/portproof-tests-apt.log
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "$@" > "$out" 2>&1; then
    { apt-get update -q && apt-get install -y -q --no-install-recommends "$@"; } >> "$out" 2>&1 \
      || { echo "apt-get install $* failed, see $out" >&2; exit 1; }
  fi
}

in_venv=$("$PY" -c 'import sys; print(int(sys.prefix != sys.base_prefix))')
if [ "$in_venv" = 1 ]; then
  log "python: virtual environment $("$PY" -c 'import sys; print(sys.prefix)')"
else
  log "python: system interpreter $("$PY" -c 'import sys; print(sys.executable)')"
  # Debian's own python3 has no pip (python3-pip) and refuses system-wide installs (PEP 668,
  # EXTERNALLY-MANAGED): this command installs into it on purpose, as the README says.
  "$PY" -m pip --version > /dev/null 2>&1 || apt_install python3-pip python3-venv
  if [ -e "$("$PY" -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')/EXTERNALLY-MANAGED" ]; then
    export PIP_BREAK_SYSTEM_PACKAGES=1
  fi
fi

log "pip install -e .[test,cluster]"
# cluster: Dask, for the --scheduler tests (tests/integration/test_dask.py starts a local cluster)
"$PY" -m pip install -q --disable-pip-version-check -e ".[test,cluster]" 2>&1 | grep -v "Running pip as the 'root' user" || true
"$PY" -c "import scanner, scanner.replay, probes, scapy, dns, ldap3, pytest, distributed" || { echo "python packages missing" >&2; exit 1; }

log "lab install (Debian packages of the real servers, lab venv)"
bash tests/lab/up.sh --install-only

# tshark: an independent reader of the captures --record writes; nmap-common: nmap's service probe
# file, read at run time (never copied into the repository)
if ! command -v tshark > /dev/null || [ ! -e /usr/share/nmap/nmap-service-probes ]; then
  log "test tools (tshark, nmap-common)"
  apt_install tshark nmap-common
fi

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
