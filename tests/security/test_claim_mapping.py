"""Claim mapping under hostile claims: one documented mapping, refusals as 401, never a 500.

The table is a careful attacker's: every claim the principal reads (ids, roles, scopes,
attributes, the person signal), each with every JSON type where another is expected, empty and
overlong values, control, bidirectional, zero-width and other invisible characters, look-alike
scripts, case and normalisation variants, too many and duplicate entries. Each row is checked
twice: against the mapping itself (the reason the operator log gets) and through a real gateway
process (401 ``invalid_token``, no stack trace anywhere).
"""

from __future__ import annotations

import base64
import json
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portcullis.identity.claims import ClaimRejected, fold, identifier_problem, principal_from_claims
from portcullis.identity.config import ClaimMap
from portcullis.identity.issuers import PersonSignal
from portcullis.identity.minting import b64url, jwk_thumbprint, public_jwk
from portcullis.identity.principal import MAX_ID_CHARS, MAX_ITEM_CHARS, MAX_ITEMS, Principal
from portcullis.identity.revocation import SqliteRevocations, revoke
from portcullis.policy import ToolPolicy, evaluate
from tests.e2e.harness import GatewayProcess
from tests.e2e.test_upstream_failures import build

CLAIM_MAP = ClaimMap()
NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
PERSON = PersonSignal(claim="principal_type", equals="user")
BASE: dict[str, Any] = {"sub": "alice", "client_id": "console", "agent_id": "billing-bot", "tenant": "acme",
                        "sid": "s-1", "source_app": "chat", "roles": ["finance"], "scope": "mcp:tools",
                        "department": "finance", "principal_type": "agent"}


def mapped(**changes: Any) -> Principal:
    """The principal of BASE with ``changes`` (a value of ``...`` removes the claim)."""
    claims = {k: v for k, v in (BASE | changes).items() if v is not ...}
    return principal_from_claims(claims, CLAIM_MAP, subject=str(claims.get("sub", "alice")), issuer="https://idp",
                                 issuer_name="corp", auth_method="bearer", person=PERSON)


def reason(**changes: Any) -> str:
    with pytest.raises(ClaimRejected) as refused:
        mapped(**changes)
    return refused.value.reason


# ----------------------------------------------------------------------------- the hostile table

# claim -> the principal field its reason names
STRING_CLAIMS = {"sub": "user_id", "agent_id": "agent_id", "client_id": "client_id", "sid": "session_id",
                 "source_app": "source_app", "tenant": "tenant", "department": "attributes.department"}
# (id, value, why): a value no string claim may carry
BAD_STRINGS: list[tuple[str, Any, str]] = [
    ("list", ["billing-bot"], "type"),
    ("empty-list", [], "type"),
    ("int", 7, "type"),
    ("float", 1.5, "type"),
    ("true", True, "type"),
    ("false", False, "type"),
    ("null", None, "type"),
    ("object", {"id": "billing-bot"}, "type"),
    ("empty", "", "empty"),
    ("overlong", "a" * (MAX_ID_CHARS + 1), "too_long"),
    ("nul", "billing\x00bot", "unsafe"),
    ("newline-log-forging", "bot\nlevel=admin", "unsafe"),
    ("ansi-escape", "\x1b[31mbot", "unsafe"),
    ("del", "bot\x7f", "unsafe"),
    ("c1-next-line", "bot\x85", "unsafe"),
    ("rtl-override", "billing-bot\u202e", "unsafe"),
    ("bidi-isolate", "billing-\u2066bot\u2069", "unsafe"),
    ("zero-width-space", "billing\u200bbot", "unsafe"),
    ("zero-width-joiner", "\u200dbilling-bot", "unsafe"),
    ("bom", "\ufeffbilling-bot", "unsafe"),
    ("soft-hyphen", "billing\u00adbot", "unsafe"),
    ("no-break-space", "billing\u00a0bot", "unsafe"),
    ("ideographic-space", "billing\u3000bot", "unsafe"),
    ("line-separator", "billing\u2028bot", "unsafe"),
    ("hangul-filler", "adm\u3164in", "unsafe"),
    ("variation-selector", "admin\ufe0f", "unsafe"),
    ("combining-grapheme-joiner", "adm\u034fin", "unsafe"),
    ("tag-character", "admin\U000e0041", "unsafe"),
    ("private-use", "admin\ue000", "unsafe"),
    ("unassigned", "admin\U000e0080", "unsafe"),
    ("lone-surrogate", "admin\ud800", "unsafe"),
    ("leading-space", " billing-bot", "space"),
    ("trailing-space", "billing-bot ", "space"),
    ("cyrillic-a", "p\u0430ypal", "mixed_script"),
    ("greek-omicron", "billing-b\u03bft", "mixed_script"),
    ("fullwidth-latin-with-cyrillic", "\uff41\u0430", "mixed_script"),
]
STRING_ROWS = [pytest.param(claim, value, f"bad_claim:{field}:{why}", id=f"{claim}-{row_id}")
               for claim, field in STRING_CLAIMS.items() for row_id, value, why in BAD_STRINGS
               if not (claim == "sub" and row_id in ("list", "empty-list", "int", "float", "true", "false", "null",
                                                     "object", "empty"))]  # the verifier refuses these first

LIST_CLAIMS = {"roles": "roles", "scope": "scopes", "scp": "scopes"}
BAD_LISTS: list[tuple[str, Any, str]] = [
    ("int", 7, "type"),
    ("true", True, "type"),
    ("null", None, "type"),
    ("object", {"admin": True}, "type"),
    ("number-entry", ["finance", 7], "type"),
    ("null-entry", ["finance", None], "type"),
    ("list-entry", [["admin"]], "type"),
    ("object-entry", [{"role": "admin"}], "type"),
    ("empty-entry", ["finance", ""], "empty"),
    ("space-in-entry", ["finance admin"], "space"),
    ("too-many", [f"r{i}" for i in range(MAX_ITEMS + 1)], "too_many"),
    ("too-many-duplicates", ["finance"] * (MAX_ITEMS + 1), "too_many"),
    ("too-many-in-a-string", " ".join(f"r{i}" for i in range(MAX_ITEMS + 1)), "too_many"),
    ("overlong-entry", ["a" * (MAX_ITEM_CHARS + 1)], "too_long"),
    ("overlong-string", "a" * (MAX_ITEMS * (MAX_ITEM_CHARS + 1) + 1), "too_long"),
    ("tab-separated", "finance\tadmin", "unsafe"),
    ("newline-separated", "finance\nadmin", "unsafe"),
    ("nbsp-separated", "finance\u00a0admin", "unsafe"),
    ("zero-width-entry", ["ad\u200bmin"], "unsafe"),
    ("rtl-entry", ["nimda\u202e"], "unsafe"),
    ("mixed-script-entry", ["\u0430dmin"], "mixed_script"),
]
LIST_ROWS = [pytest.param(claim, value, f"bad_claim:{field}:{why}", id=f"{claim}-{row_id}")
             for claim, field in LIST_CLAIMS.items() for row_id, value, why in BAD_LISTS
             if not (claim == "scope" and row_id == "null")]  # scope: null falls through to the scp row below

PERSON_ROWS = [pytest.param(value, f"bad_claim:person:{why}", id=f"person-{row_id}") for row_id, value, why in [
    ("int", 1, "type"), ("true", True, "type"), ("null", None, "type"), ("object", {"type": "user"}, "type"),
    ("empty", "", "empty"), ("control", "user\x00", "unsafe"), ("rtl", "user\u202e", "unsafe"),
    ("list-with-number", ["user", 1], "type"), ("cyrillic", "us\u0435r", "mixed_script"),
]]


@pytest.mark.parametrize(("claim", "value", "expected"), STRING_ROWS)
def test_a_malformed_string_claim_refuses_the_token(claim: str, value: Any, expected: str) -> None:
    """A string claim of another type, empty, overlong, invisible or look-alike refuses the token, never drops."""
    assert reason(**{claim: value}) == expected


@pytest.mark.parametrize(("claim", "value", "expected"), LIST_ROWS)
def test_a_malformed_roles_or_scopes_claim_refuses_the_token(claim: str, value: Any, expected: str) -> None:
    """Roles and scopes of the wrong type, with bad entries, or too many refuse the token."""
    changes = {claim: value} if claim != "scp" else {"scope": ..., "scp": value}
    assert reason(**changes) == expected


def test_a_null_scope_refuses_the_token() -> None:
    """``scope: null`` is a malformed scope, not an absent one (``scp`` is not consulted)."""
    assert reason(scope=None, scp=["mcp:tools"]) == "bad_claim:scopes:type"


@pytest.mark.parametrize(("value", "expected"), PERSON_ROWS)
def test_a_malformed_person_signal_refuses_the_token(value: Any, expected: str) -> None:
    """The person claim is read like any other: malformed is a refusal, not "not a person"."""
    assert reason(principal_type=value) == expected


def test_a_malformed_client_id_is_not_skipped_for_the_next_candidate() -> None:
    """client_id as a list refuses the token: the mapping never falls back to azp or sub silently."""
    assert reason(client_id=["console"], azp="other") == "bad_claim:client_id:type"
    assert mapped(client_id=..., azp="web").client_id == "web"
    assert mapped(client_id=...).client_id == "alice"  # sub, the last resort


# ----------------------------------------------------------------------------- documented normalisations


@pytest.mark.parametrize(("changes", "field", "expected"), [
    ({"agent_id": "jose\u0301-bot"}, "agent_id", "jos\u00e9-bot"),  # NFD -> NFC
    ({"agent_id": "Billing-Bot"}, "agent_id", "Billing-Bot"),  # case kept
    ({"agent_id": "\uff42illing-bot"}, "agent_id", "\uff42illing-bot"),  # fullwidth kept (deny folds it)
    ({"agent_id": "\u7530\u4e2d-bot"}, "agent_id", "\u7530\u4e2d-bot"),  # CJK with Latin is not confusable
    ({"agent_id": ...}, "agent_id", None),
    ({"roles": ["finance", "finance", "admin"]}, "roles", ("finance", "admin")),  # duplicates: first kept
    ({"roles": "finance admin"}, "roles", ("finance", "admin")),
    ({"roles": "  finance   admin "}, "roles", ("finance", "admin")),  # runs of spaces
    ({"roles": ""}, "roles", ()),
    ({"roles": []}, "roles", ()),
    ({"roles": ["Finance", "finance"]}, "roles", ("Finance", "finance")),  # case-sensitive entries
    ({"roles": ["e\u0301"]}, "roles", ("\u00e9",)),
    ({"roles": ["e\u0301", "\u00e9"]}, "roles", ("\u00e9",)),  # duplicates after NFC
    ({"scope": ..., "scp": ["mcp:tools", "mcp:tools"]}, "scopes", ("mcp:tools",)),
    ({"scope": ..., "scp": "mcp:tools other"}, "scopes", ("mcp:tools", "other")),
    ({"scope": "mcp:tools", "scp": ["ignored"]}, "scopes", ("mcp:tools",)),  # scope wins when present
    ({"roles": [f"r{i}" for i in range(MAX_ITEMS)]}, "roles", tuple(f"r{i}" for i in range(MAX_ITEMS))),
    ({"agent_id": "a" * MAX_ID_CHARS}, "agent_id", "a" * MAX_ID_CHARS),
    ({"agent_id": "billing bot"}, "agent_id", "billing bot"),  # an inner space is part of an id
])
def test_the_mapping_normalises_only_as_documented(changes: dict[str, Any], field: str, expected: Any) -> None:
    """NFC, de-duplication and list splitting are the only normalisations; case is kept."""
    assert getattr(mapped(**changes), field) == expected


@pytest.mark.parametrize(("changes", "person"), [
    ({"principal_type": "user", "agent_id": ...}, True),
    ({"principal_type": ["staff", "user"], "agent_id": ...}, True),
    ({"principal_type": "user"}, False),  # names an agent: never a person
    ({"principal_type": "agent", "agent_id": ...}, False),
    ({"principal_type": "User", "agent_id": ...}, False),  # the signal is compared exactly
    ({"principal_type": ..., "agent_id": ...}, False),  # no agent is not enough
    ({"principal_type": "user", "agent_id": ..., "sub": "alice", "client_id": "x"}, True),
])
def test_a_person_is_decided_by_the_positive_signal_only(changes: dict[str, Any], person: bool) -> None:
    """Only the configured signal, with a user and no agent, makes a person."""
    assert mapped(**changes).person is person


def test_a_person_signal_without_a_value_accepts_any_value_of_the_claim() -> None:
    """``equals`` unset: the claim's presence (a non-empty string or list) is the signal."""
    present = PersonSignal(claim="uid")
    claims = {"sub": "alice", "uid": "00u1"}
    assert principal_from_claims(claims, CLAIM_MAP, subject="alice", issuer="i", issuer_name="corp",
                                 auth_method="bearer", person=present).person
    assert not principal_from_claims({"sub": "alice"}, CLAIM_MAP, subject="alice", issuer="i", issuer_name="corp",
                                     auth_method="bearer", person=present).person
    assert not principal_from_claims(claims, CLAIM_MAP, subject="alice", issuer="i", issuer_name="corp",
                                     auth_method="bearer", person=None).person


# ----------------------------------------------------------------------------- case and deny rules


@pytest.mark.parametrize("variant", ["admin", "Admin", "ADMIN", "\uff21dmin", "\uff41\uff44\uff4d\uff49\uff4e"])
def test_a_deny_rule_is_not_evaded_by_case_or_width(variant: str) -> None:
    """``denied_callers: [role:Admin]`` denies admin, ADMIN and fullwidth spellings; allow stays exact."""
    policy = ToolPolicy(allowed_callers=("role:finance", f"role:{variant}"), denied_callers=("role:Admin",))
    principal = mapped(roles=["finance", variant])
    decision = evaluate(policy, tool="t", principal=principal, arguments={}, environment="production",
                        now=NOW,
                        policy_version="v")
    assert decision.effect == "deny" and "t/denied_callers" in decision.rule_ids


def test_allow_rules_stay_case_sensitive() -> None:
    """``allowed_callers: [role:admin]`` does not admit ``Admin``: allow is exact (the stricter way)."""
    policy = ToolPolicy(allowed_callers=("role:admin",))
    decision = evaluate(policy, tool="t", principal=mapped(roles=["Admin"]), arguments={}, environment="p",
                        now=NOW,
                        policy_version="v")
    assert decision.effect == "deny"


@pytest.mark.parametrize(("revoked", "presented"), [
    ("billing-bot", "Billing-Bot"), ("billing-bot", "BILLING-BOT"), ("Billing-Bot", "billing-bot"),
    ("billing-bot", "\uff42illing-bot"),
])
def test_a_revoked_agent_is_refused_in_every_letter_case(tmp_path: Any, revoked: str, presented: str) -> None:
    """Revocation is a deny list: agent and client ids compare case-folded."""
    from portcullis.identity.revocation import Revoked

    path = tmp_path / "revocations.db"
    revoke(path, "agent", revoked)
    revoke(path, "client", revoked)
    revocations = SqliteRevocations(path, clock=lambda: 0.0)
    revocations.load()
    with pytest.raises(Revoked):
        revocations.check(jti=None, client_id=None, agent_id=presented)
    with pytest.raises(Revoked):
        revocations.check(jti=None, client_id=presented, agent_id=None)
    revocations.check(jti=None, client_id="someone-else", agent_id="other-bot")


# ----------------------------------------------------------------------------- properties

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
                    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
                    max_leaves=12)
CLAIM_VALUE = st.one_of(JSON, st.text(min_size=0, max_size=300),
                        st.lists(st.text(max_size=140), max_size=40),
                        st.text(alphabet=st.characters(codec="utf-8"), max_size=60))
READ_CLAIMS = ("sub", "client_id", "azp", "agent_id", "sid", "source_app", "tenant", "roles", "scope", "scp",
               "department", "employment_type", "region", "principal_type")


def _check_invariants(principal: Principal) -> None:
    for name in ("client_id", "user_id", "agent_id", "session_id", "source_app", "tenant"):
        value = getattr(principal, name)
        if value is not None:
            assert identifier_problem(value, MAX_ID_CHARS) is None
            assert unicodedata.is_normalized("NFC", value)
    for items in (principal.roles, principal.scopes):
        assert len(items) <= MAX_ITEMS and len(set(items)) == len(items)
        assert all(identifier_problem(item, MAX_ITEM_CHARS, spaces=False) is None for item in items)
    for value in principal.attributes.values():
        assert identifier_problem(value, MAX_ITEM_CHARS) is None
    assert principal.person is False or (principal.user_id is not None and principal.agent_id is None)
    assert Principal.from_claims(json.loads(json.dumps(principal.to_claims()))) == principal


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(READ_CLAIMS), CLAIM_VALUE, max_size=8))
def test_any_claims_map_to_a_clean_refusal_or_a_well_formed_principal(changes: dict[str, Any]) -> None:
    """For arbitrary JSON in every read claim: ClaimRejected, or a principal meeting every documented invariant."""
    try:
        principal = mapped(**changes)
    except ClaimRejected as exc:
        assert exc.reason.startswith("bad_claim:") and "\n" not in exc.reason
        return
    _check_invariants(principal)
    assert mapped(**changes) == principal  # deterministic


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1,
                        max_size=20), min_size=1, max_size=MAX_ITEMS))
def test_a_deny_on_any_accepted_role_catches_its_case_variants(roles: list[str]) -> None:
    """Whatever roles a token carries, a deny naming one of them in other letter case still denies."""
    try:
        principal = mapped(roles=roles)
    except ClaimRejected:
        return
    if not principal.roles:
        return
    role = principal.roles[0]
    for variant in {role.upper(), role.lower(), role.swapcase()}:
        pattern = f"role:{variant}"
        try:
            policy = ToolPolicy(allowed_callers=("agent:billing-bot",), denied_callers=(pattern,))
        except ValueError:  # not a valid pattern (e.g. upper-casing made it not NFC): nothing to check
            continue
        if fold(variant) != fold(role):
            continue  # a case mapping that is not a fold (e.g. German sharp s): not the same name
        decision = evaluate(policy, tool="t", principal=principal, arguments={}, environment="p",
                            now=NOW,
                            policy_version="v")
        assert "t/denied_callers" in decision.rule_ids


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30))
def test_nfc_and_nfd_spellings_map_to_the_same_principal(text: str) -> None:
    """Two normalisation forms of one id are one principal (or both refused, for the same reason)."""
    outcomes = []
    for form in ("NFC", "NFD"):
        try:
            outcomes.append(mapped(agent_id=unicodedata.normalize(form, text)).agent_id)
        except ClaimRejected as exc:
            outcomes.append(exc.reason)
    assert outcomes[0] == outcomes[1]


# ----------------------------------------------------------------------------- through the gateway


# one worker runs the whole module, so its module-scoped gateway starts once (tests/conftest.py)
pytestmark = pytest.mark.xdist_group("security/test_claim_mapping.py")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = build(tmp_path_factory.mktemp("claims") / "deployment")
    with GatewayProcess(root) as process:
        yield process


def _list_tools(gateway: GatewayProcess, token: str) -> httpx2.Response:
    return httpx2.post(gateway.url, headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                                             "Accept": "application/json", "MCP-Protocol-Version": "2026-07-28",
                                             "Mcp-Method": "tools/list"},
                       json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
                           "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                           "io.modelcontextprotocol/clientCapabilities": {}}}}, timeout=10)


def dev_token(gateway: GatewayProcess, **changes: Any) -> str:
    """A token signed by the gateway's trusted development issuer: a person's (alice) with ``changes``
    (``...`` removes a claim)."""
    base = claims_of(gateway.token(user="alice", agent=None))
    return sign_dev(gateway, {k: v for k, v in (base | changes).items() if v is not ...})


def claims_of(token: str) -> dict[str, Any]:
    body = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))


def sign_dev(gateway: GatewayProcess, claims: dict[str, Any]) -> str:
    """Sign exactly ``claims`` with the development issuer's key (the gateway trusts it)."""
    key = serialization.load_pem_private_key((gateway.state_dir / "dev-issuer-key.pem").read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    header = {"alg": "EdDSA", "typ": "at+jwt", "kid": jwk_thumbprint(public_jwk(key))}
    signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                     + b64url(json.dumps(claims, separators=(",", ":")).encode()))
    return signing_input + "." + b64url(key.sign(signing_input.encode()))


E2E_ROWS = [*STRING_ROWS, *LIST_ROWS, *[pytest.param("principal_type", *p.values, id=p.id) for p in PERSON_ROWS]]


@pytest.mark.parametrize(("claim", "value", "expected"), E2E_ROWS)
def test_the_gateway_answers_401_invalid_token_to_every_malformed_claim(gateway: GatewayProcess, claim: str,
                                                                        value: Any, expected: str) -> None:
    """A validly signed token with a hostile claim gets 401 invalid_token with the standard body, no trace."""
    changes = {"scope": ..., "scp": value} if claim == "scp" else {claim: value}
    response = _list_tools(gateway, dev_token(gateway, **changes))
    assert response.status_code == 401, response.text
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert response.json() == {"error": "invalid_token", "error_description": "Authentication required"}
    assert "Traceback" not in response.text


@pytest.mark.parametrize(("claims", "expected"), [
    ({"agent_id": "jose\u0301-bot"}, {"agent_id": "jos\u00e9-bot"}),
    ({"agent_id": "Billing-Bot"}, {"agent_id": "Billing-Bot"}),
    ({"roles": ["finance", "finance", "e\u0301"]}, {"roles": ["finance", "\u00e9"]}),
    ({"roles": "finance  admin"}, {"roles": ["finance", "admin"]}),
    ({"tenant": "acme corp"}, {"tenant": "acme corp"}),
])
async def test_normalised_claims_reach_the_service_log_and_audit_without_error(
        gateway: GatewayProcess, claims: dict[str, Any], expected: dict[str, Any]) -> None:
    """Accepted variants travel as documented: the minted token's act claim carries the normalised values."""
    async with gateway.client(token=dev_token(gateway, **claims)) as client:
        seen = (await client.call_tool("flaky.actor_token", {})).structured_content["result"]
    act = claims_of(seen)["act"]
    for name, value in expected.items():
        assert act[name] == value
    assert act["issuer_name"] == "dev"


def test_the_gateway_log_names_the_reason_and_holds_no_traceback(gateway: GatewayProcess) -> None:
    """After every hostile row, the operator log has the short reasons and no stack trace or 500."""
    response = _list_tools(gateway, dev_token(gateway, roles=[1]))
    assert response.status_code == 401
    log = gateway.log()
    assert "bad_claim:roles:type" in log
    assert "Traceback" not in log
    assert '"status": 500' not in log and "500 Internal" not in log


def test_the_fuzz_corpus_maps_to_refusals_or_well_formed_principals() -> None:
    """Every seed of the claims fuzz target passes its own contract (the target raises on a violation)."""
    from pathlib import Path

    from tests.fuzz.targets.claims import fuzz_one

    seeds = sorted((Path(__file__).parents[1] / "fuzz" / "corpus" / "claims").iterdir())
    assert len(seeds) >= 12
    for seed in seeds:
        fuzz_one(seed.read_bytes())
