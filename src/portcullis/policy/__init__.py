"""Per-tool authorization: native manifest policies and Rego modules (pure functions over values).

- :mod:`.model` — the manifest's ``policy:`` section (:class:`ToolPolicy`), validated once.
- :mod:`.decision` — what an evaluation returns (:class:`Decision`, :class:`Obligation`).
- :mod:`.native` — :func:`evaluate`: default deny, deny > require_approval > allow, fail closed.
- :mod:`.engine` — :class:`PolicyEngine`: native + Rego combined under one version, built once.
- :mod:`.fixtures` — golden decision fixtures and rule coverage, run through the engine.
- :mod:`.lint` — conflicts and unreachable rules, for ``portcullis lint``.
"""

from portcullis.policy.decision import Decision, Obligation
from portcullis.policy.engine import PolicyEngine, ToolInfo
from portcullis.policy.fixtures import Fixture, FixtureReport, FixtureResult, load_fixtures, run_fixtures
from portcullis.policy.model import Constraint, TimeWindow, ToolPolicy
from portcullis.policy.native import evaluate, may_call, path_within_root, rule_ids

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
