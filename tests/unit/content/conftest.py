"""The corpus seed: ``PORTCULLIS_CORPUS_SEED`` if set (to replay a failure), fixed under CI, else fresh
per run. Every assertion message names it."""

from __future__ import annotations

import os
import random

import pytest

from tests.unit.content.corpus import Corpus


def _seed() -> int:
    if "PORTCULLIS_CORPUS_SEED" in os.environ:
        return int(os.environ["PORTCULLIS_CORPUS_SEED"])
    return 12 if os.environ.get("CI") else random.SystemRandom().randrange(2**32)


@pytest.fixture(scope="session")
def corpus() -> Corpus:
    return Corpus(_seed())
