"""``portcullis audit``: verify, search, timeline and export the audit trail — read-only.

Every command opens the store read-only (SQLite ``mode=ro``; PostgreSQL, when gateway.yaml's
``storage.postgresql`` is set, read-only sessions): forensics never changes the evidence. Values
shown in tables come from callers (tool names, principal ids), so :func:`terminal_safe` renders
control, bidi and invisible characters visibly and tables take them as plain ``Text`` (no Rich
markup); ``--json`` output is ASCII-only JSON. Exit codes: 0 ok, 1 failure (verification
failed, store missing or unreadable), 2 usage.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from portcullis.cli.safe_text import cell as _cell
from portcullis.cli.safe_text import console, lines_safe, terminal_safe

if TYPE_CHECKING:
    from portcullis.audit.anchors import Anchor
    from portcullis.audit.reader import AuditReader
    from portcullis.audit.record import AuditRecord, Checkpoint
    from portcullis.audit.verify import VerifyReport

T = TypeVar("T")

audit_app = typer.Typer(no_args_is_help=True, help="Forensics on the audit trail (read-only): verify, search, "
                        "timeline, export; and `witness`, a server that keeps checkpoints.")

STORE_FILE = "audit.sqlite3"

Store = Annotated[Path | None, typer.Option("--store", help="Audit store file (default: as the gateway: "
                                            "gateway.yaml's audit.path with --config, else <state dir>/audit.sqlite3).",
                                            dir_okay=False)]
StateDir = Annotated[Path | None, typer.Option("--state-dir", help="State directory (default: as the gateway: "
                                               "gateway.yaml's state_dir with --config, else $PORTCULLIS_STATE_DIR, "
                                               "else ./.portcullis).", file_okay=False)]
ConfigDir = Annotated[Path | None, typer.Option("--config", "-c", help="Deployment directory whose gateway.yaml "
                                                "names the state directory.", file_okay=False)]
Since = Annotated[str | None, typer.Option(help="From this time: ISO 8601 (no zone = UTC), UNIX seconds, "
                                           "or an age such as 30m, 2h, 7d.")]
Until = Annotated[str | None, typer.Option(help="Up to this time (same forms as --since).")]
Limit = Annotated[int, typer.Option(help="At most this many records (search) or requests (timeline).",
                                    min=1, max=100_000)]
AsJson = Annotated[bool, typer.Option("--json", help="One ASCII JSON object per line instead of a table.")]


def _consoles() -> tuple[Console, Console]:
    # made per command, not at import, so COLUMNS and the streams of the moment apply
    return console(), console(stderr=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    _consoles()[1].print(lines_safe(message), markup=False)
    return typer.Exit(code)


# --------------------------------------------------------------------------- terminal safety
# (shared by every CLI view: portcullis.cli.safe_text)


def _json_line(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=True, sort_keys=True, default=lambda o: f"<{type(o).__name__}> {o!r}")


# --------------------------------------------------------------------------- where the store is


def _gateway(config: Path) -> Any:
    from portcullis.config.loader import load_deployment
    from portcullis.config.secret_store import use_configured
    from portcullis.errors import ConfigError

    try:
        gateway = load_deployment(config).gateway
        use_configured(gateway.secrets, config)  # a PostgreSQL URL may be a vault reference
        return gateway
    except ConfigError as exc:
        for problem in exc.problems:
            _consoles()[1].print(lines_safe(str(problem)), markup=False)
        raise typer.Exit(2) from None


def _configured(config: Path | None) -> tuple[str | None, str | None]:
    """``(state_dir, audit.path)`` from the deployment's gateway.yaml, or ``(None, None)`` without one."""
    if config is None:
        return None, None
    gateway = _gateway(config)
    return gateway.state_dir, gateway.audit.path


def _postgres(store: Path | None, config: Path | None) -> Any:
    """gateway.yaml's ``storage.postgresql`` when the trail lives there (and no ``--store`` names a file)."""
    if store is not None or config is None:
        return None
    return _gateway(config).storage.postgresql


async def _open_readonly(store: Path | None, state_dir: Path | None, config: Path | None) -> Any:
    """The store ``verify`` and ``export`` read, read-only: PostgreSQL when configured, else the SQLite file."""
    postgres = _postgres(store, config)
    if postgres is None:
        from portcullis.audit.store import SqliteAuditStore

        return await SqliteAuditStore.open_readonly(_store_path(store, state_dir, config))
    from portcullis.audit.reader import open_postgres_readonly

    return await open_postgres_readonly(postgres, origin=Path(config or ".") / "gateway.yaml")


def _state_dir(state_dir: Path | None, config: Path | None) -> Path:
    """The gateway's precedence (``identity/state_dir.py``) without creating the directory."""
    if state_dir is not None:
        return state_dir.expanduser().resolve()
    configured = _configured(config)[0]
    return Path(configured or os.environ.get("PORTCULLIS_STATE_DIR") or ".portcullis").expanduser().resolve()


def _store_path(store: Path | None, state_dir: Path | None, config: Path | None) -> Path:
    """``--store``; else as the gateway: gateway.yaml's ``audit.path``, else ``<state dir>/audit.sqlite3``."""
    if store is not None:
        return store
    if state_dir is None and (audit_path := _configured(config)[1]):
        return Path(audit_path)
    return _state_dir(state_dir, config) / STORE_FILE


def open_reader(store: Path | None, state_dir: Path | None, config: Path | None
                ) -> AbstractAsyncContextManager[AuditReader]:
    """The forensic reader of the trail the gateway writes: PostgreSQL when gateway.yaml's
    ``storage.postgresql`` is set (and no ``--store`` names a file), else the SQLite file; read-only."""
    from portcullis.audit.reader import open_postgres_reader, open_sqlite_reader

    postgres = _postgres(store, config)
    if postgres is None:
        return open_sqlite_reader(_store_path(store, state_dir, config))
    return open_postgres_reader(postgres, origin=Path(config or ".") / "gateway.yaml")


def _run(fn: Callable[[], Awaitable[T]], what: str) -> T:
    """Run ``fn`` in an event loop; a store that cannot be read is a clear failure, not a traceback."""
    import anyio

    from portcullis.audit.errors import AuditUnavailable

    try:
        return anyio.run(fn)
    except AuditUnavailable as exc:
        raise _fail(f"audit {what}: cannot read the audit store: {exc.detail or exc.message}") from None


# --------------------------------------------------------------------------- time


_AGE = re.compile(r"^(\d{1,9})([smhd])$")
_AGE_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, *, now: float, option: str) -> float:
    """ISO 8601 (no zone means UTC), UNIX seconds, or an age before ``now`` (``30m``, ``2h``, ``7d``)."""
    value = text.strip()
    if age := _AGE.match(value):
        return now - int(age[1]) * _AGE_SECONDS[age[2]]
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds):
            return seconds
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter("expected ISO 8601 (2027-01-15T10:00:00Z), UNIX seconds, or an age (30m, 2h, 7d)",
                                 param_hint=option) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _utc(ts: object) -> str:
    if isinstance(ts, int | float) and math.isfinite(ts):
        try:
            return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        except (OverflowError, OSError, ValueError):
            pass
    return terminal_safe(repr(ts))


# --------------------------------------------------------------------------- rendering records


def _get(obj: object, *path: str) -> Any:
    """``obj[path[0]][path[1]]…`` or ``None``; tolerant of tampered, non-dict fields."""
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _principal(fields: object) -> str | None:
    parts = [f"{label}={_get(fields, 'principal', key)}" for label, key in
             (("agent", "agent_id"), ("user", "user_id")) if _get(fields, "principal", key) is not None]
    if not parts and _get(fields, "principal", "client_id") is not None:
        parts.append(f"client={_get(fields, 'principal', 'client_id')}")
    # the credential (token id, transaction id): caller-controlled text, escaped by _cell like the rest
    parts += [f"{key}={_get(fields, 'credential', key)}" for key in ("txn", "jti")
              if _get(fields, "credential", key) is not None]
    return " ".join(parts) or None


def _source(kind: str, fields: object) -> str | None:
    return f"source={_get(fields, 'source')}" if kind == "attempt" else None


def _verdict(kind: str, fields: object) -> str | None:
    if kind == "decision":
        effect, shadow = _get(fields, "decision", "effect"), _get(fields, "decision", "shadow", "effect")
        return None if effect is None else f"{effect} (shadow: {shadow})" if shadow is not None else str(effect)
    if kind == "rejected":
        return f"rejected: {_get(fields, 'reason')}"
    if kind == "attempt":
        return f"attempt: {_get(fields, 'reason')} ({_get(fields, 'status')}) x{_get(fields, 'count')}"
    if kind == "spawn":  # a stdio child: its service, confinement and any unsafe_ settings
        unsafe = _get(fields, "confinement", "unsafe")
        return (f"spawn {_get(fields, 'service')}: {_get(fields, 'outcome')} "
                f"({_get(fields, 'confinement', 'backend')}, network {_get(fields, 'confinement', 'network')}"
                + (f", {' '.join(str(u) for u in unsafe)}" if isinstance(unsafe, list) and unsafe else "") + ")")
    if kind == "service_identity":  # a service (re)connected: what it reported, what ran
        return (f"identity {_get(fields, 'service')}: {_get(fields, 'server_info', 'name')} "
                f"{_get(fields, 'server_info', 'version')} ({_get(fields, 'transport')}"
                + (f", sha256 {str(_get(fields, 'executable', 'sha256'))[:16]}" if _get(fields, "executable") else "")
                + ")")
    if kind == "alert":  # an anomaly alert (docs/alerts.md): rule, key, what crossed which threshold
        threshold = _get(fields, "threshold")
        return (f"alert {_get(fields, 'rule')} {_get(fields, 'key_text')}: {_get(fields, 'observed')}"
                + (f" > {threshold} (baseline {_get(fields, 'baseline')})" if threshold is not None else " (new)"))
    if kind == "policy_version":  # a policy change: applied, refused (and why) or rolled back
        return f"policy {_get(fields, 'action')} {_get(fields, 'version')}" + (
            f": {_get(fields, 'reason')}" if _get(fields, "reason") is not None else "")
    if kind == "outcome":
        text = str(_get(fields, "outcome"))
        if _get(fields, "error_code") is not None:
            text += f" ({_get(fields, 'error_code')})"
        duration = _get(fields, "duration_ms")
        if isinstance(duration, int | float) and math.isfinite(duration):
            text += f" {duration:.1f} ms"
        return text
    return None


def _rules(fields: object) -> str | None:
    rule_ids = _get(fields, "decision", "rule_ids")
    return ", ".join(str(r) for r in rule_ids) if isinstance(rule_ids, list) and rule_ids else None


def _table(title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("index", "time (UTC)", "kind", "request id", "tool", "principal", "decision / outcome",
                   "rule ids"):
        table.add_column(column, overflow="fold")  # fold, never hide the end of a hostile value behind "…"
    return table


def _add_row(table: Table, record: AuditRecord) -> None:
    fields = record.fields
    table.add_row(_cell(record.index), Text(_utc(record.ts)), _cell(record.kind), _cell(record.request_id),
                  _cell(_get(fields, "tool", "name")), _cell(_principal(fields) or _source(record.kind, fields)),
                  _cell(_verdict(record.kind, fields)),
                  _cell(_rules(fields)))


# --------------------------------------------------------------------------- verify

_EXPLANATIONS = (
    ("record missing or out of order", "the record expected here is missing or another sits in its place: "
     "a record was deleted, or records were reordered"),
    ("prev_hash does not link", "this record does not follow the one before it: one of the two was replaced "
     "(a forged record with a recomputed hash), moved or inserted"),
    ("record hash does not match", "the record was edited after it was written"),
    ("record does not match its signed checkpoint", "the history up to this signed checkpoint was rewritten "
     "(every hash recomputed)"),
    ("store re-chained", "the store's history up to this anchor was rewritten and its hashes recomputed: the "
     "store is consistent with itself (its own checkpoints may have been re-signed with the key beside it) but "
     "not with the checkpoint that left the machine"),
    ("tail truncated: the store ends", "records were deleted from the end: a checkpoint kept elsewhere names a "
     "later record"),
    ("tail truncated", "records were deleted from the end: a signed checkpoint names a later record"),
    ("checkpoint signature invalid", "a checkpoint here is not signed by this public key: forged or altered, "
     "or signed by another key (a rotated key, or the wrong --public-key)"),
    ("conflicting anchored checkpoints", "two validly signed checkpoints kept elsewhere disagree about this "
     "index: the signing key signed two histories (key compromise, or two gateways writing one store)"),
    ("conflicting signed checkpoints", "two validly signed checkpoints disagree about this index: the signing key "
     "signed two histories (key compromise, or two gateways writing one store)"),
    ("records 0..", "the oldest records are gone and no signed retention record in the chain says retention "
     "pruned them (or not that many): they were deleted by someone else"),
)


def explain(reason: str) -> str | None:
    """What a :class:`VerifyReport` reason means for an investigator."""
    return next((text for prefix, text in _EXPLANATIONS if reason.startswith(prefix)), None)


@audit_app.command("verify")
def verify(store: Store = None,
           export: Annotated[Path | None, typer.Option("--export", help="Verify a JSON-lines export instead of "
                                                       "a store.", dir_okay=False)] = None,
           public_key: Annotated[Path | None, typer.Option("--public-key", help="Ed25519 public key (PEM) that "
                                                           "signs checkpoints (default: <state dir>/"
                                                           "audit-signing.pub.pem).", dir_okay=False)] = None,
           state_dir: StateDir = None, config: ConfigDir = None,
           anchors: Annotated[str | None, typer.Option(
               "--anchors", help="Also check against checkpoints kept elsewhere: a SIEM JSON-lines file (its "
               "\"kind\": \"checkpoint\" lines), an audit export, or a file of C2SP signed notes, or an https:// "
               "URL serving one. Catches a truncated, rewritten or re-chained tail that the store's own "
               "checkpoints cannot.")] = None,
           allow_insecure_http: Annotated[bool, typer.Option(
               "--allow-insecure-http", help="Let --anchors fetch an http:// URL (anchors are signed, so this "
               "risks availability and privacy, not forgery).")] = False,
           unsafe_allow_unsigned: Annotated[bool, typer.Option(
               "--unsafe-allow-unsigned", help="Pass a chain that no checkpoint signs (it proves only that it "
               "is self-consistent).")] = False) -> None:
    """Check the hash chain and signed checkpoints (and anchors kept elsewhere); name the first broken index."""
    from portcullis.audit.keys import load_public_key, public_key_path
    from portcullis.errors import ConfigError

    out, err = _consoles()
    if store is not None and export is not None:
        raise typer.BadParameter("give --store or --export, not both", param_hint="--export")
    if public_key is None:
        public_key = public_key_path(_state_dir(state_dir, config))
        err.print(f"note: using the public key in the state directory ({public_key}); whoever could rewrite the "
                  "store could also replace it — for evidence, pass a copy kept elsewhere with --public-key",
                  markup=False)
    try:
        key = load_public_key(public_key)
    except ConfigError as exc:
        raise _fail(f"audit verify: {exc}") from None

    pinned = [] if anchors is None else _read_anchors(out, anchors, key, allow_insecure_http)
    pairs = [(a.index, _ascii(a.hash)) for a in pinned]
    if export is not None:
        if not export.is_file():
            raise _fail(f"audit verify: no export file at {export}")
        report, checkpoints = _verify_export(export, key, pairs)
    else:
        report, checkpoints = _run(lambda: _verify_store(lambda: _open_readonly(store, state_dir, config), key, pairs),
                                   "verify")
    _print_report(out, err, report, checkpoints, key, unsafe_allow_unsigned)
    if pinned:
        latest = max(a.index for a in pinned)
        out.print(f"  anchors: {len(pinned)} checkpoint(s) kept elsewhere agree; the latest covers records "
                  f"0..{latest}", markup=False)
        if latest < report.records_checked - 1:
            out.print(f"  note: records {latest + 1}..{report.records_checked - 1} come after the latest anchor; "
                      "only the store's own checkpoints (signed with the key beside it) cover them", markup=False)


def _read_anchors(out: Console, where: str, key: Any, allow_insecure_http: bool) -> list[Anchor]:
    """The anchors in file or URL ``where``, each verified with ``key``; a bad one fails the run (exit 1)."""
    from portcullis.audit.anchors import BadAnchor, fetch_anchors, read_anchors

    path = Path(where)
    try:
        if where.lower().startswith(("https://", "http://")):
            return fetch_anchors(where, key, allow_insecure_http=allow_insecure_http)
        if not path.is_file():
            raise _fail(f"audit verify: no anchor file at {where}")
        return read_anchors(path, key)
    except BadAnchor as exc:
        shown = where.split("?", 1)[0]  # a URL's query may carry a token
        out.print(f"FAILED: anchor file {terminal_safe(shown, 200)}, {terminal_safe(str(exc), 300)}",
                  markup=False)
        out.print("  meaning: a checkpoint kept elsewhere is damaged, forged, or signed by another key (a rotated "
                  "key, or the wrong --public-key); nothing was checked against it", markup=False)
        raise typer.Exit(1) from None
    except OSError as exc:
        raise _fail(f"audit verify: cannot read {path}: {exc.strerror or type(exc).__name__}") from None


def _verify_export(path: Path, key: Any,
                   anchors: Sequence[tuple[int, str]] = ()) -> tuple[VerifyReport, list[Checkpoint]]:
    """``verify_export``, with hash-like fields made comparable first (see :func:`_comparable`)."""
    from portcullis.audit.export import MalformedExport, read_export
    from portcullis.audit.verify import VerifyReport, verify_chain

    try:
        checkpoints = [_comparable(c) for c in read_export(path, "checkpoint")]
        records = (_comparable(r) for r in read_export(path, "record"))
        return verify_chain(records, checkpoints, key, anchors), checkpoints
    except MalformedExport as exc:
        return VerifyReport(False, None, f"malformed export: {exc}", 0), []
    except OSError as exc:
        raise _fail(f"audit verify: cannot read {path}: {exc.strerror or type(exc).__name__}") from None


def _ascii(value: object) -> str:
    text = value if isinstance(value, str) else f"<{type(value).__name__}>{value!r}"
    return text.encode("ascii", "backslashreplace").decode("ascii")


R = TypeVar("R", "AuditRecord", "Checkpoint")


def _comparable(item: R) -> R:
    """``item`` with its hash-like fields as ASCII ``str``.

    SQLite keeps whatever type was written and an export line may hold any string, so tampered
    data can put a BLOB or non-ASCII text where a hash belongs; ``hmac.compare_digest`` raises
    on those instead of answering "no". Genuine hashes are hex, so only tampered items change,
    and they then fail verification at their own index like any other edit.
    """
    from dataclasses import replace

    from portcullis.audit.record import Checkpoint

    if isinstance(item, Checkpoint):
        return replace(item, hash=_ascii(item.hash), key_id=_ascii(item.key_id), signature=_ascii(item.signature))
    return replace(item, prev_hash=_ascii(item.prev_hash), hash=_ascii(item.hash))


class _ComparableStore:
    """The two reads ``verify_store`` makes, through :func:`_comparable`."""

    def __init__(self, store: Any) -> None:
        self._store = store

    async def read(self, from_index: int, limit: int) -> list[AuditRecord]:
        return [_comparable(r) for r in await self._store.read(from_index, limit)]

    async def checkpoints(self) -> list[Checkpoint]:
        return [_comparable(c) for c in await self._store.checkpoints()]


async def _verify_store(open_store: Callable[[], Awaitable[Any]], key: Any,
                        anchors: Sequence[tuple[int, str]] = ()) -> tuple[VerifyReport, list[Checkpoint]]:
    from portcullis.audit.verify import verify_store

    async with await open_store() as opened, opened.snapshot():
        store = _ComparableStore(opened)
        return await verify_store(store, key, anchors), await store.checkpoints()  # type: ignore[arg-type]


def _print_report(out: Console, err: Console, report: VerifyReport, checkpoints: Sequence[Checkpoint], key: Any,
                  unsafe_allow_unsigned: bool) -> None:
    from portcullis.audit.checkpoint import checkpoint_signature_ok, key_id

    kid = key_id(key)
    if not report.ok:
        where = "" if report.first_bad_index is None else f" at index {report.first_bad_index}"
        out.print(f"FAILED{where}: {terminal_safe(report.reason, 500)}", markup=False)
        if meaning := explain(report.reason):
            out.print(f"  meaning: {meaning}", markup=False)
        out.print(f"  {report.records_checked} record(s) verified before the failure; key id {kid}", markup=False)
        raise typer.Exit(1)
    signed = [c for c in checkpoints if checkpoint_signature_ok(c, key)]
    count = report.records_checked
    if not signed:
        if not unsafe_allow_unsigned:
            out.print(f"FAILED: no checkpoint signed by key {kid} ({count} record(s)): the chain links up, but "
                      "nothing proves it was not rewritten or emptied whole", markup=False)
            raise typer.Exit(1)
        err.print("warning: --unsafe-allow-unsigned: this chain is only self-consistent; nothing proves it was not "
                  "rewritten whole", markup=False)
        out.print(f"OK (UNSIGNED): {count} record(s) link up; no signed checkpoint", markup=False)
        return
    latest = max(signed, key=lambda c: c.index)
    first = 0 if report.pruned_through is None else report.pruned_through + 1
    out.print(f"OK: {count} record(s) verified; latest signed checkpoint at index {latest.index} "
              f"({_utc(latest.ts)}), key id {kid}", markup=False)
    if report.pruned_through is not None:
        out.print(f"  note: records 0..{report.pruned_through} were pruned by retention (a retention record in "
                  f"the chain says so); verified from the signed checkpoint at index {report.pruned_through}",
                  markup=False)
    last = first + count - 1
    if latest.index < last:
        out.print(f"  note: records {latest.index + 1}..{last} come after the latest checkpoint; only their "
                  "hash links protect them until the next one", markup=False)


# --------------------------------------------------------------------------- search and timeline


@audit_app.command("search")
def search(store: Store = None, state_dir: StateDir = None, config: ConfigDir = None,
           tool: Annotated[str | None, typer.Option(help="Exposed tool name.")] = None,
           principal: Annotated[list[str] | None, typer.Option(
               help="field=value, repeatable (agent_id, user_id, client_id, tenant, session_id, source_app, "
               "issuer, auth_method; roles and scopes match one member).")] = None,
           since: Since = None, until: Until = None,
           decision: Annotated[str | None, typer.Option(help="allow, deny or require_approval (deny also matches "
                                                        "rejected calls).")] = None,
           kind: Annotated[str | None, typer.Option(help="decision, outcome, rejected, approval, "
                                                     "attempt, retention, spawn, service_identity, kill_switch, "
                                                     "alert or policy_version.")] = None,
           request_id: Annotated[str | None, typer.Option(help="One request.")] = None,
           limit: Limit = 100, as_json: AsJson = False) -> None:
    """Find records; the newest first."""
    from portcullis.audit.query import AuditQuery

    now = time.time()
    try:
        query = AuditQuery(tool=tool, principal=_principal_filters(principal or []),
                           since=None if since is None else parse_time(since, now=now, option="--since"),
                           until=None if until is None else parse_time(until, now=now, option="--until"),
                           effect=decision, kind=kind, request_id=request_id, limit=limit)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    reader = open_reader(store, state_dir, config)
    records = _run(lambda: _search(reader, query), "search")
    if as_json:
        for record in records:
            typer.echo(_json_line(record.to_json()))
        return
    out = _consoles()[0]
    if not records:
        out.print("no matching records", markup=False)
        return
    table = _table(f"{len(records)} record(s), newest first")
    for record in records:
        _add_row(table, record)
    out.print(table)


async def _search(reader: AbstractAsyncContextManager[AuditReader], query: Any) -> list[AuditRecord]:
    async with reader as opened:
        return await opened.search(query)


async def _timeline(reader: AbstractAsyncContextManager[AuditReader], query: Any) -> list[Any]:
    async with reader as opened:
        return await opened.timeline(query)


def _principal_filters(items: Sequence[str]) -> dict[str, str]:
    filters: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise typer.BadParameter("expected field=value, e.g. agent_id=billing-bot", param_hint="--principal")
        if name.strip() in filters:
            raise typer.BadParameter(f"{name.strip()} given twice", param_hint="--principal")
        filters[name.strip()] = value
    return filters


@audit_app.command("timeline")
def timeline(request_id: Annotated[str | None, typer.Option(help="One request.")] = None,
             agent: Annotated[str | None, typer.Option(help="Every request of this agent id.")] = None,
             store: Store = None, state_dir: StateDir = None, config: ConfigDir = None,
             since: Since = None, until: Until = None, limit: Limit = 100, as_json: AsJson = False) -> None:
    """Requests in order, each with its decision (or rejection) and outcome."""
    from portcullis.audit.query import timeline_query

    if (request_id is None) == (agent is None):
        raise typer.BadParameter("give exactly one of --request-id and --agent", param_hint="--request-id")
    now = time.time()
    try:
        query = timeline_query(request_id=request_id, agent_id=agent,
                               since=None if since is None else parse_time(since, now=now, option="--since"),
                               until=None if until is None else parse_time(until, now=now, option="--until"),
                               limit=limit)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    reader = open_reader(store, state_dir, config)
    groups = _run(lambda: _timeline(reader, query), "timeline")
    if as_json:
        for group in groups:
            typer.echo(_json_line({"request_id": group.request_id, "records": [r.to_json() for r in group.records]}))
        return
    out = _consoles()[0]
    if not groups:
        out.print("no matching requests", markup=False)
        return
    table = _table(f"{len(groups)} request(s), oldest first")
    for group in groups:
        for record in group.records:
            _add_row(table, record)
        table.add_section()
    out.print(table)


# --------------------------------------------------------------------------- export


@audit_app.command("export")
def export(out_file: Annotated[Path, typer.Option("--out", help="JSON-lines file to write (mode 0600).",
                                                  dir_okay=False)],
           store: Store = None, state_dir: StateDir = None, config: ConfigDir = None,
           force: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False) -> None:
    """Write every record and checkpoint, from one consistent snapshot, as JSON lines."""
    if out_file.exists() and not force:
        raise _fail(f"audit export: {out_file} exists; pass --force to replace it", 2)
    try:
        count, checkpoints = _run(lambda: _export(lambda: _open_readonly(store, state_dir, config), out_file),
                                  "export")
        out_file.chmod(0o600)  # who called what is sensitive even with arguments hashed
        digest = hashlib.sha256(out_file.read_bytes()).hexdigest()
    except OSError as exc:
        raise _fail(f"audit export: cannot write {out_file}: {exc.strerror or type(exc).__name__}") from None
    _consoles()[0].print(f"exported {count} record(s) and {checkpoints} checkpoint(s) to {out_file}\n"
                         f"sha256 {digest}", markup=False)


async def _export(open_store: Callable[[], Awaitable[Any]], out_file: Path) -> tuple[int, int]:
    from portcullis.audit.export import export_jsonl

    async with await open_store() as store, store.snapshot():
        # one read transaction: a checkpoint signed while we copy cannot name a record we did not copy
        return await export_jsonl(store, out_file), len(await store.checkpoints())


@audit_app.command("witness")
def witness(listen: Annotated[str, typer.Option("--listen", help="HOST:PORT to listen on (an IPv6 host in "
                                                "brackets).")],
            key: Annotated[Path, typer.Option("--key", help="The gateway's audit public key (PEM, "
                                              "audit-signing.pub.pem): only notes it signs are kept.",
                                              dir_okay=False)],
            store: Annotated[Path, typer.Option("--store", help="Directory of the kept notes "
                                                "(checkpoints.notes, appended and fsync'ed).", file_okay=False)],
            tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="Serve https with this PEM "
                                                          "certificate chain.", dir_okay=False)] = None,
            tls_key: Annotated[Path | None, typer.Option("--tls-key", help="Its private key (PEM).",
                                                         dir_okay=False)] = None,
            log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info") -> None:
    """Run a witness: keep every checkpoint the gateway POSTs to /add-checkpoint, refuse (409) a rolled-back
    or forked one, serve them all at /checkpoints for `audit verify --anchors URL` (docs/audit.md)."""
    from portcullis import logs
    from portcullis.audit.keys import load_public_key
    from portcullis.audit.witness.server import WitnessStoreError, serve
    from portcullis.errors import ConfigError

    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})", listen)
    if match is None or not 0 <= int(match.group(2)) <= 65535:
        raise typer.BadParameter("expected HOST:PORT, e.g. 127.0.0.1:8443", param_hint="--listen")
    if (tls_cert is None) != (tls_key is None):
        raise typer.BadParameter("give both --tls-cert and --tls-key, or neither", param_hint="--tls-cert")
    try:
        public_key = load_public_key(key)
    except ConfigError as exc:
        raise _fail(f"audit witness: {exc}") from None
    logs.configure(log_level.upper())
    try:
        serve(match.group(1).strip("[]"), int(match.group(2)), store, public_key,
              ssl_certfile=None if tls_cert is None else str(tls_cert),
              ssl_keyfile=None if tls_key is None else str(tls_key))
    except WitnessStoreError as exc:
        raise _fail(f"audit witness: {terminal_safe(str(exc))}") from None
    except OSError as exc:
        raise _fail(f"audit witness: {exc.strerror or type(exc).__name__}") from None
