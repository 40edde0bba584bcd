"""``portcullis storage``: create and upgrade the cluster's PostgreSQL schema, and report its versions.

Only the ``storage:`` section of ``gateway.yaml`` is read (validated as ``serve`` validates it; the URL by
its ``secret://`` reference), so a migration can run as its own step (an init container, a deploy job)
before any replica starts. ``migrate`` applies every missing step of every component (each component in
one transaction under an advisory lock: concurrent migrators apply each step once); ``status`` exits 1
when any component is behind or ahead, which is exactly when ``serve`` refuses to start.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from portcullis.cli.safe_text import console, lines_safe

if TYPE_CHECKING:
    from portcullis.storage.config import StorageConfig
    from portcullis.storage.postgres import Database

storage_app = typer.Typer(no_args_is_help=True, help="Cluster storage: schema migrations and status.")
out = console()
err = console(stderr=True)

Config = Annotated[Path, typer.Option("--config", "-c", help="Deployment directory (only the storage section of "
                                      "gateway.yaml is read).", file_okay=False)]


def _fail(message: str, code: int = 2) -> NoReturn:
    err.print(lines_safe(message), highlight=False, markup=False)
    raise typer.Exit(code)


class StorageSectionInvalid(Exception):
    """gateway.yaml's ``storage:`` section does not validate; the text counts the problems, never shows a value."""


def configured_storage(config: Path | None, part: str) -> StorageConfig | None:
    """``config``'s gateway.yaml ``storage:`` section, validated as ``serve`` validates it, when the section
    names ``part`` (``postgresql``, ``redis``); None without ``config``, without a section (a mapping) or
    without that part. The one reader of the section for every CLI command; raises
    :class:`StorageSectionInvalid`."""
    from pydantic import ValidationError

    from portcullis.cli.main import _raw_gateway
    from portcullis.storage.config import StorageConfig

    if config is None:
        return None
    raw = _raw_gateway(config)
    section = raw.get("storage") if isinstance(raw, dict) else None
    if not isinstance(section, dict) or not section.get(part):
        return None
    try:
        return StorageConfig.model_validate(section)
    except ValidationError as exc:
        raise StorageSectionInvalid(f"storage: {exc.error_count()} problem(s); run `portcullis lint`") from None


def open_configured(config: Path, command: str) -> Database:
    """The PostgreSQL of ``config``'s ``storage.postgresql``; exits 2 with a fixed message otherwise."""
    database = cluster_database(config, command)
    if database is None:
        _fail(f"{command}: {config / 'gateway.yaml'} has no storage.postgresql: the embedded stores need no "
              "migration")
    return database


def cluster_database(config: Path | None, command: str) -> Database | None:
    """``config``'s PostgreSQL when its gateway.yaml has ``storage.postgresql`` (the CLI then writes where every
    replica reads: ``portcullis kill``, ``portcullis token revoke``), else None (the embedded files); exits 2
    with a fixed message when that section is invalid or the database cannot be opened."""
    from portcullis.errors import ConfigError
    from portcullis.storage.postgres import StorageUnavailable, open_database

    if config is None:
        return None
    origin = config / "gateway.yaml"
    try:
        storage = configured_storage(config, "postgresql")
    except StorageSectionInvalid as exc:
        _fail(f"{command}: {origin}: {exc}")
    if storage is None or storage.postgresql is None:
        return None
    _use_secrets(config, command)  # the URL may be a vault reference
    try:
        return open_database(storage.postgresql, origin=origin)
    except ConfigError as exc:
        _fail(f"{command}: {exc.message}")
    except StorageUnavailable as exc:
        _fail(f"{command}: {exc.message}: {exc.detail}")


def _use_secrets(config: Path, command: str) -> None:
    """Set up the secret store of ``config``'s ``secrets:`` section (vault references resolve through it);
    exits 2 with a message naming problems and references, never a value."""
    from pydantic import ValidationError

    from portcullis.cli.main import _raw_gateway
    from portcullis.config.secret_providers.config import SecretsConfig
    from portcullis.config.secret_store import use_configured
    from portcullis.errors import ConfigError

    raw = _raw_gateway(config)
    secrets = raw.get("secrets") if isinstance(raw, dict) else None
    try:
        use_configured(SecretsConfig.model_validate(secrets or {}), config)
    except ValidationError as exc:
        _fail(f"{command}: {config / 'gateway.yaml'}: secrets: {exc.error_count()} problem(s); run `portcullis lint`")
    except ConfigError as exc:
        _fail(f"{command}: " + "; ".join(str(p) for p in exc.problems))


@storage_app.command("migrate")
def migrate(config: Config) -> None:
    """Create or upgrade every component's schema to this program's version; prints what changed."""
    from portcullis.storage.build import pg_components
    from portcullis.storage.postgres import StorageUnavailable

    db = open_configured(config, "storage migrate")
    try:
        changed = db.migrate(pg_components())
    except StorageUnavailable as exc:
        _fail(f"storage migrate: {exc.message}: {exc.detail}", 1)
    except ValueError as exc:  # a component ahead of this program: nothing applied
        _fail(f"storage migrate: {exc}; upgrade the program, never downgrade the schema", 1)
    finally:
        db.close()
    for name, before, after in changed:
        out.print(f"{name}: {before} -> {after}", highlight=False, markup=False)
    if not changed:
        out.print(f"{db.name}: every component is current", highlight=False, markup=False)


@storage_app.command("status")
def status(config: Config) -> None:
    """Each component's schema version in the database and in this program; exit 1 when any differs."""
    from portcullis.storage.build import pg_components
    from portcullis.storage.postgres import StorageUnavailable

    db = open_configured(config, "storage status")
    try:
        rows = db.status(pg_components())
    except StorageUnavailable as exc:
        _fail(f"storage status: {exc.message}: {exc.detail}", 1)
    finally:
        db.close()
    out.print(db.name, highlight=False, markup=False)
    for name, have, need in rows:
        state = "current" if have == need else ("behind: run `portcullis storage migrate`" if have < need
                                                 else "ahead: upgrade the program")
        out.print(f"{name}: database {have}, program {need} ({state})", highlight=False, markup=False)
    if any(have != need for _, have, need in rows):
        raise typer.Exit(1)
