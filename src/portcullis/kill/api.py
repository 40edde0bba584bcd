"""The responders' kill-switch API, served on the admin listener.

Every request is authenticated exactly as an MCP request is (the gateway's authenticator: issuers,
audience, revocation) and allowed only for callers matching ``admin.responders`` (caller patterns such
as ``role:oncall``); an empty list admits nobody. The Host/Origin guard runs in front (transport.admin).
A ``POST`` must say ``Content-Type: application/json``: a browser cannot send that cross-site without a
preflight, so no HTML form can set or lift a switch.

=======  ===============================  ==============================================================
GET      ``/kill-switches``               ``{"active": [...], "recent": [...]}`` (recent: newest 100)
POST     ``/kill-switches``               body ``{"kind", "target", "reason", "expires_at"?}`` → the switch
POST     ``/kill-switches/<id>/lift``     body ``{"reason"}`` → the lifted switch
=======  ===============================  ==============================================================

Answers are JSON; errors are ``{"error": "<fixed text>"}`` with 400, 401, 403, 404, 405, 413, 415 or 503.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any

import anyio

from portcullis.identity.authenticate import AuthFailure
from portcullis.identity.principal import Principal
from portcullis.kill.model import KillSwitchInputError
from portcullis.kill.runtime import KillSwitches
from portcullis.kill.store import KillSwitchStoreUnavailable, UnknownSwitch
from portcullis.policy.native import caller_matches

log = logging.getLogger("portcullis.kill")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Authenticate = Callable[[Mapping[str, str], Mapping[str, Any]], Awaitable[Principal]]
MAX_BODY = 4096
_LIFT = re.compile(r"^/kill-switches/(ks_[0-9a-f]{24})/lift$")


class _Refused(Exception):
    def __init__(self, status: int, text: str) -> None:
        self.status, self.text = status, text


def actor_of(principal: Principal) -> str:
    """Who set or lifted a switch, as the audit record names them."""
    who = principal.user_id or principal.agent_id or principal.client_id
    return f"{principal.issuer_name or principal.issuer}:{who}"[:256]


class KillSwitchApi:
    """ASGI handler for ``/kill-switches…``."""

    def __init__(self, kills: KillSwitches, authenticate: Authenticate, responders: Sequence[str]) -> None:
        self._kills, self._authenticate, self._responders = kills, authenticate, tuple(responders)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            status, body = await self._handle(scope, receive)
        except _Refused as exc:
            status, body = exc.status, {"error": exc.text}
        except AuthFailure as exc:
            status, body = exc.status, {"error": exc.description}
        except KillSwitchInputError as exc:
            status, body = 400, {"error": exc.message}
        except UnknownSwitch:
            status, body = 404, {"error": "no such active kill switch"}
        except KillSwitchStoreUnavailable as exc:
            log.error("kill switch store unavailable", extra={"fields": {"detail": exc.detail}})
            status, body = 503, {"error": "kill switch store unavailable"}
        data = json.dumps(body, ensure_ascii=True).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"cache-control", b"no-store"),
                                (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[int, Any]:
        path, method = scope["path"], scope["method"]
        lift = _LIFT.match(path)
        if path != "/kill-switches" and lift is None:
            return 404, {"error": "not found"}
        if method not in (("GET", "POST") if lift is None else ("POST",)):
            return 405, {"error": "method not allowed"}
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        caller = await self._authenticate(headers, scope)
        if not caller_matches(self._responders, caller):
            log.warning("kill switch request refused: not a responder", extra={"fields": caller.log_fields()})
            return 403, {"error": "forbidden: not one of admin.responders"}
        if method == "GET":
            store = self._kills.store
            active = await anyio.to_thread.run_sync(store.active, time.time())
            recent = await anyio.to_thread.run_sync(store.history, 100)
            return 200, {"active": [s.to_json() for s in active], "recent": [s.to_json() for s in recent]}
        body = await _json_body(headers, receive)
        if lift is not None:
            lifted = await self._kills.lift(lift.group(1), body.get("reason"), actor_of(caller))  # type: ignore[arg-type]
            return 200, lifted.to_json()
        unknown = set(body) - {"kind", "target", "reason", "expires_at"}
        if unknown:
            return 400, {"error": "unknown field"}
        switch = await self._kills.set(body.get("kind"), body.get("target"), body.get("reason"),  # type: ignore[arg-type]
                                       actor_of(caller), body.get("expires_at"))
        return 201, switch.to_json()


async def _json_body(headers: Mapping[str, str], receive: Receive) -> dict[str, Any]:
    if headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise _Refused(415, "Content-Type must be application/json")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise _Refused(413, "request body too large")
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    try:
        value = json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError):
        raise _Refused(400, "body must be a JSON object") from None
    if not isinstance(value, dict):
        raise _Refused(400, "body must be a JSON object")
    return value
