"""Validate: the arguments against the manifest's input schema (not the upstream's).

The error tells the caller where and which rule failed (a JSON pointer and a JSON Schema
keyword), never the offending value, and at most a few entries.
"""

from __future__ import annotations

from portcullis.errors import InternalError, InvalidParams
from portcullis.pipeline.context import CallContext, CallResult, Handler, Refusal

_MAX_REPORTED = 5


async def stage(ctx: CallContext, call_next: Handler) -> CallResult:
    if ctx.route is None:  # the chain order guarantees a route; refuse rather than assume
        raise InternalError(detail="validate ran before route")
    errors = []
    for error in ctx.route.validator.iter_errors(ctx.arguments):
        pointer = "".join(f"/{str(part).replace('~', '~0').replace('/', '~1')}" for part in error.absolute_path)
        errors.append({"path": pointer or "/", "rule": str(error.validator)})
        if len(errors) >= _MAX_REPORTED:
            break
    if errors:
        ctx.record.refuse(Refusal.INVALID_ARGUMENTS)
        raise InvalidParams("Invalid arguments for tool", data={"errors": errors},
                            detail=f"{len(errors)} schema violation(s)")
    return await call_next(ctx)
