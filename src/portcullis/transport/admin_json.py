"""What every JSON API on the admin listener shares: who may call, what a body may be, how answers go out.

The approvers' (``/approvals…``), responders' (``/kill-switches…``) and operators' (``/pins``,
``/policy…``) APIs each decide their own routes; the plumbing around them lives here, once, so the
four cannot drift apart:

1. :func:`respond` runs a handler and sends its answer with :func:`send_json`. Every answer is JSON with
   ``Cache-Control: no-store`` (it may carry arguments, pins or policy text); every refusal is
   ``{"error": "<fixed text>"}``: an :class:`~portcullis.identity.authenticate.AuthFailure` with its
   status and description, an :class:`~portcullis.errors.AdminRefused` (or any other
   :class:`~portcullis.errors.TransportError`) with its own, the handler's own errors through its
   ``errors`` mapper, and anything else a 500 ``internal error`` (logged with its traceback for the
   operator, never sent).
2. :func:`authorize` authenticates the bearer exactly as an MCP request is (the gateway's
   authenticator) and admits only callers matching one ``admin.*`` list; an empty list admits nobody.
3. :func:`read_json_object` reads a body of at most ``limit`` bytes (413 past it, counted while it
   arrives, never buffered whole first) that must be declared ``Content-Type: application/json``
   (415: a browser cannot send that cross-site without a preflight, so no HTML form reaches an admin
   API), be UTF-8 and be one JSON object with no key twice, no ``NaN`` or ``Infinity`` and no nesting
   deep enough to exhaust the parser (400). Where ``optional``, an empty body is ``{}`` and needs no
   Content-Type.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any

from portcullis.errors import AdminRefused, TransportError
from portcullis.identity.authenticate import AuthFailure
from portcullis.identity.principal import Principal
from portcullis.policy.native import caller_matches

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Authenticate = Callable[[Mapping[str, str], Mapping[str, Any]], Awaitable[Principal]]
Answer = tuple[int, Any]
#: a handler's own exceptions to an answer; None: not one of its own (then a 500)
ErrorMapper = Callable[[Exception], Answer | None]

MEDIA_TYPE = "application/json"
NOT_AN_OBJECT = "body must be a JSON object"
DUPLICATE_KEY = "body must not repeat a key"
TOO_LARGE = "request body too large"
WRONG_TYPE = "Content-Type must be application/json"
METHOD_NOT_ALLOWED = "method not allowed"
INTERNAL = "internal error"
_HEADERS = [(b"content-type", MEDIA_TYPE.encode()), (b"cache-control", b"no-store")]


def request_headers(scope: Scope) -> dict[str, str]:
    """The request's headers, names lower-cased (the listener already refused a repeated single one)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}


async def send_json(send: Send, status: int, body: Any) -> None:
    data = json.dumps(body, ensure_ascii=True).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [*_HEADERS, (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


async def respond(send: Send, handle: Callable[[], Awaitable[Answer]], log: logging.Logger,
                  errors: ErrorMapper | None = None) -> None:
    """Run ``handle`` and send its answer, or the refusal its exception maps to (see the module docstring)."""
    try:
        status, body = await handle()
    except AuthFailure as exc:  # authentication: 401 / 403 / 503 with its fixed description
        status, body = exc.status, {"error": exc.description}
    except TransportError as exc:
        status, body = exc.status, {"error": exc.message}
    except Exception as exc:
        mapped = errors(exc) if errors is not None else None
        if mapped is None:
            log.exception("admin API request failed")
            mapped = 500, {"error": INTERNAL}
        status, body = mapped
    await send_json(send, status, body)


async def authorize(authenticate: Authenticate, headers: Mapping[str, str], scope: Scope,
                    allowed: Sequence[str], role: str, log: logging.Logger) -> Principal:
    """The authenticated caller if it matches ``admin.<role>`` (``allowed``); else :class:`AdminRefused` 403."""
    caller = await authenticate(headers, scope)
    if not caller_matches(allowed, caller):
        log.warning("admin API request refused: caller not allowed",
                    extra={"fields": {**caller.log_fields(), "allowed": f"admin.{role}"}})
        raise AdminRefused(403, f"forbidden: not one of admin.{role}")
    return caller


def allow(method: str, *allowed: str) -> None:
    """405 unless ``method`` is one of ``allowed``."""
    if method not in allowed:
        raise AdminRefused(405, METHOD_NOT_ALLOWED)


async def read_json_object(headers: Mapping[str, str], receive: Receive, limit: int, *,
                           optional: bool = False) -> dict[str, Any]:
    """The request's body, one JSON object (see the module docstring); :class:`AdminRefused` 400, 413 or 415."""
    media = headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in ("", MEDIA_TYPE):  # refused before a byte of the body is read
        raise AdminRefused(415, WRONG_TYPE)
    raw = await _read_bounded(receive, limit)
    if optional and not raw.strip():
        return {}
    if not media:
        raise AdminRefused(415, WRONG_TYPE)
    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_repeats, parse_constant=_no_constant)
    except _RepeatedKey:
        raise AdminRefused(400, DUPLICATE_KEY) from None
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise AdminRefused(400, NOT_AN_OBJECT) from None
    if not isinstance(value, dict):
        raise AdminRefused(400, NOT_AN_OBJECT)
    return value


async def _read_bounded(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise AdminRefused(413, TOO_LARGE)
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


class _RepeatedKey(ValueError):
    pass


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise _RepeatedKey
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(name)
