"""Cancel a 2026-07-28 call when its caller goes away (issue 13; the revision: "closing the SSE
response stream MUST be treated by the server as" cancellation; reference P10).

After the request body is read, an ASGI server's ``receive()`` blocks until the client disconnects
(``http.disconnect``). :func:`start_watch` runs that wait beside the call in the call's task group:
when the caller goes first it marks the call's :class:`~portcullis.cancellation.Departure` and
cancels the group, so the call's task is cancelled where it is (the record stage writes its
``cancelled`` outcome with ``cancelled_by: "caller"``; the upstream connectors stop the upstream
call); when the call ends first, the watch is cancelled. Nothing outlives the request: both are
tasks of one task group the request's own task awaits.

A server that answers ``receive()`` with anything but ``http.disconnect`` after the body (none
should) is not watched any further: never a busy loop, never a cancellation on a guess.

2025-era callers are not watched: that revision says a disconnect "SHOULD NOT be interpreted as
the client cancelling its request" (docs/decisions.md). Their call runs to its end and is audited
as usual; what is left to send is discarded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Generic, TypeVar

import anyio
from anyio.abc import TaskGroup

from portcullis.cancellation import DEPARTURE, Departure

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
T = TypeVar("T")
#: what a failed ``send`` to a caller that went away may raise, depending on the ASGI server
SEND_FAILURES: tuple[type[BaseException], ...] = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError)


async def until_disconnect(receive: Receive) -> None:
    """Return when the caller's connection is gone; wait forever if the server never says so."""
    message = await receive()
    if message.get("type") != "http.disconnect":
        await anyio.sleep_forever()


def start_watch(tg: TaskGroup, receive: Receive, departure: Departure) -> anyio.CancelScope:
    """Watch the caller's connection in ``tg``: if it goes away, mark ``departure`` and cancel ``tg``.
    Cancel the returned scope once the call has ended."""
    scope = anyio.CancelScope()

    async def watch() -> None:
        with scope:
            await until_disconnect(receive)
            departure.gone = True
            tg.cancel_scope.cancel()

    tg.start_soon(watch)
    return scope


class Watched(Generic[T]):
    """A watched call's end: its value, the exception it raised, or neither (the caller went away)."""

    __slots__ = ("error", "finished", "value")

    def __init__(self) -> None:
        self.value: T | None = None
        self.error: Exception | None = None
        self.finished = False


async def run_watched(call: Callable[[], Awaitable[T]], receive: Receive) -> Watched[T]:
    """Run ``call`` in a task of its own beside a watch on the caller's connection (module docstring).
    ``finished`` False: the caller went away and the call was cancelled; nothing is to be sent."""
    done: Watched[T] = Watched()
    departure = Departure()
    async with anyio.create_task_group() as tg:
        watch: list[anyio.CancelScope] = []

        async def run() -> None:
            DEPARTURE.set(departure)  # this task's own context: the record stage reads it
            try:
                done.value = await call()
                done.finished = True
            except Exception as exc:  # handed back unchanged, for the one mapper to the wire
                done.error, done.finished = exc, True
            finally:
                watch[0].cancel()

        watch.append(start_watch(tg, receive, departure))
        tg.start_soon(run)
    return done
