"""bench/cluster.py: its arguments and dry run (the load itself needs the cluster stores wired)."""

from __future__ import annotations

import json

import pytest
from bench.cluster import SETUPS, main, parse


def test_dry_run_prints_every_setup_and_starts_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --setup every setup is planned: 1, 2, 3 replicas and --workers 2."""
    assert main(["--dry-run", "--calls", "10"]) == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    assert plan["setups"] == list(SETUPS) and plan["calls"] == 10 and plan["dry_run"] is True


@pytest.mark.parametrize("argv", [["--calls", "0"], ["--concurrency", "-1"], ["--setup", "9-replicas"]])
def test_bad_arguments_are_refused(argv: list[str]) -> None:
    """Non-positive counts and unknown setups exit 2 (argparse) before anything starts."""
    with pytest.raises(SystemExit) as exited:
        parse(argv)
    assert exited.value.code == 2
