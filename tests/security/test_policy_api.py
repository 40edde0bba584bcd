"""Hostile requests to the operators' policy API (/policy…): every one refused with a fixed answer, nothing changed.

The API runs over the real reloader (the demo deployment, in-memory version store); only the
authenticator is a stand-in (authentication itself is tested with the gateway's identity tests):
``Bearer ops`` is an operator, ``Bearer agent`` an authenticated non-operator, anything else 401.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

import pytest

from portcullis.identity.authenticate import AuthFailure
from portcullis.identity.principal import Principal
from portcullis.transport.policy_api import MAX_BODY, PolicyApi
from tests.unit.test_policy_reloader import Rig, demo  # noqa: F401 - the module-scoped demo copy

OPERATORS = ("user:ops",)


async def _authenticate(headers: Mapping[str, str], scope: Mapping[str, Any]) -> Principal:
    who = headers.get("authorization", "")
    if who == "Bearer ops":
        return Principal.from_claims({"client_id": "cli", "user_id": "ops", "auth_method": "bearer", "issuer": "dev"})
    if who == "Bearer agent":
        return Principal.from_claims({"client_id": "cli", "user_id": "alice", "agent_id": "billing-bot",
                                      "auth_method": "bearer", "issuer": "dev"})
    raise AuthFailure(401, "invalid_token", "authentication required", "Bearer")


async def _request(api: PolicyApi, method: str, path: str, body: bytes = b"", who: str = "ops",
                   chunks: int = 1, content_type: str = "application/json") -> tuple[int, Any]:
    sent: list[MutableMapping[str, Any]] = []
    parts = [body[i::chunks] for i in range(chunks)] if chunks > 1 else [body]
    queue = [{"type": "http.request", "body": part, "more_body": i < len(parts) - 1} for i, part in enumerate(parts)]

    async def receive() -> dict[str, Any]:
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    headers = [(b"authorization", f"Bearer {who}".encode())]
    if body:  # as every client sends a body (httpx's json=, the CLI)
        headers.append((b"content-type", content_type.encode()))
    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    await api(scope, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"])


@pytest.fixture
async def api(demo: Path, tmp_path: Path) -> tuple[PolicyApi, Rig]:  # noqa: F811
    rig = Rig(demo, tmp_path / "scratch")
    await rig.reloader.start()
    return PolicyApi(rig.reloader, _authenticate, OPERATORS), rig


HOSTILE = [
    ("POST", "/policy/reload", b"not json", 400, "body must be a JSON object"),
    ("POST", "/policy/reload", b"[1, 2]", 400, "body must be a JSON object"),
    ("POST", "/policy/reload", b'"files"', 400, "body must be a JSON object"),
    ("POST", "/policy/reload", b'{"files": ["tools/a.yml"]}', 400, "files must be an object of path to text"),
    ("POST", "/policy/reload", b'{"files": "x"}', 400, "files must be an object of path to text"),
    ("POST", "/policy/reload", b'{"files": {"../../etc/cron.d/x.yml": "x"}}', 422, None),
    ("POST", "/policy/reload", b'{"files": {"tools/a/b.yml": 7}}', 422, None),
    ("POST", "/policy/reload", b"\xff\xfe", 400, "body must be a JSON object"),
    ("POST", "/policy/rollback", b'{"version": 7}', 400, "version must be a string"),
    ("POST", "/policy/rollback", b'{"version": {"$ne": ""}}', 400, "version must be a string"),
    ("POST", "/policy/rollback", b'{"version": "\' OR 1=1 --"}', 422, None),
    ("GET", "/policy/reload", b"", 405, "method not allowed"),
    ("DELETE", "/policy", b"", 405, "method not allowed"),
    ("PUT", "/policy/versions/ps-1", b"", 405, "method not allowed"),
    ("GET", "/policy/versions/' OR 1=1 --", b"", 404, "unknown policy version"),
    ("GET", "/policy/versions/" + "x" * 5000, b"", 404, "unknown policy version"),
    ("GET", "/policy/../admin", b"", 404, "not found"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "error"), HOSTILE)
async def test_hostile_requests_are_refused_and_change_nothing(api: tuple[PolicyApi, Rig], method: str, path: str,
                                                               body: bytes, status: int, error: str | None) -> None:
    handler, rig = api
    got, answer = await _request(handler, method, path, body)
    assert got == status, answer
    if error is not None:
        assert answer == {"error": error}
    else:
        assert answer["status"] == "refused" and answer["reason"]
    assert rig.active.current is rig.engine


async def test_an_oversized_body_is_refused_before_it_is_parsed(api: tuple[PolicyApi, Rig]) -> None:
    handler, _rig = api
    got, answer = await _request(handler, "POST", "/policy/reload", b"x" * (MAX_BODY + 1), chunks=4)
    assert (got, answer) == (413, {"error": "request body too large"})


@pytest.mark.parametrize(("who", "status"), [("", 401), ("forged", 401), ("agent", 403)])
@pytest.mark.parametrize(("method", "path"), [("GET", "/policy"), ("POST", "/policy/reload"),
                                              ("POST", "/policy/rollback"), ("GET", "/policy/versions/ps-1")])
async def test_only_operators_get_in(api: tuple[PolicyApi, Rig], who: str, status: int, method: str,
                                     path: str) -> None:
    handler, rig = api
    got, answer = await _request(handler, method, path, b'{"files": {}}' if method == "POST" else b"", who=who)
    assert got == status and set(answer) == {"error"}
    assert rig.active.current is rig.engine and rig.store.history()[0].action == "applied"


async def test_the_author_is_the_caller_never_the_body(api: tuple[PolicyApi, Rig]) -> None:
    handler, rig = api
    body = json.dumps({"files": rig.b, "message": "m\x1b[2J\nx", "author": "mallory"}).encode()
    got, answer = await _request(handler, "POST", "/policy/reload", body)
    assert got == 200 and answer["status"] == "applied"
    event = rig.store.history()[0]
    assert (event.author, event.message) == ("ops", "m[2Jx")
