"""The hub's queue of resource updates: re-checked off the connector's callback, in order per
subscriber, and a re-check that fails, overruns its bound or is cancelled tells nobody (counted).

The hub and its queue are real; the resolver (the policy decision, tested with the real engine and Rego
workers in tests/security) and the upstream are the doubles at their seams.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from portcullis.identity.principal import Principal
from portcullis.subscriptions import Subscriber, SubscriptionBounds, SubscriptionHub, session_key

ALICE = Principal(client_id="c", auth_method="dev", issuer="dev", issuer_name="dev", user_id="alice")
TARGETS = {"svc+a://1": ("svc", "a://1"), "svc+a://2": ("svc", "a://2")}


class Upstream:
    async def subscribe(self, service: str, uri: str) -> None:
        pass

    async def unsubscribe(self, service: str, uri: str) -> None:
        pass


def _hub(resolve: Callable[[str, Principal], Awaitable[tuple[str, str] | None]], counted: list[str],
         **bounds: Any) -> SubscriptionHub:
    return SubscriptionHub(resolve, Upstream(), lambda p: p.user_id or "", counted=counted.append,
                           bounds=SubscriptionBounds(**bounds))


def _uris(sub: Subscriber) -> list[str]:
    out = []
    assert sub.receiver is not None
    while True:
        try:
            out.append(sub.receiver.receive_nowait()["params"]["uri"])
        except anyio.WouldBlock:
            return out


async def test_updates_reach_a_subscriber_in_the_order_they_came() -> None:
    """The re-check of the first update is the slowest; the later ones still wait their turn."""
    delays = {"svc+a://1": 0.05, "svc+a://2": 0.0}

    async def resolve(uri: str, principal: Principal) -> tuple[str, str] | None:
        await anyio.sleep(delays[uri])
        return TARGETS[uri]

    counted: list[str] = []
    hub = _hub(resolve, counted)
    async with anyio.create_task_group() as tg:
        tg.start_soon(hub.run)
        for uri in TARGETS:
            await hub.subscribe("s-1", ALICE, uri)
        sub = hub.open_session_stream("s-1", ALICE)
        for n in range(6):
            hub.resource_updated("svc", f"a://{n % 2 + 1}")
        with anyio.fail_after(30):
            await hub.drained()
        assert _uris(sub) == ["svc+a://1", "svc+a://2"] * 3 and counted == ["relayed"] * 6
        tg.cancel_scope.cancel()


def _answer(target: tuple[str, str] | None) -> Callable[[], Awaitable[tuple[str, str] | None]]:
    async def answer() -> tuple[str, str] | None:
        await anyio.sleep(0)
        return target

    return answer


async def _raises() -> tuple[str, str] | None:
    raise RuntimeError("policy engine gone")


async def _hangs() -> tuple[str, str] | None:
    await anyio.sleep_forever()
    return None


ROWS: dict[str, tuple[Callable[[], Awaitable[tuple[str, str] | None]], str]] = {
    "allowed (benign)": (_answer(TARGETS["svc+a://1"]), "relayed"),
    "denied": (_answer(None), "no_longer_readable"),
    "another target now": (_answer(TARGETS["svc+a://2"]), "no_longer_readable"),
    "the check raises": (_raises, "check_failed"),
    "the check overruns check_s": (_hangs, "check_failed"),
}


@pytest.mark.parametrize("row", list(ROWS))
async def test_a_failed_check_tells_nobody(row: str) -> None:
    answer, outcome = ROWS[row]
    subscribing = True

    async def resolve(uri: str, principal: Principal) -> tuple[str, str] | None:
        if subscribing:
            return TARGETS[uri]
        return await answer()

    counted: list[str] = []
    hub = _hub(resolve, counted, check_s=0.05)
    async with anyio.create_task_group() as tg:
        tg.start_soon(hub.run)
        await hub.subscribe(session_key("s"), ALICE, "svc+a://1")
        sub = hub.open_session_stream(session_key("s"), ALICE)
        subscribing = False
        hub.resource_updated("svc", "a://1")
        with anyio.fail_after(30):
            await hub.drained()
        assert counted == [outcome] and _uris(sub) == (["svc+a://1"] if outcome == "relayed" else [])
        assert sub.pending == 0
        tg.cancel_scope.cancel()


async def test_a_cancelled_check_tells_nobody_and_frees_the_queue() -> None:
    started = anyio.Event()

    async def resolve(uri: str, principal: Principal) -> tuple[str, str] | None:
        if started.is_set():
            await anyio.sleep_forever()
        return TARGETS[uri]

    counted: list[str] = []
    hub = _hub(resolve, counted, queue=1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(hub.run)
        await hub.subscribe("s", ALICE, "svc+a://1")
        sub = hub.open_session_stream("s", ALICE)
        started.set()
        hub.resource_updated("svc", "a://1")
        hub.resource_updated("svc", "a://1")  # the queue holds one: the update being re-checked
        assert counted == ["queue_full"] and sub.pending == 1
        await anyio.sleep(0.01)
        tg.cancel_scope.cancel()  # the gateway stops mid-check
    assert counted == ["queue_full", "check_failed"] and sub.pending == 0 and _uris(sub) == []
    assert hub.updates_pending() == 0


async def test_unsubscribed_while_being_rechecked_is_not_told() -> None:
    release = anyio.Event()
    checking = False

    async def resolve(uri: str, principal: Principal) -> tuple[str, str] | None:
        if checking:
            await release.wait()
        return TARGETS[uri]

    counted: list[str] = []
    hub = _hub(resolve, counted)
    async with anyio.create_task_group() as tg:
        tg.start_soon(hub.run)
        await hub.subscribe("s", ALICE, "svc+a://1")
        await hub.subscribe("s", ALICE, "svc+a://2")  # keeps the session (and its stream) alive
        sub = hub.open_session_stream("s", ALICE)
        checking = True
        hub.resource_updated("svc", "a://1")
        await hub.unsubscribe("s", ALICE, "svc+a://1")
        release.set()
        with anyio.fail_after(30):
            await hub.drained()
        assert counted == ["unsubscribed"] and _uris(sub) == []
        tg.cancel_scope.cancel()
