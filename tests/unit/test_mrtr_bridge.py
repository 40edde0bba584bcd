"""The MRTR bridge for 2025-era callers (:mod:`portcullis.transport.mrtr_bridge`): the gateway asks the
caller each screened input request on its call's stream and dispatches the same request again."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from portcullis.errors import ClientRequestRefused
from portcullis.identity.principal import Principal
from portcullis.transport.jsonrpc import Message
from portcullis.transport.mrtr_bridge import bridged
from portcullis.transport.protocol import Request
from portcullis.transport.push import PushBounds, PushRegistry

ELICIT = {"method": "elicitation/create", "params": {"message": "Name?", "requestedSchema": {
    "type": "object", "properties": {"name": {"type": "string"}}}}}
ROOTS = {"method": "roots/list", "params": {}}
DONE = {"content": [{"type": "text", "text": "done"}], "isError": False}


def _req() -> Request:
    message = Message("request", "tools/call", {"name": "svc.tool", "arguments": {"a": 1}}, 7, True)
    return Request(message, "2025-11-25", False, {}, Principal(client_id="c", auth_method="dev", issuer="i"))


def _input_required(state: str, **requests: Any) -> dict[str, Any]:
    return {"resultType": "input_required", "inputRequests": requests, "requestState": state}


class Caller:
    """The caller's side of the push channel: answers each request it is sent, in a task of its own."""

    def __init__(self, registry: PushRegistry, answers: dict[str, Any]) -> None:
        self.registry, self.answers, self.asked = registry, answers, []

    def deliver(self, message: dict[str, Any]) -> None:
        self.asked.append(message["method"])
        answer = self.answers.get(message["method"])
        if answer is not None:
            self.registry.answer({"jsonrpc": "2.0", "id": message["id"], "result": answer}, session_id="sid",
                                 principal_key="pk", size=10)


def _setup(answers: dict[str, Any], bounds: PushBounds | None = None, *, stream: bool = True) -> tuple[Any, Caller]:
    registry = PushRegistry(bounds or PushBounds(timeout_s=5))
    push = registry.call(session_id="sid", principal_key="pk", declared=frozenset({"elicitation_form", "roots"}))
    caller = Caller(registry, answers)
    if stream:
        push.deliver = lambda message: _later(caller, message)
    return push, caller


_PENDING: list[Any] = []


def _later(caller: Caller, message: dict[str, Any]) -> None:
    """Answer after the request was registered and is being waited for (as a real caller would)."""
    _PENDING.append((caller, message))


async def _run(dispatch: Any, push: Any, **kwargs: Any) -> Any:
    out: dict[str, Any] = {}

    async def go() -> None:
        try:
            out["result"] = await bridged(dispatch, _req(), push, **kwargs)
        except ClientRequestRefused as exc:
            out["refused"] = exc.reason

    async with anyio.create_task_group() as tg:
        tg.start_soon(go)
        while "result" not in out and "refused" not in out:
            await anyio.wait_all_tasks_blocked()
            while _PENDING:
                caller, message = _PENDING.pop(0)
                caller.deliver(message)
            await anyio.sleep(0)
    return out


async def test_a_result_that_needs_no_input_is_returned_as_it_is() -> None:
    """No input_required: one dispatch, nobody is asked."""
    push, caller = _setup({})
    seen: list[Request] = []

    async def dispatch(req: Request) -> dict[str, Any]:
        seen.append(req)
        return DONE

    assert await _run(dispatch, push) == {"result": DONE}
    assert len(seen) == 1 and caller.asked == []


async def test_each_round_asks_the_caller_and_dispatches_the_same_request_with_its_answers() -> None:
    """Two rounds: the params stay the caller's, plus inputResponses and the sealed requestState of the round."""
    push, caller = _setup({"elicitation/create": {"action": "accept", "content": {"name": "Ada"}},
                           "roots/list": {"roots": [{"uri": "file:///w"}]}})
    seen: list[dict[str, Any]] = []
    rounds = [_input_required("sealed-1", name=ELICIT), _input_required("sealed-2", roots=ROOTS, again=ELICIT), DONE]

    async def dispatch(req: Request) -> dict[str, Any]:
        seen.append(req.message.params)
        return rounds[len(seen) - 1]

    assert await _run(dispatch, push) == {"result": DONE}
    assert caller.asked == ["elicitation/create", "roots/list", "elicitation/create"]
    assert seen[0] == {"name": "svc.tool", "arguments": {"a": 1}}
    assert seen[1] == {"name": "svc.tool", "arguments": {"a": 1}, "requestState": "sealed-1",
                       "inputResponses": {"name": {"action": "accept", "content": {"name": "Ada"}}}}
    assert seen[2]["requestState"] == "sealed-2" and set(seen[2]["inputResponses"]) == {"roots", "again"}
    assert [r["outcome"] for r in push.records] == ["relayed"] * 3


async def test_rounds_are_capped() -> None:
    """An upstream that never stops asking ends the call (too_many_rounds) after max_rounds."""
    push, _ = _setup({"roots/list": {"roots": []}})
    calls: list[int] = []

    async def dispatch(req: Request) -> dict[str, Any]:
        calls.append(1)
        return _input_required("s", roots=ROOTS)

    assert await _run(dispatch, push, max_rounds=2) == {"refused": "too_many_rounds"}
    assert len(calls) == 3


@pytest.mark.parametrize(("case", "answers", "bounds", "stream", "reason"), [
    ("a caller without a stream", {}, None, False, "no_stream"),
    ("a caller that never answers", {}, PushBounds(timeout_s=0.01), True, "timeout"),
    ("a malformed answer", {"elicitation/create": {"action": "maybe"}}, None, True, "answer_malformed"),
])
async def test_a_caller_that_cannot_answer_ends_the_call_with_a_clear_refusal(case: str, answers: dict[str, Any],
                                                                           bounds: PushBounds | None, stream: bool,
                                                                           reason: str) -> None:
    """-31040 with the reason; the request is not dispatched again."""
    push, _ = _setup(answers, bounds, stream=stream)
    calls: list[int] = []

    async def dispatch(req: Request) -> dict[str, Any]:
        calls.append(1)
        return _input_required("s", name=ELICIT)

    assert await _run(dispatch, push) == {"refused": reason}
    assert len(calls) == 1 and push.records[-1]["reason"] == reason


async def test_each_round_relays_its_notifications_again() -> None:
    """The forwarder closes the call's stream at each round's answer; the next round reopens it."""
    from portcullis.notifications import CallStream

    push, _ = _setup({"roots/list": {"roots": []}})
    push.stream = CallStream(lambda note: None)
    open_at_start: list[bool] = []
    rounds = [_input_required("s", roots=ROOTS), DONE]

    async def dispatch(req: Request) -> dict[str, Any]:
        open_at_start.append(not push.stream.closed)
        push.stream.close()  # as the forwarder does when the upstream answered
        return rounds[len(open_at_start) - 1]

    assert await _run(dispatch, push) == {"result": DONE}
    assert open_at_start == [True, True]
