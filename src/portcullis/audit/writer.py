"""Group commit for the audit chain: many callers, one transaction per batch, write-ahead.

Contract:

* ``await writer.record(kind, request_id, fields)`` returns the chained :class:`AuditRecord`
  only once the store says its batch is durable. The pipeline awaits the decision record
  before forwarding a call, so no forwarded call lacks a durable decision.
* One background task takes records in arrival order: whatever is already queued, then more
  for up to ``max_delay_s`` (0 = only what piled up during the previous commit), at most
  ``max_batch``; it chains them (pure :func:`make_record`) and appends them in one transaction.
* If the append (or reading the head) fails, every caller in that batch gets
  :class:`AuditUnavailable` — fail closed — and the head is re-read before the next batch.
  A store refuses a batch that does not continue its head, so nothing partial is written.
* The queue is bounded (``max_pending``): when it is full, callers wait (backpressure).
* A store that chains at append time (``chains_at_append``, ``PostgresAuditStore``: several gateway
  processes append to one chain) gets ``append_chained(chain)``: it reads the head under its own
  lock and calls the pure ``chain(head)`` to build the batch; the writer's in-memory head is then
  only what it last wrote (for the checkpointer), never where the next batch starts.
* With an inline store (``SqliteAuditStore`` opened with ``durability="process"``) there is
  no queue: each ``record`` chains and commits its one record before returning, atomically
  because nothing in between suspends.
* Cancellation never leaves a record's fate unknown: ``on_durable`` (if given) is called the
  moment the record is durable, whoever is waiting; a queued record's wait is shielded (it is
  written or failed by the writer's task, which answers every queued record), so a cancelled
  caller learns the outcome before the cancellation reaches it. An inline commit does not suspend
  before it is durable.
* Export (``export``, e.g. the SIEM queue's ``offer``): after each batch commits, and before any of
  its callers is answered or the checkpointer runs, the writer hands its records to ``export`` one
  by one, in chain order, each as ``AuditRecord.to_json()``. Batches commit one at a time, so what
  ``export`` receives is exactly the order this writer appended in: every durable record once,
  never a record that is not durable, never one of a failed batch. ``export`` must be synchronous
  and must not block (the queue's ``offer`` buffers, or drops and counts); an exception it raises
  is logged and swallowed, never turned into a failed append. With a chaining store (several
  processes append one chain) each process's writer exports only its own records: strictly
  increasing indices, with gaps where other processes' records sit.
* Bad ``fields`` (not JSON, NaN) or an unknown ``kind`` raise ``ValueError`` to that caller
  only, before anything is queued. Timestamps come from the injected ``clock``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from portcullis.audit.checkpoint import Checkpointer
from portcullis.audit.errors import AuditUnavailable
from portcullis.audit.record import KINDS, AuditRecord, make_record, next_position, normalize_fields_json
from portcullis.audit.store import AuditStore, ChainingAuditStore

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pending:
    ts: float
    request_id: str
    kind: str
    fields: dict[str, Any]
    fields_json: bytes
    done: anyio.Event = field(default_factory=anyio.Event)
    record: AuditRecord | None = None
    error: AuditUnavailable | None = None
    on_durable: Callable[[], None] | None = None


class AuditWriter:
    """Chains and durably appends audit records with group commit. Use as ``async with``."""

    def __init__(self, store: AuditStore, *, clock: Callable[[], float], max_batch: int = 256,
                 max_delay_s: float = 0.002, max_pending: int = 4096,
                 checkpointer: Checkpointer | None = None,
                 export: Callable[[dict[str, Any]], object] | None = None) -> None:
        if max_batch < 1 or max_pending < 1 or max_delay_s < 0:
            raise ValueError("max_batch and max_pending must be >= 1 and max_delay_s >= 0")
        self._store, self._clock, self._checkpointer = store, clock, checkpointer
        self._export = export
        self._max_batch, self._max_delay_s = max_batch, max_delay_s
        self._send: MemoryObjectSendStream[_Pending]
        self._receive: MemoryObjectReceiveStream[_Pending]
        self._send, self._receive = anyio.create_memory_object_stream[_Pending](max_pending)
        self._head: tuple[int, str] | None = None
        self._head_known = False
        self._task_group: TaskGroup | None = None
        # An inline store (durability="process") commits on the loop thread in microseconds: one
        # record, one transaction, no queue and no task hop. Group commit is for fsync'ing stores.
        self._inline = bool(getattr(store, "inline", False))
        # a shared store (PostgreSQL, several replicas) chains each batch onto the head it reads under its lock
        self._chains_at_append = bool(getattr(store, "chains_at_append", False))

    def queue_depth(self) -> int:
        """Records waiting for the group commit (always 0 for an inline store)."""
        return self._send.statistics().current_buffer_used

    async def __aenter__(self) -> AuditWriter:
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._run)
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        self._send.close()  # the loop drains what is queued, then ends
        task_group, self._task_group = self._task_group, None
        if task_group is None:  # pragma: no cover - __aexit__ without __aenter__
            return None
        result = await task_group.__aexit__(*exc_info)
        if self._checkpointer is not None:
            await self._checkpointer.tick(force=True)
        return result

    async def record(self, kind: str, request_id: str, fields: Mapping[str, Any], *,
                     on_durable: Callable[[], None] | None = None) -> AuditRecord:
        """Queue one record and return it once durable; ``AuditUnavailable`` if it could not be.
        ``on_durable`` runs when it is durable, even if the caller was cancelled meanwhile."""
        if kind not in KINDS:
            raise ValueError("unknown audit record kind")
        normalized, text = normalize_fields_json(fields)
        pending = _Pending(float(self._clock()), request_id, kind, normalized, text, on_durable=on_durable)
        if self._inline:  # durability="process": the store never suspends, so this runs atomically
            await self._commit([pending])
            return _outcome(pending)
        with anyio.CancelScope(shield=True):  # queued is answered: a cancelled caller still learns how
            try:
                await self._send.send(pending)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                raise AuditUnavailable(detail="audit writer is closed") from None
            await pending.done.wait()
        return _outcome(pending)

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        batch: list[_Pending] = []
        try:
            async with self._receive:
                async for first in self._receive:
                    batch = [first]
                    await self._collect(batch)
                    await self._commit(batch)
                    batch = []
        finally:
            failure = AuditUnavailable(detail="audit writer stopped")
            for pending in batch:
                _finish(pending, None, failure)
            while True:  # nothing queued may wait forever
                try:
                    _finish(self._receive.receive_nowait(), None, failure)
                except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                    break

    async def _collect(self, batch: list[_Pending]) -> None:
        while len(batch) < self._max_batch:
            try:
                batch.append(self._receive.receive_nowait())
            except anyio.WouldBlock:
                break
            except anyio.EndOfStream:
                return
        if self._max_delay_s > 0 and len(batch) < self._max_batch:
            with anyio.move_on_after(self._max_delay_s):
                while len(batch) < self._max_batch:
                    try:
                        batch.append(await self._receive.receive())
                    except anyio.EndOfStream:
                        return

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            if self._chains_at_append:
                shared = cast(ChainingAuditStore, self._store)
                records = await shared.append_chained(lambda head: _chain(batch, head))
            else:
                if not self._head_known:
                    self._head, self._head_known = await self._store.head(), True
                records = _chain(batch, self._head)
                await self._store.append(records)
        except Exception as exc:
            self._head_known = False  # re-read the head before the next batch
            log.error("audit append of %d records failed: %r", len(batch), exc)
            detail = exc.detail if isinstance(exc, AuditUnavailable) else f"{type(exc).__name__}"
            for pending in batch:
                _finish(pending, None, AuditUnavailable(detail=detail))
            return
        self._head = (records[-1].index, records[-1].hash)
        if self._export is not None:  # durable now; in chain order, before any caller (or checkpoint) runs
            _export(self._export, records)
        for pending, record in zip(batch, records, strict=True):
            _finish(pending, record, None)
        if self._checkpointer is not None:
            await self._checkpointer.after_append(self._head)


def _chain(batch: list[_Pending], head: tuple[int, str] | None) -> list[AuditRecord]:
    """Pure: ``batch`` chained onto ``head`` (``None``: the genesis)."""
    index, prev = next_position(head)
    records = []
    for pending in batch:
        record = make_record(index, pending.ts, pending.request_id, pending.kind, pending.fields, prev,
                             fields_json=pending.fields_json)
        records.append(record)
        index, prev = index + 1, record.hash
    return records


def _export(export: Callable[[dict[str, Any]], object], records: list[AuditRecord]) -> None:
    for record in records:
        try:
            export(record.to_json())
        except Exception:  # export is a copy for monitoring: its bug never fails a durable append
            log.error("audit export hook raised; record not exported", exc_info=True,
                      extra={"fields": {"index": record.index}})


def _outcome(pending: _Pending) -> AuditRecord:
    if pending.error is not None:
        raise pending.error
    if pending.record is None:  # pragma: no cover - _finish always sets one of the two
        raise AuditUnavailable(detail="audit record missing")
    return pending.record


def _finish(pending: _Pending, record: AuditRecord | None, error: AuditUnavailable | None) -> None:
    pending.record, pending.error = record, error
    pending.done.set()
    if record is not None and pending.on_durable is not None:
        pending.on_durable()
