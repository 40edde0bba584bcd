"""``logging/setLevel`` held in the shared state store: two gateway app instances (replicas) sharing one store.

A level set through one replica governs the log messages the other relays to the same session; another
caller's session is untouched; a store that cannot be read relays no log message (fail safe); a store that
cannot be written refuses the setLevel (-32603), and the level stays as it was.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from portcullis.content.output_filter import FilterPolicy
from portcullis.content.scan import DetectorSet
from portcullis.identity.authenticate import Authenticator
from portcullis.identity.config import ClaimMap
from portcullis.identity.revocation import SqliteRevocations
from portcullis.notifications import CURRENT, MESSAGE
from portcullis.state.interface import StateStore
from portcullis.state.memory import FailingStateStore, InMemoryStateStore
from portcullis.transport.app import GatewayApp
from portcullis.transport.origin_guard import OriginGuard
from portcullis.transport.session_token import SessionSealer
from portcullis.transport.streaming import LogLevels

from .harness import Clock

HEADERS = {"Host": "127.0.0.1:8080", "Content-Type": "application/json",
           "Accept": "application/json, text/event-stream"}
LEVELS = ("debug", "info", "warning", "error", "critical")


class LoggingDispatcher:
    """A dispatcher double: a ``tools/call`` offers one log message per level to its stream, then answers."""

    async def dispatch(self, req: Any) -> dict[str, Any]:
        stream = CURRENT.get()
        if stream is not None:
            stream.policy = FilterPolicy(detectors=DetectorSet.build(secrets=True))
            for level in LEVELS:
                stream.offer(MESSAGE, {"level": level, "data": f"at {level}"})
        return {"content": [{"type": "text", "text": "done"}]}

    dispatch_result = dispatch  # what a 2025-era tools/call is dispatched with (it never answers input_required)


def replica(tmp_path: Path, store: StateStore, name: str) -> GatewayApp:
    auth = Authenticator(verifier=None, claim_map=ClaimMap(), required_scopes=(),
                         revocations=SqliteRevocations(tmp_path / f"revocations-{name}.db"), cert_mapper=None,
                         allow_anonymous=True, resource_metadata_url="http://127.0.0.1:1/.well-known/prm",
                         issuer_names={}, dev_issuer_name=None)
    clock = Clock()
    return GatewayApp(dispatcher=LoggingDispatcher(), sealer=SessionSealer([b"s" * 32], ttl_s=600, clock=clock),  # type: ignore[arg-type]
                      guard=OriginGuard(["127.0.0.1:*"], ["http://127.0.0.1:*"]), authenticator=auth,
                      protected_resource_metadata={}, jwks=dict, max_body_bytes=10_000, max_json_depth=32,
                      log_levels=LogLevels(store, clock))


async def post(app: GatewayApp, message: dict[str, Any], session: str | None = None) -> tuple[dict[str, str], bytes]:
    sent: list[dict[str, Any]] = []
    headers = {**HEADERS, **({"Mcp-Session-Id": session} if session else {})}
    chunks = [{"type": "http.request", "body": json.dumps(message).encode(), "more_body": False}]

    async def receive() -> dict[str, Any]:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(event: Any) -> None:
        sent.append(event)

    scope = {"type": "http", "method": "POST", "path": "/mcp", "client": ("127.0.0.1", 4000),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    await app(scope, receive, send)  # type: ignore[arg-type]
    response_headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return response_headers, b"".join(e.get("body", b"") for e in sent[1:])


async def session_on(app: GatewayApp) -> str:
    headers, _ = await post(app, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    return headers["mcp-session-id"]


async def logged(app: GatewayApp, session: str) -> list[str]:
    """The levels of the log messages a tools/call on ``app`` relays to ``session``."""
    _, body = await post(app, {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                               "params": {"name": "x.y", "arguments": {}}}, session)
    events = [json.loads(line[6:]) for line in body.decode().splitlines() if line.startswith("data: ")]
    return [e["params"]["level"] for e in events if e.get("method") == "notifications/message"]


async def set_level(app: GatewayApp, session: str, level: str) -> dict[str, Any]:
    _, body = await post(app, {"jsonrpc": "2.0", "id": 3, "method": "logging/setLevel",
                               "params": {"level": level}}, session)
    return dict(json.loads(body))


async def test_a_level_set_on_one_replica_holds_on_the_other(tmp_path: Path) -> None:
    store = InMemoryStateStore()
    first, second = replica(tmp_path, store, "a"), replica(tmp_path, store, "b")
    mine, theirs = await session_on(first), await session_on(second)
    assert await logged(second, mine) == list(LEVELS)  # no level set: every level
    assert (await set_level(first, mine, "error"))["result"] == {}
    assert await logged(second, mine) == ["error", "critical"]  # the other replica obeys it
    assert await logged(first, mine) == ["error", "critical"]
    assert await logged(second, theirs) == list(LEVELS)  # another session is untouched
    assert (await set_level(second, mine, "warning"))["result"] == {}
    assert await logged(first, mine) == ["warning", "error", "critical"]  # the last set wins everywhere


@pytest.mark.parametrize("level", ["LOUD", "", None, 3])
async def test_a_bad_level_is_refused_and_changes_nothing(tmp_path: Path, level: Any) -> None:
    store = InMemoryStateStore()
    first, second = replica(tmp_path, store, "a"), replica(tmp_path, store, "b")
    session = await session_on(first)
    await set_level(first, session, "critical")
    answer = await set_level(second, session, level)
    assert answer["error"]["code"] == -32602
    assert await logged(first, session) == ["critical"]


async def test_a_store_that_cannot_answer_relays_no_log_message(tmp_path: Path) -> None:
    """Fail safe: unreadable, the call relays no log message; unwritable, setLevel is refused (-32603)."""
    app = replica(tmp_path, FailingStateStore(), "a")
    session = await session_on(app)
    assert await logged(app, session) == []
    answer = await set_level(app, session, "debug")
    assert answer["error"] == {"code": -32603, "message": "Internal error"}
