"""The one place that picks where the control-plane stores live: embedded SQLite or the cluster's PostgreSQL.

The composition root (:mod:`portcullis.gateway`) calls :func:`build_stores` once at start and uses the
stores through their protocols; nothing else in the gateway knows which kind it got.

* embedded (no ``storage.postgresql``): exactly the SQLite files of before, in the state directory (or
  where ``approvals.path``, ``identity.revocation_file`` and their environment overrides put them);
* ``storage.postgresql``: one pool (:mod:`portcullis.storage.postgres`), the schema of every component
  checked first (behind or ahead refuses the start: run ``portcullis storage migrate``), then the
  PostgreSQL stores over it. An unreachable database refuses the start (fail closed), with the masked
  database name only.

Every failure is a :class:`~portcullis.errors.ConfigError` naming ``gateway.yaml`` (``serve`` prints it
and exits 2, no stack trace). Redis counters are built elsewhere (:mod:`portcullis.state`).
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portcullis.approvals.store import ApprovalStoreUnavailable, SqliteApprovalStore, approval_store_path
from portcullis.config.loader import Deployment
from portcullis.errors import ConfigError, PortcullisError, Problem
from portcullis.identity.revocation import SqliteRevocations
from portcullis.kill.runtime import KillSwitches
from portcullis.kill.store import FILE_NAME as KILL_FILE
from portcullis.kill.store import SqliteKillSwitchStore
from portcullis.monitoring.state import FILE_NAME as MONITOR_STATE_FILE
from portcullis.monitoring.state import MonitorStateStore, SqliteMonitorStateStore
from portcullis.policy.versions import (
    VERSIONS_FILE,
    PolicyVersionStore,
    SqlitePolicyVersionStore,
    VersionStoreUnavailable,
)
from portcullis.storage.migrations import Component

# the PostgreSQL store modules, each declaring its PG_COMPONENT (imported only in cluster mode)
_PG_MODULES = ("portcullis.approvals.pg_store", "portcullis.kill.pg_store", "portcullis.policy.pg_versions",
               "portcullis.identity.pg_revocation", "portcullis.monitoring.pg_state")
# AUDIT (h16-audit): PostgresAuditStore lives in this module; its component is migrated and checked when the
# module is present. The integrator wires the store itself where gateway.py opens the audit store.
AUDIT_PG_MODULE = "portcullis.audit.pg_store"


@dataclass(frozen=True, slots=True)
class Stores:
    """The gateway's control-plane stores, behind their protocols."""

    kills: KillSwitches
    approvals: Any  # ApprovalStore + open_counts() (SqliteApprovalStore | PostgresApprovalStore)
    versions: PolicyVersionStore
    revocations: SqliteRevocations  # or PostgresRevocations (same snapshot discipline)
    monitor_state: MonitorStateStore
    database: Any = None  # portcullis.storage.postgres.Database in cluster mode (the audit store's pool too)
    kind: str = "embedded"


def pg_components() -> tuple[Component, ...]:
    """Every PostgreSQL component this program knows (what ``storage migrate`` applies and ``serve`` checks)."""
    found = []
    for name in (AUDIT_PG_MODULE, *_PG_MODULES):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if name == AUDIT_PG_MODULE and exc.name == name:  # not merged yet: see AUDIT above
                continue
            raise
        found.append(module.PG_COMPONENT)
    return tuple(found)


def _refuse(deployment: Deployment, *messages: str) -> ConfigError:
    return ConfigError([Problem(deployment.root / "gateway.yaml", None, m) for m in messages])


def build_stores(deployment: Deployment, state_dir: Path, env: Mapping[str, str],
                 clock: Callable[[], float] = time.time) -> Stores:
    """The configured stores, opened and (kill switches) first snapshot loaded; ConfigError when they cannot be."""
    if deployment.gateway.storage.postgresql is not None:
        return _postgres(deployment, clock)
    cfg = deployment.gateway
    try:  # kill switches are read whole first: unreadable means no start (fail closed)
        kills = KillSwitches(SqliteKillSwitchStore(state_dir / KILL_FILE, clock=clock), clock=clock)
        kills.start()
    except PortcullisError as exc:
        raise _refuse(deployment, f"kill switches: {exc.detail or exc.message}") from None
    ident = cfg.identity
    revocation_file = None if ident is None else ident.revocation_file
    revocations = SqliteRevocations(Path(revocation_file) if revocation_file else state_dir / "revocations.db")
    try:
        approvals = SqliteApprovalStore.open(approval_store_path(state_dir, cfg.approvals.path, env))
    except ApprovalStoreUnavailable as exc:
        raise _refuse(deployment, f"approvals: {exc.detail}") from None
    try:
        versions = SqlitePolicyVersionStore(state_dir / VERSIONS_FILE)
    except VersionStoreUnavailable as exc:
        raise _refuse(deployment, f"policy versions: {exc}") from None
    return Stores(kills, approvals, versions, revocations, SqliteMonitorStateStore(state_dir / MONITOR_STATE_FILE))


def _postgres(deployment: Deployment, clock: Callable[[], float]) -> Stores:
    from portcullis.approvals.pg_store import PostgresApprovalStore
    from portcullis.identity.pg_revocation import PostgresRevocations
    from portcullis.kill.pg_store import PostgresKillSwitchStore
    from portcullis.monitoring.pg_state import PostgresMonitorStateStore
    from portcullis.policy.pg_versions import PostgresPolicyVersionStore
    from portcullis.storage.postgres import SchemaMismatch, StorageUnavailable, open_database

    cfg = deployment.gateway.storage.postgresql
    assert cfg is not None
    try:
        db = open_database(cfg, origin=deployment.root / "gateway.yaml")
    except StorageUnavailable as exc:
        raise _refuse(deployment, f"storage.postgresql: {exc.message}: {exc.detail}") from None
    try:
        db.check_schema(pg_components())
        kills = KillSwitches(PostgresKillSwitchStore(db, clock=clock), clock=clock)
        kills.start()
    except SchemaMismatch as exc:
        db.close()
        raise _refuse(deployment, *(f"storage.postgresql: {p}" for p in exc.problems)) from None
    except PortcullisError as exc:
        db.close()
        raise _refuse(deployment, f"storage.postgresql: {exc.message}: {exc.detail}") from None
    return Stores(kills, PostgresApprovalStore(db), PostgresPolicyVersionStore(db), PostgresRevocations(db),
                  PostgresMonitorStateStore(db, os.environ.get("PORTCULLIS_REPLICA")), database=db,
                  kind="postgresql")
