"""The re-check of a resource update runs off the event loop: a Rego module that runs to its CPU budget
while an update is fanned out stalls nothing else, and the subscriber is not told (fail closed).

The real hub, resolver, policy engine and Rego worker pool; only the upstream is the test double. No
timing margin: the slow evaluation needs seconds of CPU and is stopped at a budget below that, and the
other task is checked to keep running *while the re-check is still pending* (an ordering).
"""

from __future__ import annotations

from pathlib import Path

import anyio

from portcullis.policy.rego import RegoPolicy
from portcullis.policy.rego_pool import PoolSettings
from portcullis.subscriptions import UPDATED, session_key

from .test_surface import STAFF, surface_gateway

TERMS = "billing+docs://terms"
DAY = 86_400.0
# slow only for a decision taken after the subscribe (the harness clock moves a day on): a backtracking
# regular expression, exponential in the string's length (far more CPU than the budget, no memory)
SLOW_LATER = """package portcullis.t

import rego.v1

x := 1 if {
    input.now >= "2027-01-16T00:00:00Z"
    regex.match("^(a+)+$", concat("", ["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "b"]))
}
deny contains {"id": "x", "reason": "x"} if x < 0
"""


async def test_a_rego_check_at_its_budget_does_not_stall_the_loop_and_tells_nobody(tmp_path: Path) -> None:
    # 0.3 s of CPU, a wall-clock backstop of 9 s: under the re-check's 10 s even on a machine 30x loaded, so
    # the outcome is the budget's deny (with 1 s of CPU, a loaded machine overran the re-check: check_failed)
    rego = RegoPolicy.compile({"t.rego": SLOW_LATER}, budget_s=0.3)
    pool = rego.workers(PoolSettings(size=1, wall_s=9.0))
    try:
        assert await pool.wait_ready(60), "Rego workers did not start"
        counted: list[str] = []
        async with surface_gateway(tmp_path, rego=rego) as gw:
            gw.hub._counted = counted.append
            assert await gw.request("resources/subscribe", {"uri": TERMS}, STAFF, session="s-1") == ({}, None)
            stream = gw.hub.open_session_stream(session_key("s-1"), STAFF)
            gw.clock.now += DAY
            gw.connector.announce(UPDATED, {"uri": "docs://terms"})  # returns at once: the re-check is queued
            assert gw.hub.updates_pending() == 1
            with anyio.fail_after(60):
                while pool._idle:  # until the re-check has taken the one worker
                    await anyio.sleep(0.01)
                ticks = 0
                while ticks < 200:  # another task keeps running meanwhile
                    await anyio.sleep(0)
                    ticks += 1
                assert gw.hub.updates_pending() == 1  # ... while the re-check is still running
                await gw.hub.drained()
            assert stream.receiver is not None and stream.receiver.statistics().current_buffer_used == 0
            assert counted == ["no_longer_readable"]  # stopped at its budget: a deny, nobody told
            assert pool.lost_workers == 1  # terminated at its budget, not finished
    finally:
        await pool.aclose()
