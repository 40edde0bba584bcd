#!/usr/bin/env python3
"""Longer local fuzzing runs: ``.venv/bin/python scripts/fuzz.py TARGET --seconds N``.

Runs ``tests/fuzz/targets/TARGET.py`` under atheris (libFuzzer) for N seconds, starting from the
committed seed corpus. New coverage-increasing inputs go to a work directory
(``tests/fuzz/.work/TARGET/``, not committed; ``--grow`` writes them into the corpus instead);
**a crashing input is saved into** ``tests/fuzz/corpus/TARGET/`` as ``crash-<sha1>``, where
``tests/fuzz/test_fuzz_regression.py`` replays it on every test run from then on: fix the bug,
keep the file. ``--list`` names the targets. Extra arguments after ``--`` go to libFuzzer
(e.g. ``-- -jobs=2 -dict=...``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fuzz.discovery import corpus_dir, target_names  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fuzz one target with atheris.")
    parser.add_argument("target", nargs="?", help="a module name in tests/fuzz/targets/")
    parser.add_argument("--seconds", type=int, default=300, help="how long to run (default 300)")
    parser.add_argument("--grow", action="store_true", help="write new coverage inputs into the committed corpus")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if args.list or args.target is None:
        print("\n".join(target_names()))
        return 0
    if args.target not in target_names():
        parser.error(f"no target {args.target!r}; targets: {', '.join(target_names())}")
    corpus = corpus_dir(args.target)
    corpus.mkdir(parents=True, exist_ok=True)
    work = corpus if args.grow else REPO / "tests" / "fuzz" / ".work" / args.target
    work.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "tests.fuzz.atheris_driver", args.target, f"-max_total_time={args.seconds}",
               "-timeout=60", "-rss_limit_mb=4096", f"-artifact_prefix={corpus}/", *extra, str(work)]
    if work != corpus:
        command.append(str(corpus))
    print(" ".join(command), flush=True)
    before = set(corpus.iterdir())
    done = subprocess.run(command, cwd=REPO, env={**os.environ, "PYTHONWARNINGS": "ignore"},  # noqa: S603 - our own argv
                          check=False)
    saved = sorted(p.name for p in set(corpus.iterdir()) - before if not args.grow or "-" in p.name)
    if done.returncode != 0:
        where = f"saved as {', '.join(saved)} in {corpus}/ (now a regression test)" if saved else "not saved"
        print(f"\nfuzz: {args.target} failed (exit {done.returncode}); the input is {where}", file=sys.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
