"""The MRTR stage's pure parts (:mod:`portcullis.pipeline.client_input`): what the upstream is told, and
which upstream answers are taken as ``input_required`` at all."""

from __future__ import annotations

import os
from typing import Any

import pytest

from portcullis.config.model import ClientRequestsConfig
from portcullis.content.output_filter import FilterPolicy
from portcullis.errors import ClientRequestRefused, UpstreamFailed
from portcullis.pipeline.client_input import (
    ClientInputRelay,
    RetryInput,
    ScreenedInput,
    upstream_capabilities,
    upstream_input_required,
)
from portcullis.request_state import Binding, RequestStateRefused, RequestStateSealer
from portcullis.transport.protocol import retry_input

ALL = ClientRequestsConfig(sampling=True, elicitation_form=True, elicitation_url=True, roots=True)
DECLARED: dict[str, Any] = {"sampling": {}, "elicitation": {"form": {}, "url": {}}, "roots": {}}
BINDING = Binding("alice", "tools/call", "svc.tool", "svc", "d" * 64)
ELICIT = {"method": "elicitation/create", "params": {"message": "Name?", "requestedSchema": {
    "type": "object", "properties": {"name": {"type": "string"}}}}}


class _Record:
    client_input: Any = None


def _relay(allowed: ClientRequestsConfig = ALL, max_rounds: int = 8) -> ClientInputRelay:
    return ClientInputRelay(RequestStateSealer([os.urandom(32)], clock=lambda: 1e9, max_rounds=max_rounds),
                            lambda _service: allowed)


@pytest.mark.parametrize(("declared", "allowed", "expected"), [
    (DECLARED, ALL, {"sampling": {}, "elicitation": {"form": {}, "url": {}}, "roots": {}}),
    (DECLARED, ClientRequestsConfig(), {}),
    (DECLARED, ClientRequestsConfig(elicitation_form=True), {"elicitation": {"form": {}}}),
    ({"elicitation": {}}, ALL, {"elicitation": {"form": {}}}),
    (None, ALL, {}),
    ({"sampling": {"tools": {}}, "experimental": {"x": {}}}, ALL, {"sampling": {}}),
], ids=["all", "service-allows-none", "form-only", "empty-elicitation", "none-declared", "extras-dropped"])
def test_upstream_is_told_only_what_caller_declared_and_service_allows(
        declared: Any, allowed: ClientRequestsConfig, expected: dict[str, Any]) -> None:
    """The intersection, rebuilt: nothing else the caller declared reaches the upstream."""
    assert upstream_capabilities(declared, allowed) == expected


@pytest.mark.parametrize("raw", [
    {"resultType": "input_required"},
    {"resultType": "input_required", "inputRequests": ["x"]},
    {"resultType": "input_required", "inputRequests": {"k": "not a request"}},
    {"resultType": "input_required", "inputRequests": {"": ELICIT}},
    {"resultType": "input_required", "inputRequests": {f"k{i}": ELICIT for i in range(40)}},
    {"resultType": "input_required", "requestState": 5},
    {"resultType": "input_required", "requestState": "x" * 20_000},
], ids=["empty", "list", "not-object", "empty-key", "too-many", "state-not-string", "state-too-large"])
def test_malformed_input_required_is_the_upstreams_failure(raw: dict[str, Any]) -> None:
    """An input_required answer that is not well formed fails the call (-31004), nothing relayed."""
    with pytest.raises(UpstreamFailed):
        upstream_input_required(raw)


def test_a_round_trip_through_the_relay() -> None:
    """Screened, sealed, then opened on the retry to the upstream's own state and the responses."""
    relay, record = _relay(), _Record()
    out = relay.incoming({"resultType": "input_required", "inputRequests": {"who": ELICIT}, "requestState": "up-1"},
                         BINDING, 0, DECLARED, FilterPolicy(), record)
    assert isinstance(out, ScreenedInput) and set(out) == {"resultType", "inputRequests", "requestState"}
    assert "up-1" not in repr(out)
    assert record.client_input == {"round": 1, "relayed": [{"key": "who", "kind": "elicitation_form"}]}
    upstream, round_ = relay.outgoing(RetryInput(out["requestState"], {"who": {"action": "decline"}}), BINDING,
                                      DECLARED, _Record())
    assert (upstream.request_state, upstream.responses, round_) == ("up-1", {"who": {"action": "decline"}}, 1)


def test_one_refused_request_refuses_the_call_and_is_recorded() -> None:
    """The first refused input request refuses the whole call; the record names its key, kind and reason."""
    record = _Record()
    with pytest.raises(ClientRequestRefused):
        _relay(ClientRequestsConfig(elicitation_form=True)).incoming(
            {"resultType": "input_required", "inputRequests": {"a": ELICIT, "b": {"method": "roots/list"}}},
            BINDING, 0, DECLARED, FilterPolicy(), record)
    assert record.client_input["refused"] == {"key": "b", "kind": "roots", "reason": "not_allowed"}


def test_round_cap_fails_the_call() -> None:
    """An upstream that keeps asking past the cap fails the call; no envelope is sealed for it."""
    record = _Record()
    with pytest.raises(UpstreamFailed):
        _relay(max_rounds=2).incoming({"resultType": "input_required", "requestState": "s"}, BINDING, 2, DECLARED,
                                      FilterPolicy(), record)
    assert record.client_input["refused"] == {"reason": "too_many_rounds"}


def test_a_refused_envelope_is_recorded_with_its_reason() -> None:
    """The retry's envelope is opened for this binding only; the precise reason goes to the record."""
    record = _Record()
    with pytest.raises(RequestStateRefused):
        _relay().outgoing(RetryInput("pcr1.AAAA"), BINDING, DECLARED, record)
    assert record.client_input == {"state_refused": "unauthentic"}


@pytest.mark.parametrize(("params", "is_retry"), [
    ({"requestState": "pcr1.x", "inputResponses": {"a": {}}}, True),
    ({"requestState": f"apr_{'0' * 32}.1.{'a' * 64}"}, False),  # an approval's state: the approvals stage's
    ({"requestState": 5}, False),
    ({}, False),
])
def test_dispatcher_tells_the_envelope_from_an_approval_state(params: dict[str, Any], is_retry: bool) -> None:
    """Only the gateway's prefix makes a retry; anything else is left to the approvals stage."""
    assert (retry_input(params) is not None) is is_retry


class _NoCatalog:
    """The dispatcher's catalog, for a call whose pipeline is a stand-in: no tool has param headers."""

    def lookup(self, name: str) -> None:
        return None


def _dispatch(modern: bool, seen: list[Any]) -> Any:
    from portcullis.identity.principal import Principal
    from portcullis.transport.jsonrpc import Message
    from portcullis.transport.protocol import Dispatcher, Request

    async def pipeline(ctx: Any) -> dict[str, Any]:
        seen.append(ctx)
        return ScreenedInput(resultType="input_required", requestState="pcr1.x")

    caps = {"elicitation": {}}
    params: dict[str, Any] = {"name": "svc.tool", "arguments": {}}
    if modern:
        params["_meta"] = {"io.modelcontextprotocol/clientCapabilities": caps}
    request = Request(Message("request", "tools/call", params, 1, True), "2026-07-28" if modern else "2025-11-25",
                      modern, {}, Principal(client_id="c", auth_method="dev", issuer="dev"),
                      None if modern else caps)
    return Dispatcher(_NoCatalog(), pipeline), request  # type: ignore[arg-type]


async def test_a_legacy_caller_gets_the_value_from_dispatch_result_and_a_refusal_from_dispatch() -> None:
    """2025-era: the screened result is a value for a bridge (dispatch_result); dispatch refuses it (-31004)."""
    from portcullis.transport.protocol import UnbridgedInputRequired

    seen: list[Any] = []
    dispatcher, request = _dispatch(False, seen)
    value = await dispatcher.dispatch_result(request)
    assert value["resultType"] == "input_required"
    with pytest.raises(UnbridgedInputRequired) as info:
        await dispatcher.dispatch(request)
    assert info.value.code == -31004 and info.value.result["requestState"] == "pcr1.x"
    assert seen[0].client_capabilities == {"elicitation": {}}  # the session's, for the screening


async def test_a_modern_caller_gets_input_required_with_its_result_type() -> None:
    """2026-07-28: the result keeps resultType input_required; the capabilities are the request's own."""
    seen: list[Any] = []
    dispatcher, request = _dispatch(True, seen)
    result = await dispatcher.dispatch(request)
    assert result["resultType"] == "input_required" and "io.modelcontextprotocol/serverInfo" in result["_meta"]
    assert seen[0].client_capabilities == {"elicitation": {}}
