"""When the supervisor restarts a worker, and when it gives up: a pure policy over a slot's history.

A worker that exits before it reported itself started has *failed at start* (a configuration the
supervisor could not see, a store that refuses it, a port the admin listener cannot serve...). After
``max_start_failures`` such failures in a row in one slot the supervisor stops the others and exits
non-zero: restarting forever would hide the fault. A worker that dies after it started is restarted
whatever the count, after a backoff that doubles with each death in a row and is forgotten once a
worker has stayed up ``stable_s``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_start_failures: int = 5
    stable_s: float = 60.0

    def delay_s(self, deaths_in_a_row: int) -> float:
        """Wait before the restart that follows the ``deaths_in_a_row``-th death (1, 2, ...)."""
        return float(min(self.max_delay_s, self.base_delay_s * 2.0 ** max(0, min(deaths_in_a_row, 32) - 1)))


@dataclass(frozen=True, slots=True)
class SlotHistory:
    """One worker slot's record: deaths and start failures in a row."""

    deaths: int = 0
    start_failures: int = 0

    def started(self) -> SlotHistory:
        """The worker reported itself started: its start failures are over."""
        return SlotHistory(self.deaths, 0)

    def died(self, *, started: bool, uptime_s: float, policy: RestartPolicy) -> SlotHistory:
        deaths = 1 if uptime_s >= policy.stable_s else self.deaths + 1
        return SlotHistory(deaths, 0 if started else self.start_failures + 1)

    def gives_up(self, policy: RestartPolicy) -> bool:
        return self.start_failures >= policy.max_start_failures
