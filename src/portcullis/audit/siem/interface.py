"""The exporter seam: how one SIEM destination receives batches of audit records.

An :class:`Exporter` takes a batch of records in ``AuditRecord.to_json()`` form and delivers it,
or raises :class:`ExportFailed`. Nothing above an exporter sees an OS, TLS or HTTP-library
exception: each implementation translates them at its own boundary::

    PortcullisError (portcullis.errors)
    └── ExportFailed        a batch was not delivered; ``permanent`` says whether a retry can help

Delivery is at-least-once: a batch that failed half way is sent again whole, so a destination
may see a record twice. Every record carries its chain ``hash``, a unique key to de-duplicate on.

Exporters are used by one :class:`~portcullis.audit.siem.queue.ExportQueue` worker at a time,
so ``send`` is never called concurrently with itself or with ``aclose``.

:class:`RecordingExporter` and :class:`FailingExporter` are test doubles, for Portcullis's tests
and for users' own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import anyio

from portcullis.errors import PortcullisError

Record = dict[str, Any]
"""One audit record as ``AuditRecord.to_json()`` returns it."""


class ExportFailed(PortcullisError):
    """A batch could not be delivered. ``detail`` is for the operator log and names no secret."""

    message = "audit export failed"

    def __init__(self, detail: str, *, permanent: bool = False) -> None:
        super().__init__(detail=detail)
        self.permanent = permanent  # True: retrying the same batch cannot succeed (e.g. HTTP 400)


class Exporter(Protocol):
    """One SIEM destination."""

    name: str
    """Unique among a queue's exporters; used in logs and as the metrics label."""

    async def send(self, batch: Sequence[Record]) -> int:
        """Deliver ``batch`` in order; return how many records were refused as undeliverable.

        A refused record (for example one too large for a UDP datagram) is skipped, not retried,
        and counted as dropped by the queue; the rest of the batch counts as sent. Raise
        :class:`ExportFailed` if the batch as a whole was not delivered.
        """
        ...

    async def aclose(self) -> None:
        """Release connections and files; never raises."""
        ...


class RecordingExporter:
    """Keeps every batch it is sent. Can be told to fail its next sends or to hold them on a gate."""

    def __init__(self, name: str = "recording") -> None:
        self.name = name
        self.batches: list[list[Record]] = []
        self.attempts = 0
        self.fail_next = 0  # the next N sends raise a retryable ExportFailed
        self.fail_permanently = False  # every send raises a permanent ExportFailed
        self.gate: anyio.Event | None = None  # when set, every send waits for it first
        self.closed = False
        self._entered: anyio.Event | None = None

    @property
    def records(self) -> list[Record]:
        """Every record delivered so far, in order."""
        return [record for batch in self.batches for record in batch]

    async def wait_entered(self) -> None:
        """Return once a send has started (useful with ``gate``)."""
        if self.attempts:
            return
        self._entered = self._entered or anyio.Event()
        await self._entered.wait()

    async def send(self, batch: Sequence[Record]) -> int:
        self.attempts += 1
        if self._entered is not None:
            self._entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_permanently:
            raise ExportFailed("recording exporter refuses every batch", permanent=True)
        if self.fail_next:
            self.fail_next -= 1
            raise ExportFailed("recording exporter told to fail")
        self.batches.append(list(batch))
        return 0

    async def aclose(self) -> None:
        self.closed = True


class FailingExporter:
    """Fails every send (retryably unless ``permanent``): a destination that is down for good."""

    def __init__(self, name: str = "failing", *, permanent: bool = False) -> None:
        self.name = name
        self.permanent = permanent
        self.attempts = 0
        self.closed = False

    async def send(self, batch: Sequence[Record]) -> int:
        self.attempts += 1
        raise ExportFailed("failing exporter is down", permanent=self.permanent)

    async def aclose(self) -> None:
        self.closed = True
