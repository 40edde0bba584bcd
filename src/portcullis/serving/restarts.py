"""When the supervisor restarts a worker, and when it gives up: a pure policy over a slot's history.

A worker that exits before it reported itself started has *failed at start* (a configuration the
supervisor could not see, a store that refuses it, a port the admin listener cannot serve...). After
``max_start_failures`` such failures in a row in one slot the supervisor stops the others and exits
non-zero: restarting forever would hide the fault. A worker that dies after it started is restarted
whatever the count, after a backoff that doubles with each death in a row and is forgotten once a
worker has stayed up ``stable_s``.

``PORTCULLIS_WORKER_RESTART_DELAY_S`` sets the first backoff (seconds, 0.01 to 30; it doubles from there):
the test suite's supervisor tests set it small instead of waiting out the production backoff.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

RESTART_DELAY_ENV = "PORTCULLIS_WORKER_RESTART_DELAY_S"


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_start_failures: int = 5
    stable_s: float = 60.0

    def delay_s(self, deaths_in_a_row: int) -> float:
        """Wait before the restart that follows the ``deaths_in_a_row``-th death (1, 2, ...)."""
        return float(min(self.max_delay_s, self.base_delay_s * 2.0 ** max(0, min(deaths_in_a_row, 32) - 1)))


def restart_policy(environ: Mapping[str, str]) -> RestartPolicy:
    """The default policy, its first backoff from :data:`RESTART_DELAY_ENV` when that is set (ValueError, naming
    the variable and the range but not the value, when it is not a number of seconds in range)."""
    default = RestartPolicy()
    raw = environ.get(RESTART_DELAY_ENV)
    if raw is None:
        return default
    try:
        delay = float(raw) if raw.isascii() else math.nan  # float() also reads other scripts' digits
    except ValueError:
        delay = math.nan
    if not 0.01 <= delay <= default.max_delay_s:  # also NaN
        raise ValueError(f"{RESTART_DELAY_ENV} must be a number of seconds from 0.01 to {default.max_delay_s:g}")
    return RestartPolicy(base_delay_s=delay)


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
