"""``GET /pins`` on the admin listener: each tool's pin against what the running gateway sees.

``portcullis pin --check`` on its own starts a fresh child of each stdio service, which may serve
other definitions than the child the gateway is talking to (a rug pull that only the running
child performs). This endpoint answers from the gateway's own catalog: for every manifest, its
pin, the hash of the live definition the gateway last checked, the state (``serving``,
``unpinned``, ``quarantined``, ``pending``) and whether a change its service announced is still
being verified. It is read by ``portcullis pin --check --gateway URL``.

Every request is authenticated like an MCP request (the gateway's authenticator) and allowed only
for callers matching ``admin.operators``; an empty list admits nobody (:mod:`portcullis.transport.admin_json`).
Answers are JSON; errors are ``{"error": "<fixed text>"}`` with 401, 403, 405, 500 or 503, never a stack
trace or a token.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from portcullis.catalog import Catalog
from portcullis.transport.admin_json import (
    Answer,
    Authenticate,
    Receive,
    Scope,
    Send,
    allow,
    authorize,
    request_headers,
    respond,
)

log = logging.getLogger("portcullis.admin")


class PinsApi:
    """ASGI handler for ``GET /pins``."""

    def __init__(self, catalog: Catalog, authenticate: Authenticate, operators: Sequence[str]) -> None:
        self._catalog, self._authenticate, self._operators = catalog, authenticate, tuple(operators)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, lambda: self._handle(scope), log)

    async def _handle(self, scope: Scope) -> Answer:
        allow(scope["method"], "GET")
        await authorize(self._authenticate, request_headers(scope), scope, self._operators, "operators", log)
        return 200, {"tools": self._catalog.pin_report()}
