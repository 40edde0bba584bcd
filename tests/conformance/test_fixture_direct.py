"""The conformance suite pointed straight at fixture_server.py: proves the fixture itself is right.

If these fail, fix the fixture before reading anything into the through-the-gateway results.
Both runs use baseline-direct.yml (in baseline mode a WARNING also counts as a failure).
Needs the Node tools: ``bash scripts/install-node-tools.sh``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import HERE, ChildProcess, NodeTools, SuiteRun, run_suite

pytestmark = [pytest.mark.conformance, pytest.mark.timeout(600)]

BASELINE_DIRECT = HERE / "baseline-direct.yml"


def _check(run: SuiteRun, upstream: ChildProcess) -> None:
    if run.returncode != 0:
        pytest.fail(run.report(upstream.describe(60)), pytrace=False)


def test_fixture_passes_suite_2025(fixture_upstream: tuple[ChildProcess, str], node_tools: NodeTools,
                                   tmp_path: Path) -> None:
    """0.1.16 --suite all: every scenario (tools, resources, prompts, logging, completion, ...)."""
    upstream, url = fixture_upstream
    run = run_suite(node_tools, node_tools.conformance_0_1, url,
                    ["--suite", "all", "--expected-failures", str(BASELINE_DIRECT)], tmp_path)
    _check(run, upstream)


def test_fixture_passes_suite_2026(fixture_upstream: tuple[ChildProcess, str], node_tools: NodeTools,
                                   tmp_path: Path) -> None:
    """0.2.0-alpha.12 --requirements 2026-07-28: stateless era, MRTR, caching, headers."""
    upstream, url = fixture_upstream
    run = run_suite(node_tools, node_tools.conformance_0_2, url,
                    ["--requirements", "2026-07-28", "--expected-failures", str(BASELINE_DIRECT)], tmp_path)
    _check(run, upstream)
