"""The ``tools/call`` checks that also apply to reads: the Rego input of a read, and the limits stage.

:func:`rego_extra` is what a ``resources/read`` or ``prompts/get`` adds to the ``tools/call`` Rego input
(docs/rego.md, "Reads"): the read pipeline's authorize stage
(:func:`portcullis.pipeline.reads.make_authorize`) evaluates the deployment's Rego modules with it, where
``tools/call`` evaluates them, and an evaluation error is a deny (``rego/policy_error``).

:func:`make_limits` applies the deployment's ``authorization.limits`` rules that list the read's method
(``methods: [resources/read]`` / ``[prompts/get]``) to the read's :func:`limit_name`. It runs after
authorize (a refused read consumes no counter) and before audit; a read over a limit gets the same
:class:`~portcullis.errors.PolicyRefused` as a limited ``tools/call`` (``-31020``, ``rule_id``,
``retry_after_s``), and its refused decision is recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from portcullis.errors import InternalError
from portcullis.pipeline.auditing import CallAuditor
from portcullis.pipeline.context import ReadContext
from portcullis.pipeline.hooks import Hooks
from portcullis.pipeline.stages.limits import judge
from portcullis.policy.limits import LimitRule, check_limits
from portcullis.state.interface import StateStore

if TYPE_CHECKING:  # reads.py imports this module: the types only, so there is no import cycle
    from portcullis.pipeline.reads import ReadHandler, ReadResult, ReadStage
    from portcullis.surface import SurfaceEntry


def limit_name(entry: Any) -> str:
    """The name a limit rule's ``tools`` matches for a read: a prompt as exposed (``files.summarize_file``),
    a resource or template as ``<service>.<manifest name>`` (its exposed name is a URI, no rule name)."""
    if entry.kind == "prompt":
        return str(entry.exposed)
    return f"{entry.service}.{entry.loaded.manifest.name}"


def rego_extra(ctx: ReadContext) -> dict[str, Any]:
    """``input.resource`` (a read) or ``input.prompt`` (a get): what the caller named and what the manifest
    says of it. ``input.tool`` holds the manifest's facts as for a tool (``upstream_name`` is the upstream
    URI, URI template or prompt name) and ``input.arguments`` what the native rules see."""
    entry = ctx.entry
    if ctx.method == "resources/read":
        return resource_extra(entry, ctx.target, ctx.upstream_target)
    return {"prompt": {"name": entry.exposed, "upstream_name": entry.upstream, **_common(entry)}}


def resource_extra(entry: SurfaceEntry, uri: str, upstream_uri: str) -> dict[str, Any]:
    """``input.resource`` of a read of ``uri`` (also what a subscription to it is decided on)."""
    return {"resource": {"uri": uri, "upstream_uri": upstream_uri,
                         "template": entry.exposed if entry.kind == "template" else None, **_common(entry)}}


def _common(entry: SurfaceEntry) -> dict[str, Any]:
    manifest = entry.loaded.manifest
    return {"kind": entry.kind, "service": entry.service, "manifest": manifest.name, "owner": manifest.owner,
            "classification": {"input": str(manifest.classification.input),
                               "output": str(manifest.classification.output)}}


def make_limits(rules: Sequence[LimitRule], store: StateStore, clock: Callable[[], float], hooks: Hooks,
                auditor: CallAuditor) -> ReadStage:
    """The limit rules that list the read's method, counted per principal like a tool's (see the module
    docstring); a store that cannot answer is a ``limits/policy_error`` deny (fail closed)."""
    windows = {rule.rule_id: rule.window_s for rule in rules}
    relevant = tuple(rule for rule in rules if set(rule.methods) & {"resources/read", "prompts/get"})

    async def limits(ctx: ReadContext, call_next: ReadHandler) -> ReadResult:
        if ctx.decision is None:
            raise InternalError(detail="read limits ran before authorize")
        if not relevant:
            return await call_next(ctx)
        arguments = {"uri": ctx.upstream_target} if ctx.method == "resources/read" else ctx.arguments
        outcome = await check_limits(relevant, store, tool=limit_name(ctx.entry), principal=ctx.principal,
                                     arguments=arguments, now=clock(), method=ctx.method)
        refusal = judge(outcome, ctx.decision, windows, hooks, {"request_id": ctx.request_id, "method": ctx.method})
        if refusal is None:
            return await call_next(ctx)
        ctx.record.refused_decision = refusal.decision
        await auditor.read_decision(ctx, refusal.decision)
        raise refusal

    return limits
