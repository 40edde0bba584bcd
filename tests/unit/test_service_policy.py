"""Policy at the service: the kit re-checks each tools/call against its manifest policy with the token's principal."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcp import Client, MCPError

from portcullis.identity.minting import (
    ACTOR_TOKEN_META_KEY,
    KeyRing,
    TokenMinter,
    gateway_issuer,
    service_audience,
)
from portcullis.identity.principal import Principal
from portcullis.service import (
    FORBIDDEN_CODE,
    GatewayTokenVerifier,
    PolicyLoadError,
    ServiceApp,
    ServicePolicies,
    create_service,
)
from portcullis.service.env import (
    ENVIRONMENT_ENV,
    POLICY_ENFORCE_ENV,
    POLICY_ROOT_ENV,
    MissingServicePolicy,
    gateway_env,
    policies_from_env,
    service_from_env,
)

ISSUER = gateway_issuer("gw")
BILLING = service_audience("billing")
NOW = 1_800_000_000  # Friday 2027-01-15 08:00 UTC
ENVIRONMENT = "production"


class Clock:
    def __init__(self) -> None:
        self.now = float(NOW)

    def __call__(self) -> float:
        return self.now


def principal(**changes: Any) -> Principal:
    fields: dict[str, Any] = {"client_id": "agent-console", "auth_method": "bearer", "issuer": "https://idp.example",
                              "user_id": "alice", "agent_id": "billing-bot", "attributes": {"department": "finance"}}
    return Principal(**(fields | changes))


BILLING_BOT = principal()

REFUND_POLICY = {
    "allowed_callers": ["agent:billing-bot"],
    "max_amount": 500,
    "requires_approval_over": 250,
    "allowed_currencies": ["USD", "EUR"],
    "require_attributes": {"department": ["finance"]},
    "environments": [ENVIRONMENT],
}


def manifest(name: str, *, service: str = "billing", policy: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name, "service": service, "owner": "payments-team@example.com", "description": f"The {name} tool.",
        "risk": "high", "classification": {"input": "Internal", "output": "Internal"},
        "input_schema": {"type": "object"},
    }
    return body if policy is None else body | {"policy": policy}


def write(root: Path, domain: str, name: str, body: dict[str, Any] | str) -> Path:
    path = root / "tools" / domain / f"{name}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body if isinstance(body, str) else yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A deployment with billing's manifests, and one of analytics' that must not apply to billing."""
    deployment = tmp_path / "deployment"
    write(deployment, "billing", "process_refund", manifest("process_refund", policy=REFUND_POLICY))
    write(deployment, "billing", "get_invoice", manifest("get_invoice"))  # no policy: denied to everyone
    write(deployment, "billing", "office_report", manifest("office_report", policy={
        "allowed_callers": ["agent:billing-bot"],
        "time_windows": [{"days": ["mon", "tue", "wed", "thu", "fri"], "from": "09:00", "to": "17:00"}]}))
    write(deployment, "billing", "trial_export", manifest("trial_export", policy={
        "allowed_callers": ["agent:nobody"], "mode": "log_only"}))
    write(deployment, "analytics", "whoami", manifest("whoami", service="analytics", policy={
        "allowed_callers": ["agent:billing-bot"]}))
    return deployment


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ring(clock: Clock) -> KeyRing:
    return KeyRing.generate(clock=clock)


@pytest.fixture
def minter(ring: KeyRing, clock: Clock) -> TokenMinter:
    return TokenMinter(ring, issuer=ISSUER, ttl_s=30, clock=clock)


class Ran:
    def __init__(self) -> None:
        self.tools: list[tuple[str, dict[str, Any]]] = []


@pytest.fixture
def ran() -> Ran:
    return Ran()


def add_tools(app: ServiceApp, ran: Ran) -> ServiceApp:
    @app.tool()
    def process_refund(order_id: str, amount: float, currency: str, agent_id: str | None = None) -> str:
        """Refund an order."""
        ran.tools.append(("process_refund", {"order_id": order_id, "amount": amount, "currency": currency}))
        return "refunded"

    @app.tool()
    def get_invoice(invoice_id: str) -> str:
        """Look up an invoice (its manifest has no policy)."""
        ran.tools.append(("get_invoice", {"invoice_id": invoice_id}))
        return "invoice"

    @app.tool()
    def whoami() -> str:
        """A tool with no billing manifest at all."""
        ran.tools.append(("whoami", {}))
        return "someone"

    @app.tool()
    def office_report() -> str:
        """Allowed only in office hours."""
        ran.tools.append(("office_report", {}))
        return "report"

    @app.tool()
    def trial_export() -> str:
        """Its policy is in log_only (shadow) mode."""
        ran.tools.append(("trial_export", {}))
        return "export"

    return app


@pytest.fixture
def service(root: Path, ring: KeyRing, clock: Clock, ran: Ran) -> ServiceApp:
    verifier = GatewayTokenVerifier(ring.jwks(), audience=BILLING, issuer=ISSUER, clock=clock)
    policies = ServicePolicies.load(root, "billing", environment=ENVIRONMENT)
    return add_tools(create_service("billing", audience=BILLING, verifier=verifier, policies=policies, clock=clock),
                     ran)


async def call(app: ServiceApp, minter: TokenMinter, tool: str, arguments: dict[str, Any], *,
               who: Principal = BILLING_BOT) -> Any:
    """The call's result, or the MCPError that refused it."""
    token = minter.mint(who, audience=BILLING, request_id="req-1", tool=f"billing.{tool}", target=tool)
    async with Client(app) as client:
        try:
            return await client.session.call_tool(tool, arguments, meta={ACTOR_TOKEN_META_KEY: token})
        except MCPError as error:
            return error


def refund(amount: float, **extra: Any) -> dict[str, Any]:
    return {"order_id": "ORD-1001", "amount": amount, "currency": "USD", **extra}


def assert_forbidden(result: Any) -> None:
    assert isinstance(result, MCPError), result
    assert (result.error.code, result.error.message, result.error.data) == (FORBIDDEN_CODE, "forbidden", None)


# --------------------------------------------------------------------------- decisions through the kit


async def test_billing_bot_refunding_80_usd_reaches_the_tool(service: ServiceApp, minter: TokenMinter,
                                                              ran: Ran) -> None:
    """Within every rule of the policy, the call runs with the arguments the policy saw."""
    result = await call(service, minter, "process_refund", refund(80))
    assert result.structured_content == {"result": "refunded"}
    assert ran.tools == [("process_refund", {"order_id": "ORD-1001", "amount": 80, "currency": "USD"})]


async def test_a_refund_over_the_maximum_is_forbidden_before_the_tool_runs(
    service: ServiceApp, minter: TokenMinter, ran: Ran
) -> None:
    """600 USD is over max_amount: -31403 "forbidden" with no data, and no tool code runs."""
    assert_forbidden(await call(service, minter, "process_refund", refund(600)))
    assert ran.tools == []


async def test_a_refund_that_needs_approval_is_forbidden_at_the_service(
    service: ServiceApp, minter: TokenMinter, ran: Ran
) -> None:
    """require_approval is not an allow: the token carries no approval, so the service refuses."""
    assert_forbidden(await call(service, minter, "process_refund", refund(300)))
    assert ran.tools == []


@pytest.mark.parametrize("who", [
    pytest.param(principal(agent_id="intruder-bot"), id="unknown agent"),
    pytest.param(principal(agent_id=None), id="no agent at all"),
    pytest.param(principal(attributes={"department": "marketing"}), id="attribute not allowed"),
    pytest.param(principal(attributes={}), id="attribute missing"),
])
async def test_a_principal_the_policy_does_not_admit_is_forbidden(
    who: Principal, service: ServiceApp, minter: TokenMinter, ran: Ran
) -> None:
    """Callers outside allowed_callers, or without the required attributes, are refused."""
    assert_forbidden(await call(service, minter, "process_refund", refund(80), who=who))
    assert ran.tools == []


@pytest.mark.parametrize("tool", [
    pytest.param("get_invoice", id="manifest without a policy"),
    pytest.param("whoami", id="no manifest for this service (only for another)"),
])
async def test_a_tool_without_a_policy_is_forbidden(tool: str, service: ServiceApp, minter: TokenMinter,
                                                    ran: Ran) -> None:
    """Default deny: no policy for the tool at this service means no caller may run it."""
    arguments = {"invoice_id": "INV-1"} if tool == "get_invoice" else {}
    assert_forbidden(await call(service, minter, tool, arguments))
    assert ran.tools == []


async def test_the_tokens_principal_decides_not_the_arguments(service: ServiceApp, minter: TokenMinter,
                                                               ran: Ran) -> None:
    """An argument claiming to be billing-bot changes nothing for another agent, nor the reverse."""
    intruder = principal(agent_id="intruder-bot")
    assert_forbidden(await call(service, minter, "process_refund", refund(80, agent_id="billing-bot"), who=intruder))
    assert ran.tools == []
    result = await call(service, minter, "process_refund", refund(80, agent_id="intruder-bot"))
    assert result.structured_content == {"result": "refunded"}


async def test_time_rules_use_the_injected_clock(service: ServiceApp, minter: TokenMinter, clock: Clock,
                                                 ran: Ran) -> None:
    """08:00 is before the 09:00 office-hours window; an hour later the same call runs."""
    assert_forbidden(await call(service, minter, "office_report", {}))
    clock.now += 3600
    assert (await call(service, minter, "office_report", {})).structured_content == {"result": "report"}
    assert ran.tools == [("office_report", {})]


async def test_a_shadow_mode_policy_allows_and_logs_what_it_would_have_decided(
    service: ServiceApp, minter: TokenMinter, ran: Ran, caplog: pytest.LogCaptureFixture
) -> None:
    """log_only lets the call through, as the gateway does, and logs the would-be denial."""
    with caplog.at_level(logging.INFO, logger="portcullis.service"):
        result = await call(service, minter, "trial_export", {})
    assert result.structured_content == {"result": "export"}
    shadow = [r for r in caplog.records if r.getMessage() == "policy shadow decision"]
    assert [r.fields["rule_ids"] for r in shadow] == [["trial_export/caller"]]  # type: ignore[attr-defined]


async def test_a_refusal_logs_its_reasons_for_the_operator_only(
    service: ServiceApp, minter: TokenMinter, caplog: pytest.LogCaptureFixture
) -> None:
    """The reasons, rule ids and policy version go to the portcullis.service log; the caller sees none."""
    with caplog.at_level(logging.WARNING, logger="portcullis.service"):
        result = await call(service, minter, "process_refund", refund(600, currency="JPY"))
    assert_forbidden(result)
    (record,) = [r for r in caplog.records if r.getMessage() == "policy refused the call"]
    fields = record.fields  # type: ignore[attr-defined]
    assert fields["reasons"] == ["amount_over_max", "currency_not_allowed"]
    assert fields["rule_ids"] == ["process_refund/max_amount", "process_refund/allowed_currencies"]
    assert fields["policy_version"].startswith("sha256:")
    assert (fields["tool"], fields["exposed_tool"], fields["principal.agent_id"]) == (
        "process_refund", "billing.process_refund", "billing-bot")


async def test_the_policy_decides_on_the_arguments_the_tool_receives(
    root: Path, ring: KeyRing, clock: Clock, minter: TokenMinter, ran: Ran
) -> None:
    """The check runs after the service's own middleware, so a rewrite there cannot slip past it."""

    async def rewrite(ctx: Any, call_next: Any) -> Any:
        if ctx.method == "tools/call":
            ctx = replace(ctx, params={**ctx.params, "arguments": {**ctx.params["arguments"], "amount": 600}})
        return await call_next(ctx)

    verifier = GatewayTokenVerifier(ring.jwks(), audience=BILLING, issuer=ISSUER, clock=clock)
    policies = ServicePolicies.load(root, "billing", environment=ENVIRONMENT)
    app = add_tools(create_service("billing", audience=BILLING, verifier=verifier, policies=policies, clock=clock,
                                   middleware=[rewrite]), ran)
    assert_forbidden(await call(app, minter, "process_refund", refund(80)))
    assert ran.tools == []


async def test_listing_tools_is_not_a_policy_decision(service: ServiceApp) -> None:
    """tools/list stays open: only tools/call is decided."""
    async with Client(service) as client:
        assert "process_refund" in {tool.name for tool in (await client.list_tools()).tools}


def test_policies_of_another_service_do_not_start_a_service(root: Path, ring: KeyRing, clock: Clock) -> None:
    """Wiring billing's kit to analytics' policies fails at start-up."""
    verifier = GatewayTokenVerifier(ring.jwks(), audience=BILLING, issuer=ISSUER, clock=clock)
    analytics = ServicePolicies.load(root, "analytics", environment=ENVIRONMENT)
    with pytest.raises(ValueError, match="analytics"):
        create_service("billing", audience=BILLING, verifier=verifier, policies=analytics)


# --------------------------------------------------------------------------- the pure check


def test_check_denies_an_unknown_tool_with_no_policy(root: Path) -> None:
    """A name no manifest of this service declares is denied with reason no_policy."""
    decision = ServicePolicies.load(root, "billing", environment=ENVIRONMENT).check(
        "drop_tables", BILLING_BOT, {}, datetime.fromtimestamp(NOW, UTC))
    assert (decision.effect, decision.reasons, decision.rule_ids) == ("deny", ("no_policy",),
                                                                      ("drop_tables/no_policy",))


def test_check_turns_require_approval_into_deny(root: Path) -> None:
    """Until the token can carry an approval, an approval-needing call is a deny at the service, with its reason."""
    decision = ServicePolicies.load(root, "billing", environment=ENVIRONMENT).check(
        "process_refund", BILLING_BOT, refund(300), datetime.fromtimestamp(NOW, UTC))
    assert (decision.effect, decision.reasons, decision.allowed) == ("deny", ("amount_needs_approval",), False)


def test_check_uses_the_environment_it_was_loaded_for(root: Path) -> None:
    """A policy limited to production denies in staging."""
    decision = ServicePolicies.load(root, "billing", environment="staging").check(
        "process_refund", BILLING_BOT, refund(80), datetime.fromtimestamp(NOW, UTC))
    assert (decision.effect, decision.reasons) == ("deny", ("environment_not_allowed",))


def test_an_empty_policy_set_is_a_configuration_error() -> None:
    """A service with no policies at all is refused, never treated as 'allow'."""
    with pytest.raises(ValueError, match="empty policy set"):
        ServicePolicies("billing", {}, environment=ENVIRONMENT)


# --------------------------------------------------------------------------- loading fails at start-up


def _bad_yaml(root: Path) -> str:
    write(root, "billing", "broken", "name: [unclosed\nservice: billing\n")
    return "broken.yml"


def _unknown_manifest_field(root: Path) -> str:
    write(root, "billing", "typo", manifest("typo") | {"polcy": {"allowed_callers": ["agent:x"]}})
    return "polcy"


def _unknown_policy_field(root: Path) -> str:
    write(root, "billing", "typo", manifest("typo", policy={"allowed_callers": ["agent:x"], "max_amout": 5}))
    return "policy.max_amout"


def _empty_allowed_callers(root: Path) -> str:
    write(root, "billing", "open", manifest("open", policy={"allowed_callers": []}))
    return "allowed_callers"


def _duplicate_key(root: Path) -> str:
    text = yaml.safe_dump(manifest("dup", policy={"allowed_callers": ["agent:x"]}), sort_keys=False)
    write(root, "billing", "dup", text + "service: analytics\n")
    return "duplicate"


def _duplicate_tool(root: Path) -> str:
    write(root, "other", "process_refund", manifest("process_refund", policy={"allowed_callers": ["agent:x"]}))
    return "also defined in"


def _broken_manifest_of_another_service(root: Path) -> str:
    write(root, "analytics", "broken", "name: broken\nservice: analytics\nrisk: extreme\n")
    return "analytics/broken.yml"


def _symlink_outside(root: Path) -> str:
    outside = root.parent / "elsewhere.yml"
    outside.write_text(yaml.safe_dump(manifest("sneaky", policy={"allowed_callers": ["agent:x"]})), encoding="utf-8")
    (root / "tools" / "billing" / "sneaky.yml").symlink_to(outside)
    return "outside the deployment directory"


@pytest.mark.parametrize("breakage", [
    pytest.param(_bad_yaml, id="bad YAML"),
    pytest.param(_unknown_manifest_field, id="unknown manifest field"),
    pytest.param(_unknown_policy_field, id="unknown policy field"),
    pytest.param(_empty_allowed_callers, id="empty allowed_callers"),
    pytest.param(_duplicate_key, id="duplicate YAML key"),
    pytest.param(_duplicate_tool, id="two manifests for one tool"),
    pytest.param(_broken_manifest_of_another_service, id="another service's manifest is broken"),
    pytest.param(_symlink_outside, id="symlink leaving the deployment"),
])
def test_a_deployment_that_does_not_load_fails_at_start_up(breakage: Callable[[Path], str], root: Path) -> None:
    """Every loading problem raises one PolicyLoadError (a ValueError) that names the file and the problem."""
    needle = breakage(root)
    with pytest.raises(ValueError) as refused:
        ServicePolicies.load(root, "billing", environment=ENVIRONMENT)
    assert isinstance(refused.value, PolicyLoadError)
    assert needle in str(refused.value)


def test_a_missing_root_fails_at_start_up(tmp_path: Path) -> None:
    """A policy root that does not exist is an error, not an empty policy set."""
    with pytest.raises(PolicyLoadError, match="not a directory"):
        ServicePolicies.load(tmp_path / "nowhere", "billing", environment=ENVIRONMENT)


def test_a_root_without_manifests_for_the_service_fails_at_start_up(root: Path) -> None:
    """Enforcing policy for a service no manifest names would deny everything: a configuration error."""
    with pytest.raises(PolicyLoadError, match="no manifest names service 'files'"):
        ServicePolicies.load(root, "files", environment=ENVIRONMENT)


def test_the_bad_yaml_error_names_the_line(root: Path) -> None:
    """Operators get file and line, as from the gateway's own loader."""
    write(root, "billing", "broken", "name: broken\nservice: billing\nowner: [x\n")
    with pytest.raises(PolicyLoadError) as refused:
        ServicePolicies.load(root, "billing", environment=ENVIRONMENT)
    (problem,) = refused.value.problems
    assert (problem.path.name, problem.line is not None) == ("broken.yml", True)


# --------------------------------------------------------------------------- the environment contract


def test_the_gateways_variables_load_the_policies(root: Path) -> None:
    """PORTCULLIS_POLICY_ROOT and PORTCULLIS_ENVIRONMENT, as gateway_env sets them, give the service its policies."""
    env = gateway_env({"keys": []}, ISSUER, BILLING, policy_root=root, environment=ENVIRONMENT)
    assert (env[POLICY_ROOT_ENV], env[ENVIRONMENT_ENV], env[POLICY_ENFORCE_ENV]) == (str(root), ENVIRONMENT, "1")
    policies = policies_from_env("billing", env)
    assert policies is not None
    assert (policies.environment, "process_refund" in policies.tools) == (ENVIRONMENT, True)


@pytest.mark.parametrize(("env", "message"), [
    pytest.param({}, "missing PORTCULLIS_POLICY_ROOT, PORTCULLIS_ENVIRONMENT", id="nothing set"),
    pytest.param({POLICY_ENFORCE_ENV: "1"}, "missing PORTCULLIS_POLICY_ROOT", id="enforce without a root"),
    pytest.param({POLICY_ROOT_ENV: "ROOT"}, "missing PORTCULLIS_ENVIRONMENT", id="root without an environment"),
    pytest.param({POLICY_ROOT_ENV: "relative/dir", ENVIRONMENT_ENV: ENVIRONMENT}, "absolute", id="relative root"),
    pytest.param({POLICY_ENFORCE_ENV: "yes"}, "must be 1 or 0", id="enforce is neither 1 nor 0"),
    pytest.param({POLICY_ENFORCE_ENV: "0", POLICY_ROOT_ENV: "ROOT", ENVIRONMENT_ENV: ENVIRONMENT},
                 "refusing to guess", id="switched off and configured at once"),
])
def test_a_service_expected_to_enforce_policy_without_one_refuses_to_start(
    env: dict[str, str], message: str, root: Path
) -> None:
    """Policy is on unless switched off out loud; anything unclear refuses to start."""
    env = {k: str(root) if v == "ROOT" else v for k, v in env.items()}
    with pytest.raises(MissingServicePolicy, match=message):
        policies_from_env("billing", env)


def test_switching_service_policy_off_warns_at_every_start(caplog: pytest.LogCaptureFixture) -> None:
    """PORTCULLIS_POLICY_ENFORCE=0 runs without service-side policy and says so, loudly, each time."""
    with caplog.at_level(logging.WARNING, logger="portcullis.service"):
        assert policies_from_env("billing", {POLICY_ENFORCE_ENV: "0"}) is None
        assert policies_from_env("billing", {POLICY_ENFORCE_ENV: "0"}) is None
    assert sum("UNSAFE" in r.getMessage() for r in caplog.records) == 2


def test_gateway_env_needs_both_policy_root_and_environment(root: Path) -> None:
    """Half a policy configuration is a bug in the gateway, caught where the variables are made."""
    with pytest.raises(ValueError, match="both"):
        gateway_env({"keys": []}, ISSUER, BILLING, policy_root=root)


async def test_a_service_built_from_the_gateways_environment_enforces_policy(
    root: Path, ring: KeyRing, clock: Clock, minter: TokenMinter, ran: Ran
) -> None:
    """service_from_env: one call gives a service that verifies tokens and re-checks the policy."""
    env = gateway_env(ring.jwks(), ISSUER, BILLING, policy_root=root, environment=ENVIRONMENT)
    app = add_tools(service_from_env("billing", env, clock=clock), ran)
    assert_forbidden(await call(app, minter, "process_refund", refund(600)))
    assert (await call(app, minter, "process_refund", refund(80))).structured_content == {"result": "refunded"}
    assert len(ran.tools) == 1
