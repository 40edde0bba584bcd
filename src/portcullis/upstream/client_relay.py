"""Push-style client requests from a 2025-era upstream leg, relayed to the caller of the call in flight.

A service reached through the SDK client (stdio children, legacy HTTP) may send
``sampling/createMessage``, ``elicitation/create`` or ``roots/list`` while a call runs. The SDK
hands each to a callback of the connection; :class:`ClientRelay` provides them, for one service,
and answers every one (the upstream never hangs):

1. **Attribute.** The request goes to the call it belongs to: the call whose own context the SDK
   ran the callback in (legacy HTTP delivers a request that came on a call's answer stream in that
   call's context), else the one call in flight on the connection. With several calls in flight
   and no way to tell (stdio carries no request reference), or none, it is refused
   (``unattributed``): never sent to a guess.
2. **Screen** (:func:`portcullis.client_requests.screen`): the service's ``client_requests`` allows
   the kind (deny by default), the caller declared it in its session, the request is rebuilt from
   allowed fields and passes the call's output filter.
3. **Ask** the caller on the call's stream (:class:`~portcullis.transport.push.CallPush`): no stream,
   over the bounds, timed out, the call ended, or an answer that is malformed, too large or an error
   is a refusal.
4. **Answer** the upstream with the caller's checked answer, or a JSON-RPC error ``-31040 Client
   request refused`` (no reason: what the caller declared is not the upstream's business).

Each request is recorded on its call (kind, service, outcome, reason; never its content): the
call's outcome record carries them, and ``portcullis_client_requests_total{kind,outcome}`` counts
them. A request with no call to record it on is logged and counted in :data:`unattributed`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mcp import types
from pydantic import ValidationError

from portcullis.client_requests import ELICIT, ROOTS, SAMPLING, kind_of, screen
from portcullis.config.model import ClientRequestsConfig
from portcullis.errors import ClientRequestRefused
from portcullis.transport.push import PUSH, CallPush, PushRefused
from portcullis.transport.session_token import capabilities_of

log = logging.getLogger("portcullis.upstream")

_RESULTS: dict[str, Any] = {SAMPLING: types.CreateMessageResult, ELICIT: types.ElicitResult,
                            ROOTS: types.ListRootsResult}
unattributed = [0]  # client requests refused because no single call in flight could be named


def offers_client_requests(allowed: ClientRequestsConfig) -> bool:
    """Whether the connection declares the client-request capabilities to the service at all: only when
    its ``client_requests`` allows some kind (then every kind is answered, refused ones recorded)."""
    return any((allowed.sampling, allowed.elicitation_form, allowed.elicitation_url, allowed.roots))


class ClientRelay:
    """The SDK client callbacks of one service's connection (see the module docstring)."""

    def __init__(self, service: str, allowed: ClientRequestsConfig,
                 calls: Callable[[], list[CallPush | None]]) -> None:
        self._service = service
        self._allowed = allowed
        self._calls = calls  # the push channels of the calls in flight on the connection (None: a caller without)

    async def sampling(self, context: Any, params: types.CreateMessageRequestParams) -> Any:
        return await self._relay(SAMPLING, params)

    async def elicitation(self, context: Any, params: types.ElicitRequestParams) -> Any:
        return await self._relay(ELICIT, params)

    async def list_roots(self, context: Any) -> Any:
        return await self._relay(ROOTS, None)

    def callbacks(self) -> dict[str, Any]:
        """The keyword arguments of ``mcp.Client`` that install this relay (none when nothing is allowed)."""
        if not offers_client_requests(self._allowed):
            return {}
        return {"sampling_callback": self.sampling, "elicitation_callback": self.elicitation,
                "list_roots_callback": self.list_roots}

    def _attribute(self) -> CallPush | str | None:
        calls = self._calls()
        own = PUSH.get()
        if own is not None and any(own is call for call in calls):
            return own
        if len(calls) == 1:
            return calls[0]
        return "unattributed"

    async def _relay(self, method: str, params: Any) -> Any:
        dumped = params.model_dump(by_alias=True, exclude_none=True, mode="json") if params is not None else {}
        dumped.pop("_meta", None)
        request = {"method": method, "params": dumped}
        kind = kind_of(request) or "unknown"
        push = self._attribute()
        if not isinstance(push, CallPush):
            reason = "unattributed" if push == "unattributed" else "no_stream"
            if push == "unattributed":
                unattributed[0] += 1
            log.info("client request refused", extra={"fields": {"service": self._service, "kind": kind,
                                                                 "reason": reason}})
            return _refused()
        try:
            if push.deliver is None:
                raise PushRefused("no_stream")
            screened = screen(request, allowed=self._allowed, declared=capabilities_of(push.declared),
                              policy=push.policy)
            answer = await push.request(screened["method"], screened["params"])
            result = _RESULTS[method].model_validate(answer)
        except (ClientRequestRefused, PushRefused) as exc:
            push.record(kind, "refused", exc.reason, service=self._service)
            log.info("client request refused", extra={"fields": {"service": self._service, "kind": kind,
                                                                 "reason": exc.reason}})
            return _refused()
        except ValidationError:  # the checked answer is not what the SDK can send: never expected
            push.record(kind, "refused", "answer_malformed", service=self._service)
            return _refused()
        push.record(kind, "relayed", None, service=self._service)
        return result


def _refused() -> types.ErrorData:
    return types.ErrorData(code=ClientRequestRefused.code, message=ClientRequestRefused.message)
