"""Cancelling a call when its caller goes away (:mod:`portcullis.transport.disconnect`): the watch
beside the call, in process, with the ASGI ``receive`` as a test double the test drives."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel

from portcullis.cancellation import caller_gone
from portcullis.errors import UpstreamFailed
from portcullis.transport.disconnect import run_watched


class Connection:
    """An ASGI ``receive`` after the body: blocks until the test says what the server reports."""

    def __init__(self) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[dict[str, Any]](1)
        self.waiting = anyio.Event()

    async def receive(self) -> dict[str, Any]:
        self.waiting.set()
        return await self._receive.receive()

    async def report(self, kind: str) -> None:
        await self._send.send({"type": kind, "body": b"", "more_body": False})


async def test_a_caller_who_goes_away_cancels_the_call_and_marks_why() -> None:
    connection = Connection()
    started, seen = anyio.Event(), []

    async def call() -> str:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            seen.append(caller_gone())  # what the record stage reads when it writes the owed outcome
        return "never"

    async def disconnect_once_running() -> None:
        await started.wait()
        await connection.waiting.wait()
        await connection.report("http.disconnect")

    async with anyio.create_task_group() as tg:
        tg.start_soon(disconnect_once_running)
        done = await run_watched(call, connection.receive)
    assert not done.finished and done.value is None and done.error is None
    assert seen == [True]


async def test_a_call_that_ends_first_stops_the_watch() -> None:
    connection = Connection()
    with anyio.fail_after(10):  # the watch would block forever if it were left running
        done = await run_watched(lambda: _value("ok"), connection.receive)
    assert done.finished and done.value == "ok" and not caller_gone()


async def test_an_error_is_handed_back_unchanged() -> None:
    error = UpstreamFailed(detail="x")

    async def failing() -> str:
        raise error

    done = await run_watched(failing, Connection().receive)
    assert done.finished and done.error is error


async def test_a_server_that_answers_receive_otherwise_is_not_taken_for_a_disconnect() -> None:
    """No busy loop and no cancellation on a guess: the watch stops, the call runs to its end."""
    connection = Connection()
    release = anyio.Event()

    async def call() -> str:
        await connection.waiting.wait()
        await connection.report("http.request")
        await release.wait()
        return "done"

    async with anyio.create_task_group() as tg:
        tg.start_soon(_set_later, release, connection)
        done = await run_watched(call, connection.receive)
    assert done.finished and done.value == "done"


async def _set_later(event: anyio.Event, connection: Connection) -> None:
    await connection.waiting.wait()
    await anyio.lowlevel.checkpoint()
    event.set()


async def _value(value: str) -> str:
    return value
