"""Golden decision fixtures: a YAML table of calls and the decisions the policies must make.

A fixture file is a YAML list; each entry::

    - name: billing-bot refunds 80 USD          # optional, for reports
      principal: {agent_id: billing-bot, tenant: acme}   # Principal claim form
      tool: billing.process_refund
      arguments: {amount: 80, currency: USD, tenant_id: acme}
      environment: production
      now: "2026-03-02T10:00:00Z"               # timezone-aware
      expect: {effect: allow, rule_ids: []}

``principal`` is the claim form of :class:`~portcullis.identity.principal.Principal`;
``client_id``, ``auth_method`` and ``issuer`` default to ``fixture`` / ``dev`` / ``fixture``.
``rule_ids`` compare as a set against the decision's rule ids plus, in ``log_only`` mode, those
of the shadow decision. Coverage lists the rule ids that at least one fixture made fire, and
those none did: a rule no fixture ever trips is a rule nobody has shown to work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

from portcullis.identity.principal import Principal
from portcullis.policy.decision import Decision, Effect
from portcullis.policy.model import ToolPolicy
from portcullis.policy.native import evaluate, rule_ids

_PRINCIPAL_DEFAULTS = {"client_id": "fixture", "auth_method": "dev", "issuer": "fixture"}


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Expectation(_Model):
    """What the decision must be."""

    effect: Effect = Field(description="The returned effect (``allow`` in log_only mode).")
    rule_ids: tuple[str, ...] = Field((), description="The rule ids that must fire, no more and no fewer.")


class Fixture(_Model):
    """One golden call and its expected decision."""

    name: str | None = Field(None, description="A label for reports.")
    principal: dict[str, Any] = Field(description="Principal claim form (client_id/auth_method/issuer optional).")
    tool: str = Field(min_length=1, description="The exposed tool name; a policy for it must be given.")
    arguments: dict[str, Any] = Field(default_factory=dict, description="The call's arguments.")
    environment: str = Field(min_length=1, description="The gateway environment the call is made in.")
    now: AwareDatetime = Field(description="The evaluation time, with a time zone.")
    expect: Expectation


@dataclass(frozen=True, slots=True)
class FixtureResult:
    """One fixture's outcome: ``passed`` if effect and rule ids are exactly as expected."""

    fixture: Fixture
    decision: Decision
    passed: bool


@dataclass(frozen=True, slots=True)
class FixtureReport:
    """All results, and which rule ids the fixtures exercised (``covered``) or never did (``uncovered``)."""

    results: tuple[FixtureResult, ...]
    covered: tuple[str, ...]
    uncovered: tuple[str, ...]

    @property
    def passed(self) -> bool:
        """True if every fixture passed (coverage is reported, not enforced, here)."""
        return all(result.passed for result in self.results)


_FIXTURES = TypeAdapter(tuple[Fixture, ...])


def load_fixtures(text: str) -> tuple[Fixture, ...]:
    """Parse and validate a YAML fixture list. Raises :class:`ValueError` on a malformed file."""
    data = yaml.safe_load(text)
    if not isinstance(data, list):
        raise ValueError("a fixture file is a YAML list")
    return _FIXTURES.validate_python(data)


def fired_rule_ids(decision: Decision) -> tuple[str, ...]:
    """The rule ids a decision cites, including those of its shadow decision."""
    shadow = decision.shadow.rule_ids if decision.shadow is not None else ()
    return decision.rule_ids + shadow


def run_fixtures(policies: Mapping[str, ToolPolicy], fixtures: Sequence[Fixture], *,
                 policy_version: str) -> FixtureReport:
    """Evaluate every fixture against the policy of its tool and report results and coverage.

    Raises :class:`ValueError` for a fixture whose tool has no policy or whose principal is
    malformed: a fixture that cannot run is a broken test, not a failing decision.
    """
    results = []
    for fixture in fixtures:
        policy = policies.get(fixture.tool)
        if policy is None:
            raise ValueError(f"fixture {fixture.name or fixture.tool!r}: no policy for tool {fixture.tool!r}")
        principal = Principal.from_claims({**_PRINCIPAL_DEFAULTS, **fixture.principal})
        decision = evaluate(policy, tool=fixture.tool, principal=principal, arguments=fixture.arguments,
                            environment=fixture.environment, now=fixture.now, policy_version=policy_version)
        passed = (decision.effect == fixture.expect.effect
                  and set(fired_rule_ids(decision)) == set(fixture.expect.rule_ids))
        results.append(FixtureResult(fixture, decision, passed))
    fired = {rule for result in results for rule in fired_rule_ids(result.decision)}
    known = [rule for tool, policy in policies.items() for rule in rule_ids(policy, tool)]
    return FixtureReport(
        results=tuple(results),
        covered=tuple(rule for rule in known if rule in fired),
        uncovered=tuple(rule for rule in known if rule not in fired),
    )
