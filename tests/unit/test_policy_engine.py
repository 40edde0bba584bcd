"""The policy engine: native policies and Rego combined, one version, default deny, fail closed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from portcullis.cli.main import demo_deployment
from portcullis.config.loader import load_deployment
from portcullis.errors import ConfigError
from portcullis.identity.principal import Principal
from portcullis.policy import Obligation, PolicyEngine, ToolInfo, ToolPolicy
from portcullis.policy.engine import REDACT_ALL, tool_policies
from portcullis.policy.rego import RegoFinding, RegoPolicy, RegoResult

REFUND = "billing.process_refund"
NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday
BUDGET_S = 10.0  # decisions, not latency, are under test: a busy machine must not turn into a timeout deny
DEMO = load_deployment(demo_deployment())
ENGINE = PolicyEngine.from_deployment(DEMO, environment="production", rego_budget_s=BUDGET_S)


def who(**claims: Any) -> Principal:
    return Principal(client_id="test-client", auth_method="dev", issuer="test", issuer_name="dev", **claims)


BOT = who(agent_id="billing-bot")


def refund(**changes: Any) -> dict[str, Any]:
    return {"order_id": "ORD-20001", "amount": 80, "currency": "USD", "reason": "damaged", **changes}


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@dataclass
class FakeRego:
    """A Rego double: returns ``result`` (or raises ``fails``) and records every input document."""

    result: RegoResult = field(default_factory=RegoResult)
    fails: Exception | None = None
    version: str = "rego-fake"
    inputs: list[Mapping[str, Any]] = field(default_factory=list)

    def rule_ids(self) -> tuple[str, ...]:
        return ("fake_rule",)

    def evaluate(self, input_doc: Mapping[str, Any]) -> RegoResult:
        self.inputs.append(input_doc)
        if self.fails is not None:
            raise self.fails
        return self.result


def engine_with(rego: Any, *, policy: ToolPolicy | None = None, environment: str = "production") -> PolicyEngine:
    inputs = tool_policies(DEMO.manifests)
    if policy is not None:
        inputs[REFUND] = (policy, inputs[REFUND][1])
    built = PolicyEngine.build(inputs, rego, environment=environment)
    if isinstance(rego, FakeRego):
        rego.inputs.clear()  # forget the warm-up evaluation
    return built


def refund_policy(**changes: Any) -> ToolPolicy:
    base = DEMO_POLICY.model_dump(by_alias=True)
    return ToolPolicy.model_validate({**base, **changes})


DEMO_POLICY = ENGINE.policy(REFUND)
assert DEMO_POLICY is not None


# ----------------------------------------------------------------------------- the seed table


@pytest.mark.parametrize(
    ("principal", "arguments", "effect", "rules"),
    [
        (BOT, refund(amount=80), "allow", ()),
        (BOT, refund(amount=300), "require_approval", (f"{REFUND}/requires_approval_over",)),
        (BOT, refund(amount=600), "deny", (f"{REFUND}/max_amount",)),
        (BOT, refund(amount=50, currency="JPY"), "deny", (f"{REFUND}/allowed_currencies",)),
        (who(agent_id="refund-bot"), refund(), "deny", (f"{REFUND}/caller",)),
        (who(user_id="erin", source_app="customer-support-ui", roles=("trainee",)), refund(amount=300),
         "require_approval", (f"{REFUND}/requires_approval_over", "rego/trainee_high_risk")),
        (who(source_app="customer-support-ui", attributes={"employment_type": "contractor"}), refund(amount=300),
         "deny", (f"{REFUND}/requires_approval_over", "rego/contractor_sensitive_data")),
    ],
    ids=["80-usd-allow", "300-usd-approval", "600-usd-deny", "jpy-deny", "unknown-agent-deny",
         "native-then-rego-approvals", "rego-deny-overrides-native-approval"],
)
def test_engine_decides_the_refund_table_with_native_and_rego(principal: Principal, arguments: dict[str, Any],
                                                              effect: str, rules: tuple[str, ...]) -> None:
    """The seed refund table holds through the engine, and Rego's rule ids follow the native ones."""
    decision = ENGINE.decide(REFUND, principal, arguments, now=NOW)
    assert (decision.effect, decision.rule_ids) == (effect, rules)
    assert decision.policy_version == ENGINE.version


def test_engine_merges_obligations_without_duplicates() -> None:
    """Native obligations come first; Rego's are added once (the demo redacts a refund's free-text reason)."""
    decision = ENGINE.decide(REFUND, BOT, refund(), now=NOW)
    assert decision.obligations == (Obligation("audit"), Obligation("redact", "/reason"))
    fake = FakeRego(RegoResult(obligations=(Obligation("audit"), Obligation("redact", "/x"))))
    merged = engine_with(fake).decide(REFUND, BOT, refund(), now=NOW)
    assert merged.obligations == (Obligation("audit"), Obligation("redact", "/x"))


@pytest.mark.parametrize("tool", ["billing.unknown", "", "BILLING.process_refund", "billing.process_refund "])
def test_engine_denies_a_tool_it_does_not_know(tool: str) -> None:
    """An unknown name is denied with no_policy (default deny), never looked up loosely."""
    decision = ENGINE.decide(tool, BOT, refund(), now=NOW)
    assert (decision.effect, decision.reasons, decision.rule_ids) == ("deny", ("no_policy",), (f"{tool}/no_policy",))
    assert decision.policy_version == ENGINE.version


def test_engine_denies_a_tool_whose_manifest_has_no_policy() -> None:
    """A known tool without ``policy:`` is denied to everyone; Rego only adds its obligations."""
    inputs = tool_policies(DEMO.manifests)
    inputs[REFUND] = (None, inputs[REFUND][1])
    fake = FakeRego()
    engine = PolicyEngine.build(inputs, fake, environment="production")
    fake.inputs.clear()
    decision = engine.decide(REFUND, BOT, refund(), now=NOW)
    assert (decision.effect, decision.rule_ids) == ("deny", (f"{REFUND}/no_policy",))
    assert REFUND not in engine.visible_tools(BOT, now=NOW)


# ----------------------------------------------------------------------------- combining with Rego


def test_engine_keeps_a_native_deny_but_adds_regos_obligations() -> None:
    """Deny overrides everything, so Rego's findings do not change a native deny; its obligations still apply."""
    fake = FakeRego(RegoResult(findings=(RegoFinding("deny", "never_seen", "never_seen"),),
                               obligations=(Obligation("redact", "/x"),)))
    engine = engine_with(fake)
    decision = engine.decide(REFUND, BOT, refund(amount=600), now=NOW)
    assert decision.rule_ids == (f"{REFUND}/max_amount",)
    assert decision.obligations == (Obligation("audit"), Obligation("redact", "/x"))
    failing = engine_with(FakeRego(RegoResult(error="timeout"))).decide(REFUND, BOT, refund(amount=600), now=NOW)
    assert failing.rule_ids == (f"{REFUND}/max_amount",) and REDACT_ALL in failing.obligations


def test_engine_skips_rego_on_a_native_deny_when_no_module_can_oblige() -> None:
    """Modules that never mention obligations cannot add any: a native deny does not evaluate them."""
    fake = FakeRego(RegoResult(obligations=(Obligation("redact", "/x"),)))
    fake.may_oblige = False  # type: ignore[attr-defined]
    engine = engine_with(fake)
    decision = engine.decide(REFUND, BOT, refund(amount=600), now=NOW)
    assert decision.rule_ids == (f"{REFUND}/max_amount",) and fake.inputs == []
    assert RegoPolicy.compile({"a.rego": "package portcullis.a\nimport rego.v1\n"
                                         'deny contains {"id": "x", "reason": "x"} if false\n'}).may_oblige is False


@pytest.mark.parametrize(
    ("findings", "effect"),
    [
        ((), "allow"),
        ((RegoFinding("require_approval", "a", "needs_review"),), "require_approval"),
        ((RegoFinding("deny", "d", "nope"),), "deny"),
        ((RegoFinding("deny", "d", "nope"), RegoFinding("require_approval", "a", "needs_review")), "deny"),
    ],
    ids=["nothing", "approval", "deny", "deny-beats-approval"],
)
def test_engine_combines_rego_findings_deny_over_approval_over_allow(
        findings: tuple[RegoFinding, ...], effect: str) -> None:
    """Rego findings can only restrict: deny beats approval beats allow; ids are prefixed rego/."""
    decision = engine_with(FakeRego(RegoResult(findings=findings))).decide(REFUND, BOT, refund(), now=NOW)
    assert decision.effect == effect
    assert decision.rule_ids == tuple(f"rego/{f.rule_id}" for f in findings)
    assert decision.reasons == tuple(f.reason for f in findings)


@pytest.mark.parametrize("error", ["timeout", "runtime: conflicting values", "input: set is not a JSON value"])
def test_engine_denies_with_policy_error_when_rego_reports_an_error(error: str) -> None:
    """A Rego error is a deny citing rego/policy_error, after the native rule ids; its obligations are unknown."""
    fake = FakeRego(RegoResult(findings=(RegoFinding("require_approval", "a", "x"),), error=error))
    decision = engine_with(fake).decide(REFUND, BOT, refund(amount=300), now=NOW)
    assert decision.effect == "deny"
    assert decision.rule_ids == (f"{REFUND}/requires_approval_over", "rego/policy_error")
    assert decision.reasons == ("amount_needs_approval", "policy_error")
    assert decision.obligations == (Obligation("audit"), REDACT_ALL)


def test_engine_denies_with_policy_error_when_rego_raises() -> None:
    """decide never raises: even a Rego double that throws becomes a deny (fail closed)."""
    decision = engine_with(FakeRego(fails=RuntimeError("boom"))).decide(REFUND, BOT, refund(), now=NOW)
    assert (decision.effect, decision.reasons, decision.rule_ids) == (
        "deny", ("policy_error",), (f"{REFUND}/policy_error",))
    assert decision.obligations == (Obligation("audit"), REDACT_ALL)


def test_engine_enforces_rego_findings_on_a_log_only_policy() -> None:
    """Shadow mode applies to the native policy only: it allows with a shadow, Rego still denies."""
    shadow_policy = refund_policy(mode="log_only")
    fake = FakeRego(RegoResult(findings=(RegoFinding("deny", "d", "nope"),)))
    decision = engine_with(fake, policy=shadow_policy).decide(REFUND, BOT, refund(amount=600), now=NOW)
    assert decision.effect == "deny" and decision.rule_ids == ("rego/d",)
    assert decision.shadow is not None and decision.shadow.rule_ids == (f"{REFUND}/max_amount",)
    quiet = engine_with(FakeRego(), policy=shadow_policy).decide(REFUND, BOT, refund(amount=600), now=NOW)
    assert quiet.effect == "allow" and quiet.reasons == ("shadow_mode",) and quiet.shadow is not None


# ----------------------------------------------------------------------------- the Rego input document


def test_engine_hands_rego_the_documented_input() -> None:
    """Rego sees the principal's claims, the tool's manifest facts, the arguments, environment, UTC time, session,
    and the method."""
    fake = FakeRego()
    principal = who(user_id="alice", agent_id="billing-bot", tenant="acme", roles=("finance",),
                    attributes={"employment_type": "full_time"})
    later = NOW.astimezone(timezone(timedelta(hours=-5))) + timedelta(microseconds=250)
    engine_with(fake).decide(REFUND, principal, refund(), now=later, session={"calls": 3})
    assert fake.inputs == [{
        "principal": principal.to_claims(),
        "tool": {"name": REFUND, "service": "billing", "upstream_name": "process_refund", "risk": "high",
                 "owner": "payments-team@example.com",
                 "classification": {"input": "Confidential", "output": "Confidential"},
                 "annotations": {"readOnlyHint": False, "destructiveHint": True, "idempotentHint": False,
                                 "openWorldHint": False}},
        "arguments": refund(),
        "environment": "production",
        "now": "2026-03-02T10:00:00.000250Z",
        "session": {"calls": 3},
        "method": "tools/call",
    }]
    engine_with(fake).decide(REFUND, principal, refund(), now=NOW)
    assert fake.inputs[-1]["session"] == {} and fake.inputs[-1]["now"] == "2026-03-02T10:00:00Z"


def test_engine_passes_the_session_to_real_rego() -> None:
    """A module can read ``input.session`` (here: approval after three refunds in one session)."""
    rego = RegoPolicy.compile({"session.rego": """package portcullis.session
import rego.v1
require_approval contains {"id": "many_refunds", "reason": "many_refunds"} if input.session.refunds >= 3
"""}, budget_s=BUDGET_S)
    engine = engine_with(rego)
    assert engine.decide(REFUND, BOT, refund(), now=NOW, session={"refunds": 2}).effect == "allow"
    third = engine.decide(REFUND, BOT, refund(), now=NOW, session={"refunds": 3})
    assert (third.effect, third.rule_ids) == ("require_approval", ("rego/many_refunds",))


# ----------------------------------------------------------------------------- hostile input


@pytest.mark.parametrize(
    "arguments",
    [
        refund(reason='x", "tenant_id": "globex'),  # JSON injection attempt into the Rego input
        refund(reason="\x00\u202e\ud800"),
        refund(reason="r" * 100_000),
        refund(extra=nested(100)),
        refund(amount=100.0000000001),
        refund(amount=2**80),
        refund(tags={"not", "json"}),
        refund(blob=b"bytes"),
        refund(obj=object()),
        refund(nan=float("nan")),
    ],
    ids=["json-injection", "control-and-lone-surrogate", "huge-string", "deep", "float-precision", "bigint",
         "set", "bytes", "object", "nan"],
)
def test_engine_never_raises_and_never_loosens_on_hostile_arguments(arguments: dict[str, Any]) -> None:
    """Whatever the arguments hold, decide returns a decision, and only a clean input can be allowed."""
    decision = ENGINE.decide(REFUND, BOT, arguments, now=NOW)
    assert decision.effect in ("allow", "deny", "require_approval")
    assert decision.policy_version == ENGINE.version
    assert "rego/cross_tenant" not in decision.rule_ids  # the injected key never became an argument


@pytest.mark.parametrize(
    ("arguments", "effect", "reason"),
    [
        (refund(tags={"not", "json"}), "deny", "policy_error"),
        (refund(nan=float("nan")), "deny", "policy_error"),
        (refund(amount=100.0000000001), "require_approval", "amount_needs_approval"),
    ],
    ids=["set", "nan", "float-precision"],
)
def test_engine_denies_arguments_rego_cannot_read(arguments: dict[str, Any], effect: str, reason: str) -> None:
    """Input that is not JSON fails the Rego evaluation and so is denied; exact numbers survive."""
    decision = ENGINE.decide(REFUND, BOT, arguments, now=NOW)
    assert decision.effect == effect and reason in decision.reasons


def test_engine_denies_on_a_naive_clock() -> None:
    """A clock without a time zone is a bug upstream: policy_error, never a guess."""
    decision = ENGINE.decide(REFUND, BOT, refund(), now=NOW.replace(tzinfo=None))
    assert decision.effect == "deny" and decision.reasons == ("policy_error",)


# ----------------------------------------------------------------------------- visibility (tools/list)

ALL = {"analytics.summarize_revenue", "billing.get_invoice", "billing.process_refund", "files.list_dir",
       "files.read_file"}


@pytest.mark.parametrize(
    ("principal", "visible"),
    [
        (BOT, {"billing.get_invoice", "billing.process_refund", "files.list_dir", "files.read_file"}),
        (who(agent_id="billing-bot", source_app="public-chat"),
         {"billing.process_refund", "files.list_dir", "files.read_file"}),
        (who(user_id="g", roles=("analyst",), attributes={"employment_type": "full_time"}),
         {"analytics.summarize_revenue"}),
        (who(user_id="i", roles=("analyst",), attributes={"employment_type": "contractor"}), set()),
        (who(user_id="f", roles=("finance", "employee"), attributes={"employment_type": "full_time"}),
         {"analytics.summarize_revenue", "billing.get_invoice", "files.list_dir", "files.read_file"}),
        (who(agent_id="scraper"), set()),
        (who(agent_id="billing-bot\u200b"), set()),
    ],
    ids=["billing-bot", "billing-bot-in-public-chat", "analyst", "contractor-analyst", "finance-employee",
         "unknown-agent", "invisible-character"],
)
def test_engine_lists_only_the_tools_a_principal_could_call(principal: Principal, visible: set[str]) -> None:
    """tools/list shows the tools whose argument-free rules admit the caller, and nothing else."""
    assert ENGINE.visible_tools(principal, now=NOW) == visible
    assert {tool for tool in ALL if ENGINE.may_call(tool, principal, now=NOW)} == visible
    assert not ENGINE.may_call("billing.unknown", principal, now=NOW)


# ----------------------------------------------------------------------------- the version


def test_engine_version_is_stable_for_the_same_inputs() -> None:
    """Building twice from the same deployment gives the same pv-<16 hex> version."""
    again = PolicyEngine.from_deployment(load_deployment(demo_deployment()), environment="production")
    assert re.fullmatch(r"pv-[0-9a-f]{16}", ENGINE.version)
    assert again.version == ENGINE.version


def test_engine_version_is_stable_across_processes() -> None:
    """The version is a content hash (no hash seed, no ordering accident): a new process agrees."""
    result = subprocess.run([sys.executable, "-m", "portcullis", "policy", "version", str(demo_deployment())],
                            capture_output=True, text=True, env={"PYTHONHASHSEED": "12345", "PATH": ""}, check=True,
                            timeout=60)
    assert result.stdout.strip() == ENGINE.version


def test_engine_version_changes_with_anything_that_can_change_a_decision(tmp_path: Path) -> None:
    """Environment, a native policy, the Rego modules and the tool facts Rego reads all change it."""
    versions = {ENGINE.version, ENGINE.with_environment("staging").version,
                engine_with(ENGINE.rego, policy=refund_policy(max_amount=499)).version,
                engine_with(None).version}
    inputs = tool_policies(DEMO.manifests)
    policy, info = inputs[REFUND]
    inputs[REFUND] = (policy, ToolInfo(**{**_fields(info), "classification_output": "Restricted"}))
    versions.add(PolicyEngine.build(inputs, ENGINE.rego, environment="production").version)
    root = tmp_path / "deployment"
    shutil.copytree(demo_deployment(), root)
    rego_file = root / "policy" / "portcullis_demo.rego"
    rego_file.write_text(rego_file.read_text() + "\n# a comment is a change too\n")
    versions.add(PolicyEngine.from_deployment(load_deployment(root), environment="production").version)
    assert len(versions) == 6


def _fields(info: ToolInfo) -> dict[str, Any]:
    return {name: getattr(info, name) for name in info.__dataclass_fields__}


# ----------------------------------------------------------------------------- building


def test_engine_lists_every_rule_id_including_rego_declared_ones() -> None:
    """rule_ids names every native rule per tool, then the Rego modules' declared ids and rego/policy_error."""
    ids = ENGINE.rule_ids()
    assert ids[0] == "analytics.summarize_revenue/caller"
    assert ids[-4:] == ("rego/contractor_sensitive_data", "rego/cross_tenant", "rego/trainee_high_risk",
                        "rego/policy_error")
    assert "billing.get_invoice/denied_callers" in ids and len(ids) == len(set(ids))


def test_engine_build_rejects_inconsistent_input() -> None:
    """A ToolInfo filed under another name, or an empty environment, is a programming error."""
    inputs = tool_policies(DEMO.manifests)
    with pytest.raises(ValueError, match="ToolInfo names"):
        PolicyEngine.build({"billing.other": inputs[REFUND]}, None, environment="production")
    with pytest.raises(ValueError, match="environment"):
        PolicyEngine.build(inputs, None, environment="")


def test_engine_from_deployment_rejects_rego_that_does_not_compile(tmp_path: Path) -> None:
    """A broken module rejects the whole policy with a ConfigError naming the file and line."""
    root = tmp_path / "deployment"
    shutil.copytree(demo_deployment(), root)
    (root / "policy" / "broken.rego").write_text("package portcullis.broken\nimport rego.v1\ndeny contains x if {\n")
    with pytest.raises(ConfigError) as caught:
        PolicyEngine.from_deployment(load_deployment(root), environment="production")
    assert "broken.rego:3" in str(caught.value)


def test_engine_from_deployment_without_rego_files_uses_native_policies_only(tmp_path: Path) -> None:
    """A deployment with no ``*.rego`` decides with the manifests' policies alone."""
    root = tmp_path / "deployment"
    shutil.copytree(demo_deployment(), root)
    (root / "policy" / "portcullis_demo.rego").unlink()
    engine = PolicyEngine.from_deployment(load_deployment(root), environment="production")
    assert engine.rego is None
    contractor = who(source_app="customer-support-ui", attributes={"employment_type": "contractor"})
    assert engine.decide(REFUND, contractor, refund(), now=NOW).effect == "allow"
