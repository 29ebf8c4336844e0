#!/usr/bin/env bash
# Run the three benchmarks one after the other (as root, from anywhere); outputs under
# ${BENCH_OUT:-/tmp/portproof-bench}. Each benchmark also runs alone (see bench/README.md).
set -uo pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${BENCH_OUT:-/tmp/portproof-bench}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
rc=0
cd "$BENCH/.." || exit 1
echo "== startup";     "$PY" bench/startup.py                         | tee "$OUT/startup.txt"; rc=$((rc | PIPESTATUS[0]))
echo "== lab_vs_nmap"; "$PY" bench/lab_vs_nmap.py --out "$OUT/lab"    | tee "$OUT/lab.txt";     rc=$((rc | PIPESTATUS[0]))
echo "== scale";       "$PY" bench/scale.py --out "$OUT/scale"        | tee "$OUT/scale.txt";   rc=$((rc | PIPESTATUS[0]))
exit "$rc"
