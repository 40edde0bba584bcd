"""Hostile text against the detection engine (portcullis.content): ReDoS-shaped strings for every
secret rule and PII detector, 1 MB of mixed Unicode, 1 MB of base64, deep encodings, 10 MB.

The property for every row: the scan returns (no exception), and either it is *blocked* or it
found the secret planted at the end of the hostile text. "Clean" with a secret inside is the
failure. No row asserts a time: on a slow or loaded machine more rows end blocked, which is the
fail-closed answer (docs/security-testing.md, "Content detection").
"""

from __future__ import annotations

import base64
import random
from urllib.parse import quote

import pytest

from portcullis.content import ScanBudget, scan_parts, scan_text
from portcullis.content.secret_rules import RULES

PLANTED = "AKIA" + "QZ3WX7RT5YV2UP6M"  # an AWS access key id, found by a keyword rule
KB = 1024
MB = 1024 * KB
BUDGET = ScanBudget(cpu_ms=300)


def _rule_rows() -> list[tuple[str, str]]:
    """Per rule: its keywords repeated without a value, and a keyword followed by a long run of value
    characters that never terminates (the shapes that stall a backtracking engine)."""
    rows = []
    for rule in RULES:
        keyword = rule.keywords[0] if rule.keywords else "x"
        rows.append((f"{rule.rule_id}:keyword-flood", (keyword + " ") * (256 * KB // (len(keyword) + 1))))
        rows.append((f"{rule.rule_id}:unterminated", keyword + "=" + "a1B2" * (64 * KB)))
        rows.append((f"{rule.rule_id}:nested-prefix", (keyword + "-" + "A" * 30 + ".") * (8 * KB)))
    return rows


def _mixed_unicode(size: int) -> str:
    rng = random.Random(5)
    pieces = ["漢字テキスト", "مرحبا بالعالم", "שלום", "👩\u200d👩\u200d👧\u200d👦", "🏳️\u200d🌈", "a\u0301\u0302\u0303",
              "e\u0308", "\u202bRTL\u202c", "\u200b", "Ω≈ç√∫", "\uff46\uff55\uff4c\uff4c",
              " ", "\n", "12 ", "@", "%", "="]
    out, total = [], 0
    while total < size:
        piece = rng.choice(pieces)
        out.append(piece)
        total += len(piece)
    return "".join(out)


NAMED_ROWS: list[tuple[str, str]] = [
    ("1MB-mixed-unicode", _mixed_unicode(MB)),
    ("1MB-random-base64", base64.b64encode(random.Random(1).randbytes(768 * KB)).decode()),
    ("1MB-base64-of-text", base64.b64encode(b"word list 1234 and more words " * (26 * KB)).decode()),
    ("1MB-at-signs", "@" * MB),
    ("1MB-digits-and-spaces", "1 " * (MB // 2)),
    ("phone-flood", "+1 415 555 2671 " * (MB // 16)),
    ("card-flood", "4111 1111 1111 1111 " * (MB // 20)),
    ("email-flood", "a.b@example.com " * (MB // 16)),
    ("pem-begin-no-end", "-----BEGIN RSA PRIVATE KEY-----\n" + "QUJD\n" * (MB // 5)),
    ("jwt-prefix-flood", "eyJ" * (MB // 3)),
    ("url-escape-flood", "%41" * (MB // 3)),
    ("qp-escape-flood", "=41" * (MB // 3)),
    ("hex-run", "41" * (MB // 2)),
    ("base64-nested-3-deep", base64.b64encode(base64.b64encode(base64.b64encode(b"z" * 200 * KB))).decode()),
    ("url-in-base64-flood", base64.b64encode(quote("a=b&" * 100 * KB, safe="").encode()).decode()),
    ("connection-url-flood", "postgres://u:" * (MB // 13)),
    ("generic-assignment-flood", "password=" * (MB // 9)),
    ("lone-surrogates", "\ud800\udfff" * (MB // 2)),
    ("control-characters", "".join(chr(c) for c in range(32)) * (MB // 32)),
]


@pytest.mark.parametrize(("name", "text"), _rule_rows() + NAMED_ROWS, ids=lambda v: v if len(v) < 60 else "")
def test_hostile_text_is_blocked_or_the_planted_secret_is_found(name: str, text: str) -> None:
    """Never clean with a secret inside, never an exception."""
    result = scan_text(text + " " + PLANTED + " ", BUDGET)
    found = any(f.kind == "aws_access_key_id" and f.end == len(text) + 1 + len(PLANTED) for f in result.findings)
    assert result.blocked or found, f"{name}: neither blocked nor found"
    if result.blocked:
        assert result.reason in ("budget_exceeded", "too_many_findings", "decode_limit")


def test_ten_megabytes_are_blocked_or_scanned_to_the_end() -> None:
    """10 MB of ordinary JSON-ish text: either the planted secret at the very end is found, or blocked."""
    row = '{"id": 12, "name": "widget", "updated": "2026-12-05T16:00:00Z", "note": "ok"}, '
    text = row * (10 * MB // len(row))
    result = scan_text(text + PLANTED, ScanBudget(cpu_ms=2000))
    assert result.blocked or any(f.kind == "aws_access_key_id" for f in result.findings)


def test_a_flood_of_tiny_parts_shares_the_budget() -> None:
    """Many tiny stream chunks cost a fixed amount each, so they too reach the budget (or finish)."""
    # the key starts a word (a space before it): glued to the "a"s it would be no key at all, and the
    # test would pass only on a machine slow enough to reach the budget
    parts = ["a"] * 50_000 + [" ", PLANTED[:8], PLANTED[8:]]
    result = scan_parts(parts, BUDGET)
    assert result.blocked or any(p.finding.kind == "aws_access_key_id" and p.straddles for p in result.findings)
