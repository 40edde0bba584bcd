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
A body must say ``Content-Type: application/json`` (an empty one may be left out); authentication,
the body's bounds and the answers are :mod:`portcullis.transport.admin_json`'s, shared by every admin API.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from portcullis.errors import AdminRefused
from portcullis.identity.principal import Principal
from portcullis.policy.policy_set import MAX_TOTAL_BYTES
from portcullis.policy.reloader import PolicyReloader
from portcullis.transport.admin_json import (
    Answer,
    Authenticate,
    Receive,
    Scope,
    Send,
    allow,
    authorize,
    read_json_object,
    request_headers,
    respond,
)

log = logging.getLogger("portcullis.admin")

MAX_BODY = 2 * MAX_TOTAL_BYTES  # JSON escaping can double a text
PREFIX = "/policy"


def author_of(caller: Principal) -> str:
    """Who made a change: the user (and agent) when there is one, else the client."""
    who = caller.user_id or caller.client_id
    return who if caller.agent_id is None else f"{who} via {caller.agent_id}"


class PolicyApi:
    """ASGI handler for ``/policy`` and below."""

    def __init__(self, reloader: PolicyReloader, authenticate: Authenticate, operators: Sequence[str]) -> None:
        self._reloader, self._authenticate, self._operators = reloader, authenticate, tuple(operators)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, lambda: self._handle(scope, receive), log)

    async def _handle(self, scope: Scope, receive: Receive) -> Answer:
        path, method = scope["path"], scope["method"]
        headers = request_headers(scope)
        caller = await authorize(self._authenticate, headers, scope, self._operators, "operators", log)
        if path == PREFIX:
            allow(method, "GET")
            return 200, {**self._reloader.status(), "history": await self._reloader.history(50)}
        if path.startswith(PREFIX + "/versions/"):
            allow(method, "GET")
            stored = await self._reloader.fetch(path.removeprefix(PREFIX + "/versions/")[:80])
            if stored is None:
                return 404, {"error": "unknown policy version"}
            return 200, {**stored.summary(), "files": stored.files}
        if path == PREFIX + "/shadow":
            return await self._shadow(method, headers, receive, caller)
        if path not in (PREFIX + "/reload", PREFIX + "/rollback"):
            return 404, {"error": "not found"}
        allow(method, "POST")
        body = await read_json_object(headers, receive, MAX_BODY, optional=True)
        message = body.get("message", "")
        if path == PREFIX + "/rollback":
            version = body.get("version")
            if version is not None and not isinstance(version, str):
                raise AdminRefused(400, "version must be a string")
            result = await self._reloader.rollback(version, author_of(caller), message)
        elif "files" in body:
            if not isinstance(body["files"], dict):
                raise AdminRefused(400, "files must be an object of path to text")
            result = await self._reloader.apply(body["files"], author_of(caller), message)
        else:
            result = await self._reloader.reload_root(author_of(caller), message)
        return (422 if result["status"] == "refused" else 200), result

    async def _shadow(self, method: str, headers: dict[str, str], receive: Receive, caller: Principal) -> Answer:
        if method == "DELETE":
            result = await self._reloader.set_shadow(None, author_of(caller))
        else:
            allow(method, "POST")
            version = (await read_json_object(headers, receive, MAX_BODY, optional=True)).get("version")
            if not isinstance(version, str) or not version:
                raise AdminRefused(400, "version must be a string")
            result = await self._reloader.set_shadow(version[:80], author_of(caller))
        return (422 if result["status"] == "refused" else 200), result
