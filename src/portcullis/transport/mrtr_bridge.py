"""MRTR for 2025-era callers: the gateway answers an ``input_required`` result by asking the caller itself.

A 2026-07-28 upstream asks for input by returning ``{resultType: "input_required", inputRequests,
requestState}``; a 2025-era caller cannot take that result (its SDK rejects it). For such a caller
the gateway acts as the MRTR client, as the reference recipe does (reference §9.3):

1. dispatch the request through the whole pipeline; the ``client_input`` stage has already screened
   each input request (the service's ``client_requests``, the caller's declared capabilities sealed
   in its session, the call's output filter) and sealed the upstream's ``requestState`` for this
   caller (:mod:`portcullis.pipeline.client_input`);
2. push each input request to the caller on its call's stream (:class:`~portcullis.transport.push.CallPush`)
   and collect the checked answers;
3. dispatch the *same* request again with ``inputResponses`` and the sealed ``requestState``, so
   every round passes authentication (the same POST), gate, policy, limits and the audit records
   again, and the sealed state is checked against this caller, method and parameters;
4. stop after ``max_rounds`` rounds (``too_many_rounds``).

A request the caller could not be asked, or did not answer (no stream, timeout, malformed answer,
an error, the bounds), ends the call with ``-31040 Client request refused`` and the reason; the
result of the last round is never shown to a 2025-era caller as ``input_required``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from portcullis.client_requests import kind_of
from portcullis.errors import ClientRequestRefused, UpstreamFailed
from portcullis.transport.protocol import Request
from portcullis.transport.push import CallPush, PushRefused

MAX_ROUNDS = 4
INPUT_REQUIRED = "input_required"
Dispatch = Callable[[Request], Awaitable[dict[str, Any]]]


def is_input_required(result: Any) -> bool:
    return isinstance(result, Mapping) and result.get("resultType") == INPUT_REQUIRED


async def bridged(dispatch: Dispatch, req: Request, push: CallPush | None, *,
                  max_rounds: int = MAX_ROUNDS) -> dict[str, Any]:
    """Dispatch ``req``; while the result is ``input_required``, ask the caller and dispatch again."""
    result = await dispatch(req)
    rounds = 0
    while is_input_required(result):
        rounds += 1
        if push is None:  # not a call that can carry a push channel: nothing to ask on
            raise ClientRequestRefused("no_stream", detail="input_required for a 2025-era caller without a stream")
        if rounds > max_rounds:
            raise ClientRequestRefused("too_many_rounds", detail=f"more than {max_rounds} input rounds")
        requests = result.get("inputRequests") or {}
        if not isinstance(requests, Mapping):
            raise UpstreamFailed(detail="input_required without an inputRequests object")
        responses = {key: await _ask(push, request) for key, request in requests.items()}
        params = {**req.message.params, "inputResponses": responses}
        state = result.get("requestState")
        if isinstance(state, str):
            params["requestState"] = state
        else:
            params.pop("requestState", None)
        req = dataclasses.replace(req, message=dataclasses.replace(req.message, params=params))
        if push.stream is not None:  # the forwarder closed it when the round's answer came back
            push.stream.reopen()
        result = await dispatch(req)
    return result


async def _ask(push: CallPush, request: Any) -> dict[str, Any]:
    """One screened input request pushed to the caller: its checked answer, or the call's refusal."""
    kind = (kind_of(request) if isinstance(request, Mapping) else None) or "unknown"
    method = request.get("method") if isinstance(request, Mapping) else None
    params = request.get("params") if isinstance(request, Mapping) else None
    if not isinstance(method, str) or not isinstance(params, Mapping | None):
        raise UpstreamFailed(detail="malformed input request")
    try:
        answer = await push.request(method, params or {})
    except PushRefused as exc:
        push.record(kind, "refused", exc.reason, service=None)
        raise ClientRequestRefused(exc.reason, kind=kind, detail=f"bridged input request: {exc.reason}") from None
    push.record(kind, "relayed", None, service=None)
    return answer
