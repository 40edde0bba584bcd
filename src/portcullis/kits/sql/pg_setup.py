"""Creating and dropping the read-only PostgreSQL role the engine connects as (tests and operations).

The role gets ``LOGIN`` and nothing else: no superuser, no role or database creation, no
inheritance, no replication, no row-security bypass; ``USAGE`` on one schema and ``SELECT`` on the
allow-listed tables (or only the allow-listed columns of a table that restricts them);
``default_transaction_read_only``, ``statement_timeout`` and ``search_path`` as role defaults. How it
authenticates (password, certificate, ``pg_hba.conf``) is the operator's choice, outside this kit.
It must not be a member of ``pg_read_server_files``, ``pg_write_server_files`` or
``pg_execute_server_program``; a fresh role is not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import asyncpg

from portcullis.kits.sql.errors import SqlDeclarationError
from portcullis.kits.sql.policy import IDENTIFIER


def _ident(name: str) -> str:
    if not isinstance(name, str) or not IDENTIFIER.fullmatch(name):
        raise SqlDeclarationError("bad_identifier")
    return f'"{name}"'  # safe: the pattern admits no quote


def grant_statements(
    role: str, schema: str, tables: Mapping[str, Iterable[str] | None], *, statement_timeout_ms: int = 5000
) -> list[str]:
    """The statements that create the role (pure, so they can be reviewed and tested without a server)."""
    if not tables:
        raise SqlDeclarationError("no_tables")
    if not 0 < statement_timeout_ms <= 600_000:
        raise SqlDeclarationError("bad_statement_timeout")
    r, s = _ident(role), _ident(schema)
    statements = [
        f"CREATE ROLE {r} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS",
        f"ALTER ROLE {r} SET default_transaction_read_only = on",
        f"ALTER ROLE {r} SET statement_timeout = {int(statement_timeout_ms)}",
        f"ALTER ROLE {r} SET search_path = {s}",
        f"GRANT USAGE ON SCHEMA {s} TO {r}",
    ]
    for table, columns in tables.items():
        if columns is None:
            statements.append(f"GRANT SELECT ON {s}.{_ident(table)} TO {r}")
        else:
            cols = ", ".join(_ident(c) for c in columns)
            statements.append(f"GRANT SELECT ({cols}) ON {s}.{_ident(table)} TO {r}")
    return statements


async def create_readonly_role(
    conn: asyncpg.Connection,
    *,
    role: str,
    schema: str,
    tables: Mapping[str, Iterable[str] | None],
    statement_timeout_ms: int = 5000,
) -> None:
    """Create ``role`` on an administrator's connection ``conn``, in one transaction."""
    statements = grant_statements(role, schema, tables, statement_timeout_ms=statement_timeout_ms)
    async with conn.transaction():
        for statement in statements:
            await conn.execute(statement)


async def drop_readonly_role(conn: asyncpg.Connection, *, role: str) -> None:
    """Drop ``role`` and every privilege it holds in this database (``DROP OWNED`` revokes grants)."""
    r = _ident(role)
    async with conn.transaction():
        exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
        if exists:
            await conn.execute(f"DROP OWNED BY {r}")
            await conn.execute(f"DROP ROLE {r}")
