"""The cluster fixtures reach the real servers and isolate each test."""

from __future__ import annotations

import psycopg
import redis


def test_pg_url_puts_the_session_in_the_tests_own_schema(pg_schema: str, pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SHOW search_path").fetchone() == (pg_schema,)
        conn.execute("CREATE TABLE probe (x int)")
        row = conn.execute("SELECT table_schema FROM information_schema.tables WHERE table_name = 'probe' "
                           "AND table_schema = %s", (pg_schema,)).fetchone()
        assert row == (pg_schema,)


def test_redis_prefix_is_fresh(redis_url: str, redis_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert not list(client.scan_iter(match=redis_prefix + "*"))
        client.set(redis_prefix + "k", "v", ex=60)
        assert client.get(redis_prefix + "k") == b"v"
    finally:
        client.close()
