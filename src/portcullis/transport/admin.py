"""The admin listener: ``/metrics`` (Prometheus), ``/livez`` and ``/readyz`` for operators.

It is a second, separate listener (``admin:`` in ``gateway.yaml``, loopback by default) so that
metrics never share a port with the MCP endpoint that agents reach. The approvers' API
(``/approvals…``, :mod:`portcullis.approvals.api`) and the operators' pin report (``/pins``,
:mod:`portcullis.transport.pins_api`) live here too, authenticated per request.
Otherwise only ``GET`` is served; every other path is 404 and every other verb 405.
The readiness body names services and their state, never configuration or secrets.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Generator, MutableMapping
from typing import Any

import uvicorn

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]
_JSON = [(b"content-type", b"application/json")]


class AdminApp:
    """ASGI app of the admin listener."""

    def __init__(self, *, metrics: Callable[[], tuple[bytes, str]],
                 readiness: Callable[[], tuple[bool, dict[str, Any]]],
                 approvals: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None,
                 pins: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None) -> None:
        self._metrics, self._readiness, self._approvals, self._pins = metrics, readiness, approvals, pins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if self._approvals is not None and (path == "/approvals" or path.startswith("/approvals/")):
            await self._approvals(scope, receive, send)  # authenticated and authorized there
            return
        if self._pins is not None and path == "/pins":
            await self._pins(scope, receive, send)  # authenticated and authorized there
            return
        if path not in ("/metrics", "/livez", "/readyz"):
            await _send(send, 404, _TEXT, b"Not Found")
        elif method not in ("GET", "HEAD"):
            await _send(send, 405, [*_TEXT, (b"allow", b"GET, HEAD")], b"Method Not Allowed")
        elif path == "/metrics":
            body, content_type = self._metrics()
            await _send(send, 200, [(b"content-type", content_type.encode("latin-1"))], body)
        else:
            ready, detail = (True, {}) if path == "/livez" else self._readiness()
            body = json.dumps({"status": "ok" if ready else "starting", **detail}).encode()
            await _send(send, 200 if ready else 503, _JSON, body)


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class AdminServer(uvicorn.Server):
    """A uvicorn server that runs inside the gateway's event loop, beside the main one.

    The main server owns the process's signal handlers; this one must not replace them, so
    ``capture_signals`` is a no-op. It stops when the gateway's background task group is cancelled.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def admin_server(app: AdminApp, host: str, port: int) -> AdminServer:
    config = uvicorn.Config(app, host=host, port=port, lifespan="off", log_level="warning", access_log=False,
                            http="h11", proxy_headers=False, server_header=False, date_header=False)
    return AdminServer(config)
