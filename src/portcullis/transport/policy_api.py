"""The operators' policy API on the admin listener (docs/policy-versions.md).

* ``GET /policy`` — the active version, whether the gateway is degraded (and why), the history;
* ``GET /policy/versions/<id>`` — a stored version's files (``ps-…``, or a decision record's ``pv-…``);
* ``POST /policy/reload`` — body ``{"files": {path: text}, "message": …}`` applies a pushed set
  (``portcullis policy apply DIR``); without ``files`` the gateway re-reads its deployment directory;
* ``POST /policy/rollback`` — body ``{"version": …, "message": …}``; no version: the previous one.
* ``POST /policy/shadow`` — body ``{"version": "ps-…"}`` evaluates that stored version beside the
  active one without enforcing it; ``DELETE /policy/shadow`` stops (:mod:`portcullis.policy.shadow`).

Every request is authenticated like an MCP request and allowed only for callers matching
``admin.operators`` (an empty list admits nobody), as ``/pins``. The author of a change is the
authenticated caller, never a name from the body. A refused change answers 422 with the fixed
reason and the problems (paths relative to the set); errors are ``{"error": "<fixed text>"}``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any

from portcullis.identity.authenticate import AuthFailure
from portcullis.identity.principal import Principal
from portcullis.policy.native import caller_matches
from portcullis.policy.policy_set import MAX_TOTAL_BYTES
from portcullis.policy.reloader import PolicyReloader

log = logging.getLogger("portcullis.admin")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Authenticate = Callable[[Mapping[str, str], Mapping[str, Any]], Awaitable[Principal]]
MAX_BODY = 2 * MAX_TOTAL_BYTES  # JSON escaping can double a text
PREFIX = "/policy"


class _Bad(Exception):
    def __init__(self, status: int, text: str) -> None:
        self.status, self.text = status, text


def author_of(caller: Principal) -> str:
    """Who made a change: the user (and agent) when there is one, else the client."""
    who = caller.user_id or caller.client_id
    return who if caller.agent_id is None else f"{who} via {caller.agent_id}"


class PolicyApi:
    """ASGI handler for ``/policy`` and below."""

    def __init__(self, reloader: PolicyReloader, authenticate: Authenticate, operators: Sequence[str]) -> None:
        self._reloader, self._authenticate, self._operators = reloader, authenticate, tuple(operators)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            status, body = await self._handle(scope, receive)
        except _Bad as bad:
            status, body = bad.status, {"error": bad.text}
        data = json.dumps(body, ensure_ascii=True).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"cache-control", b"no-store"),
                                (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[int, Any]:
        path, method = scope["path"], scope["method"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        try:
            caller = await self._authenticate(headers, scope)
        except AuthFailure as exc:
            return exc.status, {"error": exc.description}
        if not caller_matches(self._operators, caller):
            log.warning("policy API refused: not an operator", extra={"fields": caller.log_fields()})
            return 403, {"error": "forbidden: not one of admin.operators"}
        if path == PREFIX:
            _method(method, "GET")
            return 200, {**self._reloader.status(), "history": await self._reloader.history(50)}
        if path.startswith(PREFIX + "/versions/"):
            _method(method, "GET")
            stored = await self._reloader.fetch(path.removeprefix(PREFIX + "/versions/")[:80])
            if stored is None:
                return 404, {"error": "unknown policy version"}
            return 200, {**stored.summary(), "files": stored.files}
        if path == PREFIX + "/shadow":
            return await self._shadow(method, receive, caller)
        if path not in (PREFIX + "/reload", PREFIX + "/rollback"):
            return 404, {"error": "not found"}
        _method(method, "POST")
        body = await _read_body(receive)
        message = body.get("message", "")
        if path == PREFIX + "/rollback":
            version = body.get("version")
            if version is not None and not isinstance(version, str):
                raise _Bad(400, "version must be a string")
            result = await self._reloader.rollback(version, author_of(caller), message)
        elif "files" in body:
            if not isinstance(body["files"], dict):
                raise _Bad(400, "files must be an object of path to text")
            result = await self._reloader.apply(body["files"], author_of(caller), message)
        else:
            result = await self._reloader.reload_root(author_of(caller), message)
        return (422 if result["status"] == "refused" else 200), result

    async def _shadow(self, method: str, receive: Receive, caller: Principal) -> tuple[int, Any]:
        if method == "DELETE":
            result = await self._reloader.set_shadow(None, author_of(caller))
        else:
            _method(method, "POST")
            version = (await _read_body(receive)).get("version")
            if not isinstance(version, str) or not version:
                raise _Bad(400, "version must be a string")
            result = await self._reloader.set_shadow(version[:80], author_of(caller))
        return (422 if result["status"] == "refused" else 200), result


def _method(method: str, allowed: str) -> None:
    if method != allowed:
        raise _Bad(405, "method not allowed")


async def _read_body(receive: Receive) -> dict[str, Any]:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise _Bad(413, "request body too large")
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _Bad(400, "body must be a JSON object") from None
    if not isinstance(value, dict):
        raise _Bad(400, "body must be a JSON object")
    return value
