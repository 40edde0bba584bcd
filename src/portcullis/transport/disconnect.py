"""Cancel a 2026-07-28 call when its caller goes away (issue 13; the revision: "closing the SSE
response stream MUST be treated by the server as" cancellation; reference P10).

After the request body is read, an ASGI server's ``receive()`` blocks until the client disconnects
(``http.disconnect``). :func:`start_watch` runs that wait beside the call as a bare asyncio task
(an anyio child task with its cancel scope cost ~65 µs of CPU per call here, this ~7 µs: see
``bench/disconnect_micro.py``): when the caller goes first, its done-callback marks the call's
:class:`~portcullis.cancellation.Departure` and cancels the call's cancel scope, so the call is
cancelled where it is (the record stage writes its ``cancelled`` outcome with
``cancelled_by: "caller"``; the upstream connectors stop the upstream call); when the call ends
first, the watch is cancelled (:meth:`Watch.stop`). Nothing outlives the request: the watch is
stopped in a ``finally`` of the request's own task, and a receive that raises is taken as the
connection gone (its exception is retrieved, never logged as unhandled).

A server that answers ``receive()`` with anything but ``http.disconnect`` after the body (none
should) is not watched any further: never a busy loop, never a cancellation on a guess.

2025-era callers are not watched: that revision says a disconnect "SHOULD NOT be interpreted as
the client cancelling its request" (docs/decisions.md). Their call runs to its end and is audited
as usual; what is left to send is discarded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Generic, TypeVar

import anyio

from portcullis.cancellation import DEPARTURE, Departure

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
T = TypeVar("T")
#: what a failed ``send`` to a caller that went away may raise, depending on the ASGI server
SEND_FAILURES: tuple[type[BaseException], ...] = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError)


async def until_disconnect(receive: Receive) -> None:
    """Return when the caller's connection is gone; wait forever if the server never says so."""
    message = await receive()
    if message.get("type") != "http.disconnect":
        await asyncio.Event().wait()  # never set: stopped with the call


class Watch:
    """A wait for the caller's disconnect, beside a call: see the module docstring."""

    __slots__ = ("_departure", "_scope", "_task")

    def __init__(self, receive: Receive, departure: Departure, scope: anyio.CancelScope) -> None:
        self._departure, self._scope = departure, scope
        self._task = asyncio.ensure_future(until_disconnect(receive))
        self._task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[None]) -> None:
        if task.cancelled():
            return
        task.exception()  # retrieved either way: a receive that raised means the connection is gone
        self._departure.gone = True
        self._scope.cancel()

    def stop(self) -> None:
        """The call ended: stop waiting (idempotent)."""
        self._task.remove_done_callback(self._done)
        self._task.cancel()


def start_watch(scope: anyio.CancelScope, receive: Receive, departure: Departure) -> Watch:
    """Watch the caller's connection: if it goes away, mark ``departure`` and cancel ``scope``.
    :meth:`Watch.stop` it once the call has ended."""
    return Watch(receive, departure, scope)


class Watched(Generic[T]):
    """A watched call's end: its value, the exception it raised, or neither (the caller went away)."""

    __slots__ = ("error", "finished", "value")

    def __init__(self) -> None:
        self.value: T | None = None
        self.error: Exception | None = None
        self.finished = False


async def run_watched(call: Callable[[], Awaitable[T]], receive: Receive) -> Watched[T]:
    """Run ``call`` in this task with a watch on the caller's connection beside it (module docstring).
    ``finished`` False: the caller went away and the call was cancelled; nothing is to be sent."""
    done: Watched[T] = Watched()
    departure = Departure()
    token = DEPARTURE.set(departure)  # the record stage reads it, in this same task
    try:
        with anyio.CancelScope() as scope:
            watch = start_watch(scope, receive, departure)
            try:
                done.value = await call()
                done.finished = True
            except Exception as exc:  # handed back unchanged, for the one mapper to the wire
                done.error, done.finished = exc, True
            finally:
                watch.stop()
    finally:
        DEPARTURE.reset(token)
    return done
