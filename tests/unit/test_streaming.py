"""Streamed notifications of one call (:mod:`portcullis.notifications`, :mod:`portcullis.transport.streaming`,
the relay's :func:`~portcullis.upstream.http_relay.offer_notes`): the hostile-input table."""

from __future__ import annotations

from typing import Any

import pytest

from portcullis.content.output_filter import FilterPolicy
from portcullis.content.scan import DetectorSet
from portcullis.errors import InvalidParams
from portcullis.notifications import MESSAGE, OUTCOMES, PROGRESS, CallStream, StreamBounds
from portcullis.state.interface import StateFull, StateUnavailable
from portcullis.state.memory import FailingStateStore, InMemoryStateStore
from portcullis.transport.streaming import LEVEL_OFF, LogLevels, accepts_sse, sse_event, wanted
from portcullis.upstream.http_relay import offer_notes
from tests.security.canaries import CANARIES

KEY = CANARIES["aws_access_key_id"]
POLICY = FilterPolicy(detectors=DetectorSet.build(secrets=True, pii=("email",)))


def _stream(*, token: Any = "tok", level: str | None = "debug", bounds: StreamBounds | None = None,
            policy: FilterPolicy | None = POLICY) -> tuple[CallStream, list[dict[str, Any]], list[str]]:
    out: list[dict[str, Any]] = []
    counted: list[str] = []
    stream = CallStream(out.append, progress_token=token, log_level=level, bounds=bounds or StreamBounds(),
                        counted=counted.append)
    stream.policy = policy
    return stream, out, counted


def _log(data: Any, level: str = "info", **extra: Any) -> dict[str, Any]:
    return {"level": level, "data": data, **extra}


HOSTILE: list[tuple[str, str, Any, str]] = [
    ("a non-dict params", MESSAGE, ["x"], "malformed"),
    ("no data", MESSAGE, {"level": "info"}, "malformed"),
    ("an unknown level", MESSAGE, _log("x", level="loud"), "malformed"),
    ("a level that is not a string", MESSAGE, _log("x", level=3), "malformed"),
    ("a logger that is not a string", MESSAGE, _log("x", logger=["a"]), "malformed"),
    ("progress not a number", PROGRESS, {"progressToken": 1, "progress": "1"}, "malformed"),
    ("progress a boolean", PROGRESS, {"progressToken": 1, "progress": True}, "malformed"),
    ("total not a number", PROGRESS, {"progress": 1, "total": "9"}, "malformed"),
    ("a message that is not a string", PROGRESS, {"progress": 1, "message": {"a": 1}}, "malformed"),
    ("a server request's method", "sampling/createMessage", {}, "unsupported"),
    ("a list-changed notification", "notifications/tools/list_changed", {}, "unsupported"),
    ("one over the size bound", MESSAGE, _log("x" * 20_000), "too_large"),
    ("a secret in a log message", MESSAGE, _log(f"key {KEY}"), "relayed"),
]


@pytest.mark.parametrize(("case", "method", "params", "outcome"), HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_notifications(case: str, method: str, params: Any, outcome: str) -> None:
    stream, out, counted = _stream()
    assert stream.offer(method, params) == outcome
    assert counted == [outcome] and outcome in OUTCOMES
    assert len(out) == (outcome == "relayed")
    assert KEY not in repr(out)


def test_only_allow_listed_fields_pass_and_the_token_is_the_callers() -> None:
    stream, out, _ = _stream(token=42)
    stream.offer(PROGRESS, {"progressToken": "upstream-token", "progress": 1, "total": 2, "message": "m",
                            "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "up"}}, "extra": 1})
    stream.offer(MESSAGE, {"level": "info", "logger": "l", "data": {"k": "v"}, "_meta": {"x": 1}})
    assert out == [{"jsonrpc": "2.0", "method": PROGRESS, "params": {"progress": 1, "total": 2, "message": "m",
                                                                        "progressToken": 42}},
                   {"jsonrpc": "2.0", "method": MESSAGE, "params": {"level": "info", "data": {"k": "v"},
                                                                       "logger": "l"}}]


def test_a_secret_in_a_notification_is_redacted() -> None:
    stream, out, _ = _stream()
    stream.offer(MESSAGE, _log({"note": f"key {KEY}"}))
    stream.offer(PROGRESS, {"progress": 1, "message": f"mail a@example.com key {KEY}"})
    assert KEY not in repr(out) and "a@example.com" not in repr(out)
    assert "[REDACTED:" in repr(out)


def test_a_secret_split_across_notifications_is_withheld() -> None:
    stream, out, _ = _stream()
    half = len(KEY) // 2
    assert stream.offer(MESSAGE, _log(f"key {KEY[:half]}")) == "relayed"
    assert stream.offer(MESSAGE, _log(f"{KEY[half:]} tail")) == "split_secret"
    assert stream.offer(PROGRESS, {"progress": 1, "message": "harmless"}) == "relayed"
    assert KEY not in "".join(str(n["params"].get("data", n["params"].get("message"))) for n in out)


def test_no_progress_token_no_progress_and_no_level_no_logs() -> None:
    stream, out, _ = _stream(token=None, level=None)
    assert stream.offer(PROGRESS, {"progress": 1}) == "no_token"
    assert stream.offer(MESSAGE, _log("x")) == "below_level"
    assert out == []


def test_the_callers_level_is_applied() -> None:
    stream, _, _ = _stream(level="warning")
    outcomes = [stream.offer(MESSAGE, _log("x", level=level)) for level in ("debug", "info", "warning", "emergency")]
    assert outcomes == ["below_level", "below_level", "relayed", "relayed"]


def test_count_and_total_bytes_bounds() -> None:
    stream, _, _ = _stream(bounds=StreamBounds(max_notification_bytes=1000, max_per_call=3, max_total_bytes=10_000))
    assert [stream.offer(MESSAGE, _log(str(i))) for i in range(5)] == ["relayed"] * 3 + ["too_many"] * 2
    stream, _, _ = _stream(bounds=StreamBounds(max_notification_bytes=1000, max_per_call=99, max_total_bytes=1500))
    assert [stream.offer(MESSAGE, _log("x" * 600)) for _ in range(3)] == ["relayed", "relayed", "too_many_bytes"]


def test_without_a_filter_policy_nothing_passes() -> None:
    stream, out, _ = _stream(policy=None)
    assert stream.offer(MESSAGE, _log("x")) == "no_filter" and out == []


def test_after_the_call_ended_everything_is_dropped() -> None:
    stream, out, _ = _stream()
    stream.close()
    assert stream.offer(MESSAGE, _log("late")) == "after_end"
    assert stream.offer(PROGRESS, {"progress": 1}) == "after_end"
    assert out == [] and stream.summary() == {"after_end": 2}


def test_a_full_queue_drops_instead_of_blocking() -> None:
    def full(_: dict[str, Any]) -> None:
        raise RuntimeError("would block")

    stream = CallStream(full, progress_token="t", log_level="debug")
    stream.policy = POLICY
    assert stream.offer(MESSAGE, _log("x")) == "backpressure"


def test_relay_offers_only_this_requests_progress_and_drops_what_follows_the_response() -> None:
    stream, out, _ = _stream()
    notes = [(False, {"method": PROGRESS, "params": {"progressToken": 7, "progress": 1}}),
             (False, {"method": PROGRESS, "params": {"progressToken": 8, "progress": 1}}),  # another request's
             (False, {"method": PROGRESS, "params": {"progressToken": "7", "progress": 1}}),  # the wrong JSON type
             (False, {"method": MESSAGE, "params": _log("mine")}),
             (True, {"method": MESSAGE, "params": _log("late")})]
    offer_notes(stream, notes, 7)
    assert [n["params"].get("data", n["params"].get("progress")) for n in out] == [1, "mine"]
    assert stream.summary() == {"after_end": 1, "relayed": 2, "unattributed": 2}


ACCEPTS = [("application/json, text/event-stream", True), ("text/event-stream", True), ("TEXT/EVENT-STREAM", True),
           ("application/json", False), (None, False), ("", False), ("text/event-stream;q=0", False),
           ("text/event-stream-x", False), ("application/json;x=text/event-stream", False)]


@pytest.mark.parametrize(("accept", "expected"), ACCEPTS)
def test_accepts_sse(accept: str | None, expected: bool) -> None:
    assert accepts_sse(accept) is expected


def test_wanted_per_era() -> None:
    meta = {"_meta": {"progressToken": "p", "io.modelcontextprotocol/logLevel": "error"}}
    assert wanted(meta, modern=True, stored=None) == ("p", "error")
    assert wanted({}, modern=True, stored=None) == (None, None)  # 2026-07-28: logs are opt-in per request
    assert wanted({}, modern=True, stored="info") == (None, "info")
    assert wanted({}, modern=False, stored=None) == (None, "debug")  # a 2025-era session: every level until set
    assert wanted({}, modern=False, stored="alert") == (None, "alert")
    for token in (True, 1.5, {"a": 1}, "x" * 300):
        assert wanted({"_meta": {"progressToken": token}}, modern=True, stored=None)[0] is None


class _Now:
    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


async def test_log_levels_are_per_caller_bounded_and_expire_with_the_session() -> None:
    """A level is the caller's own, held in the state store until its session expires; a full store refuses."""
    now = _Now()
    levels = LogLevels(InMemoryStateStore(max_keys=2), now)
    a, b, c = (LogLevels.key(f"s{i}", "p") for i in range(3))
    await levels.set(a, {"level": "error"}, expires_at=now.t + 60)
    assert await levels.get(a) == "error" and await levels.get(b) is None
    await levels.set(b, {"level": "info"}, expires_at=now.t + 600)
    with pytest.raises(StateFull):  # two live levels: a third session is refused, none forgotten
        await levels.set(c, {"level": "info"}, expires_at=now.t + 600)
    now.t += 61  # a's session has expired: its level with it, and its slot is free again
    assert await levels.get(a) is None
    await levels.set(c, {"level": "info"}, expires_at=now.t + 600)
    assert await levels.get(b) == await levels.get(c) == "info"
    assert LogLevels.key("s", "p1") != LogLevels.key("s", "p2")
    for bad in ({"level": "LOUD"}, {}, None, {"level": 3}):
        with pytest.raises(InvalidParams):
            await levels.set(a, bad, expires_at=now.t + 60)


async def test_an_unreadable_level_relays_no_log_message() -> None:
    """Fail safe: a store that cannot answer makes the call relay no log message (progress still goes)."""
    levels = LogLevels(FailingStateStore())
    stored = await levels.get(LogLevels.key("s", "p"))
    assert stored == LEVEL_OFF
    assert wanted({"_meta": {"progressToken": "t"}}, modern=False, stored=stored) == ("t", None)
    with pytest.raises(StateUnavailable):
        await levels.set(LogLevels.key("s", "p"), {"level": "info"}, expires_at=2e9)


def test_sse_event_is_one_line_of_data() -> None:
    event = sse_event({"a": "line\nbreak"})
    assert event.count(b"\n") == 3 and event.startswith(b"event: message\ndata: ")
