"""The in-memory state store: sliding-window semantics, exact sums, bounds, and its failing double."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from portcullis.state import (
    FailingStateStore,
    InMemoryStateStore,
    StateFull,
    StateStore,
    StateUnavailable,
    WindowResult,
)

T0 = 1_000.0
HOUR = 3600.0


async def add(store: InMemoryStateStore, key: str = "k", amount: Any = 1, *, limit: Any = 10,
              window_s: float = HOUR, now: float = T0) -> WindowResult:
    return await store.window_add(key, amount, window_s=window_s, limit=limit, now=now)


def test_in_memory_store_satisfies_the_protocol() -> None:
    """InMemoryStateStore and FailingStateStore are usable wherever a StateStore is expected."""
    stores: list[StateStore] = [InMemoryStateStore(), FailingStateStore()]
    assert len(stores) == 2


async def test_entry_counts_until_exactly_window_s_later() -> None:
    """An entry added at t counts at t + window_s - epsilon and no longer at t + window_s."""
    store = InMemoryStateStore()
    await add(store, amount=10, limit=10)
    assert not (await add(store, now=T0 + HOUR - 0.001)).accepted
    assert await store.window_total("k", now=T0 + HOUR - 0.001) == 10
    assert await store.window_total("k", now=T0 + HOUR) == 0
    assert (await add(store, now=T0 + HOUR)).accepted


async def test_add_within_limit_is_accepted_with_totals_and_an_entry_id() -> None:
    """An accepted add reports the total before and after and an entry id."""
    store = InMemoryStateStore()
    first = await add(store, amount=4)
    second = await add(store, amount=6, now=T0 + 1)
    assert (first.accepted, first.total_before, first.total_after) == (True, 0, 4)
    assert (second.accepted, second.total_before, second.total_after) == (True, 4, 10)
    assert first.entry_id and second.entry_id and first.entry_id != second.entry_id


async def test_add_over_limit_is_refused_and_changes_nothing() -> None:
    """A refused add leaves the total as it was and carries no entry id."""
    store = InMemoryStateStore()
    await add(store, amount=8)
    refused = await add(store, amount=3, now=T0 + 1)
    assert (refused.accepted, refused.total_before, refused.total_after, refused.entry_id) == (False, 8, 8, None)
    assert await store.window_total("k", now=T0 + 2) == 8


async def test_refused_add_on_a_new_key_does_not_create_it() -> None:
    """An amount over the limit on an unknown key leaves the key table empty."""
    store = InMemoryStateStore()
    assert not (await add(store, amount=11)).accepted
    assert len(store) == 0


async def test_window_total_of_an_unknown_key_is_zero_and_creates_nothing() -> None:
    """Reading an unknown key returns 0 and does not use a key slot."""
    store = InMemoryStateStore()
    assert await store.window_total("nobody", now=T0) == 0
    assert len(store) == 0


async def test_window_remove_undoes_one_add_and_ignores_unknown_ids() -> None:
    """Removing an entry by id gives its amount back; unknown keys and ids are no-ops."""
    store = InMemoryStateStore()
    kept = await add(store, amount=3)
    undone = await add(store, amount=5, now=T0 + 1)
    assert undone.entry_id is not None and kept.entry_id is not None
    await store.window_remove("k", undone.entry_id)
    await store.window_remove("k", "no-such-id")
    await store.window_remove("no-such-key", "1")
    assert await store.window_total("k", now=T0 + 2) == 3
    await store.window_remove("k", kept.entry_id)
    assert len(store) == 0


async def test_decimal_sums_are_exact() -> None:
    """0.1 + 0.2 fills a 0.3 limit exactly, and 18-decimal amounts near 10**18 do not round."""
    store = InMemoryStateStore()
    assert (await add(store, amount=Decimal("0.1"), limit=Decimal("0.3"))).accepted
    assert (await add(store, amount=Decimal("0.2"), limit=Decimal("0.3"), now=T0 + 1)).accepted
    assert not (await add(store, amount=Decimal("1e-18"), limit=Decimal("0.3"), now=T0 + 2)).accepted
    big = Decimal("999999999999999999.999999999999999999")  # 36 digits: the default context would round
    assert (await add(store, "big", amount=big, limit=10**18)).accepted
    result = await add(store, "big", amount=Decimal("1e-18"), limit=10**18, now=T0 + 1)
    assert result.accepted and result.total_after == 10**18
    assert await store.window_total("big", now=T0 + HOUR) == Decimal("1e-18")


async def test_full_key_table_evicts_keys_whose_windows_are_empty() -> None:
    """With the key table full, a new key takes the slot of a key whose entries have all expired."""
    store = InMemoryStateStore(max_keys=2)
    await add(store, "old", window_s=10)
    await add(store, "live", window_s=HOUR)
    assert (await add(store, "new", now=T0 + 10)).accepted
    assert await store.window_total("live", now=T0 + 10) == 1
    assert len(store) == 2


async def test_full_key_table_of_live_keys_fails_closed() -> None:
    """When no key can be evicted, adding a new key raises StateFull (a StateUnavailable), forgetting nothing."""
    store = InMemoryStateStore(max_keys=2)
    await add(store, "a")
    await add(store, "b")
    with pytest.raises(StateFull) as raised:
        await add(store, "c", now=T0 + 1)
    assert isinstance(raised.value, StateUnavailable)
    assert (await add(store, "a", now=T0 + 1)).accepted  # existing keys still work
    assert await store.window_total("b", now=T0 + 1) == 1


async def test_entries_per_key_cap_fails_closed() -> None:
    """One more live entry than max_entries_per_key raises StateFull; expired entries free room."""
    store = InMemoryStateStore(max_entries_per_key=3)
    for i in range(3):
        await add(store, amount=0, now=T0 + i)
    with pytest.raises(StateFull):
        await add(store, amount=0, now=T0 + 3)
    assert (await add(store, amount=0, now=T0 + HOUR)).accepted


async def test_clock_going_backwards_never_shortens_an_entry() -> None:
    """An entry added at an earlier now than the last one lives at least as long as the last one."""
    store = InMemoryStateStore()
    await add(store, amount=1, now=T0 + 100)
    await add(store, amount=1, now=T0)  # the clock stepped back
    assert await store.window_total("k", now=T0 + HOUR + 50) == 2
    assert await store.window_total("k", now=T0 + HOUR + 100) == 0


async def test_expiry_heap_stays_bounded_under_many_adds() -> None:
    """Thousands of adds to a few keys keep the eviction heap near the number of keys."""
    store = InMemoryStateStore(max_keys=4)
    for i in range(5_000):
        await add(store, f"k{i % 4}", amount=0, limit=1, window_s=1.0, now=T0 + i)
    assert len(store._expiry) <= 2 * 4 + 64


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"amount": True}, "int or Decimal"),
        ({"amount": 1.5}, "int or Decimal"),
        ({"amount": "1"}, "int or Decimal"),
        ({"amount": -1}, "from 0"),
        ({"amount": Decimal("-0.5")}, "from 0"),
        ({"amount": Decimal("NaN")}, "finite"),
        ({"amount": Decimal("sNaN")}, "finite"),
        ({"amount": Decimal("Infinity")}, "finite"),
        ({"amount": 10**18 + 1}, "from 0"),
        ({"amount": Decimal("1e-19")}, "decimal places"),
        ({"limit": False}, "int or Decimal"),
        ({"key": ""}, "key"),
        ({"key": "x" * 1025}, "key"),
        ({"window_s": 0}, "window_s"),
        ({"window_s": float("inf")}, "window_s"),
        ({"now": float("nan")}, "now"),
        ({"now": True}, "now"),
    ],
)
async def test_bad_inputs_are_rejected_with_value_error(changes: dict[str, Any], message: str) -> None:
    """Out-of-contract amounts, limits, keys, windows and clocks raise ValueError and store nothing."""
    store = InMemoryStateStore()
    with pytest.raises(ValueError, match=message):
        await add(store, **changes)
    assert len(store) == 0


async def test_failing_store_raises_state_unavailable_from_every_method() -> None:
    """The FailingStateStore double raises StateUnavailable with its detail and counts calls."""
    store = FailingStateStore(detail="redis down")
    with pytest.raises(StateUnavailable) as raised:
        await store.window_add("k", 1, window_s=1, limit=1, now=T0)
    assert raised.value.detail == "redis down"
    with pytest.raises(StateUnavailable):
        await store.window_total("k", now=T0)
    with pytest.raises(StateUnavailable):
        await store.window_remove("k", "1")
    assert store.calls == 3
