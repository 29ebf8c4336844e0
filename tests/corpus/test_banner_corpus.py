"""The real-world banner corpus (tests/data/banners, issue 13): what we name beside the database.

Targets (issue 13): product right on at least 90% of mail (SMTP, IMAP, POP3, NNTP) and DNS banners;
at least as many right as the database alone on every protocol; wrong product claims under 1% on
every protocol, negatives included. The installed database is required (the test command installs
Debian's nmap-common).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scanner import servicedb
from scanner.corpus import load_corpus, score_corpus
from scanner.registry import load_registry

CORPUS = Path(__file__).resolve().parents[1] / "data" / "banners"
MAIL_AND_DNS = ("smtp", "imap", "pop3", "nntp", "dns")


@pytest.fixture(scope="module")
def scored():
    db = servicedb.default_db()
    assert db is not None, f"the service database is required: {servicedb.last_error()}"
    entries = load_corpus(CORPUS)
    score, rows = score_corpus(entries, load_registry().probes, db)
    return entries, score, rows


def test_corpus_size_and_sources(scored) -> None:
    entries, _score, _rows = scored
    named = [e for e in entries if not e.negative]
    assert len(named) >= 300, f"only {len(named)} banners that name a product"
    assert sum(e.negative for e in entries) >= 40
    for e in entries:
        assert e.source.strip(), f"{e.where}: no source"
    for proto in ("smtp", "imap", "pop3", "nntp", "http", "dns"):
        assert sum(1 for e in named if e.protocol == proto) >= 20, proto


@pytest.mark.parametrize("proto", MAIL_AND_DNS)
def test_mail_and_dns_named_right(scored, proto: str) -> None:
    _entries, score, _rows = scored
    t = score.ours[proto]
    assert t.named > 0
    assert t.right >= 0.90 * t.named, (
        f"{proto}: {t.right}/{t.named} right; not named: " + "; ".join(t.missed_examples[:15]))


@pytest.mark.parametrize("proto", [*MAIL_AND_DNS, "http"])
def test_at_least_the_database(scored, proto: str) -> None:
    _entries, score, _rows = scored
    ours, db = score.ours[proto], score.database[proto]
    assert ours.right >= db.right, f"{proto}: ours {ours.right} < database {db.right}"


@pytest.mark.parametrize("proto", [*MAIL_AND_DNS, "http"])
def test_wrong_claims_under_one_percent(scored, proto: str) -> None:
    _entries, score, _rows = scored
    t = score.ours[proto]
    assert t.wrong < 0.01 * t.banners or t.wrong == 0, "; ".join(t.wrong_examples)


def test_every_claim_cites_a_rule(scored) -> None:
    _entries, _score, rows = scored
    for entry, ours, _db in rows:
        if ours.product:
            assert ours.rule and (ours.rule.startswith("portproof:") or ours.rule.startswith("nmap-service-probes:")), (
                entry.where, ours)
