"""The pure rules of data governance: sinks, egress, taint weights, session keys, tenant tags, lint."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from portcullis.config.loader import LoadedManifest
from portcullis.config.model import GovernanceConfig, ToolManifest, ToxicFlowConfig
from portcullis.governance import flow
from portcullis.governance.sinks import arguments_in_clear, restricted_refusal, sink_allowed
from portcullis.governance.tenancy import meta_tenant, tenant_refusal
from portcullis.identity.principal import Principal
from portcullis.policy.lint import lint_policies

BOT = Principal(client_id="c", auth_method="dev", issuer="dev", agent_id="bot", tenant="acme")


def manifest(**keys: Any) -> ToolManifest:
    return ToolManifest.model_validate({
        "name": "t", "service": "s", "owner": "o@example.com", "description": "d", "risk": "low",
        "classification": {"input": "Internal", "output": "Internal"}, "input_schema": {"type": "object"},
        "policy": {"allowed_callers": ["agent:bot"]}, **keys})


@pytest.mark.parametrize(("level", "sink", "allowed"), [
    ("Public", "logs", True), ("Confidential", "logs", False), ("Confidential", "cache", True),
    ("Restricted", "cache", False), ("Restricted", "caller", True), ("Restricted", "audit", False),
    ("restricted", "caller", False), ("Secret", "caller", False), ("Public", "printer", False),
])
def test_sink_allowed_follows_the_defaults_and_refuses_what_it_does_not_know(level: str, sink: str,
                                                                               allowed: bool) -> None:
    """Default sinks per class; an unknown class or sink (or a mis-cased one) is never allowed."""
    assert sink_allowed(level, sink) is allowed


def test_siem_without_audit_is_a_configuration_error() -> None:
    """The SIEM export carries the audit records: clear values there need clear values in the trail."""
    with pytest.raises(ValueError, match="siem needs audit"):
        GovernanceConfig.model_validate({"sinks": {"Internal": ["caller", "siem"]}})


def test_restricted_input_is_hashed_and_restricted_output_stays_in_its_environment() -> None:
    """Restricted: arguments not in clear; a caller without the environment attribute is refused."""
    sinks = GovernanceConfig().sinks
    restricted = manifest(classification={"input": "Restricted", "output": "Restricted"})
    assert not arguments_in_clear(restricted, sinks)
    assert arguments_in_clear(manifest(), sinks)
    inside = dataclasses.replace(BOT, attributes={"environment": "production"})
    assert restricted_refusal(restricted, inside, "production", sinks) is None
    assert restricted_refusal(restricted, BOT, "production", sinks) == "content.restricted_environment"
    assert restricted_refusal(restricted, inside, "staging", sinks) == "content.restricted_environment"


@pytest.mark.parametrize(("keys", "egress"), [
    ({}, True), ({"egress": False}, False), ({"annotations": {"openWorldHint": False}}, False),
    ({"annotations": {"openWorldHint": True}}, True), ({"egress": True, "annotations": {"openWorldHint": False}}, True),
])
def test_egress_is_the_field_else_the_hint_else_true(keys: dict[str, Any], egress: bool) -> None:
    """``egress`` wins; then ``openWorldHint``; a silent manifest is egress-capable (MCP default)."""
    assert flow.is_egress(manifest(**keys)) is egress


def test_taint_weights_and_the_action_they_ask_for() -> None:
    """A deny taint outweighs any number of approval taints a window can hold; nothing is nothing."""
    config = ToxicFlowConfig()
    assert flow.taint_weight(config, sensitive=False, injection=False) == 0
    assert flow.action_for(flow.taint_weight(config, sensitive=True, injection=False)) == "deny"
    assert flow.action_for(flow.taint_weight(config, sensitive=False, injection=True)) == "require_approval"
    assert flow.action_for(flow.taint_weight(config, sensitive=True, injection=True)) == "deny"
    assert flow.action_for(5) == "require_approval" and flow.action_for(0) is None
    swapped = ToxicFlowConfig(on_sensitive="require_approval", on_injection="deny")
    assert flow.action_for(flow.taint_weight(swapped, sensitive=False, injection=True)) == "deny"


def test_session_key_is_the_identity_and_the_credentials_session_claim() -> None:
    """Same identity and sid: same key; another sid, user or tenant: another key."""
    key = flow.session_key(BOT)
    assert flow.session_key(dataclasses.replace(BOT, roles=("x",))) == key
    assert len({key, flow.session_key(dataclasses.replace(BOT, session_id="s1")),
                flow.session_key(dataclasses.replace(BOT, tenant="globex")),
                flow.session_key(dataclasses.replace(BOT, user_id="u"))}) == 4


def test_signals_are_read_with_safe_defaults() -> None:
    """No report, a report without the fields or with non-boolean values: no taint."""
    class Record:
        content: Any = None

    record = Record()
    assert flow.signals_of(record) == (False, False)
    assert flow.signals_of(object()) == (False, False)
    record.content = type("R", (), {"sensitive": "yes", "injection": True})()
    assert flow.signals_of(record) == (False, True)


@pytest.mark.parametrize(("meta", "structured", "pointer", "reason"), [
    ("acme", None, None, None), (None, {"t": {"id": "acme"}}, "/t/id", None), (None, {"t": ["acme"]}, "/t/0", None),
    (None, {"t": ["acme"]}, "/t/00", "tenant_tag_missing"), (None, {"t": ["acme"]}, "/t/1", "tenant_tag_missing"),
    (None, "acme", "/t", "tenant_tag_missing"), ("a" * 257, None, None, "tenant_tag_malformed"),
    (7, None, None, "tenant_tag_malformed"), (None, {"a/b": "acme"}, "/a~1b", None),
])
def test_tenant_tags_resolve_strictly(meta: Any, structured: Any, pointer: str | None, reason: str | None) -> None:
    """RFC 6901 pointers (no leading-zero indexes), bounded string tags."""
    assert tenant_refusal(caller_tenant="acme", meta_tag=meta, structured=structured, pointer=pointer) == reason


def test_meta_tenant_reads_only_the_portcullis_key() -> None:
    """The tag is ``_meta["io.portcullis/tenant"]``; anything else is no tag."""
    assert meta_tenant({"_meta": {"io.portcullis/tenant": "acme"}}) == "acme"
    assert meta_tenant({"_meta": {"tenant": "acme"}}) is None
    assert meta_tenant({"_meta": "acme"}) is None and meta_tenant([]) is None


def test_lint_warns_for_open_world_hint_without_egress() -> None:
    """The hint alone deciding egress is a warning; an explicit ``egress`` silences it."""
    def problems(**keys: Any) -> list[str]:
        loaded = LoadedManifest(Path("/t.yml"), "s", manifest(**keys), "s.t")
        return [p.message for p in lint_policies([loaded], environment=None)]

    assert any("openWorldHint without egress" in m for m in problems(annotations={"openWorldHint": True}))
    assert problems(annotations={"openWorldHint": True}, egress=True) == []
    assert problems() == []
