"""``portcullis kill set | lift | list``: the responder's kill switches from the gateway host.

It works on the deployment's kill-switch store directly (``kill_switches.sqlite3`` in the gateway's
state directory), like ``portcullis token revoke`` does with the revocation list, so containment works
even when the admin listener is down or the rest of the deployment does not load: only ``state_dir`` is
read from ``--config`` (else ``--state-dir``, else ``$PORTCULLIS_STATE_DIR``, else ``./.portcullis``). A
running gateway applies a change within a second (it polls the store every 0.5 s) and writes the
``kill_switch`` audit record; a gateway that is stopped audits it when it starts. Whoever can write the
state directory can use this command; remote responders use the admin API (``/kill-switches``).

Revoking credentials is ``portcullis token revoke`` (a token, a client's or an agent's tokens).

Every stored value (targets, reasons, actors) is shown through :mod:`portcullis.cli.safe_text`.
"""

from __future__ import annotations

import getpass
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.table import Table

from portcullis.cli.safe_text import cell, console, json_text, lines_safe
from portcullis.errors import PortcullisError
from portcullis.kill.model import KINDS
from portcullis.kill.store import FILE_NAME, SqliteKillSwitchStore

if TYPE_CHECKING:
    from portcullis.kill.pg_store import PostgresKillSwitchStore

kill_app = typer.Typer(no_args_is_help=True, help="Kill switches: set, lift, list (revoke credentials: token revoke).")
out = console()
err = console(stderr=True)

Config = Annotated[Path | None, typer.Option("--config", "-c", help="Deployment directory (only its state_dir is "
                                             "read).", file_okay=False)]
StateDir = Annotated[Path | None, typer.Option("--state-dir", help="The gateway's state directory (instead of "
                                               "reading --config).", file_okay=False)]
Reason = Annotated[str, typer.Option("--reason", help="Why (recorded in the store and the audit trail; never shown "
                                     "to callers).")]


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(lines_safe(message), highlight=False, markup=False)
    raise typer.Exit(code)


def _store(config: Path | None, state_dir: Path | None) -> SqliteKillSwitchStore | PostgresKillSwitchStore:
    from portcullis.cli.storage_cmd import cluster_database
    from portcullis.config.state_paths import StatePaths

    database = None if state_dir is not None else cluster_database(config, "kill")
    if database is not None:  # cluster mode: the switch every replica polls
        from portcullis.kill.pg_store import PostgresKillSwitchStore

        return PostgresKillSwitchStore(database, owns_database=True)
    if state_dir is not None:
        directory = state_dir.expanduser().resolve()
    else:
        from portcullis.cli.main import _raw_gateway

        directory = StatePaths.from_raw(_raw_gateway(config) if config is not None else None).state_dir
    if not directory.is_dir():
        _fail(f"kill: {directory} does not exist; is this the gateway's state directory? (--state-dir, --config)", 2)
    try:
        return SqliteKillSwitchStore(directory / FILE_NAME)
    except PortcullisError as exc:
        _fail(f"kill: {exc.message}")


def _notify(config: Path | None, store: object, switch_id: str) -> None:
    """Cluster mode: tell every replica over the notice bus to reload now (best effort; they poll anyway)."""
    from portcullis.cli.storage_cmd import notify_replicas
    from portcullis.kill.pg_store import PostgresKillSwitchStore
    from portcullis.kill.runtime import TOPIC

    if isinstance(store, PostgresKillSwitchStore):
        notify_replicas(config, TOPIC, switch_id)


def _actor() -> str:
    try:
        name = getpass.getuser()
    except (OSError, KeyError):
        name = "unknown"
    safe = "".join(c for c in name if c.isascii() and c.isprintable())[:64] or "unknown"
    return f"cli:{safe}"


@kill_app.command("set")
def kill_set(kind: Annotated[str, typer.Argument(help=f"One of: {', '.join(KINDS)}.")],
             target: Annotated[str, typer.Argument(help="The exposed tool name, service, tenant or caller id.")],
             reason: Reason, config: Config = None, state_dir: StateDir = None,
             expires_in: Annotated[float | None, typer.Option("--expires-in", help="Lift by itself after this many "
                                                              "seconds.", min=1)] = None) -> None:
    """Disable a tool, a service or a tenant, or block an agent, a client, a user or a source app."""
    store = _store(config, state_dir)
    try:
        switch = store.set(kind, target, reason, _actor(), None if expires_in is None else time.time() + expires_in)
    except PortcullisError as exc:
        _fail(f"kill set: {exc.message}", 2 if exc.message != "kill switch store unavailable" else 1)
    finally:
        store.close()
    out.print(cell(f"set {switch.id}: {switch.kind} {switch.target}"), highlight=False)
    _notify(config, store, switch.id)


@kill_app.command("lift")
def kill_lift(switch_id: Annotated[str, typer.Argument(help="The switch id (ks_…).")], reason: Reason,
              config: Config = None, state_dir: StateDir = None) -> None:
    """Lift an active switch (the tool, service, tenant or caller works again within a second)."""
    store = _store(config, state_dir)
    try:
        switch = store.lift(switch_id, reason, _actor())
    except PortcullisError as exc:
        _fail(f"kill lift: {exc.message}")
    finally:
        store.close()
    out.print(cell(f"lifted {switch.id}: {switch.kind} {switch.target}"), highlight=False)
    _notify(config, store, switch.id)


@kill_app.command("list")
def kill_list(config: Config = None, state_dir: StateDir = None,
              all_: Annotated[bool, typer.Option("--all", help="Also lifted and expired ones (newest 100).")] = False,
              as_json: Annotated[bool, typer.Option("--json", help="Print ASCII-only JSON.")] = False) -> None:
    """The active switches (or, with --all, the recent ones)."""
    store = _store(config, state_dir)
    try:
        switches = store.history(100) if all_ else store.active(time.time())
    except PortcullisError as exc:
        _fail(f"kill list: {exc.message}")
    finally:
        store.close()
    if as_json:
        print(json_text([s.to_json() for s in switches], indent=2))
        return
    table = Table("id", "kind", "target", "reason", "actor", "set at", "state")
    now = time.time()
    for s in switches:
        state = "active" if s.active(now) else ("lifted" if s.lifted_at is not None else "expired")
        table.add_row(cell(s.id), cell(s.kind), cell(s.target), cell(s.reason), cell(s.actor),
                      cell(time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(s.set_at))), cell(state))
    out.print(table)
