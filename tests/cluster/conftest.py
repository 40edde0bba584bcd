"""Fixtures for cluster mode: the real PostgreSQL and Redis (never mocks of the thing under test).

``make test`` starts both (scripts/bootstrap.sh). Locally, a test that needs one that is not running is
skipped and says why; under CI (``CI`` set) it fails instead, so a cluster suite is never skipped silently.

Isolation: each test gets a schema of its own in the ``test`` database (``pg_url`` sets ``search_path`` to
it through libpq's ``options``, so stores use unqualified table names) and a Redis key prefix of its own;
both are removed afterwards. A fresh machine's PostgreSQL trusts loopback connections to ``test`` only, so
tests never create databases.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import pytest

PG_BASE = os.environ.get("PORTCULLIS_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_BASE = os.environ.get("PORTCULLIS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def _require(port: int, what: str) -> None:
    if _listening(port):
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required under CI and is not listening on 127.0.0.1:{port}")
    pytest.skip(f"{what} not listening on 127.0.0.1:{port} (scripts/bootstrap.sh starts it)")


def pg_url_for(schema: str) -> str:
    """A connection URL whose sessions use ``schema`` (libpq ``options=-c search_path=…``)."""
    return f"{PG_BASE}?options={quote(f'-c search_path={schema}', safe='')}"


@contextmanager
def fresh_pg_schema() -> Iterator[str]:
    """A fresh, empty schema in the ``test`` database, dropped (with everything in it) on leaving; for a
    fixture of any scope (:func:`pg_schema` is the per-test one)."""
    _require(5432, "PostgreSQL")
    import psycopg

    schema = "t_" + secrets.token_hex(6)
    with psycopg.connect(PG_BASE, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        with psycopg.connect(PG_BASE, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh, empty schema in the ``test`` database, dropped (with everything in it) afterwards."""
    with fresh_pg_schema() as schema:
        yield schema


@pytest.fixture
def pg_url(pg_schema: str) -> str:
    return pg_url_for(pg_schema)


@contextmanager
def private_redis_prefix() -> Iterator[str]:
    """A key prefix of its own in the shared Redis (skipped, or failed under CI, when Redis is not running);
    its keys are deleted afterwards (never a flush: the Redis is shared)."""
    _require(6379, "Redis")
    import redis

    prefix = f"t{secrets.token_hex(6)}:"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(REDIS_BASE, socket_timeout=10)
        try:
            keys = list(client.scan_iter(match=prefix + "*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own in the shared Redis; its keys are deleted afterwards."""
    with private_redis_prefix() as prefix:
        yield prefix


@pytest.fixture
def redis_url(redis_prefix: str) -> str:
    return REDIS_BASE
