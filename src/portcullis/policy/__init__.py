"""Per-tool authorization: native manifest policies and Rego modules (pure functions over values).

- :mod:`.model` — the manifest's ``policy:`` section (:class:`ToolPolicy`), validated once.
- :mod:`.decision` — what an evaluation returns (:class:`Decision`, :class:`Obligation`).
- :mod:`.native` — :func:`evaluate`: default deny, deny > require_approval > allow, fail closed.
- :mod:`.engine` — :class:`PolicyEngine`: native + Rego combined under one version, built once.
- :mod:`.fixtures` — golden decision fixtures and rule coverage, run through the engine.
- :mod:`.lint` — conflicts and unreachable rules, for ``portcullis lint``.

Its names are imported on first use (PEP 562), so that importing one submodule (a Rego worker
process imports :mod:`.rego_runtime` only) does not load the engine and everything it needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from portcullis.policy.decision import Decision, Obligation
    from portcullis.policy.engine import PolicyEngine, ToolInfo
    from portcullis.policy.fixtures import Fixture, FixtureReport, FixtureResult, load_fixtures, run_fixtures
    from portcullis.policy.model import Constraint, TimeWindow, ToolPolicy
    from portcullis.policy.native import evaluate, may_call, path_within_root, rule_ids

_HOME = {
    "Decision": "decision", "Obligation": "decision", "PolicyEngine": "engine", "ToolInfo": "engine",
    "Fixture": "fixtures", "FixtureReport": "fixtures", "FixtureResult": "fixtures", "load_fixtures": "fixtures",
    "run_fixtures": "fixtures", "Constraint": "model", "TimeWindow": "model", "ToolPolicy": "model",
    "evaluate": "native", "may_call": "native", "path_within_root": "native", "rule_ids": "native",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)


__all__ = [
    "Constraint",
    "Decision",
    "Fixture",
    "FixtureReport",
    "FixtureResult",
    "Obligation",
    "PolicyEngine",
    "TimeWindow",
    "ToolInfo",
    "ToolPolicy",
    "evaluate",
    "load_fixtures",
    "may_call",
    "path_within_root",
    "rule_ids",
    "run_fixtures",
]
