"""``portcullis policy apply|rollback|history|show|shadow``: policy versions of a running gateway.

Every command is a thin client of the gateway's admin listener (``/policy…``,
:mod:`portcullis.transport.policy_api`) with the operator's bearer token (``--token`` or
``$PORTCULLIS_TOKEN``; a caller in ``admin.operators``): the gateway validates, stores, audits
and applies, so this command holds no privilege and no state of its own. ``apply DIR`` sends the
policy files of DIR (manifests, Rego modules, fixtures; never gateway.yaml) as one set; a set the
gateway refuses leaves the running version in place and the command exits 1 with the reason.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from portcullis.cli.approvals_cmd import AdminUrl, Config, Token, _base
from portcullis.cli.policy_cmd import policy_app
from portcullis.cli.safe_text import console, lines_safe, terminal_safe

out = console()
err = console(stderr=True)
Message = Annotated[str, typer.Option("--message", "-m", help="Why (kept in the history and the audit trail).")]


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(lines_safe(message), highlight=False, markup=False)
    raise typer.Exit(code)


def _call(method: str, path: str, *, admin_url: str | None, config: Path | None, token: str | None,
          body: dict[str, Any] | None = None) -> Any:
    import httpx2

    token = token or os.environ.get("PORTCULLIS_TOKEN")
    if not token:
        _fail("no token: pass --token or set PORTCULLIS_TOKEN (a caller in admin.operators)", 2)
    base = _base(admin_url, config)
    try:
        response = httpx2.request(method, base + path, headers={"Authorization": f"Bearer {token}"},
                                  json=body, timeout=120, follow_redirects=False)
        answer = response.json()
    except httpx2.HTTPError as exc:
        _fail(f"cannot reach the gateway's admin listener at {base}: {type(exc).__name__}")
    except ValueError:
        _fail(f"unexpected answer from the gateway (HTTP {response.status_code})")
    if response.status_code == 422 and isinstance(answer, dict):
        lines = [f"refused: {answer.get('reason')}; the running version stays",
                 *(f"  {p}" for p in answer.get("problems", []))]
        _fail("\n".join(str(line) for line in lines))
    if response.status_code != 200:
        message = answer.get("error") if isinstance(answer, dict) else None
        _fail(f"refused (HTTP {response.status_code}): {message or 'error'}")
    return answer


def _done(answer: dict[str, Any]) -> None:
    out.print(terminal_safe(f"{answer.get('status')}: {answer.get('version')} ({answer.get('engine_version')}); "
                            f"previous {answer.get('previous') or '-'}"), highlight=False, markup=False)


@policy_app.command("apply")
def apply(target: Annotated[Path, typer.Argument(help="Directory with the new policy set.", file_okay=False)],
          message: Message = "", admin_url: AdminUrl = None, config: Config = None, token: Token = None) -> None:
    """Validate DIR's policy set whole in the running gateway, store it as a version and make it active."""
    from portcullis.policy.policy_set import SetRefused, collect

    if not target.is_dir():
        _fail("apply: not a directory", 2)
    try:
        files = collect(target, _rego_dir(target))
    except SetRefused as refused:
        _fail("\n".join([f"refused: {refused.reason}", *refused.problems]))
    _done(_call("POST", "/policy/reload", admin_url=admin_url, config=config, token=token,
                body={"files": files, "message": message}))


def _rego_dir(target: Path) -> str | None:
    """DIR's ``authorization.rego_dir`` when DIR has a gateway.yaml that says so, else ``policy``."""
    import yaml

    try:
        config = yaml.safe_load((target / "gateway.yaml").read_text(encoding="utf-8"))
        value = config["authorization"]["rego_dir"]
    except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError):
        return "policy"
    return value if isinstance(value, str) or value is None else "policy"


@policy_app.command("rollback")
def rollback(version: Annotated[str | None, typer.Argument(help="Version id (ps-… or pv-…); default: the "
                                                           "previous one.")] = None,
             message: Message = "", admin_url: AdminUrl = None, config: Config = None, token: Token = None) -> None:
    """Make a stored version active again (default: the one before the current)."""
    body: dict[str, Any] = {"message": message}
    if version is not None:
        body["version"] = version
    _done(_call("POST", "/policy/rollback", admin_url=admin_url, config=config, token=token, body=body))


@policy_app.command("history")
def history(admin_url: AdminUrl = None, config: Config = None, token: Token = None,
            as_json: Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")] = False) -> None:
    """The active version and the history of applied, refused and rolled-back versions, newest first."""
    answer = _call("GET", "/policy", admin_url=admin_url, config=config, token=token)
    if as_json:
        import json

        typer.echo(json.dumps(answer, indent=2))
        return
    status = f"active: {answer.get('version')} ({answer.get('engine_version')}) {answer.get('status')}"
    if answer.get("reason"):
        status += f": {answer['reason']}"
    out.print(terminal_safe(status), highlight=False, markup=False)
    for event in answer.get("history", []):
        when = datetime.fromtimestamp(float(event.get("at", 0)), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        line = (f"{when}  {event.get('action'):<11}  {event.get('version') or '-'}  {event.get('author')}  "
                f"{event.get('reason') or event.get('message') or ''}")
        out.print(terminal_safe(line), highlight=False, markup=False)


@policy_app.command("show")
def show(version: Annotated[str, typer.Argument(help="Version id (ps-…, or a decision record's pv-…).")],
         admin_url: AdminUrl = None, config: Config = None, token: Token = None,
         into: Annotated[Path | None, typer.Option("--into", help="Write the version's files under this new "
                                                   "directory instead of listing them.", file_okay=False)] = None,
         ) -> None:
    """A stored version: who stored it, when, why, and its files."""
    from portcullis.policy.policy_set import SetRefused, check_names

    answer = _call("GET", f"/policy/versions/{version}", admin_url=admin_url, config=config, token=token)
    out.print(terminal_safe(f"{answer.get('id')} ({answer.get('engine_version')}) by {answer.get('author')}: "
                            f"{answer.get('message')}"), highlight=False, markup=False)
    files = answer.get("files", {})
    if into is None:
        for name in sorted(files):
            out.print(terminal_safe(f"  {name}"), highlight=False, markup=False)
        return
    try:
        check_names(files, None)  # names from the gateway, still checked before they become paths here
    except SetRefused:
        _fail("show: the version's file names are not policy files")
    into.mkdir(parents=True, exist_ok=False)
    for name, text in files.items():
        (into / name).parent.mkdir(parents=True, exist_ok=True)
        (into / name).write_text(text, encoding="utf-8")
    out.print(terminal_safe(f"{len(files)} file(s) written under {into}"), highlight=False, markup=False)


@policy_app.command("shadow")
def shadow(version: Annotated[str | None, typer.Argument(help="Stored version id (ps-…) to evaluate beside the "
                                                         "active one.")] = None,
           off: Annotated[bool, typer.Option("--off", help="Stop the shadow evaluation.")] = False,
           admin_url: AdminUrl = None, config: Config = None, token: Token = None) -> None:
    """Record what VERSION would decide for every call, beside the active version, without enforcing it."""
    if off == (version is not None):
        _fail("shadow: give a VERSION or --off", 2)
    if off:
        answer = _call("DELETE", "/policy/shadow", admin_url=admin_url, config=config, token=token)
    else:
        answer = _call("POST", "/policy/shadow", admin_url=admin_url, config=config, token=token,
                       body={"version": version})
    out.print(terminal_safe(f"{answer.get('status')}: {answer.get('version') or '-'}"), highlight=False, markup=False)
