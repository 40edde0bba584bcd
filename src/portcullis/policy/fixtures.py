"""Golden decision fixtures: a YAML table of calls and the decisions the policy engine must make.

A fixture file is a YAML list; each entry::

    - name: billing-bot refunds 80 USD          # optional, for reports
      principal: {issuer_name: corp, agent_id: billing-bot, tenant: acme}   # Principal claim form
      tool: billing.process_refund              # the exposed name (or resource: / prompt:, below)
      arguments: {amount: 80, currency: USD}
      environment: production                   # optional: default, the engine's environment
      now: "2026-03-02T10:00:00Z"               # timezone-aware
      session: {refunds_today: 2}               # optional: the Rego input's ``session``
      expect: {effect: allow, rule_ids: []}

Instead of ``tool:``, a fixture may name a ``resource:`` (its exposed URI or URI template) or a
``prompt:`` (its exposed name): it is then decided as the gateway decides a ``resources/read`` or
``prompts/get``, by the resources' and prompts' engine (``surface`` in :func:`run_fixtures`), with
that method and the given ``arguments`` (a read's native rules see ``{"uri": …}``). The Rego input's
``resource`` / ``prompt`` object is not built for a fixture: write such rules' cases as tool fixtures.

Fixtures run through :meth:`~portcullis.policy.engine.PolicyEngine.decide`, so they exercise the
native policies and the Rego modules together. ``principal`` is the claim form of
:class:`~portcullis.identity.principal.Principal`; ``client_id``, ``auth_method`` and ``issuer``
default to ``fixture`` / ``dev`` / ``fixture``. ``issuer_name`` has no default: a principal without
it matches no issuer-scoped pattern (``issuer:corp/agent:billing-bot``), exactly as at run time.
``rule_ids`` compare as a set against the decision's rule ids plus, in ``log_only`` mode, those of
the shadow decision.

Coverage lists the rule ids that at least one fixture made fire, and those none did: a rule no
fixture ever trips is a rule nobody has shown to work. The rules are the engine's
(:meth:`~portcullis.policy.engine.PolicyEngine.rule_ids`: every native rule, and the Rego rules
the modules declare) plus any Rego rule id a fixture saw fire. The fail-closed ids
(``<tool>/policy_error``, ``rego/policy_error``) are not rules and are left out. Rego is not
evaluated for a call the native policy denies, so a Rego rule is covered only by a call the
native policy lets through.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from portcullis.identity.principal import Principal
from portcullis.policy.decision import Decision, Effect

if TYPE_CHECKING:
    from portcullis.policy.engine import PolicyEngine

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
    tool: str | None = Field(None, min_length=1, description="The exposed tool name; the engine must know it.")
    resource: str | None = Field(None, min_length=1, description="Or: an exposed resource URI or URI template "
                                 "(decided as a resources/read).")
    prompt: str | None = Field(None, min_length=1, description="Or: an exposed prompt name (decided as a "
                               "prompts/get).")
    arguments: dict[str, Any] = Field(default_factory=dict, description="The call's arguments.")
    environment: str | None = Field(
        None, min_length=1, description="The gateway environment of the call; default: the engine's.")
    now: AwareDatetime = Field(description="The evaluation time, with a time zone.")
    session: dict[str, Any] | None = Field(None, description="The Rego input's ``session`` object.")
    expect: Expectation

    @model_validator(mode="after")
    def _one_target(self) -> Fixture:
        if sum(item is not None for item in (self.tool, self.resource, self.prompt)) != 1:
            raise ValueError("a fixture names exactly one of tool, resource and prompt")
        return self

    @property
    def target(self) -> str:
        """The exposed tool, resource or prompt it decides."""
        return self.tool or self.resource or self.prompt or ""

    @property
    def method(self) -> str:
        """The MCP method the gateway decides it for."""
        return "tools/call" if self.tool else "resources/read" if self.resource else "prompts/get"

    @property
    def label(self) -> str:
        """The fixture's name, else what it decides."""
        return self.name or self.target


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
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"not YAML: {exc}") from None
    if not isinstance(data, list):
        raise ValueError("a fixture file is a YAML list")
    return _FIXTURES.validate_python(data)


def parse_fixtures(value: object) -> tuple[Fixture, ...]:
    """Validate an already parsed fixture list (pydantic's ValidationError, a ValueError, if malformed)."""
    return _FIXTURES.validate_python(value)


def fired_rule_ids(decision: Decision) -> tuple[str, ...]:
    """The rule ids a decision cites, including those of its shadow decision."""
    shadow = decision.shadow.rule_ids if decision.shadow is not None else ()
    return decision.rule_ids + shadow


def run_fixtures(engine: PolicyEngine, fixtures: Sequence[Fixture],
                 surface: PolicyEngine | None = None) -> FixtureReport:
    """Decide every fixture with ``engine`` (``surface``, the resources' and prompts' engine, for a
    ``resource:`` or ``prompt:`` fixture; Rego in this process: the CLI) and report results and
    rule coverage.

    Raises :class:`ValueError` for a fixture whose tool, resource or prompt the engine does not know
    or whose principal is malformed: a fixture that cannot run is a broken test, not a failing
    decision. A known one without a policy is decided (``no_policy``), so a fixture can show that denial.
    """
    planned = _plan(engine, surface, fixtures)
    return _report((engine, surface), [(fixture, on.decide(fixture.target, principal, fixture.arguments,
                                                           now=fixture.now, session=fixture.session,
                                                           method=fixture.method))
                                       for fixture, on, principal in planned])


async def run_fixtures_async(engine: PolicyEngine, fixtures: Sequence[Fixture],
                             surface: PolicyEngine | None = None) -> FixtureReport:
    """:func:`run_fixtures` with :meth:`~portcullis.policy.engine.PolicyEngine.decide_async`: in the
    gateway, every Rego evaluation runs in the engine's worker processes, under their limits."""
    decided = []
    for fixture, on, principal in _plan(engine, surface, fixtures):
        decided.append((fixture, await on.decide_async(fixture.target, principal, fixture.arguments,
                                                       now=fixture.now, session=fixture.session,
                                                       method=fixture.method)))
    return _report((engine, surface), decided)


def _plan(engine: PolicyEngine, surface: PolicyEngine | None,
          fixtures: Sequence[Fixture]) -> list[tuple[Fixture, PolicyEngine, Principal]]:
    """Each fixture with the engine of its environment and its principal; ValueError for a broken one."""
    engines: dict[tuple[bool, str], PolicyEngine] = {(True, engine.environment): engine}
    if surface is not None:
        engines[(False, surface.environment)] = surface
    planned = []
    for fixture in fixtures:
        base = engine if fixture.tool is not None else surface
        if base is None or fixture.target not in base.tools:
            kind = "tool" if fixture.tool is not None else "resource" if fixture.resource is not None else "prompt"
            raise ValueError(f"fixture {fixture.label!r}: unknown {kind} {fixture.target!r}")
        try:
            principal = Principal.from_claims({**_PRINCIPAL_DEFAULTS, **fixture.principal})
        except ValueError as exc:
            raise ValueError(f"fixture {fixture.label!r}: principal: {exc}") from None
        key = (fixture.tool is not None, fixture.environment or base.environment)
        if key not in engines:
            engines[key] = base.with_environment(key[1])
        planned.append((fixture, engines[key], principal))
    return planned


def _report(engines: tuple[PolicyEngine, PolicyEngine | None],
            decided: Sequence[tuple[Fixture, Decision]]) -> FixtureReport:
    results = []
    for fixture, decision in decided:
        passed = (decision.effect == fixture.expect.effect
                  and set(fired_rule_ids(decision)) == set(fixture.expect.rule_ids))
        results.append(FixtureResult(fixture, decision, passed))
    fired = {rule for result in results for rule in fired_rule_ids(result.decision)}
    known = list(dict.fromkeys(rule for engine in engines if engine is not None for rule in engine.rule_ids()
                               if not rule.endswith("/policy_error")))
    known += sorted(rule for rule in fired if rule not in known and not rule.endswith("/policy_error"))
    return FixtureReport(
        results=tuple(results),
        covered=tuple(rule for rule in known if rule in fired),
        uncovered=tuple(rule for rule in known if rule not in fired),
    )
