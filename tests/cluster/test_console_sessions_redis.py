"""Console sessions in Redis: any replica serves a session another made, records are keyed by hashes under
the deployment's prefix with a TTL, a started login is taken once, and a Redis that does not answer fails
closed (ConsoleStoreUnavailable)."""

from __future__ import annotations

import socket

import pytest
import redis

from portcullis.console.sessions import Sessions
from portcullis.console.store import ConsoleStoreUnavailable, RedisConsoleStore
from portcullis.identity.principal import Principal

BOB = Principal(client_id="bob", auth_method="dev", issuer="dev", user_id="bob", person=True, issuer_name="dev",
                roles=("finance-approver",))


def _replica(url: str, prefix: str) -> Sessions:
    store = RedisConsoleStore.from_url(url, key_prefix=prefix, connect_timeout_s=5, op_timeout_s=5)
    return Sessions(store, ttl_s=3600, idle_s=600, login_ttl_s=120)


async def test_a_session_made_by_one_replica_is_served_by_another(redis_url: str, redis_prefix: str) -> None:
    one, two = _replica(redis_url, redis_prefix), _replica(redis_url, redis_prefix)
    session_id, made = await one.create(BOB, dev=True, jti="j1")
    found = await two.load(session_id)
    assert found is not None and found.principal == BOB and found.csrf == made.csrf
    keys = [k.decode() for k in redis.Redis.from_url(redis_url).keys(redis_prefix + "*")]
    assert keys == [f"{redis_prefix}console:{made.key}"] and session_id not in keys[0]  # only the hash
    ttl = redis.Redis.from_url(redis_url).pttl(keys[0])
    assert 0 < ttl <= 600_000  # the idle timeout bounds the record
    await two.end(session_id)
    assert await one.load(session_id) is None


async def test_a_started_login_is_taken_once_across_replicas(redis_url: str, redis_prefix: str) -> None:
    one, two = _replica(redis_url, redis_prefix), _replica(redis_url, redis_prefix)
    pre_id, _ = await one.pre_login(None)
    await one.start_flow(pre_id, "state-1", {"nonce": "n", "verifier": "v"})
    assert await two.take_flow("another-browser", "state-1") is None
    assert await two.take_flow(pre_id, "state-1") == {"nonce": "n", "verifier": "v"}
    assert await one.take_flow(pre_id, "state-1") is None


async def test_a_redis_that_does_not_answer_fails_closed() -> None:
    with socket.socket() as free:  # a port nobody listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    sessions = _replica(f"redis://127.0.0.1:{port}/0", "t:")
    with pytest.raises(ConsoleStoreUnavailable) as refused:
        await sessions.load("x" * 43)
    assert "127.0.0.1" not in str(refused.value.detail) and str(port) not in str(refused.value.detail)
    with pytest.raises(ConsoleStoreUnavailable):
        await sessions.pre_login(None)
