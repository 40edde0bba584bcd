"""Response cache: answer a repeated read-only call from a stored result instead of forwarding it.

Where it sits: after ``audit`` (every earlier stage — gate, validate, authorize, risk, limits,
approve — has run and the decision record is durable; a hit is only a cheaper forward) and
before the response filter and the forwarder, so what it stores on the way back is the result as
the caller may see it. The audit stage writes the outcome record of a hit like any other, with
``cache: "hit"`` (:attr:`~portcullis.pipeline.context.CallRecord.cache`).

Which calls: a tool whose manifest declares ``cache`` (which the manifest model allows only for
``readOnlyHint: true`` and output that is not Restricted, :func:`portcullis.governance.sinks.cache_refusal`),
whose output classification the gateway's ``response_cache.classifications`` allows, with a
pinned definition. A call that redeems an approval bypasses the cache both ways (an approved
execution is answered by the upstream, and its answer is not served to anyone else).

The key (:func:`cache_key`) is a SHA-256 over the canonical JSON of: the verified principal's
identity (issuer and its configured name, client, user, agent, tenant), the exposed tool name,
the pinned definition hash, the deciding policy version, rule ids and obligations, and the
canonical arguments hash of :func:`portcullis.approvals.model.arguments_hash`. So two callers, two
tenants, a re-pinned tool or a new policy never share an entry.

What is stored: the encoded result, only when it is not ``isError`` and the call record carries no
sensitive-data or injection flag (read defensively: the filter stage may name them differently).
Entries are bytes, decoded afresh on each hit, so no caller can change another's answer.

Failure: the store failing (:class:`~portcullis.state.interface.StateUnavailable`) is a miss, and a
failed store is skipped: the call is forwarded as if there were no cache.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Collection, Mapping
from typing import Any

import orjson

from portcullis.approvals.model import arguments_hash
from portcullis.audit.record import canonical_bytes
from portcullis.governance.sinks import CACHE_SINK, sink_allowed
from portcullis.pipeline.context import CallContext, CallRecord, CallResult, Handler, Stage
from portcullis.state.interface import StateUnavailable
from portcullis.state.response_cache import ResponseCacheStore

log = logging.getLogger("portcullis.cache")

HIT, MISS, BYPASS = "hit", "miss", "bypass"


def cache_key(ctx: CallContext) -> str | None:
    """The partitioned key of this call, or ``None`` when it cannot be cached (no route, decision or pin,
    or arguments that are not canonical JSON)."""
    route, decision = ctx.route, ctx.decision
    if route is None or decision is None:
        return None
    pin = route.manifest.manifest.pin
    if pin is None:
        return None
    p = ctx.principal
    try:
        material = canonical_bytes({
            "who": [p.issuer, p.issuer_name, p.client_id, p.user_id, p.agent_id, p.tenant],
            "tool": route.exposed_name, "pin": pin, "policy": decision.policy_version,
            "rules": list(decision.rule_ids),
            "obligations": [[o.kind, o.pointer] for o in decision.obligations],
            "args": arguments_hash(ctx.arguments),
        })
    except ValueError:
        return None
    return "rc1:" + hashlib.sha256(material).hexdigest()


def flagged(record: CallRecord) -> bool:
    """Whether the output filter (the ``content`` stage, below this one) found a secret, PII or an
    injection in this call's result: such a result is never stored, even redacted."""
    report = record.content
    return report is not None and (report.sensitive or report.injection)


def storable(result: Mapping[str, Any]) -> bool:
    """Only a plain, successful result: not ``isError``, no ``_meta`` flag of the filter."""
    if result.get("isError") is not False:
        return False
    meta = result.get("_meta")
    return not (isinstance(meta, Mapping) and any(k.startswith("io.portcullis/") for k in meta))


def make_stage(store: ResponseCacheStore, clock: Callable[[], float],
               classifications: Collection[str]) -> Stage:
    allowed = frozenset(str(c) for c in classifications)

    async def cache(ctx: CallContext, call_next: Handler) -> CallResult:
        route = ctx.route
        if route is None:
            return await call_next(ctx)
        manifest = route.manifest.manifest
        policy = manifest.cache
        if policy is None:
            return await call_next(ctx)
        output_class = str(manifest.classification.output)
        key = cache_key(ctx)
        # an MRTR retry's answer depends on the caller's inputResponses, not on the arguments alone: never cached
        if (key is None or ctx.approval is not None or ctx.retry_input is not None or output_class not in allowed
                or not sink_allowed(output_class, CACHE_SINK)):
            ctx.record.cache = BYPASS
            return await call_next(ctx)
        try:
            stored = store.get(key, clock())
        except StateUnavailable as exc:
            log.warning("response cache unavailable on read: %s", exc.detail)
            stored = None
        if stored is not None:
            ctx.record.cache = HIT
            result: CallResult = orjson.loads(stored)
            return result
        ctx.record.cache = MISS
        result = await call_next(ctx)
        if storable(result) and not flagged(ctx.record):
            try:
                now = clock()
                store.put(key, orjson.dumps(result), now + policy.ttl_s, now)
            except (StateUnavailable, TypeError) as exc:  # TypeError: not JSON (the audit stage refuses it)
                log.warning("response cache store skipped: %s", getattr(exc, "detail", type(exc).__name__))
        return result

    return cache
