"""Helpers of the PostgreSQL store tests: a :class:`Database` over a test schema, migrated or not."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from portcullis.storage.build import pg_components
from portcullis.storage.config import PostgresConfig
from portcullis.storage.postgres import Database


def database(url: str, **settings: Any) -> Database:
    """An open pool over ``url`` (the ref is not resolved here: the URL is given), its connections tagged with
    an application name of their own (``db.test_tag``) so that a test can find and terminate them only."""
    tag = "pt-" + secrets.token_hex(6)
    db = Database(f"{url}&application_name={tag}", PostgresConfig(url_ref="secret://env/PORTCULLIS_TEST_UNUSED",
                                                                  **settings))
    db.test_tag = tag  # type: ignore[attr-defined]
    return db.open()


@contextmanager
def migrated(url: str, **settings: Any) -> Iterator[Database]:
    db = database(url, **settings)
    try:
        db.migrate(pg_components())
        yield db
    finally:
        db.close()


def backend_pids(db: Database) -> list[int]:
    """The server pids of ``db``'s own pooled connections (so a test terminates only its own backends)."""
    with psycopg.connect(db_admin_url(), autocommit=True) as admin:
        rows = admin.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                             (db.test_tag,)).fetchall()  # type: ignore[attr-defined]
    return [int(r[0]) for r in rows]


def db_admin_url() -> str:
    from tests.cluster.conftest import PG_BASE

    return PG_BASE


def terminate(db: Database) -> int:
    """``pg_terminate_backend`` on every backend of ``db``'s pool (only those: tagged by application name)."""
    pids = backend_pids(db)
    with psycopg.connect(db_admin_url(), autocommit=True) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    return len(pids)
