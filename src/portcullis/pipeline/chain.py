"""The request pipeline: the one place where the order of stages is declared.

Request stages run top to bottom; anything they do after ``await call_next(ctx)`` runs in
reverse order on the way back. The last element is the forwarder. The transport stage
(bounded body, Host/Origin, JSON-RPC parsing, protocol era) runs before this chain, in
:mod:`portcullis.transport.app`, because it decides whether there is a call at all.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from portcullis.catalog import Catalog
from portcullis.identity.minting import TokenMinter
from portcullis.pipeline.context import CallContext, CallResult, Handler, Stage
from portcullis.pipeline.stages import access_log, forward, route, validate
from portcullis.upstream.registry import UpstreamRegistry


def build_pipeline(catalog: Catalog, upstreams: UpstreamRegistry, minter: TokenMinter, *,
                   default_timeout_s: float) -> Handler:
    """Assemble the ``tools/call`` handler. Each line says why it sits where it does."""
    stages: Sequence[Stage] = (
        # record: outermost, so that exactly one line is written per call, even when a later
        # stage rejects the call or crashes.
        access_log.make_stage(catalog),
        # route: before validate, because the schema to validate against is the manifest's;
        # unknown, unpinned and quarantined tools all fail here identically.
        route.make_stage(catalog),
        # validate: before forward, so the upstream never sees arguments the manifest forbids.
        validate.stage,
    )
    # forward: the terminal handler, over the pooled upstream connection.
    return compose(stages, forward.make_forwarder(upstreams, minter, default_timeout_s=default_timeout_s))


def compose(stages: Sequence[Stage], terminal: Handler) -> Handler:
    """Wrap ``terminal`` in ``stages`` so that ``stages[0]`` runs first."""
    handler = terminal
    for stage in reversed(stages):
        handler = functools.partial(_invoke, stage, handler)
    return handler


async def _invoke(stage: Stage, call_next: Handler, ctx: CallContext) -> CallResult:
    return await stage(ctx, call_next)
