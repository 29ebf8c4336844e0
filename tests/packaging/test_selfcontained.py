"""The test suite stands on its own: its public captures ship with it, and nothing reads ../shared."""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

from tests.pcaputil import CORPUS

REPO = Path(__file__).resolve().parents[2]
#: the licences of the source repositories (column license_of_repo starts with one of these)
LICENCES = ("MIT", "BSD-3-Clause", "Apache-2.0", "LGPL-3.0")


def _manifest() -> list[dict[str, str]]:
    with (CORPUS / "MANIFEST.tsv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))


def test_every_capture_is_listed_with_source_licence_and_checksum() -> None:
    rows = _manifest()
    assert len(rows) == 44
    files = {p.name for p in CORPUS.iterdir()} - {"MANIFEST.tsv", "README.md"}
    assert files == {r["file"] for r in rows}, "every capture listed once, nothing unlisted"
    for r in rows:
        data = (CORPUS / r["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == r["sha256"] and len(data) == int(r["bytes"]), r["file"]
        assert re.fullmatch(r"[\w.-]+/[\w.-]+", r["source_repo"]) and r["source_path"], r["file"]
        assert re.fullmatch(r"[0-9a-f]{40}", r["source_commit"]), r["file"]
        assert r["license_of_repo"].startswith(LICENCES), (r["file"], r["license_of_repo"])


def test_no_test_or_benchmark_reads_outside_the_repository() -> None:
    """No path to ../shared (the development machine's side folder) in tests/ or bench/."""
    pattern = re.compile(r"""["']\.\.["']\s*/\s*["']shared["']|\.\./shared/""")
    offenders = [
        str(p.relative_to(REPO))
        for top in ("tests", "bench")
        for p in sorted((REPO / top).rglob("*.py"))
        if "lab/tools" not in p.as_posix() and pattern.search(p.read_text(encoding="utf-8"))
    ]
    assert offenders == []
