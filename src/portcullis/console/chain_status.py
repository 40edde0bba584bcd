"""The audit chain's verification status for the console, bounded and cached.

A page view never verifies: it reads the last result. :meth:`ChainStatus.current` starts one background
verification (the existing :func:`~portcullis.audit.verify.verify_store`, a page of records at a time) when
there is no result yet or the last one is older than ``max_age_s`` (default 5 minutes), and never more than
one at a time (single flight: concurrent views share it). While it runs the page says so and shows the
previous result, if any. A large store is therefore walked at most once per ``max_age_s`` however many people
look, and only while someone does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from portcullis.audit.verify import VerifyReport

log = logging.getLogger("portcullis.console")

MAX_AGE_S = 300.0


@dataclass(frozen=True, slots=True)
class StatusView:
    report: VerifyReport | None  # the last finished verification (None: none yet)
    checked_at: float | None
    running: bool
    error: str = ""  # the last run failed to read the store (fixed text)


def _now() -> float:
    return time.time()  # looked up at each call (tests move time)


class ChainStatus:
    """The last verification of the trail, refreshed in the background at most every ``max_age_s``."""

    def __init__(self, verify: Callable[[], Awaitable[VerifyReport]], *, max_age_s: float = MAX_AGE_S,
                 clock: Callable[[], float] | None = None) -> None:
        self._verify, self._max_age, self._clock = verify, max_age_s, clock or _now
        self._report: VerifyReport | None = None
        self._checked_at: float | None = None
        self._error = ""
        self._task: asyncio.Task[None] | None = None
        self.runs = 0  # how many verifications were started (tests, docs)

    def current(self) -> StatusView:
        """The last result; starts a verification when it is missing or stale and none is running."""
        stale = self._checked_at is None or self._clock() - self._checked_at >= self._max_age
        if stale and not self.running:
            self.runs += 1
            self._task = asyncio.get_running_loop().create_task(self._run())
        return StatusView(self._report, self._checked_at, self.running, self._error)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def wait(self) -> StatusView:
        """The result once the running verification (if any) ends (tests)."""
        if self._task is not None:
            await asyncio.shield(self._task)
        return StatusView(self._report, self._checked_at, self.running, self._error)

    async def _run(self) -> None:
        try:
            self._report, self._error = await self._verify(), ""
        except Exception as exc:  # a store that cannot be read is shown as such, never as "ok"
            log.warning("console chain verification failed", extra={"fields": {"error": type(exc).__name__}})
            self._report, self._error = None, "the audit store could not be read"
        self._checked_at = self._clock()
