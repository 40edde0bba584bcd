"""Who cancelled a call: the caller, by closing its connection (2026-07-28: "closing the SSE
response stream MUST be treated by the server as" cancellation).

The transport (:mod:`portcullis.transport.disconnect`) runs a 2026-07-28 call beside a watch on
its caller's connection. When the caller goes away first, it marks the call's :class:`Departure`
and cancels the call's task: the upstream connectors stop the upstream call on cancellation (the
raw relay closes its request stream; the SDK client sends ``notifications/cancelled``), and the
record stage reads :func:`caller_gone` to write the owed ``cancelled`` outcome with
``cancelled_by: "caller"`` instead of leaving it unexplained. What the call already consumed (a
limit counter, a redeemed approval) stays consumed: cancelling is not undoing.
"""

from __future__ import annotations

from contextvars import ContextVar


class Departure:
    """Set by the transport, in the call's own task, before the call is cancelled."""

    __slots__ = ("gone",)

    def __init__(self) -> None:
        self.gone = False


DEPARTURE: ContextVar[Departure | None] = ContextVar("portcullis_departure", default=None)


def caller_gone() -> bool:
    """Whether the current call is being cancelled because its caller went away."""
    departure = DEPARTURE.get()
    return departure is not None and departure.gone
