"""The packaging tests' tools: dev dependencies installed into the test venv (pyproject ``dev``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "portcullis"


def venv_tool(name: str) -> Path:
    """A console script beside this interpreter; the test FAILS (never skips) when it is missing."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{name} missing beside {sys.executable}: install the dev dependencies (pip install -e '.[dev]')")
    return path
