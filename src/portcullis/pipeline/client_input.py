"""MRTR through the gateway: an upstream's ``input_required`` result, screened, sealed, relayed; and the retry.

One stage, right around the forwarder of ``tools/call`` (:func:`make_stage`) and of ``resources/read`` /
``prompts/get`` (:func:`make_read_stage`), does both directions (its place is declared in
:mod:`portcullis.pipeline.chain`):

**On the way out** (a retry: the caller sent back the gateway's sealed ``requestState``, which the
dispatcher put in ``ctx.retry_input``), after every other stage ran again for this new request
(authentication, gate, policy on the arguments, limits, the decision record):

1. open the envelope (:class:`~portcullis.request_state.RequestStateSealer`): it must be genuine,
   unexpired, sealed for this caller, this method, this target, this service and these params, and the
   ``inputResponses`` must answer only keys that were asked; otherwise the one
   :class:`~portcullis.request_state.RequestStateRefused` (-32602), its precise reason on the record;
2. hand the forwarder the upstream's own ``requestState`` and the responses (``ctx.upstream_input``).

Every call also tells the forwarder which client capabilities to declare upstream: those the caller
declared that the service's ``client_requests`` allows (:func:`upstream_capabilities`), so an upstream
is never told a capability the caller lacks or the service may not use.

**On the way back**, for an ``input_required`` result:

3. each input request is screened (:func:`portcullis.client_requests.screen_with_report`) against the
   service's ``client_requests``, the caller's declared capabilities and the call's filter policy; the
   first refused one refuses the whole call (:class:`~portcullis.errors.ClientRequestRefused`, -31040),
   since the upstream cannot go on without it;
4. the upstream's ``requestState`` is sealed with the binding, the next round number and the keys asked;
5. the call record notes the round and the kinds and keys relayed, or what was refused and why (never a
   value), for the outcome record; the caller gets ``{resultType: "input_required", inputRequests,
   requestState}`` and nothing else of the upstream's answer.

A 2025-era caller's result is the same value: the transport decides what to do with it (today it refuses
it, -31004; a bridge can push each screened request over the caller's session).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from portcullis.client_requests import declared_capability, kind_of, screen_with_report
from portcullis.config.model import ClientRequestsConfig
from portcullis.content.output_filter import FilterPolicy
from portcullis.errors import ClientRequestRefused, InternalError, UpstreamFailed
from portcullis.identity.principal import principal_key
from portcullis.pipeline.context import CallContext, ReadContext, Stage
from portcullis.request_state import (
    MAX_UPSTREAM_STATE_CHARS,
    Binding,
    RequestStateRefused,
    RequestStateSealer,
    check_keys,
    params_digest,
)

if TYPE_CHECKING:
    from portcullis.pipeline.reads import ReadStage

INPUT_REQUIRED = "input_required"
AllowedOf = Callable[[str], ClientRequestsConfig]  # service name -> its client_requests block


class ScreenedInput(dict[str, Any]):
    """An ``input_required`` result this stage screened and sealed: the content stages pass it as it is (its
    text already passed the filter with the call's policy); any other ``input_required`` is filtered whole."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class RetryInput:
    """What a caller's retry carries: the gateway's sealed ``requestState`` and its ``inputResponses``."""

    request_state: str
    responses: Any = None


@dataclass(frozen=True, slots=True)
class UpstreamInput:
    """What the forwarder sends upstream: the upstream's own state and the responses of a retry (None on a
    first call), and the client capabilities to declare."""

    request_state: str | None = None
    responses: Mapping[str, Any] | None = None
    capabilities: Mapping[str, Any] | None = None


def deny_all() -> ClientInputRelay:
    """A relay that refuses every kind (a pipeline built without the deployment's settings), with a
    per-process random key."""
    return ClientInputRelay(RequestStateSealer([os.urandom(32)], clock=time.time),
                            lambda _service: ClientRequestsConfig())


def is_input_required(result: Any) -> bool:
    return isinstance(result, Mapping) and result.get("resultType") == INPUT_REQUIRED


def upstream_capabilities(declared: Mapping[str, Any] | None, allowed: ClientRequestsConfig) -> dict[str, Any]:
    """The client capabilities to declare upstream: what the caller declared and the service may use."""
    caps: dict[str, Any] = {}
    if allowed.sampling and declared_capability("sampling", declared):
        caps["sampling"] = {}
    modes: dict[str, Any] = {mode: {} for kind, mode in (("elicitation_form", "form"), ("elicitation_url", "url"))
             if getattr(allowed, kind) and declared_capability(kind, declared)}
    if modes:
        caps["elicitation"] = modes
    if allowed.roots and declared_capability("roots", declared):
        caps["roots"] = {}
    return caps


def upstream_input_required(raw: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """An upstream's ``input_required`` result checked: its input requests and its own state."""
    requests, state = raw.get("inputRequests") or {}, raw.get("requestState")
    if not isinstance(requests, Mapping) or not check_keys(list(requests)) \
            or not all(isinstance(r, Mapping) for r in requests.values()):
        raise UpstreamFailed(detail="malformed inputRequests in an input_required result")
    if state is not None and (not isinstance(state, str) or len(state) > MAX_UPSTREAM_STATE_CHARS):
        raise UpstreamFailed(detail="requestState of an input_required result is not a bounded string")
    if not requests and state is None:
        raise UpstreamFailed(detail="input_required result with neither inputRequests nor requestState")
    return dict(requests), state


class ClientInputRelay:
    """The stage's decisions, shared by the tool and read pipelines (see the module docstring)."""

    def __init__(self, sealer: RequestStateSealer, allowed_of: AllowedOf) -> None:
        self._sealer = sealer
        self._allowed_of = allowed_of

    def outgoing(self, retry: RetryInput | None, binding: Binding, declared: Mapping[str, Any] | None,
                 record: Any) -> tuple[UpstreamInput, int]:
        """Steps 1-2: what the forwarder sends upstream, and this try's round (0: not a retry)."""
        capabilities = upstream_capabilities(declared, self._allowed_of(binding.service))
        if retry is None:
            return UpstreamInput(capabilities=capabilities), 0
        try:
            opened = self._sealer.open(retry.request_state, binding, retry.responses)
        except RequestStateRefused as exc:
            record.client_input = {"state_refused": exc.reason}
            raise
        responses = dict(retry.responses) if isinstance(retry.responses, Mapping) else None
        return UpstreamInput(opened.upstream_state, responses, capabilities), opened.round

    def incoming(self, raw: Mapping[str, Any], binding: Binding, round_: int, declared: Mapping[str, Any] | None,
                 policy: FilterPolicy | None, record: Any) -> dict[str, Any]:
        """Steps 3-5: the ``input_required`` result the caller gets."""
        requests, upstream_state = upstream_input_required(raw)
        allowed = self._allowed_of(binding.service)
        relayed: dict[str, Any] = {}
        noted: list[dict[str, Any]] = []
        for key, request in requests.items():
            try:
                screened, report = screen_with_report(request, allowed=allowed, declared=declared, policy=policy)
            except ClientRequestRefused as exc:
                record.client_input = {"round": round_ + 1, "relayed": noted,
                                       "refused": {"key": key, "kind": exc.kind, "reason": exc.reason}}
                raise
            relayed[key] = screened
            entry: dict[str, Any] = {"key": key, "kind": kind_of(screened)}
            if report is not None and (report.findings or report.injection_rules or report.links_neutralised):
                entry["content"] = report.to_json()
            noted.append(entry)
        record.client_input = {"round": round_ + 1, "relayed": noted}
        try:
            sealed = self._sealer.seal(binding, upstream_state=upstream_state, keys=list(relayed), round_=round_ + 1)
        except RequestStateRefused as exc:  # past the round cap: the upstream keeps asking
            record.client_input = {"round": round_ + 1, "relayed": [], "refused": {"reason": exc.reason}}
            raise UpstreamFailed(detail="upstream asked for input more rounds than allowed") from None
        out = ScreenedInput(resultType=INPUT_REQUIRED, requestState=sealed)
        if relayed:
            out["inputRequests"] = relayed
        return out


def tool_binding(ctx: CallContext) -> Binding:
    route = ctx.route
    if route is None:
        raise InternalError(detail="client_input ran before route")
    return Binding(principal_key(ctx.principal), "tools/call", route.exposed_name, route.service,
                   params_digest({"name": ctx.tool_name, "arguments": ctx.arguments}))


def read_binding(ctx: ReadContext) -> Binding:
    params = {"uri": ctx.target} if ctx.method == "resources/read" else {"name": ctx.target,
                                                                        "arguments": ctx.arguments}
    return Binding(principal_key(ctx.principal), ctx.method, ctx.target, ctx.entry.service, params_digest(params))


def make_stage(relay: ClientInputRelay, policy_of: Callable[[CallContext], FilterPolicy | None]) -> Stage:
    """The ``tools/call`` stage; ``policy_of`` gives the call's output-filter policy (None: no filter)."""
    stage: Stage = _stage(relay, tool_binding, policy_of)
    return stage


def make_read_stage(relay: ClientInputRelay, policy_of: Callable[[ReadContext], FilterPolicy | None]) -> ReadStage:
    """The read pipeline's stage (``resources/read``, ``prompts/get``)."""
    stage: ReadStage = _stage(relay, read_binding, policy_of)
    return stage


def _stage(relay: ClientInputRelay, binding_of: Callable[[Any], Binding],
           policy_of: Callable[[Any], FilterPolicy | None]) -> Any:
    async def client_input(ctx: Any, call_next: Callable[[Any], Any]) -> dict[str, Any]:
        binding = binding_of(ctx)
        upstream, round_ = relay.outgoing(ctx.retry_input, binding, ctx.client_capabilities, ctx.record)
        result: dict[str, Any] = await call_next(ctx.evolve(upstream_input=upstream))
        if not is_input_required(result):
            return result
        return relay.incoming(result, binding, round_, ctx.client_capabilities, policy_of(ctx), ctx.record)

    return client_input
