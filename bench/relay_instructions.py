"""Instructions per relayed ``tools/call`` (issue 13; for ``valgrind --tool=callgrind``, 0 vs N calls).

A deterministic complement to ``bench.run`` on a noisy machine: the raw relay (pool, strict reader,
answer checks) relays N calls to an in-process 2026-07-28 upstream answering JSON, ``plain`` (no
caller stream, as for a caller that accepts only JSON) or ``stream`` (a caller that may stream: a
``CallStream`` is current, and no notification comes). Run it with N = 0 and N = 200 under callgrind
and divide the difference by N; the upstream's own work is the same on both sides of a comparison.

    valgrind --tool=callgrind --callgrind-out-file=out.N python -m bench.relay_instructions 200 plain
"""

from __future__ import annotations

import asyncio
import sys

from tests.security.hostile_http import hostile_upstream, relay_to

from portcullis.notifications import CURRENT, CallStream


async def main(calls: int, mode: str) -> None:
    async with hostile_upstream(lambda message, index: None) as upstream, relay_to(upstream) as connection:
        if mode == "stream":
            CURRENT.set(CallStream(lambda note: None, progress_token="t", log_level="info"))
        await connection.call_tool("echo", {"who": "warm"}, timeout_s=30, request_id="w")  # connection, imports
        for _ in range(calls):
            await connection.call_tool("echo", {"who": "x"}, timeout_s=30, request_id="r")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
