"""The response cache: partitioned by principal and tenant, bounded, never ahead of a check.

Every test runs the real pipeline (``harness.in_process_gateway``: dispatcher, every stage, real
policy engine, approvals and audit chain) with the real in-process cache store; the upstream is
the project's test double, whose received calls are the count of forwards.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from portcullis.config.model import GatewayConfig, ResponseCacheConfig, ToolManifest
from portcullis.content.output_filter import ContentReport
from portcullis.governance.sinks import cache_refusal, sink_allowed
from portcullis.identity.principal import Principal
from portcullis.pipeline.context import CallContext, CallRecord
from portcullis.pipeline.stages.cache import cache_key, flagged, storable
from portcullis.policy.decision import Decision, Obligation
from portcullis.state.response_cache import FailingResponseCache, MemoryResponseCache
from tests.security.harness import (
    BOB,
    INVOICE,
    REFUND,
    InProcessGateway,
    forwarded,
    in_process_gateway,
    refund,
)

pytestmark = pytest.mark.anyio

READ_ONLY = {"readOnlyHint": True}
CACHED_INVOICE = {"get_invoice": {"cache": {"ttl_s": 60}, "annotations": READ_ONLY,
                                  "classification": {"input": "Internal", "output": "Internal"}}}
ARGS = {"invoice_id": "INV-1"}


def _principal(user: str, tenant: str | None = None, **extra: Any) -> Principal:
    return Principal(client_id="bot-client", auth_method="dev", issuer="dev", issuer_name="dev", user_id=user,
                     agent_id="billing-bot", tenant=tenant, **extra)


def _store(**kw: int) -> MemoryResponseCache:
    return MemoryResponseCache(max_entries=kw.get("max_entries", 1000), max_bytes=kw.get("max_bytes", 1 << 20))


def _invoice_handler(counter: list[int]) -> Any:
    async def handler(arguments: Any) -> dict[str, Any]:
        counter.append(1)
        return {"content": [{"type": "text", "text": f"invoice {arguments['invoice_id']} #{len(counter)}"}],
                "isError": False}
    return handler


async def _outcomes(gw: InProcessGateway) -> list[dict[str, Any]]:
    return [dict(r.fields) for r in await gw.records() if r.kind == "outcome"]


def _calls(gw: InProcessGateway) -> int:
    return len(forwarded(gw))


# --------------------------------------------------------------------------- partitioning


PARTITIONS = [  # (first caller, second caller): never each other's entries
    ("two users", _principal("alice"), _principal("mallory")),
    ("two tenants, same user", _principal("alice", "acme"), _principal("alice", "globex")),
    ("tenant vs none", _principal("alice", "acme"), _principal("alice")),
    ("two agents", _principal("alice"), dataclasses.replace(_principal("alice"), agent_id="billing-bot-2")),
    ("two clients", _principal("alice"), dataclasses.replace(_principal("alice"), client_id="other-client")),
    ("two issuers", _principal("alice"), dataclasses.replace(_principal("alice"), issuer="https://idp.example",
                                                             issuer_name="corp")),
]


@pytest.mark.parametrize(("label", "first", "second"), PARTITIONS, ids=[p[0] for p in PARTITIONS])
async def test_callers_never_share_entries(tmp_path: Path, label: str, first: Principal, second: Principal) -> None:
    async with in_process_gateway(tmp_path, manifests=CACHED_INVOICE, response_cache=_store(),
                                  handlers={"get_invoice": _invoice_handler([])},
                                  policies={"get_invoice": {"allowed_callers": ["agent:billing-bot",
                                                                                "agent:billing-bot-2"]}}) as gw:
        a1 = await gw.call(INVOICE, ARGS, principal=first)
        b1 = await gw.call(INVOICE, ARGS, principal=second)
        assert _calls(gw) == 2, label  # the second caller was forwarded, not served the first's answer
        a2 = await gw.call(INVOICE, ARGS, principal=first)
        b2 = await gw.call(INVOICE, ARGS, principal=second)
        assert _calls(gw) == 2  # each is now served its own entry
        assert a1.result == a2.result and b1.result == b2.result
        assert a1.result != b1.result


async def test_hit_is_audited_with_cache_hit(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path, manifests=CACHED_INVOICE, response_cache=_store(),
                                  handlers={"get_invoice": _invoice_handler([])}) as gw:
        first = await gw.call(INVOICE, ARGS)
        second = await gw.call(INVOICE, ARGS)
        assert first.result == second.result and _calls(gw) == 1
        assert first.result is not None and first.result["content"][0]["text"] == "invoice INV-1 #1"
        kinds = [r.kind for r in await gw.records()]
        assert kinds == ["decision", "outcome", "decision", "outcome"]
        assert [o.get("cache") for o in await _outcomes(gw)] == ["miss", "hit"]
        assert all(o["outcome"] == "ok" for o in await _outcomes(gw))


async def test_ttl_expiry_with_injected_clock(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path, manifests=CACHED_INVOICE, response_cache=_store()) as gw:
        await gw.call(INVOICE, ARGS)
        gw.clock.now += 59.9
        await gw.call(INVOICE, ARGS)
        assert _calls(gw) == 1
        gw.clock.now += 0.1  # exactly ttl_s after the store: expired
        await gw.call(INVOICE, ARGS)
        assert _calls(gw) == 2


async def test_different_arguments_miss(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path, manifests=CACHED_INVOICE, response_cache=_store()) as gw:
        await gw.call(INVOICE, ARGS)
        await gw.call(INVOICE, {"invoice_id": "INV-2"})
        await gw.call(INVOICE, {"invoice_id": "INV-1 "})
        assert _calls(gw) == 3


async def test_policy_version_change_misses(tmp_path: Path) -> None:
    store = _store()
    async with in_process_gateway(tmp_path, manifests=CACHED_INVOICE, response_cache=store) as gw:
        await gw.call(INVOICE, ARGS)
        await gw.call(INVOICE, ARGS)
        assert _calls(gw) == 1
    changed = {"get_invoice": {"allowed_callers": ["agent:billing-bot"]}}  # another policy, another version
    async with in_process_gateway(tmp_path, manifests=CACHED_INVOICE, response_cache=store,
                                  policies=changed) as gw2:
        await gw2.call(INVOICE, ARGS)
        assert _calls(gw2) == 1  # the stored answer of the old policy is not served
    async with in_process_gateway(tmp_path, manifests=CACHED_INVOICE, response_cache=store) as gw3:
        await gw3.call(INVOICE, ARGS)
        assert _calls(gw3) == 0  # same policy again: same version, so the entry (still fresh) answers


def _ctx(**changes: Any) -> CallContext:
    from portcullis.catalog import Route
    from portcullis.config.loader import LoadedManifest

    manifest = ToolManifest.model_validate({
        "name": "get_invoice", "service": "billing", "owner": "t@example.com", "description": "Invoice.",
        "risk": "low", "classification": {"input": "Internal", "output": "Internal"}, "annotations": READ_ONLY,
        "cache": {"ttl_s": 60}, "input_schema": {"type": "object"}, "pin": "sha256:" + "a" * 64})
    manifest = manifest.model_copy(update=changes.pop("manifest", {}))
    route = Route("billing.get_invoice", "billing", "get_invoice", LoadedManifest(Path("/x.yml"), "billing",
                                                                                    manifest, "billing.get_invoice"),
                  None, {}, None)  # type: ignore[arg-type]
    base = CallContext(request_id="r", jsonrpc_id=1, protocol_version="2026-07-28", tool_name="billing.get_invoice",
                       arguments={"invoice_id": "INV-1"}, started_ns=0, principal=_principal("alice", "acme"),
                       route=route, decision=Decision(effect="allow", policy_version="v1"))
    return base.evolve(**changes)


KEY_CHANGES = [
    ("pin", {"manifest": {"pin": "sha256:" + "b" * 64}}),
    ("policy version", {"decision": Decision(effect="allow", policy_version="v2")}),
    ("obligations", {"decision": Decision(effect="allow", policy_version="v1",
                                          obligations=(Obligation(kind="redact", pointer="/invoice_id"),))}),
    ("tenant", {"principal": _principal("alice", "globex")}),
    ("user", {"principal": _principal("bob", "acme")}),
    ("arguments", {"arguments": {"invoice_id": "INV-2"}}),
    ("argument type", {"arguments": {"invoice_id": 1}}),
    ("tool name", {"tool_name": "x"}),  # the caller's spelling is not the key: the route's name is
]


@pytest.mark.parametrize(("label", "changes"), KEY_CHANGES, ids=[k[0] for k in KEY_CHANGES])
def test_key_covers(label: str, changes: dict[str, Any]) -> None:
    same = label == "tool name"
    assert (cache_key(_ctx(**changes)) == cache_key(_ctx())) is same, label


def test_key_ignores_session_and_roles_and_argument_order() -> None:
    who = dataclasses.replace(_principal("alice", "acme"), session_id="s-2", roles=("x",))
    assert cache_key(_ctx(principal=who)) == cache_key(_ctx())
    assert (cache_key(_ctx(arguments={"a": 1, "b": 2})) == cache_key(_ctx(arguments={"b": 2, "a": 1})))


def test_key_refuses_unpinned_and_non_json() -> None:
    assert cache_key(_ctx(manifest={"pin": None})) is None
    assert cache_key(_ctx(arguments={"x": float("nan")})) is None


# --------------------------------------------------------------------------- what is never cached


async def test_restricted_never_cached(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="Restricted output is never cached"):
        ToolManifest.model_validate({
            "name": "t", "service": "s", "owner": "t@example.com", "description": "d", "risk": "low",
            "classification": {"input": "Public", "output": "Restricted"}, "annotations": READ_ONLY,
            "cache": {"ttl_s": 5}, "input_schema": {"type": "object"}})
    with pytest.raises(ValidationError, match="never cached"):
        ResponseCacheConfig.model_validate({"classifications": ["Public", "Restricted"]})
    assert not sink_allowed("Restricted", "cache")
    assert not sink_allowed("Public", "somewhere-else") and not sink_allowed("Secret", "cache")


@pytest.mark.parametrize("annotations", [{}, {"readOnlyHint": False}, {"readOnlyHint": None},
                                         {"destructiveHint": False, "idempotentHint": True}])
def test_cache_refused_on_tool_not_read_only(annotations: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="readOnlyHint"):
        ToolManifest.model_validate({
            "name": "t", "service": "s", "owner": "t@example.com", "description": "d", "risk": "low",
            "classification": {"input": "Public", "output": "Public"}, "annotations": annotations,
            "cache": {"ttl_s": 5}, "input_schema": {"type": "object"}})
    assert cache_refusal(annotations.get("readOnlyHint"), "Public") is not None


async def test_class_not_allowed_by_gateway_is_not_cached(tmp_path: Path) -> None:
    confidential = {"get_invoice": {**CACHED_INVOICE["get_invoice"],
                                    "classification": {"input": "Internal", "output": "Confidential"}}}
    async with in_process_gateway(tmp_path, manifests=confidential, response_cache=_store()) as gw:
        await gw.call(INVOICE, ARGS)
        await gw.call(INVOICE, ARGS)
        assert _calls(gw) == 2
        assert [o.get("cache") for o in await _outcomes(gw)] == ["bypass", "bypass"]
    async with in_process_gateway(tmp_path, manifests=confidential, response_cache=_store(),
                                  cache_classifications=("Public", "Internal", "Confidential")) as gw:
        await gw.call(INVOICE, ARGS)
        await gw.call(INVOICE, ARGS)
        assert _calls(gw) == 1  # the gateway allows Confidential: cached


async def test_is_error_not_cached(tmp_path: Path) -> None:
    async def failing(arguments: Any) -> dict[str, Any]:
        return {"content": [{"type": "text", "text": "no such invoice"}], "isError": True}

    async with in_process_gateway(tmp_path, manifests=CACHED_INVOICE, response_cache=_store(),
                                  handlers={"get_invoice": failing}) as gw:
        for _ in range(3):
            answer = await gw.call(INVOICE, ARGS)
            assert answer.result is not None and answer.result["isError"] is True
        assert _calls(gw) == 3


def test_flagged_results_not_stored() -> None:
    assert not storable({"content": [], "isError": True})
    assert not storable({"content": []})  # isError missing: not the forwarder's rebuilt shape
    assert not storable({"content": [], "isError": False, "_meta": {"io.portcullis/injection": True}})
    assert storable({"content": [], "isError": False})
    record = CallRecord()
    assert not flagged(record)
    record.content = ContentReport(channel="tools/call")
    assert not flagged(record)  # filtered, nothing found
    record.content.findings[("email", "redact")] += 1
    assert flagged(record)  # a redacted value still keeps the result out of the cache
    record.content = ContentReport(channel="tools/call", injection_rules={"injection.ignore_previous"})
    assert flagged(record)


async def test_client_nonread_only_tool_without_cache_is_untouched(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path, manifests=CACHED_INVOICE, response_cache=_store()) as gw:
        await gw.call(REFUND, refund(10))
        await gw.call(REFUND, refund(10))
        assert _calls(gw) == 2
        assert all("cache" not in o for o in await _outcomes(gw))


# --------------------------------------------------------------------------- every earlier stage first


async def test_approval_still_required_on_a_hit(tmp_path: Path) -> None:
    # a read-only, cached tool that needs approval above 100
    extra = {"process_refund": {"cache": {"ttl_s": 600}, "annotations": READ_ONLY,
                                "classification": {"input": "Internal", "output": "Internal"}}}
    async with in_process_gateway(tmp_path, manifests=extra, response_cache=_store()) as gw:
        args = refund(150)
        approval_id = await gw.pending_id(args)
        await gw.approve(approval_id, BOB)
        ran = await gw.call(REFUND, args, meta={"io.portcullis/approval-id": approval_id})
        assert ran.result is not None and _calls(gw) == 1
        # the same call again, no approval: held for approval, never answered from a cache
        again = await gw.call(REFUND, args)
        assert again.code == -31010 and _calls(gw) == 1
        # an allowed amount is cached normally, and its entry never answers the held amount
        await gw.call(REFUND, refund(50))
        await gw.call(REFUND, refund(50))
        assert _calls(gw) == 2
        assert (await gw.call(REFUND, args)).code == -31010


async def test_risk_escalation_is_never_skipped_by_a_hit(tmp_path: Path) -> None:
    # low tool (0) + Internal (5) + production (20) = 25, plus 2 per earlier call: the third call needs approval
    risk = {"rate": {"points_per_call": 2, "max_points": 20},
            "thresholds": {"one_approver": 28, "two_approvers": 70, "deny": 100}}
    async with in_process_gateway(tmp_path, manifests=CACHED_INVOICE, response_cache=_store(), risk=risk) as gw:
        assert (await gw.call(INVOICE, ARGS)).result is not None
        assert (await gw.call(INVOICE, ARGS)).result is not None
        assert _calls(gw) == 1  # the second was a hit
        held = await gw.call(INVOICE, ARGS)
        assert held.code == -31010 and held.result is None and _calls(gw) == 1


async def test_denied_caller_never_reaches_a_stored_answer(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path, manifests=CACHED_INVOICE, response_cache=_store()) as gw:
        await gw.call(INVOICE, ARGS)
        stranger = Principal(client_id="stranger", auth_method="dev", issuer="dev", issuer_name="dev",
                             agent_id="rogue-bot")
        answer = await gw.call(INVOICE, ARGS, principal=stranger)
        assert answer.result is None and answer.code is not None


async def test_limits_still_count_hits(tmp_path: Path) -> None:
    limit = [{"id": "inv-2", "tools": ["billing.get_invoice"], "max_calls": 2, "window_s": 3600, "per": ["agent"]}]
    async with in_process_gateway(tmp_path, manifests=CACHED_INVOICE, response_cache=_store(),
                                  limits=limit) as gw:
        assert (await gw.call(INVOICE, ARGS)).result is not None
        assert (await gw.call(INVOICE, ARGS)).result is not None
        assert (await gw.call(INVOICE, ARGS)).code is not None  # the third is throttled, hit or not
        assert _calls(gw) == 1


async def test_unavailable_store_is_a_miss(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path, manifests=CACHED_INVOICE, response_cache=FailingResponseCache()) as gw:
        a = await gw.call(INVOICE, ARGS)
        b = await gw.call(INVOICE, ARGS)
        assert a.result is not None and b.result is not None and _calls(gw) == 2


async def test_a_hit_cannot_be_changed_by_its_caller(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path, manifests=CACHED_INVOICE, response_cache=_store()) as gw:
        first = await gw.call(INVOICE, ARGS)
        assert first.result is not None
        first.result["content"][0]["text"] = "tampered"
        second = await gw.call(INVOICE, ARGS)
        third = await gw.call(INVOICE, ARGS)
        assert second.result is not None and second.result["content"][0]["text"] != "tampered"
        second.result["content"].clear()
        assert third.result is not None and third.result["content"]


# --------------------------------------------------------------------------- the store's bounds


def test_lru_entry_bound_and_evictions() -> None:
    store = _store(max_entries=3)
    for i in range(3):
        assert store.put(f"k{i}", b"v", 100.0, 0.0)
    assert store.get("k0", 1.0) == b"v"  # k0 is now the most recently used
    store.put("k3", b"v", 100.0, 0.0)
    assert store.get("k1", 1.0) is None and store.get("k0", 1.0) == b"v"
    stats = store.stats()
    assert stats.entries == 3 and stats.evictions == 1 and stats.hits == 2 and stats.misses == 1


def test_byte_bound() -> None:
    store = MemoryResponseCache(max_entries=1000, max_bytes=8 * 1024)
    for i in range(100):
        store.put(f"k{i}", b"x" * 900, 100.0, 0.0)
        assert store.stats().bytes <= 8 * 1024
    assert store.stats().evictions > 0
    assert not store.put("big", b"x" * 2000, 100.0, 0.0)  # over an eighth of the bound: never stored
    assert store.get("big", 1.0) is None


def test_replace_same_key_keeps_accounting() -> None:
    store = _store()
    store.put("k", b"a" * 10, 100.0, 0.0)
    store.put("k", b"b" * 20, 100.0, 0.0)
    assert store.stats().entries == 1 and store.get("k", 1.0) == b"b" * 20
    assert store.stats().bytes == 20 + 1 + 64


def test_expired_put_and_get() -> None:
    store = _store()
    assert not store.put("k", b"v", 5.0, 5.0)
    store.put("k", b"v", 10.0, 0.0)
    assert store.get("k", 10.0) is None and store.stats().entries == 0 and store.stats().bytes == 0


def test_bad_bounds_refused() -> None:
    with pytest.raises(ValueError):
        MemoryResponseCache(max_entries=0, max_bytes=10)


def test_gateway_config_default_off_per_tool() -> None:
    cfg = GatewayConfig.model_validate({"services": {"s": {"transport": "http", "url": "http://127.0.0.1:1/mcp"}}})
    assert cfg.response_cache.enabled and "Restricted" not in cfg.response_cache.classifications
