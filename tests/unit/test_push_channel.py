"""The push channel (:mod:`portcullis.transport.push`): client requests to a 2025-era caller and the
routing of its answers, with the table of answers an attacker (or a confused caller) would try."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from portcullis.notifications import ANSWER_OUTCOMES
from portcullis.transport.push import (
    ID_PREFIX,
    PUSH_REFUSALS,
    CallPush,
    PushBounds,
    PushRefused,
    PushRegistry,
)
from portcullis.transport.push_answers import MalformedAnswer, checked_answer

SESSION, PRINCIPAL = "pcs1.session-a", "principal-a"
ELICIT = "elicitation/create"
ACCEPT = {"action": "accept", "content": {"name": "Ada"}}


class _Harness:
    """A registry, one call's channel with a queue standing in for its SSE stream, and what was counted."""

    def __init__(self, bounds: PushBounds | None = None, *, stream: bool = True) -> None:
        self.answers: list[str] = []
        self.registry = PushRegistry(bounds or PushBounds(timeout_s=5), answer_counted=self.answers.append)
        self.push: CallPush = self.registry.call(session_id=SESSION, principal_key=PRINCIPAL,
                                                 declared=frozenset({"elicitation_form"}))
        self.sent: list[dict[str, Any]] = []
        if stream:
            self.push.deliver = self.sent.append

    def answer(self, result: Any = None, *, rid: Any = None, session: str = SESSION, principal: str = PRINCIPAL,
               size: int = 100, error: bool = False) -> str:
        value: dict[str, Any] = {"jsonrpc": "2.0", "id": self.sent[-1]["id"] if rid is None else rid}
        value["error" if error else "result"] = {"code": -1, "message": "no"} if error else result
        return self.registry.answer(value, session_id=session, principal_key=principal, size=size)


async def _ask(h: _Harness, then: Any) -> tuple[dict[str, Any] | None, str | None]:
    """Ask one elicitation; ``then()`` runs once it is on the stream (the caller's side)."""
    got: dict[str, Any] = {}

    async def ask() -> None:
        try:
            got["answer"] = await h.push.request(ELICIT, {"message": "name?"})
        except PushRefused as exc:
            got["refused"] = exc.reason

    async with anyio.create_task_group() as tg:
        tg.start_soon(ask)
        await anyio.wait_all_tasks_blocked()
        then()
    return got.get("answer"), got.get("refused")


async def test_the_callers_own_answer_settles_its_request() -> None:
    """The request goes out with a gateway id; the answer on the same session and principal comes back checked."""
    h = _Harness()
    outcomes: list[str] = []
    answer, refused = await _ask(h, lambda: outcomes.append(h.answer({**ACCEPT, "_meta": {"x": 1}, "extra": 2})))
    assert (answer, refused, outcomes) == (ACCEPT, None, ["matched"])
    sent = h.sent[0]
    assert sent["method"] == ELICIT and sent["params"] == {"message": "name?"}
    assert sent["id"].startswith(ID_PREFIX) and len(sent["id"]) >= len(ID_PREFIX) + 32
    assert h.registry.waiting == 0


HOSTILE: list[tuple[str, dict[str, Any], str]] = [
    ("an answer from another session", {"session": "pcs1.session-b"}, "foreign_session"),
    ("an answer from another principal", {"principal": "principal-b"}, "foreign_principal"),
    ("a forged id", {"rid": ID_PREFIX + "A" * 32}, "unknown"),
    ("the upstream's own kind of id (an integer)", {"rid": 1}, "unknown"),
]


@pytest.mark.parametrize(("case", "how", "outcome"), HOSTILE, ids=[c[0] for c in HOSTILE])
async def test_an_answer_that_is_not_the_callers_own_is_dropped_and_the_request_still_waits(
        case: str, how: dict[str, Any], outcome: str) -> None:
    """Dropped and counted, never matched; the caller's real answer still settles the request after it."""
    h = _Harness()
    outcomes: list[str] = []

    def caller() -> None:
        outcomes.append(h.answer({"action": "accept", "content": {"name": "Mallory"}}, **how))
        outcomes.append(h.answer(ACCEPT))

    answer, _ = await _ask(h, caller)
    assert outcomes == [outcome, "matched"] and answer == ACCEPT
    assert set(outcomes) <= ANSWER_OUTCOMES


SETTLING: list[tuple[str, dict[str, Any], str, str]] = [
    ("an answer over the size bound", {"result": ACCEPT, "size": 10**6}, "too_large", "answer_too_large"),
    ("a malformed answer (no action)", {"result": {"content": {"a": 1}}}, "malformed", "answer_malformed"),
    ("a malformed answer (nested content)", {"result": {"action": "accept", "content": {"a": {"b": 1}}}},
     "malformed", "answer_malformed"),
    ("content with a decline", {"result": {"action": "decline", "content": {"a": 1}}}, "malformed",
     "answer_malformed"),
    ("a JSON-RPC error", {"error": True}, "caller_error", "caller_error"),
]


@pytest.mark.parametrize(("case", "how", "outcome", "reason"), SETTLING, ids=[c[0] for c in SETTLING])
async def test_a_bad_answer_from_the_caller_refuses_the_request_at_once(case: str, how: dict[str, Any], outcome: str,
                                                                        reason: str) -> None:
    """The upstream gets an error now instead of waiting for the timeout; a second answer is a duplicate."""
    h = _Harness()
    outcomes: list[str] = []

    def caller() -> None:
        outcomes.append(h.answer(**how))
        outcomes.append(h.answer(ACCEPT))

    answer, refused = await _ask(h, caller)
    assert (answer, refused) == (None, reason) and reason in PUSH_REFUSALS
    assert outcomes == [outcome, "duplicate"]


async def test_a_duplicate_answer_is_dropped() -> None:
    """The second answer to a settled request matches nothing."""
    h = _Harness()
    outcomes: list[str] = []
    await _ask(h, lambda: outcomes.extend([h.answer(ACCEPT), h.answer({"action": "cancel"})]))
    assert outcomes == ["matched", "duplicate"]


async def test_no_answer_in_time_refuses_the_request_and_a_late_answer_is_dropped() -> None:
    """Timeout: the request is refused; the answer that comes after it is counted late, never matched."""
    h = _Harness(PushBounds(timeout_s=0.01))
    answer, refused = await _ask(h, lambda: None)
    assert (answer, refused) == (None, "timeout")
    assert h.answer(ACCEPT) == "late" and h.registry.waiting == 0


async def test_the_call_ending_refuses_what_still_waits() -> None:
    """close() settles every waiting request as call_ended; later requests are refused too."""
    h = _Harness()
    _, refused = await _ask(h, h.push.close)
    assert refused == "call_ended" and h.answer(ACCEPT) == "late"
    with pytest.raises(PushRefused, match="call_ended"):
        await h.push.request(ELICIT, {})


async def test_a_caller_without_an_event_stream_is_never_asked() -> None:
    """No text/event-stream in Accept: no stream to ask on, nothing is registered."""
    h = _Harness(stream=False)
    with pytest.raises(PushRefused, match="no_stream"):
        await h.push.request(ELICIT, {})
    assert h.registry.waiting == 0


async def test_too_many_pending_requests_of_one_call_are_refused() -> None:
    """At most max_pending_per_call wait at once; the next is refused without being sent."""
    h = _Harness(PushBounds(max_pending_per_call=2, timeout_s=5))
    refused: list[str] = []

    async def ask() -> None:
        try:
            await h.push.request(ELICIT, {})
        except PushRefused as exc:
            refused.append(exc.reason)

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(ask)
        await anyio.wait_all_tasks_blocked()
        assert refused == ["too_many_pending"] and len(h.sent) == 2
        h.push.close()
    assert refused == ["too_many_pending", "call_ended", "call_ended"]


async def test_requests_per_call_and_per_replica_are_bounded() -> None:
    """max_requests_per_call over a call's life; max_pending over the whole replica."""
    h = _Harness(PushBounds(max_requests_per_call=1, timeout_s=0.01))
    await _ask(h, lambda: None)
    with pytest.raises(PushRefused, match="too_many_requests"):
        await h.push.request(ELICIT, {})
    h2 = _Harness(PushBounds(max_pending=0))
    with pytest.raises(PushRefused, match="busy"):
        await h2.push.request(ELICIT, {})


async def test_a_full_stream_refuses_the_request() -> None:
    """The call's queue refuses (the caller is not reading): backpressure, and nothing waits."""
    h = _Harness()

    def full(_: dict[str, Any]) -> None:
        raise anyio.WouldBlock

    h.push.deliver = full
    with pytest.raises(PushRefused, match="backpressure"):
        await h.push.request(ELICIT, {})
    assert h.registry.waiting == 0


def test_a_response_without_an_id_or_to_nothing_sent_is_unknown() -> None:
    """A notification-style message (no id) or any id never issued routes nowhere."""
    registry = PushRegistry()
    assert registry.answer({"jsonrpc": "2.0", "result": ACCEPT}, session_id=SESSION, principal_key=PRINCIPAL,
                           size=10) == "unknown"
    assert registry.answer({"jsonrpc": "2.0", "id": None, "result": {}}, session_id=None, principal_key="",
                           size=10) == "unknown"


def test_records_name_kind_service_and_outcome_never_content() -> None:
    """What a call's outcome record gets, bounded."""
    counted: list[tuple[str, str]] = []
    registry = PushRegistry(request_counted=lambda kind, outcome: counted.append((kind, outcome)))
    push = registry.call(session_id=SESSION, principal_key=PRINCIPAL, declared=frozenset())
    for _ in range(70):
        push.record("sampling", "refused", "not_allowed", service="svc")
    assert push.records[0] == {"kind": "sampling", "service": "svc", "outcome": "refused", "reason": "not_allowed"}
    assert len(push.records) == 64 and push.unrecorded == 6 and len(counted) == 70


ANSWERS: list[tuple[str, Any, Any]] = [
    ("sampling/createMessage", {"role": "assistant", "content": {"type": "text", "text": "hi"}, "model": "m",
                                "stopReason": "endTurn", "_meta": {"x": 1}},
     {"role": "assistant", "content": {"type": "text", "text": "hi"}, "model": "m", "stopReason": "endTurn"}),
    ("sampling/createMessage", {"role": "system", "content": {"type": "text", "text": "hi"}, "model": "m"}, None),
    ("sampling/createMessage", {"role": "user", "content": {"type": "resource", "x": 1}, "model": "m"}, None),
    ("sampling/createMessage", {"role": "user", "content": {"type": "text", "text": "x" * 70_000}, "model": "m"},
     None),
    ("roots/list", {"roots": [{"uri": "file:///w", "name": "w", "secret": 1}]}, {"roots": [{"uri": "file:///w",
                                                                                              "name": "w"}]}),
    ("roots/list", {"roots": [{"uri": "https://evil.example/"}]}, None),
    ("roots/list", {"roots": [{"uri": "file:///a"}] * 300}, None),
    ("elicitation/create", {"action": "accept", "content": {"tags": ["a", "b"], "n": 3, "ok": True}},
     {"action": "accept", "content": {"tags": ["a", "b"], "n": 3, "ok": True}}),
    ("elicitation/create", {"action": "maybe"}, None),
    ("elicitation/create", {"action": "accept", "content": {f"k{i}": 1 for i in range(100)}}, None),
    ("tools/call", {}, None),
]


@pytest.mark.parametrize(("method", "result", "kept"), ANSWERS)
def test_answers_are_checked_and_rebuilt_per_method(method: str, result: Any, kept: Any) -> None:
    """Allowed members only; a wrong shape, an unbounded answer or another method is malformed."""
    if kept is None:
        with pytest.raises(MalformedAnswer):
            checked_answer(method, result)
    else:
        assert checked_answer(method, result) == kept
