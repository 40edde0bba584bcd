"""``portcullis approvals list | show | approve | deny``: the approver's command line.

It talks to the running gateway's admin listener (``/approvals…``) with the approver's own
bearer token (``--token`` or ``$PORTCULLIS_TOKEN``): the gateway authenticates and authorizes
every request, so this command holds no privilege of its own. ``--admin-url`` defaults to the
deployment's ``admin:`` address (``--config``), else ``http://127.0.0.1:9464``.

``show`` prints everything the approval is bound to: the full canonical arguments with control,
invisible and bidirectional characters made visible (``\\u{202E}``), nothing truncated, the hash
that will be executed, the requester, the justification, the rules that asked for approval and
the requester's recent similar requests.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import urlencode

import typer
from rich.console import Console
from rich.table import Table

approvals_app = typer.Typer(no_args_is_help=True, help="Human approvals: list, show, approve, deny.")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

AdminUrl = Annotated[str | None, typer.Option("--admin-url", help="The gateway's admin listener (default: from "
                                              "--config, else http://127.0.0.1:9464).")]
Config = Annotated[Path | None, typer.Option("--config", "-c", help="Deployment directory (for its admin address).",
                                             file_okay=False)]
Token = Annotated[str | None, typer.Option("--token", help="Your bearer token (default: $PORTCULLIS_TOKEN).",
                                           show_default=False)]
AsJson = Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")]
ApprovalId = Annotated[str, typer.Argument(help="The approval id (apr_…).")]


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(message, highlight=False, markup=False)
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
        out.print_json(json.dumps(rows))
        if cursor:
            err.print(f"next_cursor {cursor}", highlight=False, markup=False)
        return
    if not rows:
        out.print("no approvals", highlight=False)
        return
    table = Table()
    table.add_column("id", no_wrap=True)  # copied into show / approve: never cut
    for name in ("tool", "requester", "status", "approvals", "expires"):
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(row["id"], row["tool"], row["requester"], row["status"],
                      f"{row['approvals']}/{row['required']}", row["expires_at"])
    out.print(table)
    if cursor:
        out.print(f"more: portcullis approvals list --cursor {cursor} (or --all)", highlight=False)


@approvals_app.command("show")
def show(approval_id: ApprovalId, admin_url: AdminUrl = None, config: Config = None, token: Token = None,
         as_json: AsJson = False) -> None:
    """Everything one approval is bound to, with invisible characters made visible."""
    view = _call("GET", f"/approvals/{approval_id}", admin_url=admin_url, config=config, token=token)
    if as_json:
        out.print_json(json.dumps(view))
        return
    lines = [
        f"approval   {view['id']}  ({view['status']}, {view['approvals']}/{view['required']} approvals, "
        f"expires {view['expires_at']})",
        f"tool       {view['tool']}",
        f"requester  {json.dumps(view['requester'], ensure_ascii=True)}",
        f"rules      {', '.join(view['rule_ids'])}  (policy {view['policy_version']})",
        f"reasons    {', '.join(view['reasons'])}",
        f"why        {view['justification'] or '(no justification given)'}",
        f"executes   {view['arguments_hash']}",
        "arguments (canonical, complete):",
        json.dumps(view["arguments"], indent=2, sort_keys=True, ensure_ascii=True),
    ]
    for vote in view["votes"]:
        lines.append(f"vote       {vote['verdict']} by {vote['approver'].get('user_id')} at {vote['at']}"
                     + (f": {vote['reason']}" if vote["reason"] else ""))
    calls = view.get("recent_calls") or []
    lines.append(f"the same caller's calls of this tool in the last day ({len(calls)}, newest first):")
    for call in calls:
        arguments = json.dumps(call.get("arguments"), sort_keys=True, ensure_ascii=True)
        lines.append(f"  {call.get('effect') or '?':<16} {arguments}")
    recent = view.get("recent_similar") or []
    lines.append(f"recent similar requests by the same requester ({len(recent)}):")
    for item in recent:
        lines.append(f"  {item['created_at']}  {item['status']:<9} {item['id']}  "
                     f"{json.dumps(item['arguments'], sort_keys=True, ensure_ascii=True)}")
    out.print("\n".join(lines), highlight=False, markup=False)


def _vote(verdict: str, approval_id: str, reason: str, admin_url: str | None, config: Path | None,
          token: str | None, as_json: bool) -> None:
    answer = _call("POST", f"/approvals/{approval_id}/{verdict}", admin_url=admin_url, config=config,
                   token=token, body={"reason": reason})
    if as_json:
        out.print_json(json.dumps(answer))
        return
    out.print(f"{answer['id']}: {answer['status']} ({answer['approvals']}/{answer['required']} approvals)",
              highlight=False, markup=False)


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
