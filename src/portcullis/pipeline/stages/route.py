"""Route: the caller's tool name to a served, pinned manifest entry.

Only an exact match of a name in the current catalog snapshot resolves. A name that is unknown,
belongs to an unpinned or quarantined tool, or merely looks like a served one (case, homoglyphs,
zero-width or trailing characters) gets the same answer: ``Unknown tool``. A tool whose service
announced a change waits here for the re-check (:meth:`~portcullis.catalog.Catalog.settle`):
released, it is routed; quarantined or not verified in time, it is unknown.
"""

from __future__ import annotations

from portcullis.catalog import Catalog
from portcullis.errors import InvalidParams
from portcullis.pipeline.context import CallContext, CallResult, Handler, Refusal, Stage


def make_stage(catalog: Catalog) -> Stage:
    async def route(ctx: CallContext, call_next: Handler) -> CallResult:
        found = await catalog.settle(ctx.tool_name) if catalog.unsettled(ctx.tool_name) else catalog.lookup(
            ctx.tool_name)
        if found is None:
            ctx.record.refuse(Refusal.UNKNOWN_TOOL)
            raise InvalidParams("Unknown tool", detail=f"no served tool named {ctx.tool_name!r}")
        ctx.record.route = found
        return await call_next(ctx.evolve(route=found))

    return route
