"""Schema versions of the PostgreSQL stores, created and upgraded by the program, never by hand.

Each store module declares one :class:`Component`: its name and its ordered migration steps (step ``i``
brings the component from version ``i`` to ``i + 1``; a step is never edited once released, a change is a
new step). ``portcullis storage migrate`` applies the missing steps of every component, each in its own
transaction under an advisory lock (two replicas migrating at once apply each step once). At start a
gateway checks every component it uses with :func:`problems`: behind (a step missing) or ahead (a version
this program does not know, i.e. a newer program migrated the database) refuses the start with a message
naming the component.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_LOCK_KEY = 0x706F7274  # pg_advisory_xact_lock key of migrations ("port")
_TABLE = """
CREATE TABLE IF NOT EXISTS portcullis_schema (
    component  text PRIMARY KEY,
    version    integer NOT NULL CHECK (version >= 0),
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True, slots=True)
class Component:
    """One store's schema: ``steps[i]`` is the SQL that brings it from version ``i`` to ``i + 1``."""

    name: str
    steps: tuple[str, ...]

    @property
    def version(self) -> int:
        return len(self.steps)


def _versions(conn: Any) -> dict[str, int]:
    exists = conn.execute("SELECT to_regclass('portcullis_schema') IS NOT NULL").fetchone()[0]
    if not exists:
        return {}
    return {name: int(version) for name, version in conn.execute("SELECT component, version FROM portcullis_schema")}


def problems(conn: Any, components: Sequence[Component]) -> list[str]:
    """What stops a gateway from using ``components`` on this database (empty: all current).

    ``conn`` is a psycopg (sync) connection. Texts are fixed apart from component names and numbers.
    """
    found = _versions(conn)
    out = []
    for component in components:
        have = found.get(component.name, 0)
        if have < component.version:
            out.append(f"{component.name}: schema version {have}, this program needs {component.version} "
                       "(run `portcullis storage migrate`)")
        elif have > component.version:
            out.append(f"{component.name}: schema version {have} is newer than this program knows "
                       f"({component.version}): upgrade the program, never downgrade the schema")
    return out


def migrate(conn: Any, components: Sequence[Component]) -> list[tuple[str, int, int]]:
    """Apply every missing step; returns ``(component, from, to)`` for each component it changed.

    ``conn`` is a psycopg (sync) connection in autocommit mode; each component's steps run in one
    transaction holding the migrations advisory lock. A database ahead of this program is refused
    (:class:`ValueError`), nothing applied.
    """
    changed = []
    for component in components:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            conn.execute(_TABLE)  # under the lock: two first migrations never race on creating it
            row = conn.execute("SELECT version FROM portcullis_schema WHERE component = %s",
                               (component.name,)).fetchone()
            have = 0 if row is None else int(row[0])
            if have > component.version:
                raise ValueError(f"{component.name}: schema version {have} is newer than this program knows")
            if have == component.version:
                continue
            for step in component.steps[have:]:
                conn.execute(step)
            conn.execute("INSERT INTO portcullis_schema (component, version) VALUES (%s, %s) "
                         "ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version, applied_at = now()",
                         (component.name, component.version))
            changed.append((component.name, have, component.version))
    return changed
