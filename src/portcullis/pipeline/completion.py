"""``completion/complete``: argument suggestions for a prompt or a resource template, stage by stage.

The order is declared in :func:`portcullis.pipeline.chain.build_completion_pipeline` with a reason per
line. A completion is forwarded only for a ``ref/prompt`` naming an exposed prompt, or a ``ref/resource``
naming an exposed resource *template* (its caller-facing, prefixed ``uriTemplate``), that the caller passes
the read gate for and whose pin holds; anything else is refused exactly like an unknown prompt
(``-32602 "Unknown prompt"``) or an unknown resource (``-32602 "Resource not found"``, ``data.uri``), with
the same bytes whatever the reason. The upstream sees its own names (:func:`make_forwarder`).

Bounds, all checked before anything is forwarded (:func:`completion_context`): ``argument.name`` must be
one of the prompt's declared arguments or the template's variables, ``argument.value`` at most
:data:`MAX_ARGUMENT_CHARS` characters, ``context.arguments`` at most :data:`MAX_CONTEXT_ARGUMENTS` string
pairs (undeclared names are dropped). The answer keeps at most :data:`MAX_VALUES` values (the spec's 100;
more sets ``hasMore``), each a string of at most :data:`MAX_VALUE_CHARS`, plus ``total`` and ``hasMore``
when well-formed; the upstream's ``_meta`` and every other member are dropped. Each value then passes the
output filter with the prompt's or template's content policy: a value the filter withholds or changes
(a secret redacted, a hidden character stripped) is dropped, never sent altered. Without a filter
(``content.enabled: false``) no value is sent (fail closed).

Recorded: one log line per completion (outcome, values sent and dropped, never a value) and the metric
``portcullis_completions_total{outcome}``. No audit record: a completion runs nothing and reads no
resource, it is asked per keystroke, and its answer passes the filter; the read or get it leads to is
audited in full.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import anyio

from portcullis.errors import InvalidParams, RpcError, UpstreamFailed
from portcullis.identity.minting import TokenMinter
from portcullis.identity.principal import Principal
from portcullis.pipeline.context import ReadContext
from portcullis.pipeline.reads import ReadHandler, ReadResult, ReadStage, refused_like_unknown, upstream_leg
from portcullis.pipeline.stages.content import OutputFilter
from portcullis.surface import SurfaceCatalog
from portcullis.upstream.registry import UpstreamRegistry

log = logging.getLogger("portcullis.calls")
METHOD = "completion/complete"
REF_PROMPT, REF_RESOURCE = "ref/prompt", "ref/resource"
MAX_VALUES = 100  # CompleteResult.completion.values: "must not exceed 100 items"
MAX_VALUE_CHARS = 1024
MAX_ARGUMENT_CHARS = 1024
MAX_CONTEXT_ARGUMENTS = 32
MAX_REF_CHARS = 2048
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_VARIABLE = re.compile(r"\{([A-Za-z0-9_]{1,64})\}")


def completion_context(params: Mapping[str, Any], *, protocol_version: str, principal: Principal) -> ReadContext:
    """The context of one ``completion/complete``, or InvalidParams naming what is malformed (checked before
    any lookup, so the answer says nothing of what exists). ``target`` is the ref's name or URI as sent;
    ``arguments`` holds ``ref`` (its type), ``argument`` and ``context`` (the context's arguments)."""
    ref = params.get("ref")
    if not isinstance(ref, dict) or ref.get("type") not in (REF_PROMPT, REF_RESOURCE):
        raise InvalidParams("Invalid params: 'ref' must be a ref/prompt or a ref/resource")
    field = "name" if ref["type"] == REF_PROMPT else "uri"
    target = ref.get(field)
    if not isinstance(target, str) or not 0 < len(target) <= MAX_REF_CHARS:
        raise InvalidParams(f"Invalid params: 'ref.{field}' must be a string")
    argument = params.get("argument")
    name = argument.get("name") if isinstance(argument, dict) else None
    value = argument.get("value") if isinstance(argument, dict) else None
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidParams("Invalid params: 'argument.name' must be an argument name")
    if not isinstance(value, str) or len(value) > MAX_ARGUMENT_CHARS:
        raise InvalidParams(f"Invalid params: 'argument.value' must be a string of at most {MAX_ARGUMENT_CHARS} "
                            "characters")
    context = params.get("context")
    given = context.get("arguments") if isinstance(context, dict) else None
    if (context is not None and not isinstance(context, dict)) or (given is not None and not (
            isinstance(given, dict) and len(given) <= MAX_CONTEXT_ARGUMENTS
            and all(isinstance(k, str) and _NAME.fullmatch(k) and isinstance(v, str) and len(v) <= MAX_ARGUMENT_CHARS
                    for k, v in given.items()))):
        raise InvalidParams(f"Invalid params: 'context.arguments' must map at most {MAX_CONTEXT_ARGUMENTS} "
                            f"argument names to strings of at most {MAX_ARGUMENT_CHARS} characters")
    return ReadContext(request_id=uuid.uuid4().hex, method=METHOD, protocol_version=protocol_version,
                       principal=principal, target=target, started_ns=time.perf_counter_ns(),
                       arguments={"ref": ref["type"], "argument": {"name": name, "value": value},
                                  "context": dict(given) if given else None})


def make_record(counted: Callable[[str], None] | None) -> ReadStage:
    """Outermost: one log line and one metric per completion, whatever happens inside."""
    async def record(ctx: ReadContext, call_next: ReadHandler) -> ReadResult:
        outcome, sent = "error", 0
        try:
            result = await call_next(ctx)
            outcome, sent = "ok", len(result["completion"]["values"])
            return result
        except RpcError as exc:
            outcome = ("refused" if exc.message in ("Unknown prompt", "Resource not found") else "invalid_params"
                       if isinstance(exc, InvalidParams) else "timeout" if exc.code == -31003 else "upstream_error")
            raise
        finally:
            if counted is not None:
                counted(outcome)
            log.info("completion", extra={"fields": {
                "request_id": ctx.request_id, "method": METHOD, "ref": ctx.arguments["ref"], "outcome": outcome,
                "name": getattr(ctx.record.read_entry, "exposed", None), "values": sent,
                "duration_ms": round((time.perf_counter_ns() - ctx.started_ns) / 1e6, 3)}})

    return record


def make_route(catalog: SurfaceCatalog) -> ReadStage:
    """The exposed prompt, or the exposed resource template, the ref names; none: refused like unknown."""
    async def route(ctx: ReadContext, call_next: ReadHandler) -> ReadResult:
        if ctx.arguments["ref"] == REF_PROMPT:
            entry = catalog.prompt(ctx.target)
        else:  # a static resource has no arguments to complete: only templates
            entry = next((e for e in catalog.of_kind("template") if e.exposed == ctx.target), None)
        if entry is None:
            raise refused_like_unknown(ctx)  # the same answer the gate and the pin check give
        ctx.record.read_entry = entry
        return await call_next(ctx.evolve(entry=entry, upstream_target=entry.upstream))

    return route


def make_arguments() -> ReadStage:
    """After the gate (a caller that may not see the entry learns nothing of its arguments): the argument
    must be one the prompt declares or a variable of the template; undeclared context arguments are dropped."""
    async def arguments(ctx: ReadContext, call_next: ReadHandler) -> ReadResult:
        entry = ctx.entry
        declared = ({a.name for a in entry.loaded.manifest.arguments} if entry.kind == "prompt"
                    else set(_VARIABLE.findall(entry.upstream)))
        if ctx.arguments["argument"]["name"] not in declared:
            raise InvalidParams("Invalid params: 'argument.name' is not an argument of this reference")
        given = ctx.arguments["context"]
        kept = {k: v for k, v in given.items() if k in declared} if given else None
        return await call_next(ctx.evolve(arguments={**ctx.arguments, "context": kept or None}))

    return arguments


def make_content(output_filter: OutputFilter | None) -> ReadStage:
    """Each value through the output filter under the entry's content policy; a value withheld or changed is
    dropped (a suggestion is sent as the upstream made it, or not at all). No filter: no value (fail closed)."""
    from portcullis.content.output_filter import filter_message

    async def content(ctx: ReadContext, call_next: ReadHandler) -> ReadResult:
        result = await call_next(ctx)
        completion = result["completion"]
        values: list[str] = completion["values"]
        if output_filter is None:
            kept: list[str] = []
        else:
            policy = output_filter.policy(ctx.entry.loaded.manifest, ctx.entry.exposed, ctx.principal)

            def run() -> list[str]:
                return [v for v in values if (out := filter_message(v, METHOD, policy)).value == v
                        and not out.blocked]

            kept = await anyio.to_thread.run_sync(run) if sum(map(len, values)) > 16_384 else run()
        if len(kept) != len(values):
            log.info("completion values dropped by the output filter", extra={"fields": {
                "request_id": ctx.request_id, "dropped": len(values) - len(kept),
                "filter": "on" if output_filter is not None else "off"}})
            completion = {**completion, "values": kept}
        return {"completion": completion}

    return content


def make_forwarder(upstreams: UpstreamRegistry, minter: TokenMinter, catalog: SurfaceCatalog,
                   default_timeout_s: float) -> ReadHandler:
    """``completion/complete`` over the service's connection, in the upstream's names, with a token minted for
    it (never the caller's); the answer cut to the bounds in the module docstring."""
    async def forward(ctx: ReadContext) -> ReadResult:
        entry = ctx.entry
        conn, timeout, token = upstream_leg(ctx, upstreams, minter, catalog, default_timeout_s)
        ref = ({"type": REF_PROMPT, "name": entry.upstream} if entry.kind == "prompt"
               else {"type": REF_RESOURCE, "uri": entry.upstream})
        answer = await conn.complete(ref, ctx.arguments["argument"], ctx.arguments["context"], timeout_s=timeout,
                                     actor_token=token)
        return {"completion": bounded(answer.get("completion"))}

    return forward


def bounded(completion: Any) -> dict[str, Any]:
    """The allow-listed, bounded ``completion`` object of an upstream's answer, or UpstreamFailed."""
    if not isinstance(completion, dict) or not isinstance(completion.get("values"), list):
        raise UpstreamFailed(detail="malformed completion/complete result")
    raw = completion["values"]
    values = [v for v in raw[:MAX_VALUES] if isinstance(v, str) and len(v) <= MAX_VALUE_CHARS]
    out: dict[str, Any] = {"values": values}
    total = completion.get("total")
    if isinstance(total, int) and not isinstance(total, bool) and 0 <= total <= 2**53:
        out["total"] = total
    has_more = completion.get("hasMore")
    if len(raw) > MAX_VALUES:
        out["hasMore"] = True
    elif isinstance(has_more, bool):
        out["hasMore"] = has_more
    return out
