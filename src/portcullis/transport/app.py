"""The transport stage: the gateway's ASGI application and its ``/mcp`` endpoint.

Per POST, in order: Host and Origin allow-lists; POST only; ``Content-Type: application/json``;
an ``Accept`` that admits JSON; authentication (a verified bearer token or client certificate
becomes the actor principal, else 401 with a ``WWW-Authenticate`` challenge); the body read
under ``limits.max_body_bytes`` (a declared ``Content-Length`` over the limit is refused before
reading, and reading stops the moment the limit is passed); strict JSON (UTF-8, no duplicate
keys, bounded depth); one JSON-RPC message;
era detection; then the era's own checks (sealed session for 2025-era, header/body agreement for
2026-07-28) before :class:`~portcullis.transport.protocol.Dispatcher` sees the request.

Every answer is ``application/json``, except a ``tools/call`` from a caller that accepts
``text/event-stream`` for which a progress or log notification is relayed before the result: that
answer is an event stream, the notifications then the result (:meth:`GatewayApp._streamed`,
:mod:`portcullis.notifications`). A 2025-era caller's stream also carries the client requests
(sampling, elicitation, roots) the gateway asks it during the call, and the caller's JSON-RPC
response to one is routed to it (:mod:`portcullis.transport.push`). A 2026-07-28 caller of such a
call that goes away mid-call cancels it (:mod:`portcullis.transport.disconnect`). Errors go through
:func:`portcullis.errors.to_wire`; an unexpected exception is logged for the operator and answered
with a bare -32603.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import Any

import anyio

from portcullis.audit.attempts import Attempt, AttemptSink, clip
from portcullis.cancellation import DEPARTURE, Departure
from portcullis.errors import (
    BadHost,
    BodyTooLarge,
    ForbiddenOrigin,
    HeaderMismatch,
    InvalidParams,
    InvalidRequest,
    MethodNotAllowed,
    MissingSession,
    NotAcceptable,
    ParseError,
    PortcullisError,
    SubscriptionLimit,
    UnknownSession,
    UnsupportedMediaType,
    UnsupportedVersion,
    to_wire,
)
from portcullis.governance.sinks import values_withheld
from portcullis.identity.authenticate import Authenticator, AuthFailure
from portcullis.identity.principal import Principal, principal_key
from portcullis.notifications import CURRENT, CallStream, StreamBounds
from portcullis.subscriptions import (
    ACKNOWLEDGED,
    SUBSCRIPTION_ID_META,
    StreamBusy,
    SubscriptionHub,
    listen_filter,
    session_key,
)
from portcullis.transport.disconnect import SEND_FAILURES, Watch, run_watched, start_watch
from portcullis.transport.http_guard import client_key, peer_address
from portcullis.transport.jsonrpc import DEFAULT_MAX_VALUES, loads_strict, parse_message
from portcullis.transport.mrtr_bridge import bridged
from portcullis.transport.origin_guard import OriginGuard
from portcullis.transport.protocol import (
    Dispatcher,
    Request,
    check_modern,
    encode_response,
    initialize_result,
    is_modern,
    negotiate,
)
from portcullis.transport.push import PUSH, CallPush, PushRegistry
from portcullis.transport.session_token import SessionSealer, capabilities_of, declared_kinds
from portcullis.transport.streaming import SSE_HEADERS, LogLevels, accepts_sse, sse_event, sse_raw, wanted
from portcullis.transport.subscription_stream import serve as serve_stream

log = logging.getLogger("portcullis.transport")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

MCP_PATH = "/mcp"
_SINGLE_HEADERS = frozenset({"host", "origin", "content-type", "content-length", "mcp-session-id",
                             "mcp-protocol-version", "mcp-method", "mcp-name", "authorization"})
_MAX_CAPABILITIES_BYTES = 4096
_JSON = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
_NO_HEADERS: dict[str, str] = {}
_SUBSCRIBE_METHODS = frozenset({"resources/subscribe", "resources/unsubscribe"})


class _Dispatched:
    """A streamed call's outcome: its result, or the error it raised."""

    __slots__ = ("error", "result")

    def __init__(self) -> None:
        self.result: dict[str, Any] = {}
        self.error: Exception | None = None


class _Answer(Exception):
    """Internal: an early plain answer (status, text); ``reason``: the attempt it is, if any."""

    def __init__(self, status: int, text: str, reason: str | None = None) -> None:
        self.status, self.text, self.reason = status, text, reason


#: Refusals by exception type (most specific first) as attempt reasons (audit/attempts.py).
_REASONS: tuple[tuple[type[PortcullisError], str], ...] = (
    (BadHost, "host_refused"), (ForbiddenOrigin, "origin_refused"), (MethodNotAllowed, "method_not_allowed"),
    (UnsupportedMediaType, "unsupported_media_type"), (NotAcceptable, "not_acceptable"),
    (BodyTooLarge, "body_too_large"), (ParseError, "parse_error"), (InvalidRequest, "invalid_request"),
    (InvalidParams, "invalid_params"), (HeaderMismatch, "header_mismatch"),
    (UnsupportedVersion, "unsupported_version"), (MissingSession, "missing_session"),
    (UnknownSession, "unknown_session"))


def attempt_reason(exc: BaseException) -> str | None:
    """The attempt reason of a refusal, from its type (and an auth failure's status and reason code)."""
    if isinstance(exc, AuthFailure):
        if exc.status == 403:
            return "insufficient_scope"
        if exc.status == 503:
            return "auth_unavailable"
        return {"no credentials": "missing_credentials", "revoked": "revoked"}.get(exc.detail, "invalid_token")
    if isinstance(exc, _Answer):
        return exc.reason
    return next((reason for kind, reason in _REASONS if isinstance(exc, kind)), None)


def _headers(scope: Scope, max_count: int) -> dict[str, str]:
    """Header names (lower-cased) to values; repeats of a list-valued header are joined with ", ".

    Linear in the headers: repeats are collected and joined once at the end (joining as they come
    copied the growing value every time). The HTTP layer already bounds the count; this bound
    holds under any other server too.
    """
    raw = scope.get("headers", ())
    if len(raw) > max_count:
        raise _Answer(431, "Request Header Fields Too Large", "header_limits")
    seen: dict[str, str] = {}
    repeats: dict[str, list[str]] | None = None
    for raw_name, raw_value in raw:
        key = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if key not in seen:
            seen[key] = value
            continue
        if key in _SINGLE_HEADERS:
            raise _Answer(400, f"Duplicate {key} header", "invalid_request")
        if repeats is None:
            repeats = {}
        parts = repeats.get(key)
        if parts is None:
            repeats[key] = [seen[key], value]
        else:
            parts.append(value)
    if repeats:
        for key, parts in repeats.items():
            seen[key] = ", ".join(parts)
    return seen


class GatewayApp:
    """ASGI entry point. ``readiness`` returns (ready, detail) for ``/healthz``."""

    def __init__(self, *, dispatcher: Dispatcher, sealer: SessionSealer, guard: OriginGuard,
                 authenticator: Authenticator, protected_resource_metadata: dict[str, Any],
                 jwks: Callable[[], dict[str, Any]], max_body_bytes: int, max_json_depth: int,
                 max_json_values: int = DEFAULT_MAX_VALUES, max_header_count: int = 100,
                 background: Callable[[], Coroutine[Any, Any, None]] | None = None,
                 readiness: Callable[[], tuple[bool, dict[str, Any]]] | None = None,
                 attempts: AttemptSink | None = None, stream_bounds: StreamBounds | None = None,
                 notification_counted: Callable[[str], None] | None = None,
                 watch_json_disconnect: bool = False, push: PushRegistry | None = None,
                 log_levels: LogLevels | None = None, subscriptions: SubscriptionHub | None = None,
                 ready_gate_s: float = 0.0) -> None:
        self._dispatcher = dispatcher
        # a ``--workers`` worker on a shared socket: start accepting only once ready (or after this many seconds),
        # so a replacement worker never answers "Unknown tool" for a service it has not connected yet
        self._ready_gate_s = ready_gate_s
        self._sealer = sealer
        self._guard = guard
        self._authenticator = authenticator
        self._prm = json.dumps(protected_resource_metadata).encode()
        self._jwks = jwks
        self._max_body = max_body_bytes
        self._max_depth = max_json_depth
        self._max_values = max_json_values
        self._max_headers = max_header_count
        self._background = background
        self._readiness = readiness or (lambda: (True, {}))
        self._attempts = attempts
        self._stream_bounds = stream_bounds or StreamBounds()
        self._notification_counted = notification_counted  # the metric of streamed notifications' outcomes
        self._levels = log_levels or LogLevels()  # logging/setLevel, per 2025-era session and principal (state store)
        # also cancel a 2026-07-28 call answered as JSON when its caller goes away (docs/decisions.md)
        self._watch_json = watch_json_disconnect
        self._push = push or PushRegistry()  # client requests waiting for 2025-era callers' answers (push.py)
        self._subscriptions = subscriptions  # GET streams and subscriptions/listen (transport/subscription_stream.py)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers = _NO_HEADERS  # what a refusal before the headers were read is recorded with (never mutated)
        try:
            headers = _headers(scope, self._max_headers)
            self._guard.check(headers.get("host"), headers.get("origin"))
            path = scope["path"]
            if path in ("/healthz", "/livez"):
                await self._health(path, send)
                return
            if path in _PRM_PATHS or path == "/.well-known/jwks.json":
                body = self._prm if path in _PRM_PATHS else json.dumps(self._jwks()).encode()
                await _send(send, 200, [(b"content-type", b"application/json")], body)
                return
            if path != MCP_PATH:
                raise _Answer(404, "Not Found")
            if scope["method"] == "GET" and self._subscriptions is not None:
                answer = await self._get_stream(headers, scope, receive, send)
                if answer is None:
                    return
                status, extra, body = answer
                await _send(send, status, extra, body)
                return
            if scope["method"] != "POST":
                raise MethodNotAllowed(detail=f"{scope['method'][:16]} on /mcp")
            answer = await self._post(headers, receive, scope, send)
            if answer is None:  # answered as an event stream already
                return
            status, extra, body = answer
        except AuthFailure as failure:
            self._attempt(failure, failure.status, scope, headers)
            log.info("authentication refused", extra={"fields": {"status": failure.status,
                                                                  "reason": failure.detail}})
            body = json.dumps({"error": failure.error, "error_description": failure.description}).encode()
            await _send(send, failure.status, [(b"content-type", b"application/json"),
                                               (b"www-authenticate", failure.challenge.encode())], body)
            return
        except _Answer as answer:
            self._attempt(answer, answer.status, scope, headers)
            await _send(send, answer.status, [(b"content-type", b"text/plain; charset=utf-8")],
                        answer.text.encode())
            return
        except PortcullisError as exc:
            wire = to_wire(exc)
            self._attempt(exc, wire.status, scope, headers)
            await _send(send, wire.status, [(b"content-type", b"text/plain; charset=utf-8"),
                                            *((k.encode(), v.encode()) for k, v in wire.headers.items())],
                        wire.text.encode())
            return
        await _send(send, status, extra, body)

    async def _post(self, headers: dict[str, str], receive: Receive, scope: Scope,
                    send: Send) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type != "application/json":
            raise UnsupportedMediaType
        accept = headers.get("accept")
        if accept is not None and not any(a.split(";", 1)[0].strip() in ("application/json", "*/*",
                                          "application/*") for a in accept.lower().split(",")):
            raise NotAcceptable
        # authenticate before reading the body: an unauthenticated caller costs no buffering
        principal = await self._authenticator.authenticate(headers, scope)
        try:
            body = await self._read_body(headers, receive)
        except (_Answer, BodyTooLarge) as exc:
            self._attempt(exc, exc.status, scope, headers, principal)
            raise
        version = headers.get("mcp-protocol-version")
        modern = is_modern(version)
        request_id = None
        message = None
        envelope = True  # until dispatch: a refusal here is an attempt; after it, the pipeline audits
        try:
            value = loads_strict(body, max_depth=self._max_depth, max_values=self._max_values)
            message = parse_message(value)
            request_id = message.id
            declared: frozenset[str] = frozenset()
            if modern:
                req = Request(message, version or "", True, headers, principal, source=peer_address(scope))
                check_modern(req)
                extra: list[tuple[bytes, bytes]] = []
            else:
                req, extra, declared = self._legacy(message, headers, principal, peer_address(scope))
            if message.kind != "request":
                if message.kind == "response" and not modern:  # maybe the answer to a pushed client request
                    self._push.answer(value, session_id=headers.get("mcp-session-id"),
                                      principal_key=principal_key(principal), size=len(body))
                return 202, [], b""  # every response alike, matched or not (transport/push.py)
            if modern and message.method == "subscriptions/listen" and self._subscriptions is not None:
                await self._listen(req, receive, send, self._subscriptions)  # a refusal is an attempt record
                return None
            if not modern and message.method == "initialize":
                result = initialize_result(req.protocol_version)
            elif not modern and message.method == "logging/setLevel":  # the caller's own, never sent upstream
                result = await self._levels.set(self._level_key(req), message.params,  # (gone from 2026-07-28: 404)
                                                expires_at=self._sealer.open(headers["mcp-session-id"]).expires_at)
            else:
                envelope = message.method in _SUBSCRIBE_METHODS  # no pipeline audits these: a refusal is an attempt
                streamed = None
                push = None if modern or message.method != "tools/call" else self._push.call(
                    session_id=headers.get("mcp-session-id"), principal_key=principal_key(principal),
                    declared=declared)  # a 2025-era caller may be asked client requests on its call's stream
                bound = PUSH.set(push) if push is not None else None
                try:
                    if message.method == "tools/call" and accepts_sse(headers.get("accept")):
                        stored = None if modern else await self._levels.get(self._level_key(req))
                        token, level = wanted(message.params, modern=modern, stored=stored)
                        if token is not None or level is not None or push is not None:
                            streamed = await self._streamed(req, send, extra, token, level, receive, push)
                            if streamed is None:
                                return None
                    if streamed is None and modern and self._watch_json:
                        streamed = await self._watched(req, receive)
                        if streamed is None:
                            return None  # the caller went away: its call was cancelled, nothing to answer
                    result = streamed.result if streamed is not None else await self._dispatch(req, push)
                finally:
                    if bound is not None and push is not None:
                        PUSH.reset(bound)
                        push.close()
            return 200, _JSON + extra, encode_response(request_id, result)
        except PortcullisError as exc:
            wire = to_wire(exc, request_id=request_id, modern=modern)
            status = 400 if wire.status == 200 and _is_envelope_error(exc) else wire.status
            self._attempt(exc, status, scope, headers, principal, message, record=envelope)
            if wire.body is None:
                raise
            return status, _JSON, json.dumps(wire.body, separators=(",", ":")).encode()
        except Exception as exc:
            if values_withheld(exc):  # a call of a tool whose data may not reach logs (governance.sinks)
                log.error("unexpected error while handling a request", extra={"fields": {
                    "error": type(exc).__name__, "values": "withheld"}})
            else:
                log.exception("unexpected error while handling a request")
            wire = to_wire(RuntimeError(), request_id=request_id, modern=modern)
            return 500 if modern else 200, _JSON, json.dumps(wire.body, separators=(",", ":")).encode()

    async def _dispatch(self, req: Request, push: CallPush | None) -> dict[str, Any]:
        """The dispatcher's answer; a 2025-era ``tools/call`` (``push`` set) answers an ``input_required``
        result by asking the caller itself, round by round (:mod:`portcullis.transport.mrtr_bridge`)."""
        if push is None:
            return await self._dispatcher.dispatch(req)
        return await bridged(self._dispatcher.dispatch_result, req, push)

    async def _get_stream(self, headers: dict[str, str], scope: Scope, receive: Receive,
                          send: Send) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        """A 2025-era session's GET stream (list changes and its resource updates); 2026-07-28 has none (405).
        Only the session's own principal may open it, one at a time (a second gets 409)."""
        hub = self._subscriptions
        if hub is None or is_modern(headers.get("mcp-protocol-version")):
            raise MethodNotAllowed(detail="GET on /mcp")
        if not accepts_sse(headers.get("accept")):
            raise NotAcceptable
        principal = await self._authenticator.authenticate(headers, scope)
        try:
            session_id, _ = self._session(headers, principal)
        except (MissingSession, UnknownSession) as exc:
            wire = to_wire(exc)
            self._attempt(exc, wire.status, scope, headers, principal)
            return wire.status, _JSON, json.dumps(wire.body, separators=(",", ":")).encode()
        try:
            sub = hub.open_session_stream(session_key(session_id), principal)
        except StreamBusy:
            raise _Answer(409, "Conflict: a stream is already open for this session") from None
        await serve_stream(hub, sub, receive, send)
        return None

    async def _listen(self, req: Request, receive: Receive, send: Send, hub: SubscriptionHub) -> None:
        """``subscriptions/listen`` (2026-07-28): acknowledged with the honored filter, then the stream."""
        if not accepts_sse(req.headers.get("accept")):
            raise NotAcceptable
        lists, uris = listen_filter(req.message.params)
        request_id = req.message.id
        try:
            sub, honored = await hub.listen(req.principal, request_id, lists, uris)
        except StreamBusy:
            raise SubscriptionLimit(detail="too many open streams") from None
        tag = {SUBSCRIPTION_ID_META: request_id}
        ack = {"jsonrpc": "2.0", "method": ACKNOWLEDGED, "params": {"notifications": honored, "_meta": tag}}
        last = {"jsonrpc": "2.0", "id": request_id, "result": {"resultType": "complete", "_meta": tag}}
        await serve_stream(hub, sub, receive, send, first=(ack,), last=last)

    def _level_key(self, req: Request) -> str:
        return LogLevels.key(req.headers.get("mcp-session-id"), principal_key(req.principal))

    async def _watched(self, req: Request, receive: Receive) -> _Dispatched | None:
        """Dispatch a 2026-07-28 request beside a watch on its caller's connection; None: the caller
        went away and the call was cancelled (:mod:`portcullis.transport.disconnect`)."""
        watched = await run_watched(lambda: self._dispatcher.dispatch(req), receive)
        if not watched.finished:
            return None
        if watched.error is not None:
            raise watched.error
        done = _Dispatched()
        done.result = watched.value or {}
        return done

    async def _streamed(self, req: Request, send: Send, extra: list[tuple[bytes, bytes]], token: Any,
                        level: str | None, receive: Receive, push: CallPush | None = None) -> _Dispatched | None:
        """Run a ``tools/call`` whose notifications (and client requests) the caller may read as a stream.

        The first relayed notification or pushed client request (:mod:`portcullis.transport.push`)
        starts the ``text/event-stream`` answer; the result (or the error) is its last event, and
        ``None`` is returned. A call that relayed nothing returns its result (or raises its error)
        for the ordinary ``application/json`` answer. A 2026-07-28 caller that goes away
        (``http.disconnect``, or a send that fails) cancels the call, and ``None`` is returned with
        nothing more sent (:mod:`portcullis.transport.disconnect`).
        """
        sender, receiver = anyio.create_memory_object_stream[dict[str, Any]](self._stream_bounds.max_per_call)
        stream = CallStream(sender.send_nowait, progress_token=token, log_level=level, bounds=self._stream_bounds,
                            counted=self._notification_counted)
        if push is not None:  # client requests go on the same stream, in order with the notifications
            push.deliver, push.stream = sender.send_nowait, stream
        done = _Dispatched()
        departure = Departure()
        watch: list[Watch] = []

        async def run() -> None:
            CURRENT.set(stream)  # this task's own context: the connectors bind the call to this stream
            DEPARTURE.set(departure)
            try:
                done.result = await self._dispatch(req, push)
            except Exception as exc:  # reported to the caller below, in whichever form the answer takes
                done.error = exc
            finally:
                if push is not None:
                    push.close()  # what still waits for the caller is refused: the call is over
                stream.close()
                sender.close()
                for each in watch:
                    each.stop()

        started = lost = False
        async with anyio.create_task_group() as tg:
            if req.modern:
                watch.append(start_watch(tg.cancel_scope, receive, departure))
            tg.start_soon(run)
            async with receiver:
                async for note in receiver:
                    if lost:
                        continue  # a 2025-era caller that went away: its call runs on, the rest is discarded
                    try:
                        if not started:
                            started = True
                            await send({"type": "http.response.start", "status": 200,
                                        "headers": [*SSE_HEADERS, *extra]})
                        await send({"type": "http.response.body", "body": sse_event(note), "more_body": True})
                    except SEND_FAILURES:
                        lost = True
                        if req.modern:
                            departure.gone = True
                            tg.cancel_scope.cancel()
        for each in watch:
            each.stop()  # (run() stopped it already, unless it never ran)
        if departure.gone or lost:
            return None  # nothing more can reach the caller
        if not started:
            if done.error is not None:
                raise done.error
            return done
        if done.error is None:
            final = sse_raw(encode_response(req.message.id, done.result))
        else:
            final = sse_event(self._stream_error(done.error, req))
        await send({"type": "http.response.body", "body": final, "more_body": False})
        return None

    @staticmethod
    def _stream_error(exc: Exception, req: Request) -> Any:
        """The error event that ends a stream: the same JSON-RPC error a JSON answer would carry."""
        wire = to_wire(exc if isinstance(exc, PortcullisError) else RuntimeError(), request_id=req.message.id,
                       modern=req.modern)
        if not isinstance(exc, PortcullisError):
            log.error("unexpected error while streaming a call", extra={"fields": {"error": type(exc).__name__}})
        if wire.body is None:  # an HTTP-level refusal cannot be sent once the stream started: a bare -32603
            wire = to_wire(RuntimeError(), request_id=req.message.id, modern=req.modern)
        return wire.body

    def _attempt(self, exc: BaseException, status: int, scope: Scope, headers: dict[str, str],
                 principal: Principal | None = None, message: Any = None, *, record: bool = True) -> None:
        """Tell the attempt sink of a refusal, once: ``_post`` marks what it handled (``record=False``:
        an error after dispatch, which the pipeline audits) so the outer handler leaves it alone."""
        if self._attempts is None or getattr(exc, "attempt_noted", False):
            return
        exc.attempt_noted = True  # type: ignore[attr-defined]
        reason = attempt_reason(exc)
        if reason is None or not record:
            return
        try:
            peer = scope.get("client")
            source = client_key(tuple(peer) if isinstance(peer, list) else peer)
            if message is not None:
                method = clip(message.method)
                params = message.params if isinstance(message.params, dict) else {}
                tool = clip(params.get("name")) if method == "tools/call" else None
                named = "body"
            else:
                method, tool = clip(headers.get("mcp-method")), clip(headers.get("mcp-name"))
                named = "headers" if method is not None or tool is not None else "unread"
            claims, who, hashed = None, None, None
            if principal is not None:
                claims, who = principal.to_claims(), principal_key(principal)
            elif (credential := headers.get("authorization")) is not None:
                hashed = who = self._attempts.token_hash(credential.strip())
            detail = clip(exc.detail, 64) if isinstance(exc, AuthFailure) else None
            self._attempts.note(Attempt(source, reason, status, method, tool, named, claims, hashed, detail, who))
        except Exception:  # never turn a refusal into a 500
            log.exception("refused request could not be recorded as an attempt")

    def _legacy(self, message: Any, headers: dict[str, str], principal: Principal,
                source: str | None = None) -> tuple[Request, list[tuple[bytes, bytes]], frozenset[str]]:
        """The request in its sealed session; the session id to set (initialize); the client-request
        kinds the caller declared (``initialize``'s capabilities, sealed into the session)."""
        if message.method == "initialize" and message.kind == "request":
            params = message.params
            negotiated = negotiate(params.get("protocolVersion"))
            caps = params.get("capabilities", {})
            if not isinstance(caps, dict) or len(json.dumps(caps)) > _MAX_CAPABILITIES_BYTES:
                raise InvalidParams("Invalid params: capabilities must be a small object")
            sealed = self._sealer.seal(negotiated, caps, principal_key(principal))
            return (Request(message, negotiated, False, headers, principal, source=source),
                    [(b"mcp-session-id", sealed.encode())],
                    declared_kinds(caps))
        _, session = self._session(headers, principal)
        # A handshake-era version header other than the negotiated one is tolerated, as the SDK does;
        # an unknown version never reaches here: it selects the 2026-07-28 path and gets -32022.
        caps = capabilities_of(session.declared)  # what the session declared: the kinds sealed in it
        return (Request(message, session.protocol_version, False, headers, principal, caps, source), [],
                session.declared)

    def _session(self, headers: dict[str, str], principal: Principal) -> tuple[str, Any]:
        """The request's sealed 2025-era session (its id and contents), which must be ``principal``'s."""
        session_id = headers.get("mcp-session-id")
        if session_id is None:
            raise MissingSession
        session = self._sealer.open(session_id)
        if session.principal_key != principal_key(principal):  # a session is not a credential
            raise UnknownSession(detail="session belongs to another principal")
        return session_id, session

    async def _read_body(self, headers: dict[str, str], receive: Receive) -> bytes:
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise _Answer(400, "Invalid Content-Length header", "invalid_request")
            if int(declared) > self._max_body:
                raise BodyTooLarge(detail=f"declared {declared} bytes")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Answer(400, "Client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                raise BodyTooLarge(detail="streamed body over the limit")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _health(self, path: str, send: Send) -> None:
        ready, detail = (True, {}) if path == "/livez" else self._readiness()
        body = json.dumps({"status": "ok" if ready else "starting", **detail}).encode()
        await _send(send, 200 if ready else 503, _JSON, body)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        async with anyio.create_task_group() as tg:
            if self._background is not None:
                tg.start_soon(self._background)
            with anyio.move_on_after(self._ready_gate_s):  # past it: serve as a single gateway does, not ready
                while self._ready_gate_s > 0 and not self._readiness()[0]:
                    await anyio.sleep(0.05)
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            tg.cancel_scope.cancel()
        await send({"type": "lifespan.shutdown.complete"})


_PRM_PATHS = frozenset({"/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"})


def _is_envelope_error(exc: PortcullisError) -> bool:
    """Parse errors and malformed envelopes are HTTP 400 in both eras."""
    return getattr(exc, "code", None) in (-32700, -32600) or exc.__class__.__name__ == "MissingSession"


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
