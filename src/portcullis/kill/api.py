"""The responders' kill-switch API, served on the admin listener.

Every request is authenticated exactly as an MCP request is (the gateway's authenticator: issuers,
audience, revocation) and allowed only for callers matching ``admin.responders`` (caller patterns such
as ``role:oncall``); an empty list admits nobody. The Host/Origin guard runs in front (transport.admin).
A ``POST`` must say ``Content-Type: application/json``, even with no body: a browser cannot send that
cross-site without a preflight, so no HTML form can set or lift a switch. Authentication, the body's
bounds and the answers are :mod:`portcullis.transport.admin_json`'s, shared by every admin API.

=======  ===============================  ==============================================================
GET      ``/kill-switches``               ``{"active": [...], "recent": [...]}`` (recent: newest 100)
POST     ``/kill-switches``               body ``{"kind", "target", "reason", "expires_at"?}`` → the switch
POST     ``/kill-switches/<id>/lift``     body ``{"reason"}`` → the lifted switch
=======  ===============================  ==============================================================

Answers are JSON; errors are ``{"error": "<fixed text>"}`` with 400, 401, 403, 404, 405, 413, 415, 500 or 503.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from typing import Any

import anyio

from portcullis.identity.principal import Principal
from portcullis.kill.model import KillSwitchInputError
from portcullis.kill.runtime import KillSwitches
from portcullis.kill.store import KillSwitchStoreUnavailable, UnknownSwitch
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

log = logging.getLogger("portcullis.kill")

MAX_BODY = 4096
_LIFT = re.compile(r"^/kill-switches/(ks_[0-9a-f]{24})/lift$")


def actor_of(principal: Principal) -> str:
    """Who set or lifted a switch, as the audit record names them."""
    who = principal.user_id or principal.agent_id or principal.client_id
    return f"{principal.issuer_name or principal.issuer}:{who}"[:256]


def _errors(exc: Exception) -> Answer | None:
    if isinstance(exc, KillSwitchInputError):
        return 400, {"error": exc.message}
    if isinstance(exc, UnknownSwitch):
        return 404, {"error": "no such active kill switch"}
    if isinstance(exc, KillSwitchStoreUnavailable):
        log.error("kill switch store unavailable", extra={"fields": {"detail": exc.detail}})
        return 503, {"error": "kill switch store unavailable"}
    return None


class KillSwitchApi:
    """ASGI handler for ``/kill-switches…``."""

    def __init__(self, kills: KillSwitches, authenticate: Authenticate, responders: Sequence[str]) -> None:
        self._kills, self._authenticate, self._responders = kills, authenticate, tuple(responders)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, lambda: self._handle(scope, receive), log, _errors)

    async def _handle(self, scope: Scope, receive: Receive) -> Answer:
        path, method = scope["path"], scope["method"]
        lift = _LIFT.match(path)
        if path != "/kill-switches" and lift is None:
            return 404, {"error": "not found"}
        allow(method, *(("GET", "POST") if lift is None else ("POST",)))
        headers = request_headers(scope)
        caller = await authorize(self._authenticate, headers, scope, self._responders, "responders", log)
        if method == "GET":
            store = self._kills.store
            active = await anyio.to_thread.run_sync(store.active, time.time())
            recent = await anyio.to_thread.run_sync(store.history, 100)
            return 200, {"active": [s.to_json() for s in active], "recent": [s.to_json() for s in recent]}
        body: dict[str, Any] = await read_json_object(headers, receive, MAX_BODY)
        if lift is not None:
            lifted = await self._kills.lift(lift.group(1), body.get("reason"), actor_of(caller))  # type: ignore[arg-type]
            return 200, lifted.to_json()
        unknown = set(body) - {"kind", "target", "reason", "expires_at"}
        if unknown:
            return 400, {"error": "unknown field"}
        switch = await self._kills.set(body.get("kind"), body.get("target"), body.get("reason"),  # type: ignore[arg-type]
                                       actor_of(caller), body.get("expires_at"))
        return 201, switch.to_json()
