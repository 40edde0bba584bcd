"""The SDK connector's client-request callbacks (:mod:`portcullis.upstream.client_relay`): attribution to one
call, screening, and an error (never a hang) for the upstream on every refusal."""

from __future__ import annotations

from typing import Any

import anyio
from mcp import types

from portcullis.config.model import ClientRequestsConfig
from portcullis.content.output_filter import FilterPolicy
from portcullis.content.scan import DetectorSet
from portcullis.transport.push import PUSH, CallPush, PushBounds, PushRegistry
from portcullis.upstream.client_relay import ClientRelay

ALL = ClientRequestsConfig(sampling=True, elicitation_form=True, elicitation_url=True, roots=True)
POLICY = FilterPolicy(detectors=DetectorSet.build(secrets=True, pii=("email",)))


class _Stream:
    policy = POLICY


def _push(registry: PushRegistry, *, declared: frozenset[str] = frozenset({"roots", "sampling"}),
          answers: list[dict[str, Any]] | None = None) -> CallPush:
    push = registry.call(session_id="sid", principal_key="pk", declared=declared)
    push.stream = _Stream()

    def deliver(message: dict[str, Any]) -> None:
        (answers if answers is not None else []).append(message)

    push.deliver = deliver
    return push


async def _roots(relay: ClientRelay, registry: PushRegistry, sent: list[dict[str, Any]]) -> Any:
    """Ask roots/list through the relay; the caller answers whatever was sent to it."""
    out: dict[str, Any] = {}

    async def ask() -> None:
        out["result"] = await relay.list_roots(None)

    async with anyio.create_task_group() as tg:
        tg.start_soon(ask)
        await anyio.wait_all_tasks_blocked()
        for message in sent:
            registry.answer({"jsonrpc": "2.0", "id": message["id"], "result": {"roots": [{"uri": "file:///w"}]}},
                            session_id="sid", principal_key="pk", size=10)
    return out["result"]


async def test_the_one_call_in_flight_gets_the_request_and_the_upstream_its_answer() -> None:
    """One call in flight: relayed, answered, recorded as relayed."""
    registry = PushRegistry(PushBounds(timeout_s=5))
    sent: list[dict[str, Any]] = []
    push = _push(registry, answers=sent)
    result = await _roots(ClientRelay("svc", ALL, lambda: [push]), registry, sent)
    assert isinstance(result, types.ListRootsResult) and str(result.roots[0].uri) == "file:///w"
    assert push.records == [{"kind": "roots", "service": "svc", "outcome": "relayed", "reason": None}]


async def test_with_several_calls_in_flight_the_request_is_refused_not_guessed() -> None:
    """stdio names no call: two in flight, neither the current context's, so nobody is asked."""
    registry = PushRegistry()
    sent: list[dict[str, Any]] = []
    first, second = _push(registry, answers=sent), _push(registry, answers=sent)
    result = await _roots(ClientRelay("svc", ALL, lambda: [first, second]), registry, sent)
    assert isinstance(result, types.ErrorData) and result.code == -31040
    assert sent == [] and first.records == [] and second.records == []


async def test_the_calls_own_context_names_it_among_several() -> None:
    """Legacy HTTP runs the callback in the call's context: that call is asked, even with others in flight."""
    registry = PushRegistry(PushBounds(timeout_s=5))
    sent: list[dict[str, Any]] = []
    mine, other = _push(registry, answers=sent), _push(registry, answers=[])
    token = PUSH.set(mine)
    try:
        result = await _roots(ClientRelay("svc", ALL, lambda: [other, mine]), registry, sent)
    finally:
        PUSH.reset(token)
    assert isinstance(result, types.ListRootsResult) and mine.records[0]["outcome"] == "relayed"
    assert other.records == []


async def test_refusals_answer_the_upstream_with_an_error_and_are_recorded() -> None:
    """Not allowed, not declared, no stream, a caller with no push channel: -31040 each, nothing sent."""
    registry = PushRegistry()
    sent: list[dict[str, Any]] = []
    cases = [
        (ClientRequestsConfig(sampling=True), _push(registry, answers=sent), "not_allowed"),
        (ALL, _push(registry, declared=frozenset({"sampling"}), answers=sent), "not_declared"),
    ]
    for allowed, push, reason in cases:
        result = await ClientRelay("svc", allowed, lambda p=push: [p]).list_roots(None)
        assert isinstance(result, types.ErrorData) and result.code == -31040
        assert push.records == [{"kind": "roots", "service": "svc", "outcome": "refused", "reason": reason}]
    no_stream = registry.call(session_id="sid", principal_key="pk", declared=frozenset({"roots"}))
    result = await ClientRelay("svc", ALL, lambda: [no_stream]).list_roots(None)
    assert isinstance(result, types.ErrorData) and no_stream.records[0]["reason"] == "no_stream"
    result = await ClientRelay("svc", ALL, lambda: [None]).list_roots(None)  # a 2026-07-28 caller: no channel
    assert isinstance(result, types.ErrorData)
    assert sent == []


def test_a_service_that_may_ask_nothing_is_offered_no_callbacks() -> None:
    """No capability is declared upstream unless the service's client_requests allows some kind."""
    assert ClientRelay("svc", ClientRequestsConfig(), lambda: []).callbacks() == {}
    assert set(ClientRelay("svc", ClientRequestsConfig(roots=True), lambda: []).callbacks()) == {
        "sampling_callback", "elicitation_callback", "list_roots_callback"}


async def test_without_the_calls_filter_policy_nothing_with_text_is_pushed() -> None:
    """Fail closed: a call whose content stage set no policy (filtering off) gets no_filter, nothing sent."""
    registry = PushRegistry()
    sent: list[dict[str, Any]] = []
    push = _push(registry, declared=frozenset({"sampling"}), answers=sent)
    push.stream = None  # no stream policy
    params = types.CreateMessageRequestParams(messages=[types.SamplingMessage(
        role="user", content=types.TextContent(type="text", text="hi"))], max_tokens=5)
    result = await ClientRelay("svc", ALL, lambda: [push]).sampling(None, params)
    assert isinstance(result, types.ErrorData) and sent == []
    assert push.records[0]["reason"] == "no_filter"
