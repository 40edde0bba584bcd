"""The admin listener: ``/metrics`` (Prometheus), ``/livez``, ``/readyz`` and ``/version`` for operators.

It is a second, separate listener (``admin:`` in ``gateway.yaml``, loopback by default) so that
metrics never share a port with the MCP endpoint that agents reach. The approvers' API
(``/approvals…``, :mod:`portcullis.approvals.api`) and the operators' pin report (``/pins``,
:mod:`portcullis.transport.pins_api`), the responders' kill switches (``/kill-switches…``,
:mod:`portcullis.kill.api`) and policy versions (``/policy…``, :mod:`portcullis.transport.policy_api`) live
here too, authenticated per request; so does the web console (``/console…``, :mod:`portcullis.console`,
when ``console.enabled``), with its own sessions and CSRF checks.
Otherwise only ``GET`` is served; every other path is 404 and every other verb 405.
The readiness body names services and their state, never configuration or secrets; ``/version`` names the
build (commit, policy revision, SBOM digest: :mod:`portcullis.build_info`) and the active policy version.

Every request, the approvers' API included, first passes the same Host and Origin allow-lists as
the front door (:class:`~portcullis.transport.origin_guard.OriginGuard`, ``admin.allowed_hosts``
and ``admin.allowed_origins``): a loopback listener is still reachable from a browser through DNS
rebinding, so an unknown Host is 421 and a foreign Origin 403. A header sent twice where one is
meant (Host, Origin, Authorization, Content-Type, Content-Length) is 400, so the guard and the
app always read the same value. The listener runs the same HTTP-layer bounds as the MCP one
(:mod:`portcullis.transport.http_guard`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Generator, MutableMapping
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from portcullis.errors import TransportError
from portcullis.transport.origin_guard import OriginGuard

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]
_JSON = [(b"content-type", b"application/json")]
_SINGLE = frozenset({b"host", b"origin", b"authorization", b"content-type", b"content-length"})


class _Refused(Exception):
    def __init__(self, status: int, text: bytes) -> None:
        self.status, self.text = status, text


def _host_and_origin(scope: Scope, max_count: int) -> tuple[str | None, str | None]:
    """The request's Host and Origin; :class:`_Refused` when its headers are too many or repeat one
    that must be single."""
    raw = scope.get("headers", ())
    if len(raw) > max_count:
        raise _Refused(431, b"Request Header Fields Too Large")
    seen: dict[bytes, bytes] = {}
    for name, value in raw:
        name = name.lower()
        if name in _SINGLE:
            if name in seen:
                raise _Refused(400, b"Duplicate " + name + b" header")
            seen[name] = value
    host, origin = seen.get(b"host"), seen.get(b"origin")
    return (None if host is None else host.decode("latin-1"), None if origin is None else origin.decode("latin-1"))


class AdminApp:
    """ASGI app of the admin listener."""

    def __init__(self, *, metrics: Callable[[], tuple[bytes, str]],
                 readiness: Callable[[], tuple[bool, dict[str, Any]]],
                 approvals: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None,
                 guard: OriginGuard, max_header_count: int = 100,
                 pins: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None,
                 kill_switches: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None,
                 policy: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None,
                 console: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None,
                 version: Callable[[], dict[str, Any]] | None = None) -> None:
        self._metrics, self._readiness, self._approvals, self._pins = metrics, readiness, approvals, pins
        self._version = version
        self._kill_switches, self._policy, self._console = kill_switches, policy, console
        self._guard, self._max_headers = guard, max_header_count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        try:
            self._guard.check(*_host_and_origin(scope, self._max_headers))
        except _Refused as refused:
            await _send(send, refused.status, _TEXT, refused.text)
            return
        except TransportError as refused:
            await _send(send, refused.status, _TEXT, refused.message.encode())
            return
        path, method = scope["path"], scope["method"]
        if self._approvals is not None and (path == "/approvals" or path.startswith("/approvals/")):
            await self._approvals(scope, receive, send)  # authenticated and authorized there
            return
        if self._pins is not None and path == "/pins":
            await self._pins(scope, receive, send)  # authenticated and authorized there
            return
        if self._kill_switches is not None and (path == "/kill-switches" or path.startswith("/kill-switches/")):
            await self._kill_switches(scope, receive, send)  # authenticated and authorized there
            return
        if self._policy is not None and (path == "/policy" or path.startswith("/policy/")):
            await self._policy(scope, receive, send)  # authenticated and authorized there
            return
        if self._console is not None and (path == "/console" or path.startswith("/console/")):
            await self._console(scope, receive, send)  # sessions, CSRF and authorization there
            return
        if path not in ("/metrics", "/livez", "/readyz") and (path != "/version" or self._version is None):
            await _send(send, 404, _TEXT, b"Not Found")
        elif method not in ("GET", "HEAD"):
            await _send(send, 405, [*_TEXT, (b"allow", b"GET, HEAD")], b"Method Not Allowed")
        elif path == "/metrics":
            body, content_type = self._metrics()
            await _send(send, 200, [(b"content-type", content_type.encode("latin-1"))], body)
        elif path == "/version" and self._version is not None:
            await _send(send, 200, _JSON, json.dumps(self._version()).encode())
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


def admin_server(app: AdminApp, host: str, port: int,
                 http: type[HttpToolsProtocol] | str = "httptools") -> AdminServer:
    """``http`` is the protocol (class); the gateway passes its guarded one
    (:func:`~portcullis.transport.http_guard.guarded_protocol`)."""
    config = uvicorn.Config(app, host=host, port=port, lifespan="off", log_level="warning", access_log=False,
                            http=http, ws="none", proxy_headers=False, server_header=False, date_header=False)
    return AdminServer(config)
