"""Both embedded state stores: bucketed sliding windows, exact sums, bounds, and the failing double.

Every behaviour test runs against :class:`InMemoryStateStore` and :class:`SqliteStateStore`
(the ``store`` fixture); persistence itself is tested in tests/security/test_limit_persistence.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from portcullis.state import (
    FailingStateStore,
    InMemoryStateStore,
    SqliteStateStore,
    StateFull,
    StateStore,
    StateUnavailable,
    WindowResult,
)
from portcullis.state.buckets import BUCKETS

T0 = 1_000.0
HOUR = 3600.0
WIDTH = HOUR / BUCKETS  # one bucket of an hour's window

Store = InMemoryStateStore | SqliteStateStore
Factory = Callable[..., Store]


@pytest.fixture(params=["memory", "sqlite"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    """Builds stores of one kind (``max_keys=`` passes through); closes what it built."""
    made: list[SqliteStateStore] = []

    def build(**kwargs: Any) -> Store:
        if request.param == "memory":
            return InMemoryStateStore(**kwargs)
        store = SqliteStateStore.open(tmp_path / f"counters-{len(made)}.sqlite3", **kwargs)
        made.append(store)
        return store

    yield build
    for store in made:
        store.close()


@pytest.fixture
def store(make: Factory) -> Store:
    return make()


async def add(store: Store, key: str = "k", amount: Any = 1, *, limit: Any = 10,
              window_s: float = HOUR, now: float = T0) -> WindowResult:
    return await store.window_add(key, amount, window_s=window_s, limit=limit, now=now)


def test_every_store_satisfies_the_protocol(store: Store) -> None:
    """Both embedded stores and FailingStateStore are usable wherever a StateStore is expected."""
    stores: list[StateStore] = [store, FailingStateStore()]
    assert len(stores) == 2


@pytest.mark.parametrize("offset", [0.0, 0.001, WIDTH / 2, WIDTH - 0.001])
async def test_an_add_counts_for_at_least_window_s_and_at_most_one_bucket_more(store: Store, offset: float) -> None:
    """Wherever in its bucket an add falls, it counts for [window_s, window_s + window_s/64]."""
    now = 64 * WIDTH * 100 + offset  # a bucket boundary plus the offset
    await add(store, amount=10, limit=10, now=now)
    assert not (await add(store, now=now + HOUR - 0.001)).accepted
    assert await store.window_total("k", now=now + HOUR - 1e-6) == 10
    assert await store.window_total("k", now=now + HOUR + WIDTH) == 0
    assert (await add(store, now=now + HOUR + WIDTH)).accepted


async def test_a_window_never_holds_more_than_65_buckets_whatever_it_counts(store: Store) -> None:
    """20,000 adds spread over a window and beyond keep at most 65 buckets: memory does not grow with the count."""
    for i in range(20_000):
        assert (await add(store, limit=10**18, now=T0 + i * 0.36)).accepted
        assert store.buckets("k") <= BUCKETS + 1
    assert await store.window_total("k", now=T0 + 20_000 * 0.36) >= 10_000


async def test_add_within_limit_is_accepted_with_totals_and_an_entry_id(store: Store) -> None:
    """An accepted add reports the total before and after and an entry id."""
    first = await add(store, amount=4)
    second = await add(store, amount=6, now=T0 + 1)
    assert (first.accepted, first.total_before, first.total_after) == (True, 0, 4)
    assert (second.accepted, second.total_before, second.total_after) == (True, 4, 10)
    assert first.entry_id and second.entry_id and first.entry_id != second.entry_id


async def test_add_over_limit_is_refused_and_changes_nothing(store: Store) -> None:
    """A refused add leaves the total as it was and carries no entry id."""
    await add(store, amount=8)
    refused = await add(store, amount=3, now=T0 + 1)
    assert (refused.accepted, refused.total_before, refused.total_after, refused.entry_id) == (False, 8, 8, None)
    assert await store.window_total("k", now=T0 + 2) == 8


async def test_refused_add_on_a_new_key_does_not_create_it(store: Store) -> None:
    """An amount over the limit on an unknown key leaves the key table empty."""
    assert not (await add(store, amount=11)).accepted
    assert len(store) == 0


async def test_window_total_of_an_unknown_key_is_zero_and_creates_nothing(store: Store) -> None:
    """Reading an unknown key returns 0 and does not use a key slot."""
    assert await store.window_total("nobody", now=T0) == 0
    assert len(store) == 0


@pytest.mark.parametrize("bogus", ["no-such-id", "1", "1000.0/5/1", "nan/5/1", "3600.0/-5/1", "3600.0/inf/1",
                                   "a/b/c", "", "//", "1/2/3/4"])
async def test_window_remove_undoes_one_add_and_ignores_unknown_ids(store: Store, bogus: str) -> None:
    """Removing an entry by id gives its amount back; unknown keys and malformed ids change nothing."""
    kept = await add(store, amount=3)
    undone = await add(store, amount=5, now=T0 + 1)
    assert undone.entry_id is not None and kept.entry_id is not None
    await store.window_remove("k", undone.entry_id)
    await store.window_remove("k", bogus)
    await store.window_remove("no-such-key", undone.entry_id)
    assert await store.window_total("k", now=T0 + 2) == 3
    await store.window_remove("k", kept.entry_id)
    assert len(store) == 0


async def test_decimal_sums_are_exact(store: Store) -> None:
    """0.1 + 0.2 fills a 0.3 limit exactly, and 18-decimal amounts near 10**18 do not round."""
    assert (await add(store, amount=Decimal("0.1"), limit=Decimal("0.3"))).accepted
    assert (await add(store, amount=Decimal("0.2"), limit=Decimal("0.3"), now=T0 + 1)).accepted
    assert not (await add(store, amount=Decimal("1e-18"), limit=Decimal("0.3"), now=T0 + 2)).accepted
    big = Decimal("999999999999999999.999999999999999999")  # 36 digits: the default context would round
    assert (await add(store, "big", amount=big, limit=10**18)).accepted
    result = await add(store, "big", amount=Decimal("1e-18"), limit=10**18, now=T0 + 1)
    assert result.accepted and result.total_after == 10**18
    assert await store.window_total("big", now=T0 + 1) == 10**18


async def test_full_key_table_evicts_keys_whose_windows_are_empty(make: Factory) -> None:
    """With the key table full, a new key takes the slot of a key whose entries have all expired."""
    store = make(max_keys=2)
    await add(store, "old", window_s=10)
    await add(store, "live", window_s=HOUR)
    assert (await add(store, "new", now=T0 + 11)).accepted
    assert await store.window_total("live", now=T0 + 11) == 1
    assert len(store) == 2


async def test_full_key_table_of_live_keys_fails_closed(make: Factory) -> None:
    """When no key can be evicted, adding a new key raises StateFull (a StateUnavailable), forgetting nothing."""
    store = make(max_keys=2)
    await add(store, "a")
    await add(store, "b")
    with pytest.raises(StateFull) as raised:
        await add(store, "c", now=T0 + 1)
    assert isinstance(raised.value, StateUnavailable)
    assert (await add(store, "a", now=T0 + 1)).accepted  # existing keys still work
    assert await store.window_total("b", now=T0 + 1) == 1


async def test_clock_going_backwards_never_shortens_an_entry(store: Store) -> None:
    """An add at an earlier now than the last one counts at least as long as the last one."""
    await add(store, amount=1, now=T0 + 100)
    await add(store, amount=1, now=T0)  # the clock stepped back
    assert await store.window_total("k", now=T0 + HOUR + 100) == 2
    assert await store.window_total("k", now=T0 + HOUR + 100 + WIDTH) == 0


async def test_a_shorter_window_for_the_same_key_never_shortens_what_was_counted(store: Store) -> None:
    """A rule edited to a shorter window: earlier adds keep their expiry, new ones join the last bucket."""
    await add(store, amount=1, now=T0)
    await add(store, amount=1, now=T0 + 1, window_s=60)
    assert await store.window_total("k", now=T0 + 61 + WIDTH) == 2


async def test_expiry_heap_stays_bounded_under_many_adds(make: Factory) -> None:
    """Thousands of adds to a few keys keep the eviction heap near the number of keys."""
    store = make(max_keys=4)
    for i in range(5_000):
        await add(store, f"k{i % 4}", amount=1, limit=10**6, window_s=1.0, now=T0 + i)
    assert len(store._windows._expiry) <= 2 * 4 + 64


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
async def test_bad_inputs_are_rejected_with_value_error(store: Store, changes: dict[str, Any],
                                                        message: str) -> None:
    """Out-of-contract amounts, limits, keys, windows and clocks raise ValueError and store nothing."""
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


# ----------------------------------------------------------------------------- expiring values


async def test_a_value_lives_for_its_ttl_and_a_set_replaces_it(store: Store) -> None:
    """value_set/value_get: absent until set, replaced by a later set (value and expiry), absent once expired."""
    assert await store.value_get("loglevel/a", now=T0) is None
    await store.value_set("loglevel/a", "error", ttl_s=60, now=T0)
    assert await store.value_get("loglevel/a", now=T0 + 59.9) == "error"
    await store.value_set("loglevel/a", "info", ttl_s=10, now=T0 + 30)
    assert await store.value_get("loglevel/a", now=T0 + 39.9) == "info"
    assert await store.value_get("loglevel/a", now=T0 + 40) is None


async def test_a_full_value_table_drops_expired_values_first_then_fails_closed(make: Factory) -> None:
    store = make(max_keys=2)
    await store.value_set("a", "1", ttl_s=10, now=T0)
    await store.value_set("b", "2", ttl_s=100, now=T0)
    with pytest.raises(StateFull):  # both live: never forget one
        await store.value_set("c", "3", ttl_s=10, now=T0 + 5)
    await store.value_set("c", "3", ttl_s=10, now=T0 + 10)  # a has expired: its slot is taken
    assert [await store.value_get(k, now=T0 + 10) for k in "abc"] == [None, "2", "3"]
    for i in range(1_000):  # setting one key again and again keeps the expiry heap bounded
        await store.value_set("b", str(i), ttl_s=100, now=T0 + 10)
    assert len(store._values._expiries) < 100  # type: ignore[union-attr]


@pytest.mark.parametrize("changes", [{"key": ""}, {"key": "k" * 1025}, {"value": 3}, {"value": "v" * 257},
                                     {"ttl_s": 0}, {"ttl_s": -1}, {"ttl_s": float("inf")}, {"ttl_s": True},
                                     {"ttl_s": 367 * 86400}, {"now": float("nan")}])
async def test_bad_value_inputs_are_rejected_with_value_error(store: Store, changes: dict[str, Any]) -> None:
    args: dict[str, Any] = {"key": "k", "value": "v", "ttl_s": 60, "now": T0, **changes}
    with pytest.raises(ValueError):
        await store.value_set(args["key"], args["value"], ttl_s=args["ttl_s"], now=args["now"])
    assert await store.value_get("k", now=T0) is None


async def test_values_of_a_closed_sqlite_store_are_unavailable(tmp_path: Path) -> None:
    store = SqliteStateStore.open(tmp_path / "c.sqlite3")
    await store.value_set("k", "v", ttl_s=60, now=T0)
    store.close()
    with pytest.raises(StateUnavailable):
        await store.value_get("k", now=T0)
    with pytest.raises(StateUnavailable):
        await store.value_set("k", "v", ttl_s=60, now=T0)
    failing = FailingStateStore()
    with pytest.raises(StateUnavailable):
        await failing.value_get("k", now=T0)
