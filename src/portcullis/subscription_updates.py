"""Upstream resource updates waiting for their subscribers' re-check, drained by one task.

:meth:`~portcullis.subscriptions.SubscriptionHub.resource_updated` runs on the connector's event
callback and never waits: it only decides, per subscriber, whether an update may be queued at all
(an open stream, a rate token, room in the subscriber's bounded queue) and hands the rest here as
one batch. :meth:`UpdateQueue.run` takes the batches in arrival order; the re-checks of one batch
(may each subscriber still read the resource? policy, pin verdict, time window) run concurrently,
bounded, each stopped at ``check_s``; its deliveries then follow in the batch's order, so one
subscriber sees its updates in the order the upstream sent them. The checks run the resolver's
``decide_async`` (Rego in worker processes), never on the event loop.

A check that fails or is cancelled (the gateway stopping) tells nobody (fail closed): counted
``check_failed``; a check that says no: counted ``no_longer_readable``.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from portcullis.subscriptions import Resolver, Subscriber

log = logging.getLogger("portcullis.subscriptions")


@dataclass(frozen=True, slots=True)
class Delivery:
    """One update for one subscriber: its caller-facing URI and the (service, upstream URI) it stood for."""

    subscriber: Subscriber
    uri: str
    target: tuple[str, str]


class UpdateQueue:
    """The batches of :class:`Delivery` waiting for :meth:`run` (see the module docstring)."""

    def __init__(self, resolve: Resolver, deliver: Callable[[Delivery], None], count: Callable[[str], None], *,
                 check_s: float, concurrency: int = 8) -> None:
        self._resolve, self._deliver, self._count, self._check_s = resolve, deliver, count, check_s
        self._limiter = anyio.CapacityLimiter(concurrency)
        self._batches: collections.deque[list[Delivery]] = collections.deque()
        self._wake: anyio.Event | None = None
        self._waiters: list[anyio.Event] = []

    def __len__(self) -> int:
        """Deliveries not yet handled (queued or being checked)."""
        return sum(len(batch) for batch in self._batches)

    def put(self, batch: list[Delivery]) -> None:
        """Queue one update's deliveries (each already holds a place in its subscriber's bounded queue)."""
        if not batch:
            return
        for delivery in batch:
            delivery.subscriber.pending += 1
        self._batches.append(batch)
        if self._wake is not None:
            self._wake.set()

    async def drained(self) -> None:
        """Wait until every delivery queued so far was handled."""
        if self._batches:
            done = anyio.Event()
            self._waiters.append(done)
            await done.wait()

    async def run(self) -> None:
        """Handle the batches in order, forever (a background task of the gateway)."""
        while True:
            while not self._batches:
                for done in self._waiters:
                    done.set()
                self._waiters.clear()
                self._wake = anyio.Event()
                await self._wake.wait()
            try:
                await self._handle(self._batches[0])
            except Exception:  # never ends the task: the next update is handled as usual
                log.exception("subscription updates could not be delivered")
            finally:
                self._batches.popleft()

    async def _handle(self, batch: list[Delivery]) -> None:
        verdicts: list[bool | None] = [None] * len(batch)  # None: not checked (failed or cancelled)
        try:
            async with anyio.create_task_group() as tg:
                for index, delivery in enumerate(batch):
                    tg.start_soon(self._check, delivery, verdicts, index)
        finally:  # also when cancelled: every place is given back, nothing unchecked goes out
            for delivery in batch:
                delivery.subscriber.pending -= 1
            for delivery, verdict in zip(batch, verdicts, strict=True):
                if verdict is None:
                    self._count("check_failed")
                elif not verdict:
                    self._count("no_longer_readable")
                else:
                    self._deliver(delivery)

    async def _check(self, delivery: Delivery, verdicts: list[bool | None], index: int) -> None:
        async with self._limiter:
            try:
                with anyio.fail_after(self._check_s):
                    target = await self._resolve(delivery.uri, delivery.subscriber.principal)
            except Exception as exc:  # fail closed: this subscriber is not told
                log.warning("subscription re-check failed", extra={"fields": {"error": type(exc).__name__}})
                return
        verdicts[index] = target == delivery.target

