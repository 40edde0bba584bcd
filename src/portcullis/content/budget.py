"""The limits every scan runs under, and the meter that enforces them.

Why CPU time and not wall time: the budget bounds the *work* one input can cost. On a loaded host
(other requests, other processes, a worker thread waiting for the GIL) wall time grows without the
input being any harder, and a wall budget would turn host load into "blocked" verdicts for
ordinary results. The thread's CPU time (``time.thread_time_ns``) counts only this scan's own
work. The caller's request timeout still bounds wall time end to end.

Reading that clock is a system call (about 1.4 µs here), so the meter does not read it per
operation: detectors :meth:`Meter.charge` their work in byte-equivalent units, and the clock is
read each time another :data:`CHECK_UNITS` have been charged. Past the budget the meter raises
:class:`BudgetExceeded`, which the scanner turns into a *blocked* result (fail closed). The clock
is injectable, so tests drive it without real time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from portcullis.content.findings import BlockReason

CHECK_UNITS = 32 * 1024  # work units (about one byte scanned) between two clock reads


@dataclass(frozen=True, slots=True)
class ScanBudget:
    """Limits for one scan (one text, or one list of parts scanned together)."""

    cpu_ms: float = 500.0  # CPU time of the scanning thread
    max_chars: int = 16 * 1024 * 1024  # a longer input is blocked without scanning
    max_findings: int = 10_000  # more is blocked: a result that is mostly secrets is not worth relaying
    decode_depth: int = 2  # nested decodings followed (base64 inside URL-encoding is depth 2)
    min_encoded_run: int = 16  # shorter encoded runs are not decoded
    max_decoded_chars: int = 32 * 1024 * 1024  # all decoded content of one scan, all depths

    def __post_init__(self) -> None:
        if not (self.cpu_ms > 0 and self.max_chars > 0 and self.max_findings > 0 and self.decode_depth >= 0
                and self.min_encoded_run >= 4 and self.max_decoded_chars >= 0):
            raise ValueError("scan budget limits must be positive")


class BudgetExceeded(Exception):
    """A limit was reached; ``reason`` is a :data:`BlockReason`, ``detail`` names the limit (no input text)."""

    def __init__(self, reason: BlockReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: BlockReason = reason
        self.detail = detail


class Meter:
    """Counts the work of one scan against its :class:`ScanBudget`."""

    __slots__ = ("_clock", "_deadline_ns", "_units", "budget", "decoded_chars", "findings")

    def __init__(self, budget: ScanBudget, clock: Callable[[], int] = time.thread_time_ns) -> None:
        self.budget = budget
        self._clock = clock
        self._deadline_ns = clock() + int(budget.cpu_ms * 1_000_000)
        self._units = 0
        self.decoded_chars = 0
        self.findings = 0

    def charge(self, units: int) -> None:
        """Record ``units`` of work; read the clock when enough has accumulated, raise past the budget."""
        self._units += units
        if self._units >= CHECK_UNITS:
            self._units = 0
            self.check()

    def check(self) -> None:
        """Read the clock now; raise :class:`BudgetExceeded` past the deadline."""
        if self._clock() > self._deadline_ns:
            raise BudgetExceeded("budget_exceeded", f"cpu_ms={self.budget.cpu_ms:g}")

    def count_findings(self, n: int) -> None:
        self.findings += n
        if self.findings > self.budget.max_findings:
            raise BudgetExceeded("too_many_findings", f"max_findings={self.budget.max_findings}")

    def count_decoded(self, n: int) -> None:
        self.decoded_chars += n
        if self.decoded_chars > self.budget.max_decoded_chars:
            raise BudgetExceeded("decode_limit", f"max_decoded_chars={self.budget.max_decoded_chars}")
