"""RedisStateStore against the real Redis: the StateStore contract of tests/unit/test_state_stores.py, mirrored.

The behaviours are the ones every embedded store passes (same inputs, same expected answers); only the
introspection differs (``await store.key_count()`` for ``len(store)``, ``bucket_count`` for ``buckets``).
Each test has a key prefix of its own (``redis_prefix``), deleted afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import pytest

from portcullis.state import StateFull, StateStore, StateUnavailable, WindowResult
from portcullis.state.buckets import BUCKETS, EXACT, bucket_expiry
from portcullis.state.redis_store import RedisStateStore

T0 = 1_000.0
HOUR = 3600.0
WIDTH = HOUR / BUCKETS

Factory = Callable[..., RedisStateStore]


@pytest.fixture
async def make(redis_url: str, redis_prefix: str) -> AsyncIterator[Factory]:
    made: list[RedisStateStore] = []

    def build(**kwargs: Any) -> RedisStateStore:
        store = RedisStateStore.from_url(redis_url, key_prefix=f"{redis_prefix}{len(made)}:", connect_timeout_s=5,
                                         op_timeout_s=5, **kwargs)
        made.append(store)
        return store

    yield build
    for store in made:
        await store.aclose()


@pytest.fixture
def store(make: Factory) -> RedisStateStore:
    return make()


async def add(store: RedisStateStore, key: str = "k", amount: Any = 1, *, limit: Any = 10,
              window_s: float = HOUR, now: float = T0) -> WindowResult:
    return await store.window_add(key, amount, window_s=window_s, limit=limit, now=now)


def test_the_redis_store_satisfies_the_protocol(store: RedisStateStore) -> None:
    stores: list[StateStore] = [store]
    assert len(stores) == 1


@pytest.mark.parametrize("offset", [0.0, 0.001, WIDTH / 2, WIDTH - 0.001])
async def test_an_add_counts_for_at_least_window_s_and_at_most_one_bucket_more(store: RedisStateStore,
                                                                                offset: float) -> None:
    now = 64 * WIDTH * 100 + offset
    await add(store, amount=10, limit=10, now=now)
    assert not (await add(store, now=now + HOUR - 0.001)).accepted
    assert await store.window_total("k", now=now + HOUR - 1e-6) == 10
    assert await store.window_total("k", now=now + HOUR + WIDTH) == 0
    assert (await add(store, now=now + HOUR + WIDTH)).accepted


async def test_a_window_never_holds_more_than_65_buckets_whatever_it_counts(store: RedisStateStore) -> None:
    """2,000 adds spread over five windows keep at most 65 buckets (fewer adds than the unit test: round trips)."""
    for i in range(2_000):
        assert (await add(store, limit=10**18, now=T0 + i * 9)).accepted
        if i % 50 == 0:
            assert await store.bucket_count("k") <= BUCKETS + 1
    assert await store.bucket_count("k") <= BUCKETS + 1
    assert await store.window_total("k", now=T0 + 2_000 * 9) >= 390


async def test_add_within_limit_is_accepted_with_totals_and_an_entry_id(store: RedisStateStore) -> None:
    first = await add(store, amount=4)
    second = await add(store, amount=6, now=T0 + 1)
    assert (first.accepted, first.total_before, first.total_after) == (True, 0, 4)
    assert (second.accepted, second.total_before, second.total_after) == (True, 4, 10)
    assert first.entry_id and second.entry_id and first.entry_id != second.entry_id


async def test_add_over_limit_is_refused_and_changes_nothing(store: RedisStateStore) -> None:
    await add(store, amount=8)
    refused = await add(store, amount=3, now=T0 + 1)
    assert (refused.accepted, refused.total_before, refused.total_after, refused.entry_id) == (False, 8, 8, None)
    assert await store.window_total("k", now=T0 + 2) == 8


async def test_refused_add_on_a_new_key_does_not_create_it(store: RedisStateStore) -> None:
    assert not (await add(store, amount=11)).accepted
    assert await store.key_count() == 0
    assert await store.bucket_count("k") == 0


async def test_window_total_of_an_unknown_key_is_zero_and_creates_nothing(store: RedisStateStore) -> None:
    assert await store.window_total("nobody", now=T0) == 0
    assert await store.key_count() == 0


@pytest.mark.parametrize("bogus", ["no-such-id", "1", "1000.0/5/1", "nan/5/1", "3600.0/-5/1", "3600.0/inf/1",
                                   "a/b/c", "", "//", "1/2/3/4"])
async def test_window_remove_undoes_one_add_and_ignores_unknown_ids(store: RedisStateStore, bogus: str) -> None:
    kept = await add(store, amount=3)
    undone = await add(store, amount=5, now=T0 + 1)
    assert undone.entry_id is not None and kept.entry_id is not None
    await store.window_remove("k", undone.entry_id)
    await store.window_remove("k", bogus)
    await store.window_remove("no-such-key", undone.entry_id)
    assert await store.window_total("k", now=T0 + 2) == 3
    await store.window_remove("k", kept.entry_id)
    assert await store.key_count() == 0


async def test_decimal_sums_are_exact(store: RedisStateStore) -> None:
    """0.1 + 0.2 fills 0.3 exactly; 36-digit amounts near 10**18 (far past a double's 2^53) do not round."""
    assert (await add(store, amount=Decimal("0.1"), limit=Decimal("0.3"))).accepted
    assert (await add(store, amount=Decimal("0.2"), limit=Decimal("0.3"), now=T0 + 1)).accepted
    assert not (await add(store, amount=Decimal("1e-18"), limit=Decimal("0.3"), now=T0 + 2)).accepted
    big = Decimal("999999999999999999.999999999999999999")
    assert (await add(store, "big", amount=big, limit=10**18)).accepted
    result = await add(store, "big", amount=Decimal("1e-18"), limit=10**18, now=T0 + 1)
    assert result.accepted and result.total_after == 10**18
    assert await store.window_total("big", now=T0 + 1) == 10**18
    assert not (await add(store, "big", amount=Decimal("1e-18"), limit=10**18, now=T0 + 2)).accepted


async def test_exact_sums_across_many_buckets_with_carries(store: RedisStateStore) -> None:
    """Sixty buckets of 7-digit-limb-straddling amounts sum exactly (the Lua limb carry), checked against Decimal."""
    amount = Decimal("16666666666666666.666666666666666667")  # x60 = 1e18 + 2e-17: the 60th add must fail
    expected = Decimal(0)
    for i in range(59):
        result = await add(store, amount=amount, limit=10**18, now=T0 + i * WIDTH)
        expected = EXACT.add(expected, amount)
        assert result.accepted and result.total_after == expected
    assert not (await add(store, amount=amount, limit=10**18, now=T0 + 59 * WIDTH)).accepted
    assert await store.window_total("k", now=T0 + 59 * WIDTH) == expected


async def test_full_key_table_evicts_keys_whose_windows_are_empty(make: Factory) -> None:
    store = make(max_keys=2)
    await add(store, "old", window_s=10)
    await add(store, "live", window_s=HOUR)
    assert (await add(store, "new", now=T0 + 11)).accepted
    assert await store.window_total("live", now=T0 + 11) == 1
    assert await store.key_count() == 2


async def test_full_key_table_of_live_keys_fails_closed(make: Factory) -> None:
    store = make(max_keys=2)
    await add(store, "a")
    await add(store, "b")
    with pytest.raises(StateFull) as raised:
        await add(store, "c", now=T0 + 1)
    assert isinstance(raised.value, StateUnavailable)
    assert (await add(store, "a", now=T0 + 1)).accepted
    assert await store.window_total("b", now=T0 + 1) == 1


async def test_clock_going_backwards_never_shortens_an_entry(store: RedisStateStore) -> None:
    await add(store, amount=1, now=T0 + 100)
    await add(store, amount=1, now=T0)
    assert await store.window_total("k", now=T0 + HOUR + 100) == 2
    assert await store.window_total("k", now=T0 + HOUR + 100 + WIDTH) == 0


async def test_a_shorter_window_for_the_same_key_never_shortens_what_was_counted(store: RedisStateStore) -> None:
    await add(store, amount=1, now=T0)
    await add(store, amount=1, now=T0 + 1, window_s=60)
    assert await store.window_total("k", now=T0 + 61 + WIDTH) == 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"amount": True}, "int or Decimal"), ({"amount": 1.5}, "int or Decimal"), ({"amount": "1"}, "int or Decimal"),
        ({"amount": -1}, "from 0"), ({"amount": Decimal("-0.5")}, "from 0"), ({"amount": Decimal("NaN")}, "finite"),
        ({"amount": Decimal("sNaN")}, "finite"), ({"amount": Decimal("Infinity")}, "finite"),
        ({"amount": 10**18 + 1}, "from 0"), ({"amount": Decimal("1e-19")}, "decimal places"),
        ({"limit": False}, "int or Decimal"), ({"key": ""}, "key"), ({"key": "x" * 1025}, "key"),
        ({"window_s": 0}, "window_s"), ({"window_s": float("inf")}, "window_s"), ({"now": float("nan")}, "now"),
        ({"now": True}, "now"),
    ],
)
async def test_bad_inputs_are_rejected_with_value_error(store: RedisStateStore, changes: dict[str, Any],
                                                        message: str) -> None:
    with pytest.raises(ValueError, match=message):
        await add(store, **changes)
    assert await store.key_count() == 0


async def test_hostile_keys_stay_under_the_prefix(store: RedisStateStore, redis_url: str, redis_prefix: str) -> None:
    """Keys with glob, newline, NUL-free binary-ish text and a foreign prefix live under this store's prefix only."""
    import redis.asyncio as aioredis

    for key in ["*", "x\r\nFLUSHALL\r\n", "../other:w:k", "{tag}", "ü" * 300]:
        assert (await add(store, key)).accepted
        assert await store.window_total(key, now=T0) == 1
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match="*", count=1000)]
        mine = [k for k in keys if k.startswith(redis_prefix.encode())]
        assert len(mine) == 6  # five windows and the index
        assert all(k.startswith(f"{redis_prefix}0:".encode()) for k in mine)
    finally:
        await client.aclose()


# ----------------------------------------------------------------------------- expiring values


async def test_a_value_lives_for_its_ttl_and_a_set_replaces_it(store: RedisStateStore) -> None:
    assert await store.value_get("loglevel/a", now=T0) is None
    await store.value_set("loglevel/a", "error", ttl_s=60, now=T0)
    assert await store.value_get("loglevel/a", now=T0 + 59.9) == "error"
    await store.value_set("loglevel/a", "in|fo", ttl_s=10, now=T0 + 30)
    assert await store.value_get("loglevel/a", now=T0 + 39.9) == "in|fo"
    assert await store.value_get("loglevel/a", now=T0 + 40) is None


async def test_a_full_value_table_drops_expired_values_first_then_fails_closed(make: Factory) -> None:
    store = make(max_keys=2)
    await store.value_set("a", "1", ttl_s=10, now=T0)
    await store.value_set("b", "2", ttl_s=100, now=T0)
    with pytest.raises(StateFull):
        await store.value_set("c", "3", ttl_s=10, now=T0 + 5)
    await store.value_set("c", "3", ttl_s=10, now=T0 + 10)
    assert [await store.value_get(k, now=T0 + 10) for k in "abc"] == [None, "2", "3"]
    for i in range(200):
        await store.value_set("b", str(i), ttl_s=100, now=T0 + 10)
    assert await store.value_get("b", now=T0 + 10) == "199"


@pytest.mark.parametrize("changes", [{"key": ""}, {"key": "k" * 1025}, {"value": 3}, {"value": "v" * 257},
                                     {"ttl_s": 0}, {"ttl_s": -1}, {"ttl_s": float("inf")}, {"ttl_s": True},
                                     {"ttl_s": 367 * 86400}, {"now": float("nan")}])
async def test_bad_value_inputs_are_rejected_with_value_error(store: RedisStateStore, changes: dict[str, Any]) -> None:
    args: dict[str, Any] = {"key": "k", "value": "v", "ttl_s": 60, "now": T0, **changes}
    with pytest.raises(ValueError):
        await store.value_set(args["key"], args["value"], ttl_s=args["ttl_s"], now=args["now"])
    assert await store.value_get("k", now=T0) is None


async def test_idle_keys_carry_a_server_ttl(store: RedisStateStore, redis_url: str, redis_prefix: str) -> None:
    """Every key the store writes expires on the server about 60 s after its last bucket or value."""
    import redis.asyncio as aioredis

    await add(store, window_s=HOUR, now=T0)
    await store.value_set("v", "x", ttl_s=10, now=T0)
    client = aioredis.Redis.from_url(redis_url)
    try:
        for suffix in ["w:k", "w#", "v:v", "v#"]:
            ttl = await client.pttl(f"{redis_prefix}0:{suffix}")
            assert 0 < ttl <= (HOUR + WIDTH + 61) * 1000, suffix
    finally:
        await client.aclose()


async def test_a_live_key_is_never_evicted_by_a_rounded_clock(make: Factory) -> None:
    """At 4e-5 s before a key's last bucket expires (real epoch times, where a ``%.14g`` formatting of ``now``
    would round it up to the expiry), the key is still live: a new key past max_keys is refused."""
    store = make(max_keys=1)
    now = 1_700_000_000.5
    assert (await add(store, "a", window_s=64, now=now)).accepted
    expiry = bucket_expiry(now, 64)
    with pytest.raises(StateFull):
        await add(store, "b", window_s=64, now=expiry - 4e-5)
    assert await store.window_total("a", now=expiry - 4e-5) == 1
    assert (await add(store, "b", window_s=64, now=expiry)).accepted  # expired now: its slot is taken


async def test_a_closed_store_fails_closed_and_maintain_is_harmless(store: RedisStateStore) -> None:
    await store.maintain(T0)
    assert (await add(store)).accepted
    store.close()
    with pytest.raises(StateUnavailable):
        await add(store)
    with pytest.raises(StateUnavailable):
        await store.value_get("k", now=T0)
