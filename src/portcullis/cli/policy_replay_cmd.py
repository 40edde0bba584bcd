"""``portcullis policy diff --from V1 --to V2 --window 24h``: replay a window of audited calls.

Offline and read-only: reads the stored versions (``<state dir>/policy_versions.sqlite3``), builds
each version's engine the way ``apply`` validates a set (against the deployment's gateway.yaml,
Rego evaluated in this process), reads the window's decision records from the audit store
(``mode=ro``) and prints what :func:`portcullis.policy.replay.replay_diff` finds. ``--to DIR``
replays against a candidate directory before it is applied. Every record-derived string is escaped
before the terminal. Exit codes: 0 done (changes or not), 1 a store or version that cannot be
read or built, 2 usage (unknown version, bad window, no gateway.yaml).
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, NoReturn

import typer
from rich.table import Table

from portcullis.cli.audit_cmd import StateDir, Store, _run, _state_dir, _utc, open_reader
from portcullis.cli.policy_cmd import REGO_BUDGET_S, policy_app
from portcullis.cli.safe_text import cell, console, json_text, lines_safe, terminal_safe

if TYPE_CHECKING:
    from portcullis.audit.record import AuditRecord
    from portcullis.config.loader import Deployment
    from portcullis.policy.engine import PolicyEngine
    from portcullis.policy.replay import ReplayDiff
    from portcullis.policy.versions import PolicyVersion

VERSION_ID = re.compile(r"^(ps|pv)-[0-9a-f]{1,64}$")
WINDOW = re.compile(r"^([1-9][0-9]{0,6})([smhd])$")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_WINDOW_S = 366 * 86400


def _fail(message: str, code: int = 1) -> NoReturn:
    console(stderr=True).print(lines_safe(f"policy diff: {message}"), highlight=False, markup=False)
    raise typer.Exit(code)


def window_seconds(text: str) -> float:
    """``30m``, ``24h``, ``7d`` as seconds (at most a year); ValueError otherwise."""
    match = WINDOW.fullmatch(text)
    if match is None or int(match[1]) * SECONDS[match[2]] > MAX_WINDOW_S:
        raise ValueError("window")
    return float(int(match[1]) * SECONDS[match[2]])


@policy_app.command("diff")
def diff(old: Annotated[str, typer.Option("--from", help="Stored version (ps-… or a decision record's pv-…).")],
         new: Annotated[str, typer.Option("--to", help="Stored version, or a candidate policy directory.")],
         window: Annotated[str, typer.Option(help="Replay the decisions of this last period: 30m, 24h, 7d.")] = "24h",
         config: Annotated[Path, typer.Option("--config", "-c", help="Deployment directory (its gateway.yaml).",
                                              file_okay=False)] = Path("."),
         state_dir: StateDir = None, store: Store = None,
         limit: Annotated[int, typer.Option(help="Read at most this many decision records (the newest).",
                                            min=1, max=100_000)] = 10_000,
         fmt: Annotated[Literal["table", "json"], typer.Option("--format")] = "table") -> None:
    """Replay the window's audited tools/call decisions under two versions and list every change."""
    from portcullis.audit.query import AuditQuery
    from portcullis.policy.replay import replay_diff

    try:
        span = window_seconds(window)
    except ValueError:
        _fail("--window must be a positive age such as 30m, 24h or 7d (at most 366d)", 2)
    deployment = _deployment(config)
    if not VERSION_ID.fullmatch(old):
        _fail("--from must be a version id (ps-… or pv-…)", 2)
    states = _state_dir(state_dir, config)
    old_engine, old_id = _engine(deployment, states, old, "--from")
    new_engine, new_id = _engine(deployment, states, new, "--to")
    now = time.time()
    query = AuditQuery(kind="decision", since=now - span, until=now, limit=limit)
    reader = open_reader(store, state_dir, config)

    async def read() -> list[AuditRecord]:
        async with reader as opened:
            return await opened.search(query)

    records = _run(read, "read")
    result = replay_diff(records, old_engine, new_engine, old_version=old_id, new_version=new_id)
    truncated = len(records) >= limit
    if fmt == "json":
        typer.echo(json_text({**result.to_json(), "window_s": span, "records_read": len(records),
                              "limit_reached": truncated}))
        return
    _table(result, truncated, limit)


def _deployment(config: Path) -> Deployment:
    from portcullis.config.loader import load_deployment
    from portcullis.errors import ConfigError

    if not (config / "gateway.yaml").is_file():
        _fail("--config: no gateway.yaml in that directory", 2)
    from portcullis.config.secret_store import use_configured

    try:
        deployment = load_deployment(config)
        use_configured(deployment.gateway.secrets, config)  # a PostgreSQL URL may be a vault reference
        return deployment
    except ConfigError:
        _fail("--config: the deployment does not load (run `portcullis check`)", 2)


def _engine(deployment: Deployment, states: Path, ref: str, option: str) -> tuple[PolicyEngine, str]:
    """The engine of a stored version, or of a candidate directory (``--to`` only), and its label."""
    from portcullis.policy.policy_set import SetRefused, collect, content_id, validate

    authz = deployment.gateway.authorization
    if VERSION_ID.fullmatch(ref):
        stored = _stored(deployment, states, ref, option)
        if stored is None:
            _fail(f"{option}: unknown policy version", 2)
        files, label = stored.files, stored.id
    else:
        candidate = Path(ref)
        if option != "--to" or not candidate.is_dir():
            _fail(f"{option}: neither a version id nor a policy directory", 2)
        try:
            files = collect(candidate, authz.rego_dir)
        except SetRefused as refused:
            _fail("\n".join([f"{option}: refused: {refused.reason}", *refused.problems]), 2)
        label = content_id(files)  # the id apply would store it under
    gateway_yaml = (deployment.root / "gateway.yaml").read_bytes()
    candidate_set = not VERSION_ID.fullmatch(ref)
    with tempfile.TemporaryDirectory(prefix="portcullis-diff-") as scratch:
        try:
            engine, _ = validate(files, gateway_yaml, scratch=Path(scratch), rego_dir=authz.rego_dir,
                                 environment=authz.environment, rego_budget_s=REGO_BUDGET_S)
        except SetRefused as refused:
            _fail("\n".join([f"{option}: refused: {refused.reason}", *refused.problems]),
                  2 if candidate_set else 1)
    return engine, label


def _stored(deployment: Deployment, states: Path, ref: str, option: str) -> PolicyVersion | None:
    """The stored version ``ref``: from the cluster's PostgreSQL when gateway.yaml's ``storage.postgresql``
    is set, else from ``<state dir>/policy_versions.sqlite3``."""
    from portcullis.errors import PortcullisError
    from portcullis.policy.versions import VERSIONS_FILE, SqlitePolicyVersionStore, VersionStoreUnavailable

    postgres = deployment.gateway.storage.postgresql
    try:
        if postgres is not None:
            from portcullis.policy.pg_versions import PostgresPolicyVersionStore
            from portcullis.storage.postgres import open_database

            db = open_database(postgres, origin=deployment.root / "gateway.yaml")
            try:
                return PostgresPolicyVersionStore(db).get(ref)
            finally:
                db.close()
        if not (states / VERSIONS_FILE).is_file():
            _fail(f"{option}: unknown policy version (no version store in the state directory)", 2)
        versions = SqlitePolicyVersionStore(states / VERSIONS_FILE)
        try:
            return versions.get(ref)
        finally:
            versions.close()
    except (VersionStoreUnavailable, PortcullisError):
        _fail(f"{option}: the policy version store cannot be read")


def _table(result: ReplayDiff, truncated: bool, limit: int) -> None:
    out = console()
    for title, rows in (("changed", result.changed), ("not replayable", result.not_replayable)):
        if not rows:
            continue
        table = Table(title=f"{title}: {result.old_version[:19]} → {result.new_version[:19]}", title_justify="left")
        for column in ("time", "agent", "user", "tenant", "tool", "arguments", "old → new", "old rules",
                       "new rules"):
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(cell(_utc(row.ts)), cell(row.agent, 64), cell(row.user, 64), cell(row.tenant, 64),
                          cell(row.tool, 128), cell(row.arguments_hash[:19]),
                          cell(f"{row.old_effect} (recorded) → ? ({row.note})" if row.note
                               else f"{row.old_effect} → {row.new_effect}", 64),
                          cell(", ".join(row.old_rules), 200), cell(", ".join(row.new_rules), 200))
        out.print(table)
    if truncated:
        out.print(terminal_safe(f"limit reached: only the newest {limit} decision records were read"))
    out.print(terminal_safe(result.summary()))
