"""The native per-tool policy engine: configuration errors, the refund table, and hostile inputs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from portcullis.identity.principal import Principal
from portcullis.policy import Decision, Obligation, ToolPolicy, evaluate, may_call, path_within_root, rule_ids
from portcullis.policy.model import Constraint
from portcullis.policy.native import failing_checks

TOOL = "billing.process_refund"
MONDAY_10 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # 2026-03-02 is a Monday

REFUND_POLICY_YAML = """
allowed_callers: ["agent:billing-bot", "app:customer-support-ui", "role:billing", "scope:refunds:write",
                  "agent:ops-*"]
max_amount: 500
requires_approval_over: 100
allowed_currencies: ["USD", "EUR"]
audit_required: true
redact: [/card_number]
require_attributes: {employment_type: [full_time]}
constraints:
  - {pointer: /reason, max_length: 500, required: false}
  - {pointer: /region, enum: [emea, amer, apac], required: false}
  - {pointer: /path, within_root: /srv/files, required: false}
  - {pointer: /order_id, pattern: "^ORD-[0-9]+$"}
  - {pointer: /amount, minimum: 0, maximum: 10000}
tenant_argument: /tenant_id
time_windows: [{days: [mon, tue, wed, thu, fri], from: "08:00", to: "18:00", tz: "UTC"}]
environments: [production, staging]
mode: enforce
"""


def refund_policy(**changes: Any) -> ToolPolicy:
    data = yaml.safe_load(REFUND_POLICY_YAML)
    data.update(changes)
    return ToolPolicy.model_validate(data)


POLICY = refund_policy()


def bot(**changes: Any) -> Principal:
    fields: dict[str, Any] = {
        "client_id": "support-console", "auth_method": "bearer", "issuer": "https://idp.example",
        "agent_id": "billing-bot", "user_id": "alice", "tenant": "acme",
        "attributes": {"employment_type": "full_time"},
    }
    fields.update(changes)
    return Principal(**fields)


def refund(**changes: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"amount": 80, "currency": "USD", "tenant_id": "acme", "order_id": "ORD-1001"}
    args.update(changes)
    return args


def decide(policy: ToolPolicy = POLICY, *, principal: Principal | None = None,
           arguments: Mapping[str, Any] | None = None, environment: str = "production",
           now: datetime = MONDAY_10) -> Decision:
    return evaluate(policy, tool=TOOL, principal=principal or bot(), arguments=refund() if arguments is None
                    else arguments, environment=environment, now=now, policy_version="v7")


def rid(name: str) -> str:
    return f"{TOOL}/{name}"


# ----------------------------------------------------------------------------- the table


@pytest.mark.parametrize(
    ("principal", "arguments", "effect", "rules"),
    [
        (bot(), refund(amount=80), "allow", ()),
        (bot(), refund(amount=300), "require_approval", ("requires_approval_over",)),
        (bot(), refund(amount=600), "deny", ("max_amount",)),
        (bot(), refund(amount=50, currency="JPY"), "deny", ("allowed_currencies",)),
        (bot(agent_id="refund-bot", user_id=None), refund(amount=80), "deny", ("caller",)),
    ],
    ids=["80-usd-allow", "300-usd-approval", "600-usd-deny", "jpy-deny", "unknown-agent-deny"],
)
def test_policy_decides_the_refund_table(principal: Principal, arguments: dict[str, Any], effect: str,
                                         rules: tuple[str, ...]) -> None:
    """The issue's table: billing-bot's 80/300/600 USD and JPY refunds, and an unknown agent."""
    decision = decide(principal=principal, arguments=arguments)
    assert decision.effect == effect
    assert decision.rule_ids == tuple(rid(rule) for rule in rules)
    assert decision.policy_version == "v7"
    assert decision.shadow is None


def test_policy_deny_overrides_require_approval() -> None:
    """A call that needs approval and also breaks a deny rule is denied, citing both rules."""
    decision = decide(arguments=refund(amount=300, currency="JPY"))
    assert decision.effect == "deny"
    assert decision.rule_ids == (rid("requires_approval_over"), rid("allowed_currencies"))


def test_policy_cites_every_failing_rule() -> None:
    """Every failing rule adds its rule id; evaluation does not stop at the first failure."""
    decision = decide(principal=bot(agent_id="stranger", tenant="globex", attributes={}),
                      arguments=refund(amount=900, currency="GBP", order_id="X"),
                      environment="dev", now=MONDAY_10.replace(hour=22))
    assert set(decision.rule_ids) == {rid(n) for n in (
        "caller", "max_amount", "allowed_currencies", "require_attributes/employment_type", "tenant_argument",
        "time_windows", "environments", "constraint/order_id/pattern")}
    assert decision.effect == "deny"


def test_policy_reasons_never_echo_argument_values() -> None:
    """Reasons are fixed strings: nothing the caller sent appears in them."""
    decision = decide(arguments=refund(amount=600, currency="SECRET-XYZ", order_id="ORD-SECRET"))
    assert decision.reasons == ("amount_over_max", "currency_not_allowed", "argument_invalid")
    assert not any("SECRET" in reason for reason in decision.reasons)


def test_policy_attaches_audit_and_redaction_obligations_to_every_effect() -> None:
    """Obligations come from the policy, so allowed and denied calls alike are audited and redacted."""
    expected = (Obligation("audit"), Obligation("redact", "/card_number"))
    assert decide().obligations == expected
    assert decide(arguments=refund(amount=600)).obligations == expected
    assert decide(POLICY.model_copy(update={"audit_required": False, "redact": ()})).obligations == ()


# ----------------------------------------------------------------------------- amounts


@pytest.mark.parametrize(
    ("amount", "effect", "reason"),
    [
        (100, "allow", None),
        (Decimal("100.00"), "allow", None),
        (100.1, "require_approval", "amount_needs_approval"),
        (500, "require_approval", "amount_needs_approval"),
        (500.0000000001, "deny", "amount_over_max"),
        (0.1 + 0.2, "allow", None),
        ("80", "deny", "amount_invalid"),
        (True, "deny", "amount_invalid"),
        (None, "deny", "amount_invalid"),
        (float("nan"), "deny", "amount_invalid"),
        (float("inf"), "deny", "amount_invalid"),
        ([80], "deny", "amount_invalid"),
    ],
)
def test_policy_compares_amounts_as_decimals_and_denies_non_numbers(amount: object, effect: str,
                                                                    reason: str | None) -> None:
    """Amounts compare as the Decimal the JSON number spelled; anything not a finite number is denied."""
    decision = decide(arguments=refund(amount=amount))
    assert decision.effect == effect
    assert (decision.reasons[0] if decision.reasons else None) == reason


def test_policy_denies_a_missing_amount() -> None:
    """A refund without an amount is denied rather than treated as zero."""
    args = refund()
    del args["amount"]
    decision = decide(arguments=args)
    assert decision.effect == "deny"
    assert "amount_missing" in decision.reasons


def test_policy_reads_the_amount_at_the_configured_pointer() -> None:
    """``amount_pointer`` addresses a nested argument by JSON pointer."""
    policy = refund_policy(amount_pointer="/money/value", constraints=[])
    assert decide(policy, arguments=refund(money={"value": 600})).effect == "deny"
    assert decide(policy, arguments=refund(money={"value": 50})).effect == "allow"


# ----------------------------------------------------------------------------- who, where, when


def test_policy_denies_a_contractor_and_allows_a_full_time_employee() -> None:
    """``require_attributes`` admits only the listed employment types; a missing attribute is denied."""
    assert decide(principal=bot(attributes={"employment_type": "full_time"})).effect == "allow"
    contractor = decide(principal=bot(attributes={"employment_type": "contractor"}))
    assert contractor.effect == "deny"
    assert contractor.rule_ids == (rid("require_attributes/employment_type"),)
    assert decide(principal=bot(attributes={})).effect == "deny"


@pytest.mark.parametrize(
    ("principal_tenant", "argument"),
    [("acme", "globex"), ("acme", "ACME"), (None, "acme"), (None, ["acme"]), ("acme", None), ("acme", []),
     ("acme", ["acme", "globex"]), ("acme", ["acme", None]), ("acme", [["acme"]])],
)
def test_policy_denies_cross_tenant_calls(principal_tenant: str | None, argument: object) -> None:
    """The tenant argument must be exactly the principal's own tenant (or a non-empty array of only it)."""
    decision = decide(principal=bot(tenant=principal_tenant), arguments=refund(tenant_id=argument))
    assert decision.effect == "deny"
    assert rid("tenant_argument") in decision.rule_ids


@pytest.mark.parametrize("argument", ["acme", ["acme"], ["acme", "acme"]])
def test_policy_allows_the_callers_own_tenant_as_a_string_or_an_array(argument: object) -> None:
    """An array of tenant ids passes only when every one is the caller's own tenant."""
    decision = decide(principal=bot(tenant="acme"), arguments=refund(tenant_id=argument))
    assert rid("tenant_argument") not in decision.rule_ids


@pytest.mark.parametrize(
    "now",
    [MONDAY_10.replace(hour=7, minute=59), MONDAY_10.replace(hour=18), MONDAY_10 + timedelta(days=5),
     datetime(2026, 3, 2, 10, 0, tzinfo=timezone(timedelta(hours=-9)))],
    ids=["before-open", "at-close", "saturday", "19:00-utc-given-in-another-zone"],
)
def test_policy_denies_calls_outside_the_time_window(now: datetime) -> None:
    """Outside every window (compared in the window's own zone) the call is denied."""
    decision = decide(now=now)
    assert decision.effect == "deny"
    assert decision.rule_ids == (rid("time_windows"),)


def test_policy_time_window_uses_its_own_time_zone() -> None:
    """A window written in New York time opens at 08:00 there, 13:00 UTC in winter."""
    policy = refund_policy(time_windows=[{"days": ["mon"], "from": "08:00", "to": "09:00",
                                          "tz": "America/New_York"}])
    assert decide(policy, now=MONDAY_10.replace(hour=13, minute=30)).effect == "allow"
    assert decide(policy, now=MONDAY_10.replace(hour=8, minute=30)).effect == "deny"


def test_policy_denies_an_environment_not_listed() -> None:
    """A tool configured for production and staging is denied in any other environment."""
    assert decide(environment="staging").effect == "allow"
    for environment in ("development", "Production", ""):
        decision = decide(environment=environment)
        assert decision.effect == "deny"
        assert decision.rule_ids == (rid("environments"),)


def test_policy_in_log_only_mode_allows_and_carries_the_would_be_deny() -> None:
    """Shadow mode returns allow, with the decision enforcement would have made in ``shadow``."""
    decision = decide(refund_policy(mode="log_only"), arguments=refund(amount=600))
    assert decision.effect == "allow"
    assert decision.reasons == ("shadow_mode",)
    assert decision.shadow is not None
    assert decision.shadow.effect == "deny"
    assert decision.shadow.rule_ids == (rid("max_amount"),)


# ----------------------------------------------------------------------------- caller patterns


@pytest.mark.parametrize(
    ("changes", "matched"),
    [
        ({"agent_id": "billing-bot"}, True),
        ({"agent_id": "Billing-Bot"}, False),
        ({"agent_id": "billing-bot2"}, False),
        ({"agent_id": "billing-bo"}, False),
        ({"agent_id": "ops-nightly"}, True),  # "agent:ops-*"
        ({"agent_id": "ops-"}, True),
        ({"agent_id": "xops-nightly"}, False),
        ({"agent_id": "ops"}, False),
        ({"agent_id": None, "roles": ("billing",)}, True),
        ({"agent_id": None, "roles": ("billing-admin",)}, False),
        ({"agent_id": None, "scopes": ("refunds:write",)}, True),
        ({"agent_id": None, "scopes": ("refunds:read",)}, False),
        ({"agent_id": None, "source_app": "customer-support-ui"}, True),
        ({"agent_id": None, "user_id": "billing-bot"}, False),  # kinds do not cross over
        ({"agent_id": None, "client_id": "billing-bot"}, False),
    ],
)
def test_policy_matches_caller_patterns_exactly(changes: dict[str, Any], matched: bool) -> None:
    """Patterns match their own kind exactly and case-sensitively; only a trailing ``*`` is a wildcard."""
    decision = decide(principal=bot(**changes))
    assert (rid("caller") not in decision.rule_ids) is matched


@pytest.mark.parametrize(
    "agent_id",
    [
        "bi\u200bllling-bot",  # zero-width space
        "billing-bot\u200b",
        "\u200dbilling-bot",  # zero-width joiner
        "billing-bot\u202e",  # right-to-left override
        "billing-\u2066bot\u2069",  # bidi isolates
        "billing-bot\ufeff",  # byte order mark
        "billing\u00adbot",  # soft hyphen
        "billing-bot\u00a0",  # no-break space
        "billing-bot\u2028",  # line separator
    ],
)
def test_policy_rejects_principals_with_invisible_characters(agent_id: str) -> None:
    """Ids with format, bidi or zero-width characters are rejected, not matched."""
    decision = decide(principal=bot(agent_id=agent_id))
    assert decision.effect == "deny"
    assert decision.reasons[0] == "caller_id_rejected"


@pytest.mark.parametrize(
    "agent_id",
    [
        "billing-b\u043et",  # Cyrillic o
        "\u0432illing-bot",  # Cyrillic ve
        "b\u0131lling-bot",  # dotless i
        "\uff42illing-bot",  # fullwidth b
        "billing\u2010bot",  # Unicode hyphen
        "billing-bot\u0301",  # combining acute
        "ops\u2010nightly",  # near-miss for the "agent:ops-*" prefix
    ],
)
def test_policy_never_matches_homoglyph_agent_ids(agent_id: str) -> None:
    """Look-alike ids are different ids: they never match a pattern."""
    decision = decide(principal=bot(agent_id=agent_id))
    assert decision.effect == "deny"
    assert decision.reasons[0] == "caller_not_allowed"


def test_policy_compares_caller_ids_in_nfc() -> None:
    """A decomposed id matches the composed pattern: both are compared in Unicode NFC."""
    policy = refund_policy(allowed_callers=["user:jos\u00e9"])
    assert decide(policy, principal=bot(agent_id=None, user_id="jose\u0301")).effect == "allow"
    assert decide(policy, principal=bot(agent_id=None, user_id="jose")).effect == "deny"


# ----------------------------------------------------------------------------- argument constraints


HOSTILE_PATHS = [
    "/etc/passwd",
    "//etc/passwd",
    "..",
    "../secret",
    "../files-evil/x",  # the sibling-prefix trap: /srv/files-evil
    "a/../../files-evil",
    "a/b/../../..",
    "reports/\x00.txt",
    "reports\\..\\..\\etc",
    "..\\secret",
    "\uff0e\uff0e/secret",  # fullwidth dots: '..' after NFKC
    "reports/\u202etxt.exe",
    "reports/\n.txt",
    "",
]


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_policy_denies_hostile_path_arguments(path: str) -> None:
    """A path argument that is absolute, escapes the root or hides characters is denied."""
    decision = decide(arguments=refund(path=path))
    assert decision.effect == "deny"
    assert decision.rule_ids == (rid("constraint/path/within_root"),)
    assert decision.reasons == ("path_outside_root",)


@pytest.mark.parametrize("path", ["report.txt", "a/b/c.pdf", "./a", "a//b", ".", "a/./b/", "..hidden", "x..y",
                                  "a/../b"])
def test_policy_allows_paths_inside_the_root(path: str) -> None:
    """Relative paths that canonicalise inside the root are allowed."""
    assert decide(arguments=refund(path=path)).effect == "allow"


def test_path_within_root_compares_segments_not_string_prefixes() -> None:
    """``/srv/files-evil`` is not inside ``/srv/files`` even though the string starts with it."""
    assert path_within_root("/srv/files", "sub/x")
    assert not path_within_root("/srv/files", "../files-evil")
    assert not path_within_root("/srv/files", "/srv/files-evil")


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"reason": "x" * 501}, "constraint/reason/max_length"),
        ({"reason": 5}, "constraint/reason/max_length"),
        ({"region": "EMEA"}, "constraint/region/enum"),
        ({"region": ["emea"]}, "constraint/region/enum"),
        ({"order_id": "ORD-12\n"}, "constraint/order_id/pattern"),
        ({"order_id": "xORD-12"}, "constraint/order_id/pattern"),
        ({"order_id": 12}, "constraint/order_id/pattern"),
        ({"amount": -1}, "constraint/amount/minimum"),
    ],
)
def test_policy_denies_arguments_that_break_a_constraint(changes: dict[str, Any], rule: str) -> None:
    """Each constraint check is its own rule; a value of the wrong type fails it."""
    decision = decide(arguments=refund(**changes))
    assert decision.effect == "deny"
    assert rid(rule) in decision.rule_ids


def test_policy_enum_does_not_confuse_booleans_with_integers() -> None:
    """An enum of 1 does not admit true, and an enum of true is not expressible as 1."""
    policy = refund_policy(constraints=[{"pointer": "/priority", "enum": [1, 2]}])
    assert decide(policy, arguments=refund(priority=1)).effect == "allow"
    assert decide(policy, arguments=refund(priority=True)).effect == "deny"
    assert decide(policy, arguments=refund(priority=1.0)).effect == "deny"


def test_policy_denies_a_missing_required_argument_and_skips_an_optional_one() -> None:
    """A required constraint on a missing argument denies; an optional one is skipped."""
    args = refund()
    del args["order_id"]
    decision = decide(arguments=args)
    assert decision.rule_ids == (rid("constraint/order_id/pattern"),)
    assert decision.reasons == ("argument_missing",)
    assert decide(arguments=refund()).effect == "allow"  # no /reason, /region or /path given


def test_policy_resolves_escaped_and_indexed_pointers() -> None:
    """RFC 6901 pointers: ``~1`` is '/', ``~0`` is '~', and array indexes are plain decimals."""
    policy = refund_policy(constraints=[{"pointer": "/a~1b/0/c~0d", "enum": ["ok"]}])
    assert decide(policy, arguments=refund(**{"a/b": [{"c~d": "ok"}]})).effect == "allow"
    assert decide(policy, arguments=refund(**{"a/b": {"0": {"c~d": "ok"}}})).effect == "allow"
    assert decide(policy, arguments=refund(**{"a/b": [{"c~d": "no"}]})).effect == "deny"
    policy = refund_policy(constraints=[{"pointer": "/list/01", "enum": ["ok"]}])
    assert decide(policy, arguments=refund(list=["x", "ok"])).effect == "deny"


# ----------------------------------------------------------------------------- failing closed


class ExplodingArguments(Mapping[str, Any]):
    """Arguments whose every lookup raises: an injected failure inside evaluation."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("injected failure")

    def get(self, key: str, default: Any = None) -> Any:
        raise RuntimeError("injected failure")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("injected failure")

    def __len__(self) -> int:
        return 1


def test_policy_denies_with_policy_error_when_evaluation_fails() -> None:
    """An exception inside evaluation is a deny with reason ``policy_error`` (fail closed)."""
    decision = decide(arguments=ExplodingArguments())
    assert decision.effect == "deny"
    assert decision.reasons == ("policy_error",)
    assert decision.rule_ids == (rid("policy_error"),)
    assert decision.obligations == (Obligation("audit"), Obligation("redact", "/card_number"))


def test_policy_denies_with_policy_error_on_a_naive_clock() -> None:
    """A clock without a time zone is a bug upstream, and denies rather than guessing."""
    decision = decide(now=datetime(2026, 3, 2, 10, 0))  # noqa: DTZ001 - the naive clock under test
    assert decision.reasons == ("policy_error",)


def test_policy_in_log_only_mode_shadows_a_policy_error() -> None:
    """In shadow mode a failing evaluation is allowed but recorded as the would-be policy_error."""
    decision = decide(refund_policy(mode="log_only"), arguments=ExplodingArguments())
    assert decision.effect == "allow"
    assert decision.shadow is not None
    assert decision.shadow.reasons == ("policy_error",)


# ----------------------------------------------------------------------------- configuration errors


@pytest.mark.parametrize(
    "changes",
    [
        {"allowed_callers": []},
        {"allowed_callers": ["billing-bot"]},
        {"allowed_callers": ["bot:billing-bot"]},
        {"allowed_callers": ["agent:*"]},
        {"allowed_callers": ["agent:"]},
        {"allowed_callers": ["agent:bill*ing"]},
        {"allowed_callers": ["agent:billing-bot\u200b"]},
        {"allowed_callers": ["user:jose\u0301"]},  # not NFC
        {"max_amount": "500"},
        {"max_amount": -1},
        {"requires_approval_over": 500},
        {"allowed_currencies": []},
        {"allowed_currencies": ["usd"]},
        {"time_windows": []},
        {"time_windows": [{"days": ["mon"], "from": "18:00", "to": "08:00"}]},
        {"time_windows": [{"days": ["mon"], "from": "8:00", "to": "18:00"}]},
        {"time_windows": [{"days": ["monday"], "from": "08:00", "to": "18:00"}]},
        {"time_windows": [{"days": ["mon"], "from": "08:00", "to": "18:00", "tz": "Mars/Olympus"}]},
        {"environments": []},
        {"require_attributes": {"employment_type": []}},
        {"audit_required": "yes"},
        {"mode": "permissive"},
        {"tenant_argument": "tenant_id"},
        {"constraints": [{"pointer": "/x"}]},
        {"constraints": [{"pointer": "/x", "within_root": "srv/files"}]},
        {"constraints": [{"pointer": "/x", "within_root": "/"}]},
        {"constraints": [{"pointer": "/x", "within_root": "/srv/../etc"}]},
        {"constraints": [{"pointer": "/x", "pattern": "("}]},
        {"constraints": [{"pointer": "/x", "minimum": 5, "maximum": 1}]},
        {"constraints": [{"pointer": "/x", "max_length": "5"}]},
        {"constraints": [{"pointer": "/x", "enum": []}]},
        {"constraints": [{"pointer": "", "enum": ["a"]}]},
        {"constraints": [{"pointer": "/x", "enum": ["a"]}, {"pointer": "/x", "enum": ["b"]}]},
        {"unknown_rule": True},
    ],
)
def test_policy_configuration_errors_are_rejected(changes: dict[str, Any]) -> None:
    """Empty, unreachable, ambiguous or mistyped rules are configuration errors, never silent allows."""
    with pytest.raises(ValidationError):
        refund_policy(**changes)


def test_policy_lists_every_rule_id_it_can_produce() -> None:
    """``rule_ids`` names each rule once, with stable ids independent of list positions."""
    ids = rule_ids(POLICY, TOOL)
    assert ids[0] == rid("caller")
    assert rid("constraint/path/within_root") in ids
    assert rid("constraint/amount/maximum") in ids
    assert len(ids) == len(set(ids)) == 15


# ----------------------------------------------------------------------------- denied callers


@pytest.mark.parametrize(
    ("denied", "changes", "denied_fires", "caller_fires"),
    [
        (["agent:billing-bot"], {}, True, False),
        (["agent:billing-*"], {}, True, False),
        (["app:public-chat"], {"source_app": "public-chat"}, True, False),
        (["app:public-chat"], {"source_app": "customer-support-ui"}, False, False),
        (["role:contractor"], {"roles": ("contractor", "billing")}, True, False),
        (["agent:billing-bot"], {"agent_id": "stranger"}, False, True),
        (["agent:stranger"], {"agent_id": "stranger"}, True, True),
        (["agent:billing-bo"], {}, False, False),
        (["agent:Billing-bot"], {}, True, False),
    ],
    ids=["exact", "wildcard", "source-app", "other-app", "one-of-roles", "not-denied-not-allowed",
         "denied-and-not-allowed", "no-prefix-match-without-star", "case-folded"],
)
def test_policy_denied_callers_override_allowed_callers(denied: list[str], changes: dict[str, Any],
                                                        denied_fires: bool, caller_fires: bool) -> None:
    """A caller matching a denied pattern is denied even when an allowed pattern matches too."""
    decision = decide(refund_policy(denied_callers=denied), principal=bot(**changes))
    assert (rid("denied_callers") in decision.rule_ids) is denied_fires
    assert (rid("caller") in decision.rule_ids) is caller_fires
    assert (decision.effect == "deny") is (denied_fires or caller_fires)
    if denied_fires:
        assert "caller_denied" in decision.reasons


def test_policy_denied_callers_cites_its_rule_before_the_others() -> None:
    """``denied_callers`` is a caller rule: it is checked with ``allowed_callers``, before amounts."""
    decision = decide(refund_policy(denied_callers=["agent:billing-bot"]), arguments=refund(amount=600))
    assert decision.rule_ids == (rid("denied_callers"), rid("max_amount"))


@pytest.mark.parametrize("pattern", ["agent:*", "*", "agent", "robot:x", "agent:a*b", "agent:\u200bx", ""])
def test_policy_denied_callers_reject_malformed_patterns(pattern: str) -> None:
    """Denied patterns follow the allowed-pattern syntax; a malformed one is a configuration error."""
    with pytest.raises(ValidationError):
        refund_policy(denied_callers=[pattern])


def test_policy_rule_ids_include_denied_callers_only_when_set() -> None:
    """``denied_callers`` has a rule id only in a policy that sets it."""
    assert rid("denied_callers") not in rule_ids(POLICY, TOOL)
    assert rule_ids(refund_policy(denied_callers=["agent:x"]), TOOL)[:2] == (rid("caller"), rid("denied_callers"))


# ----------------------------------------------------------------------------- may_call (tools/list)


@pytest.mark.parametrize(
    ("policy_changes", "principal_changes", "environment", "now", "expected"),
    [
        ({}, {}, "production", MONDAY_10, True),
        ({}, {"agent_id": "stranger"}, "production", MONDAY_10, False),
        ({"denied_callers": ["agent:billing-bot"]}, {}, "production", MONDAY_10, False),
        ({}, {"attributes": {"employment_type": "contractor"}}, "production", MONDAY_10, False),
        ({}, {}, "dev", MONDAY_10, False),
        ({}, {}, "production", MONDAY_10.replace(hour=22), True),  # visible; the call is refused by time_windows
        ({}, {"tenant": "globex"}, "production", MONDAY_10, True),
        ({}, {"agent_id": "billing\u200bbot"}, "production", MONDAY_10, False),
        ({"mode": "log_only"}, {"agent_id": "stranger"}, "dev", MONDAY_10, True),
        ({}, {}, "production", MONDAY_10.replace(tzinfo=None), False),
    ],
    ids=["allowed", "unknown-caller", "denied-caller", "contractor", "other-environment", "out-of-hours",
         "tenant-needs-arguments", "invisible-characters", "log-only-allows-all", "naive-clock"],
)
def test_may_call_checks_only_rules_that_do_not_read_arguments(
        policy_changes: dict[str, Any], principal_changes: dict[str, Any], environment: str, now: datetime,
        expected: bool) -> None:
    """Callers, attributes and environment decide visibility; argument and time rules wait for the call."""
    principal = bot(**principal_changes)
    assert may_call(refund_policy(**policy_changes), principal, environment=environment, now=now) is expected


def test_failing_checks_names_every_check_a_value_fails() -> None:
    """``failing_checks`` runs a constraint's checks on one value (the lint uses it on enum values)."""
    constraint = Constraint(pointer="/x", enum=("ab", "toolong", 3), max_length=3, pattern="^[a-z]+$")
    assert failing_checks(constraint, "ab") == ()
    assert failing_checks(constraint, "toolong") == ("max_length",)
    assert failing_checks(constraint, 3) == ("max_length", "pattern")
    assert failing_checks(constraint, "zz") == ("enum",)
