"""Cost of watching a call for its caller's disconnect (issue 13; figures for the docs, never asserted).

What the transport adds to a 2026-07-28 call answered as plain JSON by watching it:
:func:`~portcullis.transport.disconnect.run_watched` (a cancel scope, a bare asyncio task pending on
``receive()``, cancelled when the call ends) around a call that returns at once, against awaiting
the same call directly.
The ``receive`` blocks as a real ASGI server's does after the body (an event that is never set).
Median of 5 runs of N calls each, on the asyncio loop, in process, in CPU time (this process's:
the figure holds on a loaded machine, where wall time mostly measures waiting for a core).

    .venv/bin/python -m bench.disconnect_micro
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from portcullis.transport.disconnect import run_watched

N = 20_000


async def _result() -> dict[str, Any]:
    await anyio.lowlevel.checkpoint()  # a dispatch always awaits something
    return {"content": []}


async def timed(one: Callable[[], Awaitable[object]]) -> float:
    samples = []
    for _ in range(5):
        start = time.process_time()
        for _ in range(N):
            await one()
        samples.append((time.process_time() - start) / N * 1e6)
    return statistics.median(samples)


async def main() -> None:
    never = anyio.Event()

    async def receive() -> dict[str, Any]:
        await never.wait()
        return {"type": "http.disconnect"}

    direct = await timed(_result)
    watched = await timed(lambda: run_watched(_result, receive))
    print(f"direct await        {direct:7.2f} us per call")
    print(f"run_watched         {watched:7.2f} us per call")
    print(f"added by the watch  {watched - direct:7.2f} us of CPU per call (median of 5 x {N})")


if __name__ == "__main__":
    anyio.run(main)
