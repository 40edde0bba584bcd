"""``portcullis incident report``: what happened in a window, from the audit trail, verified.

Read-only (SQLite ``mode=ro``, or the cluster's PostgreSQL in read-only sessions). The report is built by the pure
``portcullis.audit.incident`` over the records ``incident_source`` reads and verifies; this
module parses options, finds the store and key the way ``portcullis audit`` does, and prints.
Exit codes: 0 the range verifies (or the window is empty), 1 the range FAILED verification or is
unsigned, or the store or key cannot be read; 2 bad input (a precise message, no traceback).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from portcullis.cli.audit_cmd import ConfigDir, StateDir, Store, _fail, _run, _state_dir, open_reader, parse_time

incident_app = typer.Typer(no_args_is_help=True, help="Incident response from the audit trail (read-only).")

FORMATS = ("markdown", "json")


def _value(value: str | None, option: str) -> str | None:
    if value is not None and not value:
        raise typer.BadParameter("must not be empty", param_hint=option)
    return value


@incident_app.command("report")
def report(since: Annotated[str, typer.Option(help="From this time: ISO 8601 (no zone = UTC), UNIX seconds, or an "
                                              "age such as 30m, 2h, 24h, 7d.")],
           until: Annotated[str | None, typer.Option(help="Up to this time (same forms; default: now).")] = None,
           agent: Annotated[str | None, typer.Option(help="Only calls of this agent id.")] = None,
           user: Annotated[str | None, typer.Option(help="Only calls of this user id.")] = None,
           tool: Annotated[str | None, typer.Option(help="Only calls of this exposed tool name.")] = None,
           request_id: Annotated[str | None, typer.Option(help="Only this request.")] = None,
           tenant: Annotated[str | None, typer.Option(help="Only calls of this tenant.")] = None,
           output_format: Annotated[str, typer.Option("--format", help="markdown or json.")] = "markdown",
           store: Store = None, state_dir: StateDir = None, config: ConfigDir = None,
           public_key: Annotated[Path | None, typer.Option(
               "--public-key", help="Ed25519 public key (PEM) that signs checkpoints (default: <state dir>/"
               "audit-signing.pub.pem; for evidence pass a copy kept elsewhere).", dir_okay=False)] = None) -> None:
    """Blast radius, timeline, versions in force and service identity for a window; states the chain
    range read and whether it verifies. Filters combine with AND."""
    from portcullis.audit.incident_model import IncidentFilter, IncidentReport
    from portcullis.audit.incident_source import incident_report
    from portcullis.audit.keys import load_public_key, public_key_path
    from portcullis.cli.incident_render import render_json, render_markdown
    from portcullis.errors import ConfigError

    if output_format not in FORMATS:
        raise typer.BadParameter("expected markdown or json", param_hint="--format")
    now = time.time()
    start = parse_time(since, now=now, option="--since")
    end = None if until is None else parse_time(until, now=now, option="--until")
    try:
        flt = IncidentFilter(since=start, until=end, agent=_value(agent, "--agent"), user=_value(user, "--user"),
                             tool=_value(tool, "--tool"), request_id=_value(request_id, "--request-id"),
                             tenant=_value(tenant, "--tenant"))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--until") from None
    key_path = public_key or public_key_path(_state_dir(state_dir, config))
    try:
        key = load_public_key(key_path)
    except ConfigError as exc:
        raise _fail(f"incident report: {exc}") from None
    reader = open_reader(store, state_dir, config)

    async def build() -> IncidentReport:
        async with reader as opened:
            return await incident_report(opened, flt, key)

    built = _run(build, "incident report")
    typer.echo(render_json(built) if output_format == "json" else render_markdown(built), nl=False)
    if not built.chain.ok:
        raise typer.Exit(1)
