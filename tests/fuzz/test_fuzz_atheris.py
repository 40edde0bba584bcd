"""A short, time-boxed coverage-guided run of every fuzz target under atheris (part of ``make test``).

The whole budget is ``PORTCULLIS_FUZZ_SECONDS`` (default 60) split evenly between the targets
(at least 5 s each). A run fails only when libFuzzer reports a crash (an exception out of
``fuzz_one``, a per-input hang past 60 s, memory past 4 GiB); a slow machine just runs fewer
inputs. New inputs go to a temporary directory, never into the committed corpus; a crashing
input is printed (and kept in the temporary directory) so it can be added to
``tests/fuzz/corpus/<name>/`` as a regression test.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.discovery import REPO, corpus_dir, target_names

CRASH_EXIT = 77


def seconds_per_target() -> int:
    total = int(os.environ.get("PORTCULLIS_FUZZ_SECONDS", "60"))
    return max(5, total // max(1, len(target_names())))


def _atheris_available() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(platform.system() != "Linux", reason="atheris wheels exist for Linux only"),
]


def test_atheris_is_installed() -> None:
    """The fuzzer is part of the dev install (pyproject dev extras); a missing one is a broken install."""
    assert _atheris_available(), "atheris is missing: run `make install` (it is in the dev extras)"


@pytest.mark.parametrize("name", target_names())
@pytest.mark.timeout(seconds_per_target() * 4 + 240)
def test_fuzz_target_survives_a_short_coverage_guided_run(name: str, tmp_path: Path) -> None:
    """libFuzzer finds no crash in the target within its share of the time budget."""
    if not _atheris_available():
        pytest.fail("atheris is missing: run `make install` (it is in the dev extras)")
    seconds = seconds_per_target()
    work = tmp_path / "corpus"
    work.mkdir()
    argv = [sys.executable, "-m", "tests.fuzz.atheris_driver", name, f"-max_total_time={seconds}", "-timeout=60",
            "-rss_limit_mb=4096", f"-error_exitcode={CRASH_EXIT}", f"-artifact_prefix={tmp_path}/",
            "-print_final_stats=1", str(work)]
    if os.environ.get("CI"):
        argv.insert(4, "-seed=1")  # CI explores the same way every run; local runs draw fresh seeds
    if corpus_dir(name).is_dir():
        argv.append(str(corpus_dir(name)))
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=seconds * 4 + 180, check=False,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    crashes = sorted(p for p in tmp_path.iterdir() if p.is_file() and p.name.split("-")[0] in (
        "crash", "timeout", "oom", "leak", "slow"))
    detail = "\n".join(f"{p.name}: {p.read_bytes()[:400]!r}" for p in crashes)
    assert done.returncode == 0, (f"fuzz target {name!r} failed (exit {done.returncode}); add the input to "
                                  f"tests/fuzz/corpus/{name}/ once fixed\n{detail}\n{done.stderr[-4000:]}")
