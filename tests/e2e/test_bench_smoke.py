"""The benchmark command runs end to end (``bench/run.py --quick``).

This only checks that the benchmark works: it starts its processes, every call succeeds, and
it prints and writes its figures. It never asserts on timings; the performance targets live in
the benchmark itself (see BENCHMARKS.md), not in a timed test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import REPO


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_quick_benchmark_runs_and_reports_the_ratios(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=420, cwd=REPO, check=False)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "added p50 (ms) = gateway p50 - direct p50 at c=1:" in done.stdout
    assert "throughput ratio = gateway/direct at c=16:" in done.stdout
    figures = json.loads(out.read_text())
    for target in ("direct", "gateway"):
        for phase in ("c1", "c16"):
            assert figures["median"][target][phase]["calls"] > 0
        assert figures["sdk"][target]["calls"] > 0
    assert {"added_p50_ms", "throughput_ratio", "added_p50_pass", "throughput_pass"} <= figures["ratios"].keys()
