"""Where fuzz targets and their seed corpora live, and how to load them.

Convention (shared by every target in this repository): a target is a module
``tests/fuzz/targets/<name>.py`` that defines ``fuzz_one(data: bytes) -> None``. It must not
raise for any input except to signal a property violation: expected rejections (the parser's
own errors, a refused request) are caught inside it. Its seed corpus is the files in
``tests/fuzz/corpus/<name>/``; every file there is replayed by ``test_fuzz_regression.py``, so a
crashing input saved there (``scripts/fuzz.py`` does it) stays a regression test forever.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parent
TARGETS_DIR = FUZZ_DIR / "targets"
CORPUS_DIR = FUZZ_DIR / "corpus"
REPO = FUZZ_DIR.parents[1]


def target_names() -> list[str]:
    """Every target module's name, sorted."""
    return sorted(path.stem for path in TARGETS_DIR.glob("*.py") if not path.stem.startswith("_"))


def load(name: str) -> Callable[[bytes], None]:
    """The ``fuzz_one`` of target ``name``."""
    module = importlib.import_module(f"tests.fuzz.targets.{name}")
    fuzz_one = getattr(module, "fuzz_one", None)
    if not callable(fuzz_one):
        raise TypeError(f"tests/fuzz/targets/{name}.py defines no fuzz_one(data: bytes)")
    return fuzz_one  # type: ignore[no-any-return]


def corpus_dir(name: str) -> Path:
    return CORPUS_DIR / name


def corpus_files(name: str) -> list[Path]:
    """The seed (and saved crash) inputs of target ``name``, sorted; hidden files are skipped."""
    directory = corpus_dir(name)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
