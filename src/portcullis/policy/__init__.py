"""Per-tool authorization: the native policy engine (pure functions over values).

- :mod:`.model` — the manifest's ``policy:`` section (:class:`ToolPolicy`), validated once.
- :mod:`.decision` — what an evaluation returns (:class:`Decision`, :class:`Obligation`).
- :mod:`.native` — :func:`evaluate`: default deny, deny > require_approval > allow, fail closed.
- :mod:`.fixtures` — golden decision fixtures and rule coverage.
"""

from portcullis.policy.decision import Decision, Obligation
from portcullis.policy.fixtures import Fixture, FixtureReport, FixtureResult, load_fixtures, run_fixtures
from portcullis.policy.model import Constraint, TimeWindow, ToolPolicy
from portcullis.policy.native import evaluate, path_within_root, rule_ids

__all__ = [
    "Constraint",
    "Decision",
    "Fixture",
    "FixtureReport",
    "FixtureResult",
    "Obligation",
    "TimeWindow",
    "ToolPolicy",
    "evaluate",
    "load_fixtures",
    "path_within_root",
    "rule_ids",
    "run_fixtures",
]
