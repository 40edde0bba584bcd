"""What one ``window_add`` costs: in memory, SQLite (write-through) and Redis (one Lua round trip), and what
the exact limb arithmetic costs inside the Lua script against alternatives.

Rows (µs per call, sequential, one caller, loopback Redis):
- ``memory`` / ``sqlite`` / ``redis``: :meth:`window_add` of 1 on a key holding one bucket;
- ``redis 65 buckets``: the same on a key whose window holds 65 live buckets (the most it can hold): the
  script sums all of them on every add;
- ``redis 30-digit amounts``: Decimal amounts with 18 integer and 18 decimal digits;
- ``lua limbs, raw call``: the store's own script called directly (no validation, no Decimal, no timeout
  wrapper): the same shape as the doubles row, so the two differ only by the limb arithmetic;
- ``redis PING``: one bare round trip on the same loop (the floor under every Redis row);
- ``lua doubles (inexact)``: the same script shape with plain ``tonumber`` arithmetic (what exactness costs);
- ``watch/multi``: HGETALL under WATCH, Decimal arithmetic in Python, MULTI/HSET/EXEC (3 round trips),
  alone and with 50 concurrent tasks on one key (aborted transactions counted).

Run: ``.venv/bin/python -m bench.state_redis`` (``--calls 2000``; ``PORTCULLIS_TEST_REDIS_URL`` to choose the
server; keys under a random prefix, deleted afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from portcullis.state import InMemoryStateStore, SqliteStateStore
from portcullis.state.buckets import bucket_expiry
from portcullis.state.redis_scripts import WINDOW_ADD
from portcullis.state.redis_store import RedisStateStore

URL = os.environ.get("PORTCULLIS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
NOW = 1_700_000_000.0
DOUBLES = """
local h = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #h, 2 do if tonumber(h[i]) > tonumber(ARGV[1]) then total = total + tonumber(h[i + 1]) end end
if total + tonumber(ARGV[3]) > tonumber(ARGV[4]) then return 0 end
redis.call('HINCRBYFLOAT', KEYS[1], ARGV[2], ARGV[3])
return 1
"""


async def timed(calls: int, one: Callable[[int], Awaitable[object]]) -> tuple[float, float]:
    for i in range(min(200, calls)):
        await one(i)
    times = []
    for i in range(calls):
        start = time.perf_counter_ns()
        await one(i)
        times.append((time.perf_counter_ns() - start) / 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99)]


async def watch_multi(client: aioredis.Redis, key: str, amount: Decimal, now: float) -> int:
    """One optimistic check-and-add; returns the number of aborted attempts before it committed."""
    aborts = 0
    while True:
        async with client.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                fields = await pipe.hgetall(key)
                total = sum((Decimal(v.decode()) for k, v in fields.items() if float(k) > now), Decimal(0))
                if total + amount > Decimal(10**18):
                    return aborts
                field = repr(bucket_expiry(now, 3600.0))
                current = Decimal(fields.get(field.encode(), b"0").decode())
                pipe.multi()
                pipe.hset(key, field, str(current + amount))
                await pipe.execute()
                return aborts
            except WatchError:
                aborts += 1


async def main(calls: int) -> None:
    prefix = f"bench{secrets.token_hex(4)}:"
    client = aioredis.Redis.from_url(URL)
    redis_store = RedisStateStore.from_url(URL, key_prefix=prefix, connect_timeout_s=2, op_timeout_s=2)
    rows: dict[str, tuple[float, float]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sqlite = SqliteStateStore.open(Path(tmp) / "c.sqlite3")
            for name, store in (("memory", InMemoryStateStore()), ("sqlite", sqlite), ("redis", redis_store)):
                rows[name] = await timed(calls, lambda i, s=store: s.window_add(  # type: ignore[misc]
                    "k", 1, window_s=3600, limit=10**18, now=NOW + i * 1e-4))
            sqlite.close()
        for b in range(65):  # a full window: 65 live buckets
            await redis_store.window_add("full", 1, window_s=3600, limit=10**18, now=NOW + b * 3600 / 64)
        last = NOW + 64 * 3600 / 64
        rows["redis 65 buckets"] = await timed(calls, lambda i: redis_store.window_add(
            "full", 1, window_s=3600, limit=10**18, now=last + i * 1e-6))
        big = Decimal("123456789012.123456789012345678")  # 30 digits scaled: far past a double's 2^53
        rows["redis 30-digit amounts"] = await timed(calls, lambda i: redis_store.window_add(
            "big", big, window_s=3600, limit=10**18, now=NOW + i * 1e-4))
        field = repr(bucket_expiry(NOW, 3600.0))
        limbs = client.register_script(WINDOW_ADD)
        rows["lua limbs, raw call"] = await timed(calls, lambda i: limbs(
            keys=[f"{prefix}w:raw", f"{prefix}w#"], args=[repr(NOW), field, "1" + "0" * 18, "1" + "0" * 36, 100]))
        rows["redis PING (round trip)"] = await timed(calls, lambda i: client.ping())
        doubles = client.register_script(DOUBLES)
        rows["lua doubles (inexact)"] = await timed(calls, lambda i: doubles(
            keys=[f"{prefix}d"], args=[repr(NOW), field, "1", "1e18"]))
        rows["watch/multi"] = await timed(calls, lambda i: watch_multi(client, f"{prefix}wm", Decimal(1), NOW))
        started = time.perf_counter()
        pool = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(URL, max_connections=50))
        aborts = await asyncio.gather(*(watch_multi(pool, f"{prefix}wm2", Decimal(1), NOW) for _ in range(500)))
        wm_contended = (time.perf_counter() - started) / 500 * 1e6
        started = time.perf_counter()
        await asyncio.gather(*(redis_store.window_add("lua2", 1, window_s=3600, limit=10**18, now=NOW)
                               for _ in range(500)))
        lua_contended = (time.perf_counter() - started) / 500 * 1e6
        await pool.aclose()
    finally:
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await redis_store.aclose()
    print(f"window_add, {calls} sequential calls, µs per call (p50 / p99)")
    for name, (p50, p99) in rows.items():
        print(f"  {name:24} p50 {p50:7.1f}  p99 {p99:7.1f}")
    print("500 concurrent adds to one key, wall µs per add:")
    print(f"  lua script               {lua_contended:7.1f}")
    print(f"  watch/multi              {wm_contended:7.1f}  ({sum(aborts)} aborted transactions retried)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5_000)
    asyncio.run(main(parser.parse_args().calls))
