"""Every fuzz target replays every file of its corpus: seeds and saved crashes stay regression tests.

Fast and deterministic; needs no fuzzer. A target with no corpus files is itself a failure, so a
new target cannot be added without seeds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.discovery import corpus_files, load, target_names

CASES = [(name, path) for name in target_names() for path in corpus_files(name)]


@pytest.mark.parametrize("name", target_names())
def test_every_fuzz_target_has_a_seed_corpus(name: str) -> None:
    """Each target module has at least one seed input in tests/fuzz/corpus/<name>/."""
    load(name)
    assert corpus_files(name), f"tests/fuzz/corpus/{name}/ has no seed inputs"


@pytest.mark.parametrize(("name", "path"), CASES, ids=[f"{n}/{p.name}" for n, p in CASES])
def test_corpus_input_holds_the_targets_properties(name: str, path: Path) -> None:
    """The target accepts or refuses this input without violating any of its properties."""
    load(name)(path.read_bytes())
