"""Reading an incident's records from the SQLite audit store, and verifying the range read.

Steps (all inside one read transaction of a ``mode=ro`` store, so the records, the checkpoints
and the verdict describe one moment):

1. Find the range: the first and last index of the records whose time is in the window.
2. Walk the chain from its start (or its pruned start) through the range's last index with the
   project's :class:`~portcullis.audit.verify.ChainVerifier`, given only the checkpoints at or
   before that index — so records written after the range (a later tampering, or the ongoing
   tail) neither fail nor pass it, and a truncation inside the range still fails.
3. Hand the window's records (and every earlier ``spawn`` record) to the pure builder.

A range that no valid signed checkpoint covers is reported ``unsigned``: self-consistent links
prove nothing against someone who can rewrite the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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
from portcullis.audit.record import AuditRecord, Checkpoint
from portcullis.audit.store import SqliteAuditStore
from portcullis.audit.verify import ChainVerifier, VerifyReport

PAGE = 2000
_COLUMNS = "idx, ts, request_id, kind, fields, prev_hash, hash"
_EDGE = ("SELECT " + _COLUMNS + " FROM audit_record"  # noqa: S608 - fixed text, values bound
         " WHERE typeof(ts) IN ('real', 'integer') AND ts >= ? "
         "AND ts <= ? ORDER BY idx {} LIMIT 1")
_FOREVER = 1e300


def _shown(value: object) -> str:
    """A hash column as ASCII text (a tampered store can hold anything there)."""
    text = value if isinstance(value, str) else f"<{type(value).__name__}>"
    return text.encode("ascii", "backslashreplace").decode("ascii")


async def incident_report(path: str | Path, flt: IncidentFilter, public_key: Ed25519PublicKey) -> IncidentReport:
    """The report for ``flt`` over the store at ``path``; the range verified with ``public_key``."""
    async with await SqliteAuditStore.open_readonly(path) as store, store.snapshot():
        window = (flt.since, _FOREVER if flt.until is None else flt.until)
        first = await store.select_records(_EDGE.format("ASC"), window)
        if not first:
            empty = ChainRange(CHAIN_EMPTY, "no records in the window", None, None, None, None, 0)
            return build_report((), flt, empty)
        [last] = await store.select_records(_EDGE.format("DESC"), window)
        checkpoints = [c for c in await store.checkpoints() if c.index <= last.index]
        verifier = ChainVerifier(checkpoints, public_key)
        kept: list[AuditRecord] = []
        next_index, done = 0, False
        while not done:
            page = await store.read(next_index, PAGE)
            for record in page:
                if record.index > last.index:
                    done = True
                    break
                verifier.feed(record)
                if in_window(record, flt) or record.kind == "spawn":
                    kept.append(record)
            done = done or len(page) < PAGE
            if page:
                next_index = page[-1].index + 1
        verdict = verifier.finish()
        chain = _range(verdict, first[0], last, checkpoints, public_key)
        return build_report(kept, flt, chain)


def _range(verdict: VerifyReport, first: AuditRecord, last: AuditRecord, checkpoints: Sequence[Checkpoint],
           public_key: Ed25519PublicKey) -> ChainRange:
    signed = sorted({c.index for c in checkpoints if checkpoint_signature_ok(c, public_key)})
    inside = tuple(i for i in signed if first.index <= i <= last.index)
    if not verdict.ok:
        status, reason = CHAIN_FAILED, verdict.reason
    elif not signed:
        status, reason = CHAIN_UNSIGNED, "no signed checkpoint covers the range: it is only self-consistent"
    else:
        status, reason = CHAIN_VERIFIED, "ok"
    return ChainRange(status, reason, first.index, _shown(first.hash), last.index, _shown(last.hash),
                      verdict.records_checked, verdict.first_bad_index, inside,
                      signed[-1] if signed else None, verdict.pruned_through)
