"""``GET /pins`` on the admin listener: each tool's pin against what the running gateway sees.

``portcullis pin --check`` on its own starts a fresh child of each stdio service, which may serve
other definitions than the child the gateway is talking to (a rug pull that only the running
child performs). This endpoint answers from the gateway's own catalog: for every manifest, its
pin, the hash of the live definition the gateway last checked, the state (``serving``,
``unpinned``, ``quarantined``, ``pending``) and whether a change its service announced is still
being verified. It is read by ``portcullis pin --check --gateway URL``.

Every request is authenticated like an MCP request (the gateway's authenticator) and allowed only
for callers matching ``admin.operators``; an empty list admits nobody. Answers are JSON; errors are
``{"error": "<fixed text>"}`` with 401, 403, 405 or 503, never a stack trace or a token.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any

from portcullis.catalog import Catalog
from portcullis.identity.authenticate import AuthFailure
from portcullis.identity.principal import Principal
from portcullis.policy.native import caller_matches

log = logging.getLogger("portcullis.admin")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Authenticate = Callable[[Mapping[str, str], Mapping[str, Any]], Awaitable[Principal]]


class PinsApi:
    """ASGI handler for ``GET /pins``."""

    def __init__(self, catalog: Catalog, authenticate: Authenticate, operators: Sequence[str]) -> None:
        self._catalog, self._authenticate, self._operators = catalog, authenticate, tuple(operators)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status, body = await self._handle(scope)
        data = json.dumps(body, ensure_ascii=True).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"cache-control", b"no-store"),
                                (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})

    async def _handle(self, scope: Scope) -> tuple[int, Any]:
        if scope["method"] != "GET":
            return 405, {"error": "method not allowed"}
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        try:
            caller = await self._authenticate(headers, scope)
        except AuthFailure as exc:
            return exc.status, {"error": exc.description}
        if not caller_matches(self._operators, caller):
            log.warning("pin report refused: not an operator", extra={"fields": caller.log_fields()})
            return 403, {"error": "forbidden: not one of admin.operators"}
        return 200, {"tools": self._catalog.pin_report()}
