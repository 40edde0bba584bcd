"""Issuer scoping under attack: with several trusted identity sources, none asserts another's callers.

The attacker holds a valid credential from one trusted source (issuer B, the development issuer,
a client certificate) and claims an agent, user or role that only issuer A may assert. The table
covers the pattern syntax (names with ``/``, ``:``, ``*``, case, Unicode, nesting), matching for
allowed and denied callers and approver rules, the lint/serve refusal of ambiguous patterns, the
other places principals are matched (limits keys, Rego input, audit queries), and one end-to-end
run through a gateway trusting two issuers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from mcp import MCPError
from pydantic import ValidationError

from portcullis.approvals.service import ApprovalService, ApproverRefused
from portcullis.approvals.store import SqliteApprovalStore
from portcullis.audit.query import AuditQuery
from portcullis.config.loader import lint_deployment, load_deployment
from portcullis.config.model import ApprovalsConfig, ApproverRule
from portcullis.errors import ApprovalInvalid, ConfigError
from portcullis.identity.config import IdentityConfig
from portcullis.identity.principal import Principal
from portcullis.policy import ToolPolicy, evaluate
from portcullis.policy.decision import Decision
from portcullis.policy.limits import LimitRule, counter_key
from portcullis.policy.native import caller_matches
from tests.e2e.harness import GatewayProcess, copy_demo, run_cli

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def who(source: str | None, **fields: Any) -> Principal:
    """A principal asserted by ``source`` (an issuer's configured name)."""
    base: dict[str, Any] = {"client_id": "c", "auth_method": "bearer", "issuer": f"https://{source}.example",
                            "issuer_name": source}
    return Principal(**(base | fields))


def allowed(policy: ToolPolicy, principal: Principal) -> bool:
    return evaluate(policy, tool="t", principal=principal, arguments={}, environment="production", now=NOW,
                    policy_version="v").effect == "allow"


# ----------------------------------------------------------------------------- pattern syntax

VALID = ["issuer:corp/role:finance", "issuer:*/scope:mcp:tools", "issuer:corp-2/agent:billing-*",
         "issuer:a_b/user:x/y", "issuer:corp/client:spiffe://example.org/agent/x", "role:finance",
         "issuer:mtls/agent:billing-bot", "issuer:dev/app:ui"]
INVALID = [
    "issuer:/role:x",  # empty scope
    "issuer:corp",  # no '/', no pattern
    "issuer:corp/",  # empty pattern
    "issuer:*",
    "issuer:*/",
    "issuer:CORP/role:x",  # names are lower case: this could never match
    "issuer:Corp/role:x",
    "Issuer:corp/role:x",  # the keyword is case-sensitive
    "ISSUER:corp/role:x",
    "issuer:co*/role:x",  # no prefix wildcard on sources: corp-evil is not corp
    "issuer:corp*/role:x",
    "issuer:**/role:x",
    "issuer:c:orp/role:x",  # ':' in a name
    "issuer:corp:x/role:y",
    "issuer:corp/issuer:partner/role:x",  # nested scopes
    "issuer:corp/role",  # no kind separator
    "issuer:corp/bogus:x",
    "issuer: corp/role:x",
    "issuer:corp /role:x",
    "issuer:corp\u200b/role:x",
    "issuer:c\u00f6rp/role:x",
    "issuer:\uff43orp/role:x",  # fullwidth c
    "issuer:corp\\role:x",
    "issuer:1corp/role:x",
    "issuer:" + "a" * 64 + "/role:x",
    "issuer:corp/role:*",  # a wildcard needs a literal prefix, scoped or not
    "issuer:corp/role:fin\u202eance",
]


@pytest.mark.parametrize("pattern", VALID)
def test_well_formed_scoped_patterns_are_accepted(pattern: str) -> None:
    """``issuer:<name>/<kind>:<value>`` and ``issuer:*/…`` are caller patterns in every place."""
    ToolPolicy(allowed_callers=(pattern,), denied_callers=(pattern,))
    if not pattern.split("/", 1)[-1].startswith("agent:"):
        ApproverRule(approvers=(pattern,))


@pytest.mark.parametrize("pattern", INVALID)
def test_malformed_scoped_patterns_are_configuration_errors(pattern: str) -> None:
    """Empty, upper-case, wildcard, nested, spaced or look-alike scopes are refused where they are written."""
    with pytest.raises(ValidationError):
        ToolPolicy(allowed_callers=(pattern,))
    with pytest.raises(ValidationError):
        ToolPolicy(allowed_callers=("role:x",), denied_callers=(pattern,))
    with pytest.raises(ValidationError):
        ApproverRule(approvers=(pattern.replace("agent:", "user:"),))


@pytest.mark.parametrize("name", ["Corp", "CORP", "corp/x", "corp:x", "corp*", "*", "", "co rp", "c\u00f6rp",
                                  "1corp", "a" * 64])
def test_issuer_names_that_could_break_the_scope_syntax_are_refused(name: str) -> None:
    """Configured names and principals' issuer names are lower-case words: no '/', ':', '*', case or Unicode."""
    issuer = {"name": name, "issuer": "https://x.example", "jwks_file": "/k.json", "algorithms": ["ES256"],
              "audience": "https://gw.example/mcp"}
    with pytest.raises(ValidationError):
        IdentityConfig(issuers=(issuer,))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        who(name)


@pytest.mark.parametrize("name", ["dev", "mtls", "anonymous"])
def test_configured_issuers_cannot_take_a_built_in_source_name(name: str) -> None:
    """An issuer named ``mtls`` would let its tokens pass for certificate identities: refused."""
    issuer = {"name": name, "issuer": "https://x.example", "jwks_file": "/k.json", "algorithms": ["ES256"],
              "audience": "https://gw.example/mcp"}
    with pytest.raises(ValidationError, match="reserved"):
        IdentityConfig(issuers=(issuer,))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- matching

SCOPED = ToolPolicy(allowed_callers=("issuer:corp/agent:billing-bot", "issuer:corp/user:alice",
                                     "issuer:corp/role:finance"))


@pytest.mark.parametrize(("principal", "expected"), [
    (who("corp", agent_id="billing-bot"), True),
    (who("partner", agent_id="billing-bot"), False),  # issuer B claims A's agent
    (who("dev", agent_id="billing-bot"), False),
    (who("mtls", agent_id="billing-bot", auth_method="mtls"), False),
    (who("anonymous", agent_id="billing-bot"), False),
    (who(None, agent_id="billing-bot"), False),  # a principal naming no source matches no scope
    (who("corp-evil", agent_id="billing-bot"), False),  # no prefix matching on names
    (who("corpx", agent_id="billing-bot"), False),
    (who("corp", agent_id="Billing-Bot"), False),  # allow stays exact
    (who("corp", user_id="alice"), True),
    (who("partner", user_id="alice"), False),  # the same subject from another issuer is someone else
    (who("partner", user_id="alice", roles=("finance",)), False),
    (who("corp", roles=("finance",)), True),
    (who("partner", roles=("finance",)), False),
    (who("partner", client_id="corp/agent:billing-bot"), False),  # syntax in a value is just text
    (who("partner", agent_id="issuer:corp/agent:billing-bot"), False),
])
def test_a_scoped_allow_admits_only_what_its_issuer_asserts(principal: Principal, expected: bool) -> None:
    """``issuer:corp/…`` matches only principals whose source is exactly ``corp``."""
    assert allowed(SCOPED, principal) is expected


@pytest.mark.parametrize(("pattern", "sources"), [
    ("agent:billing-bot", {"corp", "partner", "dev", "mtls", None}),  # unscoped: any source (lint flags it)
    ("issuer:*/agent:billing-bot", {"corp", "partner", "dev", "mtls", None}),  # any source, said out loud
    ("issuer:corp/agent:billing-bot", {"corp"}),
    ("issuer:mtls/agent:billing-bot", {"mtls"}),
    ("issuer:dev/agent:billing-*", {"dev"}),
])
def test_which_sources_a_pattern_admits(pattern: str, sources: set[str | None]) -> None:
    """The scope selects sources exactly; the wildcard and the unscoped form admit every source."""
    policy = ToolPolicy(allowed_callers=(pattern,))
    admitted = {s for s in ("corp", "partner", "dev", "mtls", None) if allowed(policy, who(s, agent_id="billing-bot"))}
    assert admitted == sources


@pytest.mark.parametrize(("denied", "principal", "denied_fires"), [
    ("issuer:partner/agent:billing-bot", who("partner", agent_id="billing-bot"), True),
    ("issuer:partner/agent:billing-bot", who("partner", agent_id="BILLING-BOT"), True),  # deny folds case
    ("issuer:partner/agent:billing-bot", who("corp", agent_id="billing-bot"), False),
    ("agent:billing-bot", who("corp", agent_id="billing-bot"), True),  # an unscoped deny: every source
    ("agent:billing-bot", who("partner", agent_id="Billing-Bot"), True),
    ("agent:billing-bot", who(None, agent_id="billing-bot"), True),
    ("issuer:*/agent:billing-*", who("dev", agent_id="Billing-Bot-2"), True),
    ("issuer:partner/role:admin", who("partner", roles=("ADMIN",)), True),
    ("issuer:partner/role:admin", who("corp", roles=("admin",)), False),
])
def test_a_deny_applies_to_its_scope_in_any_letter_case(denied: str, principal: Principal,
                                                       denied_fires: bool) -> None:
    """A scoped deny denies what that source asserts, whatever the case; an unscoped deny every source."""
    policy = ToolPolicy(allowed_callers=("issuer:*/agent:billing-*", "issuer:*/role:admin"), denied_callers=(denied,))
    decision = evaluate(policy, tool="t", principal=principal, arguments={}, environment="p", now=NOW,
                        policy_version="v")
    assert ("t/denied_callers" in decision.rule_ids) is denied_fires


def test_the_issuer_scope_reaches_rego_input_limits_and_audit_queries() -> None:
    """Everything else that tells callers apart sees the source: Rego input, limit keys, audit filters."""
    from portcullis.cli.main import demo_deployment
    from portcullis.policy.engine import PolicyEngine

    engine = PolicyEngine.from_deployment(load_deployment(demo_deployment()), environment="production")
    document = engine.input_document("billing.get_invoice", who("corp", agent_id="billing-bot"), {}, now=NOW)
    assert document["principal"]["issuer_name"] == "corp"
    per_issuer = LimitRule.model_validate({"id": "r", "tools": ["*"], "per": ["agent", "issuer"], "window_s": 60,
                                           "max_calls": 1})
    shared = LimitRule.model_validate({"id": "r", "tools": ["*"], "per": ["agent"], "window_s": 60,
                                       "max_calls": 1})
    corp, partner = who("corp", agent_id="billing-bot"), who("partner", agent_id="billing-bot")
    assert counter_key(per_issuer, corp) != counter_key(per_issuer, partner)
    assert counter_key(shared, corp) == counter_key(shared, partner)  # unscoped: one bucket (stricter)
    assert AuditQuery(principal={"issuer_name": "corp", "agent_id": "billing-bot"}).principal["issuer_name"] == "corp"


# ----------------------------------------------------------------------------- approver rules


class _Audit:
    async def __call__(self, *args: Any, **kwargs: Any) -> None:
        return None


@pytest.fixture
def approvals(tmp_path: Path) -> ApprovalService:
    config = ApprovalsConfig.model_validate({"approvers": [
        {"tools": ["billing.*"], "approvers": ["issuer:corp/role:finance-approver", "issuer:corp/user:carol"]}]})
    return ApprovalService(SqliteApprovalStore.open(tmp_path / "a.sqlite3"), config, clock=lambda: 1000.0,
                           audit=_Audit())


@pytest.mark.parametrize(("approver", "expected"), [
    (who("corp", user_id="bob", roles=("finance-approver",), person=True), True),
    (who("corp", user_id="carol", person=True), True),
    (who("partner", user_id="bob", roles=("finance-approver",), person=True), False),  # B asserts A's role
    (who("partner", user_id="carol", person=True), False),  # the same subject at another issuer
    (who("dev", user_id="carol", roles=("finance-approver",), person=True), False),
    (who(None, user_id="carol", roles=("finance-approver",), person=True), False),
    (who("corp", user_id="bob", roles=("Finance-Approver",), person=True), False),  # allow is exact
])
def test_approver_rules_honour_the_issuer_scope(approvals: ApprovalService, approver: Principal,
                                                expected: bool) -> None:
    """A scoped approver rule admits only people whose role or name that issuer asserts."""
    assert approvals.may_approve("billing.process_refund", approver) is expected


async def test_a_person_from_the_wrong_issuer_cannot_vote(approvals: ApprovalService) -> None:
    """The vote itself refuses issuer B's person with A's approver role, and a non-person of A."""
    requester = who("corp", agent_id="billing-bot", user_id="alice")
    approval = await approvals.propose(tool="billing.process_refund", arguments={"amount": 300}, principal=requester,
                                       decision=Decision(effect="require_approval", policy_version="pv"), required=1,
                                       justification="", request_id="r")
    for refused in (who("partner", user_id="bob", roles=("finance-approver",), person=True),
                    who("corp", user_id="bob", roles=("finance-approver",))):  # no person signal
        with pytest.raises(ApproverRefused):
            await approvals.vote(approval.id, refused, "approve")
    bob = who("corp", user_id="bob", roles=("finance-approver",), person=True)
    assert (await approvals.vote(approval.id, bob, "approve")).status == "approved"


async def test_an_approval_for_one_issuers_agent_cannot_be_redeemed_by_anothers(approvals: ApprovalService) -> None:
    """The approval is bound to the requester's source too: the same agent id from issuer B gets nothing."""
    decision = Decision(effect="require_approval", policy_version="pv")
    requester = who("corp", agent_id="billing-bot")
    approval = await approvals.propose(tool="billing.process_refund", arguments={"amount": 300}, principal=requester,
                                       decision=decision, required=1, justification="", request_id="r")
    await approvals.vote(approval.id, who("corp", user_id="bob", roles=("finance-approver",), person=True), "approve")

    async def nothing() -> None:
        return None

    with pytest.raises(ApprovalInvalid):
        await approvals.redeem(approval_id=approval.id, tool="billing.process_refund", arguments={"amount": 300},
                               principal=who("partner", agent_id="billing-bot"), decision=decision,
                               request_id="r2", before_use=nothing)
    used = await approvals.redeem(approval_id=approval.id, tool="billing.process_refund", arguments={"amount": 300},
                                  principal=requester, decision=decision, request_id="r3", before_use=nothing)
    assert used.status == "executed"


def test_caller_matches_is_issuer_aware() -> None:
    """The helper approver rules use matches scopes as the policy does."""
    assert caller_matches(["issuer:corp/role:x"], who("corp", roles=("x",)))
    assert not caller_matches(["issuer:corp/role:x"], who("partner", roles=("x",)))


# ----------------------------------------------------------------------------- lint and serve

ISSUER = {"issuer": "https://{name}.example", "jwks_file": "/etc/keys/{name}.json", "algorithms": ["ES256"],
          "audience": "http://127.0.0.1:8080/mcp"}


def deployment(root: Path, *, issuers: tuple[str, ...] = ("corp", "partner"), allowed: list[str],
               denied: list[str] | None = None, approvers: list[str] | None = None, **identity: Any) -> Path:
    """The demo deployment with these identity sources, process_refund's callers and approver patterns."""
    copy_demo(root)
    gateway = yaml.safe_load((root / "gateway.yaml").read_text())
    gateway["identity"] = {"issuers": [{"name": n, **{k: (v.format(name=n) if isinstance(v, str) else v)
                                                      for k, v in ISSUER.items()}} for n in issuers], **identity}
    gateway["approvals"]["approvers"][0]["approvers"] = approvers or ["issuer:corp/role:finance-approver"]
    if not identity.get("allow_insecure_dev_issuer"):
        gateway.pop("console", None)  # the demo's console logs in by the development login, which needs it
    gateway = json.loads(json.dumps(gateway))  # no shared objects: the loader refuses YAML aliases
    (root / "gateway.yaml").write_text(yaml.safe_dump(gateway, sort_keys=False))
    for path in (root / "tools").rglob("*.yml"):
        manifest = yaml.safe_load(path.read_text())
        policy = manifest["policy"]
        policy["allowed_callers"] = allowed if path.stem == "process_refund" else ["issuer:*/role:employee"]
        policy.pop("denied_callers", None)
        if denied is not None and path.stem == "process_refund":
            policy["denied_callers"] = denied
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return root


def errors(root: Path) -> list[str]:
    return [f"{p.path.name}:{p.line}: {p.message}" for p in lint_deployment(root) if p.severity == "error"]


@pytest.mark.parametrize(("kwargs", "found"), [
    ({"allowed": ["agent:billing-bot"]}, ["process_refund.yml", "names no issuer", "corp, partner"]),
    ({"allowed": ["issuer:corp/agent:billing-bot", "role:finance"]}, ["'role:finance' names no issuer"]),
    ({"allowed": ["issuer:partner/agent:billing-bot"], "approvers": ["role:finance-approver"]},
     ["gateway.yaml", "approvals.approvers: 'role:finance-approver' names no issuer"]),
    ({"allowed": ["issuer:corp/agent:billing-bot"], "approvers": ["issuer:crop/role:finance-approver"]},
     ["gateway.yaml", "'crop'", "can never match"]),
    ({"allowed": ["issuer:crop/agent:billing-bot"]}, ["'crop'", "does not trust", "can never match"]),
    ({"allowed": ["issuer:corp/agent:billing-bot"], "denied": ["issuer:partnr/agent:billing-bot"]},
     ["denied_callers", "'partnr'"]),  # a misspelt deny would silently never apply
    ({"issuers": ("corp",), "allowed": ["agent:billing-bot"], "allow_insecure_dev_issuer": True},
     ["corp, dev"]),
    ({"issuers": ("corp",), "allowed": ["agent:billing-bot"],
      "mtls": [{"match_subject_cn": "bot", "client_id": "bot"}]}, ["corp, mtls"]),
    ({"issuers": ("corp",), "allowed": ["agent:billing-bot"], "allow_insecure_anonymous": True},
     ["corp, anonymous"]),
    ({"issuers": ("corp",), "allowed": ["issuer:dev/agent:billing-bot"]}, ["'dev'", "does not trust"]),
])
def test_lint_and_serve_refuse_ambiguous_or_unknown_issuer_scopes(tmp_path: Path, kwargs: dict[str, Any],
                                                                 found: list[str]) -> None:
    """Unscoped allow/approver patterns among several sources, and unknown scopes, are errors at file:line."""
    root = deployment(tmp_path / "d", **kwargs)
    problems = errors(root)
    assert len(problems) == 1, problems
    assert all(part in problems[0] for part in found), problems[0]
    assert ":None:" not in problems[0]  # located at a line
    with pytest.raises(ConfigError):  # serve loads with the same checks: what lint refuses never starts
        load_deployment(root)


@pytest.mark.parametrize("kwargs", [
    {"allowed": ["issuer:corp/agent:billing-bot"]},
    {"allowed": ["issuer:*/agent:billing-bot"]},  # every source, on purpose
    {"allowed": ["issuer:corp/agent:billing-bot"], "denied": ["agent:evil-bot"]},  # unscoped deny: stricter
    {"allowed": ["issuer:corp/agent:billing-bot"], "denied": ["issuer:*/agent:evil-bot"]},
    {"issuers": ("corp",), "allowed": ["agent:billing-bot"], "approvers": ["role:finance-approver"]},
])
def test_scoped_wildcard_single_source_and_unscoped_deny_patterns_pass(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    """Scoped patterns, ``issuer:*/``, unscoped denies and single-source deployments lint clean and load."""
    root = deployment(tmp_path / "d", **kwargs)
    assert errors(root) == []
    load_deployment(root)


def test_portcullis_serve_refuses_an_unscoped_allow_among_two_issuers(tmp_path: Path) -> None:
    """The command itself exits with the lint's message rather than serving an issuer-blind rule."""
    root = deployment(tmp_path / "d", allowed=["agent:billing-bot"])
    done = run_cli("serve", "--config", str(root), "--port", "1")
    assert done.returncode != 0
    assert "names no issuer" in done.stderr and "Traceback" not in done.stderr


# ----------------------------------------------------------------------------- through a gateway

RESOURCE = "https://gateway.example/mcp"
CORP_KEY = ec.generate_private_key(ec.SECP256R1())


def corp_token(**claims: Any) -> str:
    """A token of the second trusted issuer, ``corp`` (ES256, person signal ``idtyp: user``)."""
    now = int(time.time())
    body = {"iss": "https://corp.example", "aud": RESOURCE, "iat": now, "exp": now + 300,
            "jti": f"j-{time.monotonic_ns()}", "scope": "mcp:tools", **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, CORP_KEY, algorithm="ES256",
                      headers={"kid": "corp-1", "typ": "at+jwt"})


# one worker runs the whole module, so its module-scoped gateway starts once (tests/conftest.py)
pytestmark = pytest.mark.xdist_group("security/test_issuer_scoping.py")


@pytest.fixture(scope="module")
def two_issuers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = copy_demo(tmp_path_factory.mktemp("two-issuers") / "deployment")
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(CORP_KEY.public_key()))
    (root.parent / "corp-jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "corp-1", "alg": "ES256"}]}))
    gateway = yaml.safe_load((root / "gateway.yaml").read_text())
    gateway["identity"] = {"resource": RESOURCE, "allow_insecure_dev_issuer": True, "issuers": [
        {"name": "corp", "issuer": "https://corp.example", "jwks_file": str(root.parent / "corp-jwks.json"),
         "algorithms": ["ES256"], "audience": RESOURCE, "person": {"claim": "idtyp", "equals": "user"}}]}
    gateway["approvals"]["approvers"] = [{"tools": ["billing.*"], "approvers": ["issuer:corp/role:finance-approver"]}]
    (root / "gateway.yaml").write_text(yaml.safe_dump(gateway, sort_keys=False))
    refund = root / "tools" / "billing" / "process_refund.yml"
    dev_callers = '["issuer:dev/agent:billing-bot", "issuer:dev/app:customer-support-ui"]'
    refund.write_text(refund.read_text().replace(dev_callers, '["issuer:corp/agent:billing-bot"]'))
    with GatewayProcess(root, audience=RESOURCE) as process:
        yield process


REFUND = {"order_id": "ORD-20001", "amount": 300, "currency": "USD", "reason": "charged twice"}


async def _call(gateway: GatewayProcess, token: str, arguments: dict[str, Any], approval_id: str | None = None) -> Any:
    meta = {"io.portcullis/approval-id": approval_id} if approval_id else None
    async with gateway.client(token=token) as client:
        try:
            return await client.call_tool("billing.process_refund", arguments, meta=meta)
        except MCPError as exc:
            return exc


def _vote(gateway: GatewayProcess, approval_id: str, token: str) -> httpx2.Response:
    return httpx2.post(f"{gateway.admin_base}/approvals/{approval_id}/approve",
                       headers={"Authorization": f"Bearer {token}"}, json={"reason": "ok"}, timeout=15)


async def test_issuer_b_cannot_act_as_or_approve_for_issuer_a(two_issuers: GatewayProcess) -> None:
    """Dev (B) tokens claiming corp's (A) agent or approver role are refused; corp's own succeed, end to end."""
    corp_bot = corp_token(sub="svc-billing", client_id="billing-client", agent_id="billing-bot")
    dev_bot = two_issuers.token(user=None, agent="billing-bot")
    async with two_issuers.client(token=dev_bot) as client:
        listed = {tool.name for tool in (await client.list_tools()).tools}
    assert "billing.process_refund" not in listed  # the tool is not B's billing-bot's to see
    impostor = await _call(two_issuers, dev_bot, {**REFUND, "amount": 80})
    assert isinstance(impostor, MCPError) and "Unknown tool" in str(impostor)
    assert not isinstance(await _call(two_issuers, corp_bot, {**REFUND, "amount": 80}), MCPError)

    held = await _call(two_issuers, corp_bot, REFUND)
    assert isinstance(held, MCPError) and held.code == -31010
    approval_id = held.data["approval_id"]
    refusals = {
        "dev-person-with-the-role": two_issuers.token(user="bob", agent=None, roles=["finance-approver"]),
        "corp-without-person-signal": corp_token(sub="bob", roles=["finance-approver"]),
        "corp-person-signal-but-an-agent": corp_token(sub="bob", idtyp="user", agent_id="helper-bot",
                                                      roles=["finance-approver"]),
        "corp-person-wrong-case-role": corp_token(sub="bob", idtyp="user", roles=["Finance-Approver"]),
        "corp-person-signal-wrong-case": corp_token(sub="bob", idtyp="User", roles=["finance-approver"]),
    }
    for name, token in refusals.items():
        assert _vote(two_issuers, approval_id, token).status_code in (403, 404), name
    vote = _vote(two_issuers, approval_id, corp_token(sub="bob", idtyp="user", roles=["finance-approver"]))
    assert vote.status_code == 200 and vote.json()["status"] == "approved"
    done = await _call(two_issuers, corp_bot, REFUND, approval_id)
    assert not isinstance(done, MCPError), done
