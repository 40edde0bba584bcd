"""Schema versions: created and upgraded by the program, a start refused behind or ahead."""

from __future__ import annotations

import threading

import psycopg
import pytest

from portcullis.storage.migrations import Component, migrate, problems

V1 = Component("widgets", ("CREATE TABLE widget (id int PRIMARY KEY)",))
V2 = Component("widgets", (*V1.steps, "ALTER TABLE widget ADD COLUMN name text"))


def test_migrate_creates_then_upgrades_and_is_idempotent(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert problems(conn, [V1]) == ["widgets: schema version 0, this program needs 1 "
                                        "(run `portcullis storage migrate`)"]
        assert migrate(conn, [V1]) == [("widgets", 0, 1)]
        assert problems(conn, [V1]) == []
        assert migrate(conn, [V1]) == []
        assert "behind" not in " ".join(problems(conn, [V2])) and problems(conn, [V2])
        assert migrate(conn, [V2]) == [("widgets", 1, 2)]
        conn.execute("INSERT INTO widget VALUES (1, 'a')")


def test_a_newer_schema_is_refused_and_never_downgraded(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        migrate(conn, [V2])
        assert "newer than this program knows" in problems(conn, [V1])[0]
        with pytest.raises(ValueError, match="newer"):
            migrate(conn, [V1])
        assert conn.execute("SELECT version FROM portcullis_schema").fetchone() == (2,)


def test_a_failing_step_applies_nothing(pg_url: str) -> None:
    broken = Component("widgets", ("CREATE TABLE widget (id int)", "THIS IS NOT SQL"))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        with pytest.raises(psycopg.Error):
            migrate(conn, [broken])
        assert conn.execute("SELECT to_regclass('widget')").fetchone() == (None,)
        assert problems(conn, [V1])  # still version 0


def test_concurrent_migrations_apply_each_step_once(pg_url: str) -> None:
    counting = Component("counted", ("CREATE TABLE counted (n int)", "INSERT INTO counted VALUES (1)"))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(pg_url, autocommit=True) as conn:
                migrate(conn, [counting])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM counted").fetchone() == (1,)
