"""Breadth on real-world banners: our probes (with the service database behind them) beside the
service database alone, per protocol, on the corpus in tests/data/banners (issue 13).

    python bench/banner_corpus.py [CORPUS_DIR] [--service-db FILE] [--show-misses] [--json]

For every banner the real probe's dialogue runs over the bytes a server would send (a greeting, an
HTTP response with the ``Server:`` value, a DNS server answering ``version.bind``); the database
alone matches the same bytes under its own probe (NULL, GetRequest, DNSVersionBindReq). Printed per
protocol: banners, product right (of those that name one), wrong claims (of all, negatives
included), version right; then ours/database ratios and the CPU time of each side.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scanner import servicedb
from scanner.corpus import Tally, load_corpus, score_corpus
from scanner.registry import load_registry

DEFAULT = Path(__file__).resolve().parents[1] / "tests" / "data" / "banners"


def _pct(a: int, b: int) -> str:
    return f"{100.0 * a / b:5.1f}%" if b else "   - "


def _row(name: str, o: Tally, d: Tally) -> str:
    return (f"{name:<8} {o.banners:>5}  {_pct(o.right, o.named):>7} {_pct(d.right, d.named):>7}"
            f"  {_pct(o.wrong, o.banners):>7} {_pct(d.wrong, d.banners):>7}"
            f"  {_pct(o.version_right, o.versions):>7} {_pct(d.version_right, d.versions):>7}"
            f"  {o.right:>4}/{d.right:<4}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="?", default=str(DEFAULT))
    ap.add_argument("--service-db", help="nmap-service-probes file (default: the installed one)")
    ap.add_argument("--show-misses", action="store_true", help="list the banners ours did not name")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()

    t0 = time.process_time()
    db = servicedb.load(args.service_db) if args.service_db else servicedb.default_db()
    if db is None:
        print(f"service database unavailable: {servicedb.last_error()}", file=sys.stderr)
        return 2
    entries = load_corpus(args.corpus)
    probes = load_registry().probes
    score, _rows = score_corpus(entries, probes, db)
    cpu = time.process_time() - t0

    protocols = sorted(set(score.ours) | set(score.database))
    if args.json:
        print(json.dumps({p: {"ours": score.ours[p].as_dict(), "database": score.database[p].as_dict()}
                          for p in protocols}, indent=2))
        return 0
    print(f"banner corpus: {len(entries)} banners from {args.corpus}")
    print(f"service database: {db.path} ({db.stats().get('matches', 0)} match lines)")
    print()
    print(f"{'protocol':<8} {'n':>5}  {'right':>7} {'db':>7}  {'wrong':>7} {'db':>7}  {'version':>7} {'db':>7}"
          f"  ours/db")
    total_o, total_d = Tally(), Tally()
    for p in protocols:
        o, d = score.ours[p], score.database[p]
        print(_row(p, o, d))
        for attr in ("banners", "named", "right", "wrong", "negatives", "versions", "version_right"):
            setattr(total_o, attr, getattr(total_o, attr) + getattr(o, attr))
            setattr(total_d, attr, getattr(total_d, attr) + getattr(d, attr))
    print(_row("all", total_o, total_d))
    print()
    ratio = total_o.right / total_d.right if total_d.right else float("inf")
    print(f"products named right: ours {total_o.right}, database alone {total_d.right} (ratio {ratio:.2f}x)")
    print(f"CPU for the whole run (load, compile, both sides): {cpu:.2f} s")
    wrong = [w for p in protocols for w in score.ours[p].wrong_examples]
    if wrong:
        print("\nwrong claims (ours):")
        for w in wrong:
            print("  " + w.encode("unicode_escape").decode("ascii"))
    if args.show_misses:
        print("\nnot named (ours):")
        for p in protocols:
            for m in score.ours[p].missed_examples:
                print("  " + m.encode("unicode_escape").decode("ascii"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
