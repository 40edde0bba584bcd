"""Verification of an audit chain against signed checkpoints.

:func:`verify_chain` is pure over iterables and follows these steps; the report names the
first index at which the evidence breaks:

1. Check every checkpoint's signature with the audit public key. A bad signature, an unknown
   key, or two valid checkpoints disagreeing about one index, fails at that checkpoint's index.
2. Walk the records in order from index 0 with ``prev_hash`` = genesis:
   a. the record's index must be the next expected one (a deleted or reordered record fails
      at the expected index);
   b. its ``prev_hash`` must be the previous record's hash (a forged or moved record fails);
   c. its ``hash`` must be the hash of its body (an edited record fails);
   d. where a valid checkpoint exists for that index, its hash must equal the record's
      (a rewritten history, even with every later hash recomputed, fails there).
3. If the latest valid checkpoint is beyond the last record, the tail was truncated: fail at
   the first missing index with ``truncated=True``.
4. A chain whose start was pruned by retention (``retention.py``) begins at record ``s > 0``: the
   walk starts there from the hash of the valid checkpoint at ``s - 1`` (none: fail at 0, as a
   deleted record). The missing start must be attested by a ``retention`` record in the walked
   chain, at or before the newest valid checkpoint, whose ``pruned_through`` is at least
   ``s - 1``; otherwise fail at 0 ("records removed without a retention record").

Anchors (checkpoints kept off the machine: SIEM, witness, a file; ``anchors.py``) are used as
in steps 1, 2d and 3, with their own messages: a record that differs from an anchor means the
store was rewritten and re-chained (its own checkpoints may be re-signed by whoever holds the
key; an anchor cannot be recalled), and an anchor beyond the last record means a truncated tail.

The lowest failing index of steps 1-3 is reported. An empty chain with no checkpoints is ok.
Records after the newest checkpoint are protected only by their hash links: a forger who
rewrites that unsigned tail consistently is caught by the next checkpoint, not before; the
checkpointer bounds that window (``CheckpointPolicy.every_s``, 1 s by default).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from portcullis.audit.checkpoint import checkpoint_signature_ok
from portcullis.audit.export import MalformedExport, iter_store, read_export
from portcullis.audit.record import GENESIS_HASH, AuditRecord, Checkpoint, digest_equal, record_hash_ok
from portcullis.audit.retention import RETENTION_KIND
from portcullis.audit.store import AuditStore


@dataclass(frozen=True, slots=True)
class VerifyReport:
    ok: bool
    first_bad_index: int | None
    reason: str
    records_checked: int
    truncated: bool = False
    pruned_through: int | None = None  # the start was pruned by retention up to this index (attested)


@dataclass(frozen=True, slots=True)
class _Failure:
    index: int
    reason: str
    truncated: bool = False


def _check_checkpoints(checkpoints: Iterable[Checkpoint],
                       public_key: Ed25519PublicKey) -> tuple[dict[int, str], _Failure | None]:
    pinned: dict[int, str] = {}
    failure: _Failure | None = None

    def fail(index: int, reason: str) -> None:
        nonlocal failure
        if failure is None or index < failure.index:
            failure = _Failure(index, reason)

    for cp in checkpoints:
        if not checkpoint_signature_ok(cp, public_key):
            fail(cp.index, "checkpoint signature invalid")
        elif pinned.setdefault(cp.index, cp.hash) != cp.hash:
            fail(cp.index, "conflicting signed checkpoints")
    return pinned, failure


class ChainVerifier:
    """Incremental form of :func:`verify_chain`: ``feed`` records in order, then ``finish``."""

    def __init__(self, checkpoints: Iterable[Checkpoint], public_key: Ed25519PublicKey,
                 anchors: Iterable[tuple[int, str]] = ()) -> None:
        self._pinned, self._checkpoint_failure = _check_checkpoints(checkpoints, public_key)
        self._anchored: dict[int, str] = {}
        for index, hash_ in anchors:  # already verified (anchors.py): signed by the key, kept elsewhere
            if self._anchored.setdefault(index, hash_) != hash_ and (
                    self._checkpoint_failure is None or index < self._checkpoint_failure.index):
                self._checkpoint_failure = _Failure(index, "conflicting anchored checkpoints")
        self._expected, self._prev = 0, GENESIS_HASH
        self._checked = 0
        self._failure: _Failure | None = None
        self._started = False
        self._pruned_through: int | None = None
        self._attested = -1  # the highest pruned_through a signed retention record states

    @property
    def failed(self) -> bool:
        """True once the walk has broken; later records prove nothing and may be skipped."""
        return self._failure is not None

    def feed(self, record: AuditRecord) -> None:
        if self._failure is not None:
            return
        if not self._started:
            self._started = True
            anchor = self._pinned.get(record.index - 1) if record.index > 0 else None
            if anchor is not None:  # 4: a pruned start continues from its signed checkpoint
                self._pruned_through, self._expected, self._prev = record.index - 1, record.index, anchor
        self._failure = self._step(record)
        if self._failure is None:
            self._checked += 1
            self._expected, self._prev = record.index + 1, record.hash
            if record.kind == RETENTION_KIND and self._pinned and record.index <= max(self._pinned):
                through = record.fields.get("pruned_through") if isinstance(record.fields, dict) else None
                if type(through) is int:
                    self._attested = max(self._attested, through)

    def _step(self, record: AuditRecord) -> _Failure | None:
        if record.index != self._expected:
            return _Failure(self._expected, "record missing or out of order")
        if not digest_equal(record.prev_hash, self._prev):
            return _Failure(record.index, "prev_hash does not link to the previous record")
        if not record_hash_ok(record):
            return _Failure(record.index, "record hash does not match its content")
        anchored = self._anchored.get(record.index)
        if anchored is not None and not digest_equal(anchored, record.hash):
            return _Failure(record.index, f"store re-chained: record {record.index} does not match the anchored "
                            f"checkpoint of size {record.index + 1} kept elsewhere")
        pinned = self._pinned.get(record.index)
        if pinned is not None and not digest_equal(pinned, record.hash):
            return _Failure(record.index, "record does not match its signed checkpoint")
        return None

    def finish(self) -> VerifyReport:
        failures = [f for f in (self._checkpoint_failure, self._failure) if f is not None]
        if self._failure is None and self._anchored:
            latest = max(self._anchored)
            if latest >= self._expected:
                failures.append(_Failure(self._expected, f"tail truncated: the store ends at {self._expected} "
                                         f"record(s); an anchored checkpoint kept elsewhere names {latest + 1}", True))
        if self._failure is None and self._pinned:
            latest = max(self._pinned)
            if latest >= self._expected:
                failures.append(_Failure(self._expected, f"tail truncated: signed checkpoint at {latest}", True))
        if self._pruned_through is not None and self._attested < self._pruned_through:
            failures.append(_Failure(0, f"records 0..{self._pruned_through} removed without a retention record"))
        if not failures:
            return VerifyReport(True, None, "ok", self._checked, pruned_through=self._pruned_through)
        first = min(failures, key=lambda f: f.index)
        return VerifyReport(False, first.index, first.reason, self._checked, first.truncated)


def verify_chain(records: Iterable[AuditRecord], checkpoints: Iterable[Checkpoint],
                 public_key: Ed25519PublicKey, anchors: Iterable[tuple[int, str]] = ()) -> VerifyReport:
    """Verify ``records`` (in index order) against signed ``checkpoints`` and ``anchors``; see the module steps."""
    verifier = ChainVerifier(checkpoints, public_key, anchors)
    for record in records:
        verifier.feed(record)
        if verifier.failed:
            break
    return verifier.finish()


async def verify_store(store: AuditStore, public_key: Ed25519PublicKey,
                       anchors: Iterable[tuple[int, str]] = ()) -> VerifyReport:
    """Verify everything in ``store``, reading records a page at a time; ``anchors`` are verified
    ``(index, hash)`` pairs of checkpoints kept elsewhere (``anchors.py``)."""
    verifier = ChainVerifier(await store.checkpoints(), public_key, anchors)
    async for record in iter_store(store):
        verifier.feed(record)
        if verifier.failed:
            break
    return verifier.finish()


def verify_export(jsonl_path: str | Path, public_key: Ed25519PublicKey) -> VerifyReport:
    """Verify a JSON-lines export (see ``export.py``); a malformed file is a failure, not an error."""
    try:
        return verify_chain(read_export(jsonl_path, "record"), list(read_export(jsonl_path, "checkpoint")),
                            public_key)
    except MalformedExport as exc:
        return VerifyReport(False, None, f"malformed export: {exc}", 0)
