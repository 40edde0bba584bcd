"""What several gateway processes need before they may share one deployment (``listen.workers`` > 1).

A worker is a replica that happens to share the host's listening sockets: everything a replica must
share, a worker must share too. The embedded default keeps that state in one process (the audit chain
and the counters are SQLite files with one writer each, refused to a second; limits would be counted
once per process), so more than one worker needs ``storage.postgresql``, ``storage.redis`` and a
shared ``sessions.key_ref``. One pure function, used by the configuration model (so ``portcullis lint``
refuses it) and by ``portcullis serve --workers`` (so the command-line value is refused the same way).
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_WORKERS = 64

_NEEDS = (("storage.postgresql", "audit, approvals, kill switches, policy versions"),
          ("storage.redis", "limits and session counters"),
          ("sessions.key_ref", "2025-era sessions served by any worker"))


@dataclass(frozen=True, slots=True)
class SharedState:
    """Which of the shared-state settings a configuration has."""

    postgresql: bool
    redis: bool
    session_key: bool


def workers_problem(workers: int, shared: SharedState) -> str | None:
    """The fixed refusal for ``workers`` processes over ``shared``, or None when they may run."""
    if workers <= 1:
        return None
    have = {"storage.postgresql": shared.postgresql, "storage.redis": shared.redis,
            "sessions.key_ref": shared.session_key}
    missing = [f"{name} ({why})" for name, why in _NEEDS if not have[name]]
    if not missing:
        return None
    return (f"listen.workers: {workers} worker processes must share their state, and this deployment keeps it "
            f"in one process; missing: {', '.join(missing)}. Configure them (docs/cluster.md) or run one worker")
