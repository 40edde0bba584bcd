"""``portcullis approvals list | show | approve | deny``: the approver's command line.

It talks to the running gateway's admin listener (``/approvals…``) with the approver's own
bearer token (``--token`` or ``$PORTCULLIS_TOKEN``): the gateway authenticates and authorizes
every request, so this command holds no privilege of its own. ``--admin-url`` defaults to the
deployment's ``admin:`` address (``--config``), else ``http://127.0.0.1:9464``.

``show`` prints everything the approval is bound to: the canonical arguments as the policy lets
approvers see them (hidden values as keyed hashes) with control, invisible and bidirectional
characters made visible (``\\u{202E}``), nothing truncated, the hash of the complete arguments
that will be executed, the requester, the justification, the rules that asked for approval and
the requester's recent similar requests.

Every value in these views can be written by the requester, so nothing is ever rendered as Rich
markup or raw terminal text (:mod:`portcullis.cli.safe_text`); ``--json`` is ASCII-only JSON.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import urlencode

import typer
from rich.table import Table

from portcullis.cli.safe_text import cell, console, json_text, lines_safe, terminal_safe

approvals_app = typer.Typer(no_args_is_help=True, help="Human approvals: list, show, approve, deny.")
out = console()
err = console(stderr=True)

AdminUrl = Annotated[str | None, typer.Option("--admin-url", help="The gateway's admin listener (default: from "
                                              "--config, else http://127.0.0.1:9464).")]
Config = Annotated[Path | None, typer.Option("--config", "-c", help="Deployment directory (for its admin address).",
                                             file_okay=False)]
Token = Annotated[str | None, typer.Option("--token", help="Your bearer token (default: $PORTCULLIS_TOKEN).",
                                           show_default=False)]
AsJson = Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")]
ApprovalId = Annotated[str, typer.Argument(help="The approval id (apr_…).")]


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(lines_safe(message), highlight=False, markup=False)
    raise typer.Exit(code)


def _base(admin_url: str | None, config: Path | None) -> str:
    if admin_url:
        return admin_url.rstrip("/")
    if config is not None:
        from portcullis.config.loader import load_deployment
        from portcullis.errors import ConfigError

        try:
            admin = load_deployment(config).gateway.admin
        except ConfigError as exc:
            _fail("\n".join(str(p) for p in exc.problems), 2)
        if admin.port is None:
            _fail("this deployment's admin listener is off (admin.port: null)", 2)
        host = "127.0.0.1" if admin.host in ("0.0.0.0", "::") else admin.host  # noqa: S104 - a wildcard bind is reached on loopback
        return f"http://{host}:{admin.port}"
    return "http://127.0.0.1:9464"


def _call(method: str, path: str, *, admin_url: str | None, config: Path | None, token: str | None,
          body: dict[str, Any] | None = None) -> Any:
    import httpx2

    token = token or os.environ.get("PORTCULLIS_TOKEN")
    if not token:
        _fail("no token: pass --token or set PORTCULLIS_TOKEN (approvers authenticate like any caller)", 2)
    url = _base(admin_url, config) + path
    try:
        response = httpx2.request(method, url, headers={"Authorization": f"Bearer {token}"},
                                  json=body, timeout=15, follow_redirects=False)
    except httpx2.HTTPError as exc:
        _fail(f"cannot reach the gateway's admin listener at {url.split('/approvals')[0]}: {type(exc).__name__}")
    try:
        answer = response.json()
    except ValueError:
        _fail(f"unexpected answer from the gateway (HTTP {response.status_code})")
    if response.status_code != 200:
        message = answer.get("error") if isinstance(answer, dict) else None
        _fail(f"refused (HTTP {response.status_code}): {message or 'error'}")
    return answer


@approvals_app.command("list")
def list_approvals(status: Annotated[str | None, typer.Option(help="pending, approved, denied, expired, executed "
                                                                   "(default: all).")] = "pending",
                   limit: Annotated[int, typer.Option(min=1, max=500, help="How many per page.")] = 100,
                   cursor: Annotated[str | None, typer.Option(help="Start after this approval id (the "
                                                                    "next_cursor a previous page printed).")] = None,
                   every: Annotated[bool, typer.Option("--all", help="Follow the pages to the end.")] = False,
                   admin_url: AdminUrl = None, config: Config = None, token: Token = None,
                   as_json: AsJson = False) -> None:
    """Approvals you may decide, newest first (pending ones by default), one page at a time."""
    rows: list[dict[str, Any]] = []
    while True:
        params = {"limit": str(limit), **({"status": status} if status else {}),
                  **({"cursor": cursor} if cursor else {})}
        answer = _call("GET", f"/approvals?{urlencode(params)}", admin_url=admin_url, config=config, token=token)
        rows.extend(answer.get("approvals", []))
        cursor = answer.get("next_cursor")
        if not every or not cursor:
            break
    if as_json:  # the rows, as before paging existed; the next page's cursor goes to stderr
        typer.echo(json_text(rows, indent=2))
        if cursor:
            err.print(lines_safe(f"next_cursor {cursor}"), highlight=False, markup=False)
        return
    if not rows:
        out.print("no approvals", highlight=False)
        return
    table = Table()
    table.add_column("id", no_wrap=True)  # copied into show / approve: never cut
    for name in ("tool", "requester", "status", "approvals", "expires"):
        table.add_column(name, overflow="fold")
    for row in rows:  # every cell plain Text: a requester's "[bold]" or ESC is shown, never obeyed
        table.add_row(*(cell(v, None, double_backslashes=False) for v in (
            row.get("id"), row.get("tool"), row.get("requester"), row.get("status"),
            f"{row.get('approvals')}/{row.get('required')}", row.get("expires_at"))))
    out.print(table)
    if cursor:
        out.print(f"more: portcullis approvals list --cursor {cursor} (or --all)", highlight=False)


@approvals_app.command("show")
def show(approval_id: ApprovalId, admin_url: AdminUrl = None, config: Config = None, token: Token = None,
         as_json: AsJson = False) -> None:
    """Everything one approval is bound to, with invisible characters made visible."""
    view = _call("GET", f"/approvals/{approval_id}", admin_url=admin_url, config=config, token=token)
    if as_json:
        typer.echo(json_text(view, indent=2))
        return

    def t(value: object) -> str:  # the gateway made these visible already; anything raw is escaped here
        return terminal_safe(value, None, double_backslashes=False)

    lines = [
        f"approval   {t(view['id'])}  ({t(view['status'])}, {t(view['approvals'])}/{t(view['required'])} "
        f"approvals, expires {t(view['expires_at'])})",
        f"tool       {t(view['tool'])}",
        f"requester  {json_text(view['requester'])}",
        f"rules      {t(', '.join(view['rule_ids']))}  (policy {t(view['policy_version'])})",
        f"reasons    {t(', '.join(view['reasons']))}",
        f"why        {t(view['justification']) or '(no justification given)'}",
        f"executes   {t(view['arguments_hash'])}",
        "arguments (canonical; values the policy hides are keyed hashes, the hash above covers them all):",
        json_text(view["arguments"], indent=2),
    ]
    for vote in view["votes"]:
        lines.append(f"vote       {t(vote['verdict'])} by {t(vote['approver'].get('user_id'))} at {t(vote['at'])}"
                     + (f": {t(vote['reason'])}" if vote["reason"] else ""))
    calls = view.get("recent_calls") or []
    lines.append(f"the same caller's calls of this tool in the last day ({len(calls)}, newest first):")
    for call in calls:
        lines.append(f"  {t(call.get('effect') or '?'):<16} {json_text(call.get('arguments'))}")
    recent = view.get("recent_similar") or []
    lines.append(f"recent similar requests by the same requester ({len(recent)}):")
    for item in recent:
        lines.append(f"  {t(item['created_at'])}  {t(item['status']):<9} {t(item['id'])}  "
                     f"{json_text(item['arguments'])}")
    out.print("\n".join(lines), highlight=False, markup=False)


def _vote(verdict: str, approval_id: str, reason: str, admin_url: str | None, config: Path | None,
          token: str | None, as_json: bool) -> None:
    answer = _call("POST", f"/approvals/{approval_id}/{verdict}", admin_url=admin_url, config=config,
                   token=token, body={"reason": reason})
    if as_json:
        typer.echo(json_text(answer, indent=2))
        return
    out.print(terminal_safe(f"{answer.get('id')}: {answer.get('status')} ({answer.get('approvals')}/"
                            f"{answer.get('required')} approvals)", None), highlight=False, markup=False)


Reason = Annotated[str, typer.Option(help="Why (kept in the audit trail).")]


@approvals_app.command("approve")
def approve(approval_id: ApprovalId, reason: Reason = "", admin_url: AdminUrl = None, config: Config = None,
            token: Token = None, as_json: AsJson = False) -> None:
    """Approve exactly the call `show` prints (you cannot approve your own request)."""
    _vote("approve", approval_id, reason, admin_url, config, token, as_json)


@approvals_app.command("deny")
def deny(approval_id: ApprovalId, reason: Reason = "", admin_url: AdminUrl = None, config: Config = None,
         token: Token = None, as_json: AsJson = False) -> None:
    """Deny the request: the call never runs."""
    _vote("deny", approval_id, reason, admin_url, config, token, as_json)
