"""The pure rules of data governance: sinks, egress, taint weights, session keys, tenant tags, lint."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from portcullis.config.loader import LoadedManifest
from portcullis.config.model import GovernanceConfig, ToolManifest, ToxicFlowConfig
from portcullis.governance import flow
from portcullis.governance.sinks import (
    DEFAULT_SINKS,
    Sink,
    arguments_in_clear,
    cache_refusal,
    mark_values_withheld,
    outside_environment,
    restricted_refusal,
    services_withholding_logs,
    sink_allowed,
    values_in_logs,
    values_withheld,
)
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


def test_one_sinks_module_and_it_imports_no_configuration() -> None:
    """The configuration model takes the sink vocabulary from ``portcullis.governance.sinks``, which
    imports nothing of the gateway at run time (no cycle); the model imports no pipeline module."""
    code = ("import sys; import portcullis.governance.sinks; "
            "print(sorted(m for m in sys.modules if m.startswith('portcullis.') and m not in "
            "('portcullis.governance', 'portcullis.governance.sinks')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    code = ("import sys; import portcullis.config.model; "
            "print(sorted(m for m in sys.modules if m.startswith(('portcullis.pipeline', 'portcullis.transport', "
            "'portcullis.gateway', 'portcullis.sinks'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    from portcullis.config import model

    assert model.Sink is Sink
    assert {str(k): v for k, v in GovernanceConfig().sinks.items()} == dict(DEFAULT_SINKS)
    with pytest.raises(ImportError):
        __import__("portcullis.sinks")


@pytest.mark.parametrize("sinks", [None, {"Restricted": list(Sink)}, {"Restricted": ["cache"]}])
def test_restricted_never_reaches_the_cache_whatever_the_table_says(sinks: Any) -> None:
    """The one floor the table cannot lift; the manifest's ``cache`` key is refused on the same rule."""
    assert not sink_allowed("Restricted", "cache", sinks)
    assert cache_refusal(True, "Restricted") == "Restricted output is never cached"
    assert cache_refusal(True, "Confidential") is None and cache_refusal(None, "Public") is not None


@pytest.mark.parametrize(("classes", "sinks", "in_logs"), [
    (("Internal", "Internal"), None, True), (("Confidential", "Internal"), None, False),
    (("Internal", "Confidential"), None, False), (("Public", "Restricted"), None, False),
    (("Confidential", "Confidential"), {"Confidential": ["caller", "logs"]}, True),
    (("Internal", "Internal"), {"Internal": ["caller"]}, False), (("Public", "Public"), {}, False),
])
def test_values_reach_logs_only_when_both_classes_allow_it(classes: tuple[str, str], sinks: Any,
                                                           in_logs: bool) -> None:
    """Input and output class must both list ``logs``; a service serving such a tool is withheld whole."""
    tool = manifest(classification={"input": classes[0], "output": classes[1]})
    assert values_in_logs(tool, sinks) is in_logs
    assert services_withholding_logs([tool], sinks) == (frozenset() if in_logs else frozenset({"s"}))


def test_a_marked_exception_is_logged_without_values() -> None:
    """The mark survives re-raising; an unmarked exception is not withheld."""
    exc = RuntimeError("canary-value")
    assert not values_withheld(exc)
    mark_values_withheld(exc)
    assert values_withheld(exc) and not values_withheld(RuntimeError("x"))


@pytest.mark.parametrize(("output", "attributes", "outside"), [
    ("Restricted", {"environment": "production"}, False), ("Restricted", {}, True),
    ("Restricted", {"environment": "Production"}, True), ("Restricted", {"environment": "production "}, True),
    ("Restricted", {"env": "production"}, True), ("Confidential", {}, False), ("Public", {"environment": "x"}, False),
])
def test_outside_environment_is_exact_and_only_for_restricted_output(output: str, attributes: dict[str, str],
                                                                     outside: bool) -> None:
    assert outside_environment(output, attributes, "production") is outside


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
