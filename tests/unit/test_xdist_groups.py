"""``--dist loadgroup`` keeps a group on one worker (tests/conftest.py ``_tag_groups``).

The suite's module-scoped gateways rely on it: split across workers, each worker that got a share of a
module started its gateway again. A child pytest runs a grouped module of six tests on two workers, with
the suite's own tagging hook, and each test records the worker that ran it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CONFTEST = '''
import pytest
from tests.conftest import _tag_groups

def pytest_collection_modifyitems(config, items):
    if hasattr(config, "workerinput") and getattr(config.option, "loadgroup", False):
        _tag_groups(items)
'''

GROUPED = '''
import os, pathlib, pytest
pytestmark = pytest.mark.xdist_group("one")

@pytest.mark.parametrize("n", range(6))
def test_records_its_worker(n):
    pathlib.Path(os.environ["RECORD_DIR"], f"{n}").write_text(os.environ["PYTEST_XDIST_WORKER"])
'''

SPREAD = '''
import time, pytest

@pytest.mark.parametrize("n", range(6))
def test_takes_a_moment(n):
    time.sleep(0.05)
'''


@pytest.mark.timeout(300)
def test_a_group_runs_on_one_worker(tmp_path: Path) -> None:
    suite, record = tmp_path / "suite", tmp_path / "record"
    suite.mkdir()
    record.mkdir()
    (suite / "conftest.py").write_text(CONFTEST)
    (suite / "test_grouped.py").write_text(GROUPED)
    (suite / "test_spread.py").write_text(SPREAD)
    env = {**os.environ, "RECORD_DIR": str(record), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "2",
                           "--dist", "loadgroup", "--rootdir", str(suite), "-c", os.devnull, str(suite)],
                          cwd=suite, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    workers = {p.read_text() for p in record.iterdir()}
    assert len(list(record.iterdir())) == 6
    assert len(workers) == 1, workers
