"""Audit retention: delete whole checkpointed segments from the start of the chain, and keep what
remains verifiable.

One run of :func:`prune_audit` follows these steps:

1. Choose the newest checkpoint ``K`` that was signed before the cutoff (``now - retention_days``;
   every record up to ``K`` was written before ``K`` was signed), is not the head (the chain
   continues from a record that stays), whose signature verifies with the audit key and whose hash
   is the stored record ``K``'s. None: nothing is pruned.
2. Append a ``retention`` record to the chain, durably, *before* anything is deleted:
   ``{"event": "pruned", "pruned_through": K, "checkpoint_hash": …, "retention_days": …}``, and
   sign a checkpoint that covers it (no checkpoint, no deletion).
3. Delete the records up to ``K`` one checkpointed segment at a time (each deletion ends at a
   stored checkpoint, so the store's lock is held for one segment at most). Checkpoints are kept.

``verify.py`` then starts at the first retained record from the signed hash of the checkpoint just
before it, and accepts the missing start only as far as a ``retention`` record in the verified,
signed part of the chain says it was pruned: records deleted without one (or beyond what one
says, or by a record in the unsigned tail) still fail.
A crash between steps leaves a retention record and records it covers: the next run deletes them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from portcullis.audit.checkpoint import checkpoint_signature_ok
from portcullis.audit.record import AuditRecord, Checkpoint, digest_equal

log = logging.getLogger(__name__)

RETENTION_KIND = "retention"
Record = Callable[[str, str, Mapping[str, Any]], Awaitable[AuditRecord]]  # AuditWriter.record
Sign = Callable[[], Awaitable[Checkpoint | None]]  # Checkpointer.tick(force=True): sign the head now


class PrunableStore(Protocol):
    async def head(self) -> tuple[int, str] | None: ...
    async def read(self, from_index: int, limit: int) -> list[AuditRecord]: ...
    async def checkpoints(self) -> list[Checkpoint]: ...
    async def prune_through(self, index: int) -> int: ...


def segment_ends(checkpoints: list[Checkpoint], first_retained: int, head_index: int, cutoff: float) -> list[int]:
    """Pure: the checkpoint indexes (ascending, unique) at which deletion may stop, oldest first,
    for records from ``first_retained`` on: signed before ``cutoff``, below the head."""
    return sorted({cp.index for cp in checkpoints
                   if cp.ts < cutoff and first_retained <= cp.index < head_index})


async def prune_audit(store: PrunableStore, record: Record, sign: Sign, public_key: Ed25519PublicKey, *,
                      retention_days: float, now: float) -> int:
    """One retention run (see the module steps); returns how many records were deleted."""
    head = await store.head()
    first = await store.read(0, 1)
    if head is None or not first:
        return 0
    checkpoints = await store.checkpoints()
    ends = segment_ends(checkpoints, first[0].index, head[0], now - retention_days * 86400)
    # 1: the newest end whose checkpoint is genuine and pins the stored record
    target: Checkpoint | None = None
    for index in reversed(ends):
        stored = await store.read(index, 1)
        for cp in (c for c in checkpoints if c.index == index):
            if (stored and stored[0].index == index and digest_equal(stored[0].hash, cp.hash)
                    and checkpoint_signature_ok(cp, public_key)):
                target = cp
                break
        if target is not None:
            break
    if target is None:
        return 0
    # 2: on the record before anything goes
    written = await record(RETENTION_KIND, f"retention-{target.index}", {
        "event": "pruned", "pruned_through": target.index, "checkpoint_hash": target.hash,
        "retention_days": retention_days})
    await sign()  # None too when the writer's own checkpointer signed it already
    if not any(cp.index >= written.index and checkpoint_signature_ok(cp, public_key)
               for cp in await store.checkpoints()):
        log.warning("audit retention postponed: the retention record could not be checkpointed")
        return 0
    # 3: one segment at a time, each ending at a checkpoint
    deleted = 0
    for index in ends:
        if index <= target.index:
            deleted += await store.prune_through(index)
    log.info("audit records pruned", extra={"fields": {"pruned_through": target.index, "deleted": deleted,
                                                       "retention_days": retention_days}})
    return deleted
