"""Reading an incident's records from the audit store (SQLite or PostgreSQL, through an
:class:`~portcullis.audit.reader.AuditReader`), and verifying the range read.

Steps (all inside one read transaction of a read-only store, so the records, the checkpoints
and the verdict describe one moment):

1. Find the range: the first and last index of the records whose time is in the window.
2. Walk the whole chain from its start (or its attested pruned start) with the project's
   :class:`~portcullis.audit.verify.ChainVerifier` and every checkpoint, as ``audit verify``
   does. The range FAILS when the first failure is inside it, before it (the range no longer
   links to the genesis or to a signed checkpoint), or right after it (index ``last + 1``: the
   range's end was deleted, or its tail truncated beneath a signed checkpoint). A failure later
   in the chain is reported beside a verified range: it does not change what the range says.
3. Hand the window's records (and every earlier ``spawn`` and ``service_identity`` record: the
   confinement and build identity in force when the window opened) to the pure builder.

A chain with no valid signed checkpoint (before any failure) is reported ``unsigned``:
self-consistent links prove nothing against someone who can rewrite the file. The range is
signed through ``signed_through``: all of it when a checkpoint at or after its end verified,
else up to its newest checkpoint (the rest is protected by its links only).
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from portcullis.audit.checkpoint import checkpoint_signature_ok
from portcullis.audit.incident import build_report, in_window
from portcullis.audit.incident_model import (
    CHAIN_EMPTY,
    CHAIN_FAILED,
    CHAIN_UNSIGNED,
    CHAIN_VERIFIED,
    ChainRange,
    IncidentFilter,
    IncidentReport,
)
from portcullis.audit.incident_services import SERVICE_KINDS
from portcullis.audit.reader import AuditReader
from portcullis.audit.record import AuditRecord, Checkpoint
from portcullis.audit.verify import ChainVerifier, VerifyReport

PAGE = 2000
_FOREVER = 1e300


def _shown(value: object) -> str:
    """A hash column as ASCII text (a tampered store can hold anything there)."""
    text = value if isinstance(value, str) else f"<{type(value).__name__}>"
    return text.encode("ascii", "backslashreplace").decode("ascii")


async def incident_report(store: AuditReader, flt: IncidentFilter, public_key: Ed25519PublicKey) -> IncidentReport:
    """The report for ``flt`` over ``store``; the range verified with ``public_key``."""
    async with store.snapshot():
        edges = await store.window_edges(flt.since, _FOREVER if flt.until is None else flt.until)
        if edges is None:
            empty = ChainRange(CHAIN_EMPTY, "no records in the window", None, None, None, None, 0)
            return build_report((), flt, empty)
        first, last = edges
        checkpoints = await store.checkpoints()
        verifier = ChainVerifier(checkpoints, public_key)
        kept: list[AuditRecord] = []
        next_index = 0
        while True:
            page = await store.read(next_index, PAGE)
            for record in page:
                verifier.feed(record)
                if record.index <= last.index and (in_window(record, flt) or record.kind in SERVICE_KINDS):
                    kept.append(record)
            if len(page) < PAGE or (verifier.failed and page[-1].index > last.index):
                break
            next_index = page[-1].index + 1
        chain = _range(verifier.finish(), first, last, checkpoints, public_key)
        return build_report(kept, flt, chain)


def _range(verdict: VerifyReport, first: AuditRecord, last: AuditRecord, checkpoints: Sequence[Checkpoint],
           public_key: Ed25519PublicKey) -> ChainRange:
    """The range's verdict: a failure at or before ``last + 1`` (a record missing right after the range
    is one deleted from its end) fails it; a later one is reported beside a verified range."""
    bad = verdict.first_bad_index
    failed_here = not verdict.ok and (bad is None or bad <= last.index + 1)
    walked = None if verdict.ok else bad  # checkpoints at or past the first failure prove nothing
    signed = sorted({c.index for c in checkpoints if checkpoint_signature_ok(c, public_key)
                     and (walked is None or c.index < walked)})
    inside = tuple(i for i in signed if first.index <= i <= last.index)
    covering = next((i for i in signed if i >= last.index), None)
    through = last.index if covering is not None else (max(inside) if inside else None)
    if failed_here:
        status, reason = CHAIN_FAILED, verdict.reason
    elif not signed:
        status, reason = CHAIN_UNSIGNED, "no signed checkpoint covers the range: it is only self-consistent"
    else:
        status, reason = CHAIN_VERIFIED, "ok"
    later = None if verdict.ok or failed_here else (bad, verdict.reason)
    return ChainRange(status, reason, first.index, _shown(first.hash), last.index, _shown(last.hash),
                      verdict.records_checked, bad if failed_here else None, inside, through, covering,
                      verdict.pruned_through, later_failure=later)
