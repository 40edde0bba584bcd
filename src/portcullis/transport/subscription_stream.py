"""The long-lived SSE answers of subscriptions: a 2025-era session's GET stream and a 2026-07-28
``subscriptions/listen`` POST.

Both write the subscriber's queued notifications (:mod:`portcullis.subscriptions`) as SSE events,
a ``:`` comment every ``keepalive_s`` of silence, and end after ``stream_lifetime_s`` (the caller
re-opens it) or when the caller disconnects; the subscriber is closed then (a listen stream's
subscriptions are dropped with it, a session keeps its own). Events carry no ``id``: nothing is
kept to replay, so there is nothing to resume (``Last-Event-ID`` is ignored).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio

from portcullis.subscriptions import Subscriber, SubscriptionHub
from portcullis.transport.streaming import SSE_HEADERS, sse_event

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
KEEPALIVE = b": keepalive\n\n"


async def serve(hub: SubscriptionHub, sub: Subscriber, receive: Receive, send: Send, *,
                first: tuple[Any, ...] = (), last: Any = None,
                extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Stream ``sub``'s notifications until the lifetime ends or the caller goes; ``first``: messages
    sent before any notification (the acknowledgement), ``last``: the message that ends a stream the
    gateway closes (the listen request's response)."""
    bounds = hub.bounds
    receiver = sub.receiver
    gone = False
    try:
        await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *(extra_headers or [])]})
        for message in first:
            await send({"type": "http.response.body", "body": sse_event(message), "more_body": True})
        async with anyio.create_task_group() as tg:
            async def watch_disconnect() -> None:
                nonlocal gone
                while (await receive())["type"] != "http.disconnect":
                    pass
                gone = True
                tg.cancel_scope.cancel()

            tg.start_soon(watch_disconnect)
            with anyio.move_on_after(bounds.stream_lifetime_s):
                while receiver is not None:
                    with anyio.move_on_after(bounds.keepalive_s) as idle:
                        try:
                            note = await receiver.receive()
                        except (anyio.EndOfStream, anyio.ClosedResourceError):
                            break
                    if idle.cancelled_caught:
                        await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
                        continue
                    await send({"type": "http.response.body", "body": sse_event(note), "more_body": True})
            tg.cancel_scope.cancel()
        if not gone:
            await send({"type": "http.response.body", "body": b"" if last is None else sse_event(last),
                        "more_body": False})
    except OSError:  # the caller went away mid-write
        pass
    finally:
        with anyio.CancelScope(shield=True):
            await hub.close(sub)
