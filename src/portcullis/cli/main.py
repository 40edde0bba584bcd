"""The ``portcullis`` command line: serve, init, lint, pin, import, schema, version."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from portcullis import __version__
from portcullis.cli import init_cmd, lint_cmd
from portcullis.cli.approvals_cmd import approvals_app
from portcullis.cli.audit_cmd import audit_app
from portcullis.cli.incident_cmd import incident_app
from portcullis.cli.kill_cmd import kill_app
from portcullis.cli.policy_cmd import policy_app
from portcullis.cli.safe_text import cell, console, json_text, lines_safe, terminal_safe
from portcullis.cli.secret_scan_cmd import scan as secrets_scan
from portcullis.cli.secrets_cmd import secrets_app
from portcullis.cli.storage_cmd import storage_app

if TYPE_CHECKING:
    from portcullis.config.loader import Deployment
    from portcullis.pin_command import PinRow

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Portcullis: a secure gateway for MCP tools.")
out = console()
err = console(stderr=True)

ConfigDir = Annotated[Path | None, typer.Option("--config", "-c", help="Deployment directory (default: the "
                                                "bundled demo).", file_okay=False)]


def demo_deployment() -> Path:
    """The demo deployment directory shipped inside the package."""
    return Path(str(resources.files("portcullis.demo").joinpath("deployment")))


def _load(config: Path | None) -> Deployment:
    from portcullis.config.loader import load_deployment
    from portcullis.config.secret_store import use_configured
    from portcullis.errors import ConfigError

    root = config or demo_deployment()
    try:
        deployment = load_deployment(root)
        use_configured(deployment.gateway.secrets, root)  # vault references (stdio env when pinning...)
        return deployment
    except ConfigError as exc:
        for problem in exc.problems:
            err.print(lines_safe(str(problem)), highlight=False, markup=False)
        raise typer.Exit(2) from None


@app.command()
def serve(config: ConfigDir = None,
          host: Annotated[str | None, typer.Option(help="Bind address (overrides gateway.yaml).")] = None,
          port: Annotated[int | None, typer.Option(help="TCP port (overrides gateway.yaml).")] = None,
          admin_port: Annotated[int | None, typer.Option(
              help="Port of the admin listener: /metrics, /readyz (overrides gateway.yaml).")] = None,
          log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
          workers: Annotated[int | None, typer.Option(
              min=1, max=64, help="Gateway processes sharing the listeners under a supervisor (overrides "
              "listen.workers). More than one needs storage.postgresql, storage.redis and sessions.key_ref "
              "(docs/cluster.md).")] = None) -> None:
    """Run the gateway. With no --config: the embedded default with the bundled demo services."""
    from portcullis import logs
    from portcullis.errors import ConfigError
    from portcullis.gateway import build_gateway
    from portcullis.serving.run import serve_gateway

    logs.configure(log_level.upper())
    deployment = _load(config)
    count = deployment.gateway.listen.workers if workers is None else workers
    if count > 1:
        _supervise(deployment, count, host, port, admin_port, log_level, config)
    try:
        gateway = build_gateway(deployment, host=host, port=port, admin_port=admin_port)
    except ConfigError as exc:
        for problem in exc.problems:
            err.print(lines_safe(str(problem)), highlight=False, markup=False)
        raise typer.Exit(2) from None
    listen = deployment.gateway.listen
    _banner(deployment, gateway.resource, config, port)
    serve_gateway(gateway, deployment, host=host or listen.host, port=listen.port if port is None else port)


def _banner(deployment: Deployment, resource: str, config: Path | None, port: int | None) -> None:
    out.print(f"Portcullis {__version__} — deployment: {deployment.root}", highlight=False)
    out.print(f"MCP endpoint: {resource}", highlight=False)
    if deployment.gateway.identity and deployment.gateway.identity.allow_insecure_dev_issuer:
        out.print("Try it with a DEVELOPMENT token (2026-07-28 stateless request):", highlight=False)
        out.print(_example(resource, config, port), highlight=False, markup=False)
    sys.stdout.flush()


def _supervise(deployment: Deployment, workers: int, host: str | None, port: int | None, admin_port: int | None,
               log_level: str, config: Path | None) -> None:
    """``serve --workers N``: refuse what cannot be shared, bind once, run the workers; always exits."""
    from portcullis.config.model import shared_state
    from portcullis.gateway import default_resource
    from portcullis.serving.supervisor import Supervisor, bind_all
    from portcullis.storage.workers import workers_problem

    cfg = deployment.gateway
    problem = workers_problem(workers, shared_state(cfg))
    if problem is not None:
        err.print(f"{deployment.root / 'gateway.yaml'}: {problem}", highlight=False, markup=False)
        raise typer.Exit(2)
    listen_host = host or cfg.listen.host
    try:
        bound = bind_all(deployment.root, host=listen_host, port=cfg.listen.port if port is None else port,
                         admin_host=cfg.admin.host, admin_port=cfg.admin.port if admin_port is None else admin_port,
                         log_level=log_level)
    except OSError as exc:
        err.print(f"serve: cannot bind the listeners: {exc.strerror or type(exc).__name__}", highlight=False,
                  markup=False)
        raise typer.Exit(1) from None
    resource = (cfg.identity.resource if cfg.identity else None) or default_resource(deployment, host,
                                                                                    bound.spec.port)
    _banner(deployment, resource, config, port)
    out.print(f"{workers} workers (supervisor pid {os.getpid()})", highlight=False)
    sys.stdout.flush()
    try:
        code = Supervisor(bound.spec, workers).run()
    finally:
        bound.close()
    raise typer.Exit(code)


def _example(url: str, config: Path | None, port: int | None) -> str:
    where = (f" --config {config}" if config else "") + (f" --port {port}" if port is not None else "")
    body = ('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"billing.get_invoice",'
            '"arguments":{"invoice_id":"INV-1001"},"_meta":{"io.modelcontextprotocol/protocolVersion":'
            '"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}')
    exe = Path(sys.executable).parent / "portcullis"
    return (f"  TOKEN=$({exe} token issue{where} --user alice --agent billing-bot --scope mcp:tools)\n"
            f"  curl -s {url} -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' \\\n"
            "    -H 'Accept: application/json' \\\n"
            "    -H 'MCP-Protocol-Version: 2026-07-28' -H 'Mcp-Method: tools/call' "
            "-H 'Mcp-Name: billing.get_invoice' \\\n"
            f"    -d '{body}'")


app.command("init")(init_cmd.init)
app.command("lint")(lint_cmd.lint)


@app.command()
def pin(target: Annotated[Path | None, typer.Argument(help="Deployment directory (default: the demo).")] = None,
        service: Annotated[list[str] | None, typer.Option(help="Only these services.")] = None,
        check: Annotated[bool, typer.Option(help="Only report; write nothing; exit 1 on any drift.")] = False,
        gateway: Annotated[str | None, typer.Option(
            "--gateway", help="With --check: report what a RUNNING gateway sees (its admin listener URL, e.g. "
            "http://127.0.0.1:9464), not a fresh child of each service. Needs a caller in admin.operators.")] = None,
        token: Annotated[str | None, typer.Option("--token", help="Bearer token for --gateway (default: "
                                                  "$PORTCULLIS_TOKEN).", show_default=False)] = None,
        accept_findings: Annotated[bool, typer.Option(
            "--accept-findings", help="Pin definitions the tool-poisoning scanner flagged, after you have read "
            "every finding (unsafe: warns on every use).")] = False,
        reviewer: Annotated[str | None, typer.Option(
            "--reviewer", help="With --accept-findings: who accepts (written with the time beside findings_accepted "
            "in the manifest; default: your login name).")] = None,
        ) -> None:
    """Record the hash of each tool's live definition in its manifest (after a person reviewed it).

    A definition the tool-poisoning scanner flags is not pinned (state "flagged"): its findings are
    printed, and it stays out of service until it changes or is pinned with --accept-findings."""
    if gateway is not None:
        if not check:
            err.print("pin: --gateway only reports (pins are written from a reviewed fresh listing): add --check",
                      highlight=False)
            raise typer.Exit(2)
        _pin_check_gateway(gateway, token, service)
        return
    import anyio

    from portcullis.pin_command import pin_deployment

    deployment = _load(target)
    if accept_findings:
        err.print("pin: --accept-findings: definitions flagged as possible tool poisoning WILL be pinned and "
                  "served; use it only after reading every finding below", highlight=False)
    rows = anyio.run(functools.partial(pin_deployment, deployment, service, not check,
                                       accept_findings=accept_findings, reviewer=reviewer or _login()))
    table = Table("tool", "state", "pin")
    for row in rows:
        table.add_row(cell(row.exposed_name, None), cell(row.state), cell(row.pin or "-", None))
    out.print(table)
    _print_findings(rows)
    drift = [r for r in rows if r.state not in ("unchanged",)]
    failed = [r for r in rows if r.state in ("missing upstream", "service unreachable", "flagged")]
    if failed or (check and drift):
        raise typer.Exit(1)


@app.command("import")
def import_tools(service: Annotated[str, typer.Argument(help="A service declared in gateway.yaml.")],
                 config: ConfigDir = None,
                 out_dir: Annotated[Path | None, typer.Option(
                     "--out", help="Write tools/<domain>/<tool>.yml under this directory (default: the deployment "
                     "directory).", file_okay=False)] = None,
                 domain: Annotated[str | None, typer.Option(help="The tools/<domain> folder (default: the service "
                                                            "name).")] = None,
                 force: Annotated[bool, typer.Option(help="Replace existing manifests.")] = False) -> None:
    """Draft one manifest per tool a live service serves, for a person to review.

    Description and schemas are written exactly as served; owner, risk and classification are
    REVIEW-ME (lint and serve refuse the manifest until a person fills them in); no policy (default
    deny). The tool-poisoning scanner's findings head each file and are printed; a flagged
    definition gets no pin. Existing files are kept unless --force."""
    import re

    import anyio

    from portcullis.content.definition_review import finding_message
    from portcullis.import_command import draft_manifests
    from portcullis.pin_command import list_services

    deployment = _load_for_import(config)
    if service not in deployment.gateway.services:
        err.print(f"import: no service {terminal_safe(service)} in gateway.yaml", highlight=False, markup=False)
        raise typer.Exit(2)
    folder = domain or service
    if not re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", folder):
        err.print("import: --domain must be a lower-case name (a-z 0-9 _ -)", highlight=False)
        raise typer.Exit(2)
    listings = anyio.run(list_services, deployment, [service])
    if service not in listings:
        err.print(f"import: service {service} could not be listed (see the log above)", highlight=False,
                  markup=False)
        raise typer.Exit(1)
    others = [name for m in deployment.manifests if m.manifest.service != service
              for name in (m.manifest.name, m.exposed_name)]
    drafts = draft_manifests(service, listings[service], out_dir or deployment.root, folder, other_tools=others,
                             force=force)
    table = Table("tool", "state", "findings", "file")
    for draft in drafts:
        table.add_row(cell(draft.tool, None), cell(draft.state), cell(len(draft.findings) or "-"),
                      cell(draft.path if draft.path else draft.reason, None))
    out.print(table)
    for draft in drafts:
        for finding in draft.findings:
            err.print(Text(f"{terminal_safe(draft.tool, None)}: "
                           f"{terminal_safe(finding_message(finding), None, double_backslashes=False)}"))
        if draft.state != "written":
            err.print(Text(f"{terminal_safe(draft.tool, None)}: {draft.state}: {draft.reason}"))
    written = sum(d.state == "written" for d in drafts)
    out.print(f"{written} manifest(s) written: review each (REVIEW-ME fields, findings, policy), then "
              "`portcullis lint` and `portcullis pin`", highlight=False)
    raise typer.Exit(1 if any(d.state == "refused" for d in drafts) else 0)


def _load_for_import(config: Path | None) -> Deployment:
    """The deployment; if it does not load (say, manifests drafted earlier still await review), its
    gateway.yaml alone, so services can still be imported one after another."""
    from portcullis.config.loader import Deployment, load_deployment
    from portcullis.config.model import GatewayConfig
    from portcullis.config.yaml_lines import MAX_BYTES, YamlError, load_yaml
    from portcullis.errors import ConfigError

    root = config or demo_deployment()
    try:
        return load_deployment(root)
    except ConfigError:
        pass
    try:
        gateway = GatewayConfig.model_validate(load_yaml((root / "gateway.yaml").read_bytes()[: MAX_BYTES + 1]).value)
    except (OSError, YamlError, ValueError):
        return _load(config)  # prints every problem and exits 2
    err.print("import: the deployment does not load as a whole (run `portcullis lint`); using gateway.yaml alone",
              highlight=False)
    return Deployment(root, gateway, ())


def _login() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid
        return "unknown"


def _print_findings(rows: Sequence[PinRow]) -> None:
    """Each flagged (or accepted) definition's findings, escaped: rule, field, excerpt, hidden text."""
    from portcullis.content.definition_review import finding_message

    for row in rows:
        for finding in row.findings:
            err.print(Text(f"{terminal_safe(row.exposed_name, None)}: "
                           f"{terminal_safe(finding_message(finding), None, double_backslashes=False)}"))


def _pin_check_gateway(url: str, token: str | None, services: list[str] | None) -> None:
    """``pin --check --gateway``: the running gateway's view of every pin; exit 1 unless all unchanged."""
    import httpx2

    token = token or os.environ.get("PORTCULLIS_TOKEN")
    if not token:
        err.print("pin: no token: pass --token or set PORTCULLIS_TOKEN (a caller in admin.operators)", highlight=False)
        raise typer.Exit(2)
    endpoint = url.rstrip("/") + "/pins"
    try:
        response = httpx2.get(endpoint, headers={"Authorization": f"Bearer {token}"}, timeout=15,
                              follow_redirects=False)
        answer = response.json()
    except (httpx2.HTTPError, ValueError) as exc:
        err.print(f"pin: cannot read {endpoint}: {type(exc).__name__}", highlight=False, markup=False)
        raise typer.Exit(2) from None
    if response.status_code != 200 or not isinstance(answer, dict) or not isinstance(answer.get("tools"), list):
        message = answer.get("error") if isinstance(answer, dict) else None
        err.print(f"pin: refused (HTTP {response.status_code}): {terminal_safe(message or 'unexpected answer')}",
                  highlight=False,
                  markup=False)
        raise typer.Exit(2)
    table = Table("tool", "state", "pin", "live (as the gateway sees it)", "findings")
    drift = 0
    found: list[str] = []
    for row in answer["tools"]:
        if not isinstance(row, dict) or (services and row.get("service") not in services):
            continue
        state = _gateway_pin_state(row)
        drift += state != "unchanged"
        listed = row.get("findings")
        findings: list[Any] = listed if isinstance(listed, list) else []
        accepted = " (accepted)" if row.get("findings_accepted") else ""
        table.add_row(cell(row.get("tool"), None), cell(state), cell(row.get("pin"), None),
                      cell(row.get("live"), None), cell(f"{len(findings)}{accepted}" if findings else "-"))
        found += [f"{row.get('tool')}: possible tool poisoning ({item.get('rule')}) at {item.get('pointer') or '/'}: "
                  f"\"{item.get('excerpt')}\"" + (f"; {item.get('detail')}" if item.get("detail") else "")
                  for item in findings if isinstance(item, dict)]
    out.print(table)  # the gateway's answer: shown, never obeyed as markup
    for line in found:
        err.print(Text(terminal_safe(line, None)))
    if drift:
        raise typer.Exit(1)


def _gateway_pin_state(row: dict[str, object]) -> str:
    if row.get("verifying"):
        return "verifying a change"
    state = row.get("state")
    if state == "serving":
        return "unchanged"
    if state == "quarantined":
        return "changed" if row.get("live") else "missing upstream"
    if state == "unpinned":
        return "not pinned"
    if state == "flagged":
        return "flagged"
    return "service unreachable"


@app.command()
def schema(target: Annotated[Path, typer.Argument(help="Directory to write the JSON Schemas into.")] = Path(
        "schemas")) -> None:
    """Write the JSON Schemas of gateway.yaml and the tool manifests."""
    from portcullis.config.schemas import write_schemas

    for path in write_schemas(target):
        out.print(f"wrote {path}", highlight=False)


token_app = typer.Typer(no_args_is_help=True, help="Development tokens and revocations.")
app.add_typer(token_app, name="token")
app.add_typer(policy_app, name="policy")
app.add_typer(audit_app, name="audit")
app.add_typer(incident_app, name="incident")
app.add_typer(approvals_app, name="approvals")
app.add_typer(kill_app, name="kill")
app.add_typer(storage_app, name="storage")
app.add_typer(secrets_app, name="secrets")
secrets_app.command("scan")(secrets_scan)  # lint's literal-secret scan alone (cli/secret_scan_cmd.py)


@token_app.command("issue")
def token_issue(config: ConfigDir = None,
                user: Annotated[str | None, typer.Option(
                    help="User id (sub). Without --agent the token is the user's own: a person, who can approve.",
                )] = None,
                agent: Annotated[str | None, typer.Option(help="Agent id.")] = None,
                client: Annotated[str | None, typer.Option(help="OAuth client id.")] = None,
                scope: Annotated[list[str] | None, typer.Option(help="Scope (repeatable).")] = None,
                tenant: Annotated[str | None, typer.Option(help="Tenant.")] = None,
                role: Annotated[list[str] | None, typer.Option(help="Role (repeatable).")] = None,
                source_app: Annotated[str | None, typer.Option(help="Source application.")] = None,
                ttl_s: Annotated[int, typer.Option(help="Lifetime in seconds.")] = 3600,
                port: Annotated[int | None, typer.Option(help="The port the gateway serves on, if overridden.")] = None,
                ) -> None:
    """DEVELOPMENT ONLY: sign an access token with the local development issuer key."""
    from portcullis.gateway import default_resource
    from portcullis.identity.dev_issuer import issue_token
    from portcullis.identity.state_dir import resolve_state_dir

    deployment = _load(config)
    ident = deployment.gateway.identity
    if ident is None or not ident.allow_insecure_dev_issuer:
        err.print("token issue: this deployment does not trust the development issuer "
                  "(identity.allow_insecure_dev_issuer is off)", highlight=False)
        raise typer.Exit(2)
    err.print("warning: development token — never use the development issuer in production", highlight=False)
    audience = ident.resource or default_resource(deployment, None, port)
    token = issue_token(resolve_state_dir(deployment.gateway.state_dir), audience=audience, user=user, agent=agent,
                        client=client, scopes=scope or list(ident.required_scopes), tenant=tenant, roles=role or (),
                        source_app=source_app, ttl_s=ttl_s)
    print(token)


@token_app.command("revoke")
def token_revoke(config: ConfigDir = None,
                 jti: Annotated[str | None, typer.Option(help="A token id.")] = None,
                 client: Annotated[str | None, typer.Option(help="A client id: all its tokens.")] = None,
                 agent: Annotated[str | None, typer.Option(help="An agent id: all its tokens.")] = None,
                 reason: Annotated[str, typer.Option(help="Why (recorded).")] = "",
                 state_dir: Annotated[Path | None, typer.Option(
                     "--state-dir", help="The gateway's state directory (instead of reading --config).",
                     file_okay=False)] = None,
                 revocation_file: Annotated[Path | None, typer.Option(
                     "--revocation-file", help="The revocation list itself (instead of reading --config).",
                     dir_okay=False)] = None) -> None:
    """Revoke a token, a client or an agent; running gateways pick it up within a second.

    Emergency use: only the revocation list's location is read from --config (``state_dir`` and
    ``identity.revocation_file`` of gateway.yaml), so this works even when the rest of the
    deployment does not load. Without --config: $PORTCULLIS_STATE_DIR, else ./.portcullis."""
    from portcullis.config.state_paths import REVOCATIONS_FILE, StatePaths
    from portcullis.errors import PortcullisError
    from portcullis.identity.revocation import revoke

    chosen = [(k, v) for k, v in (("jti", jti), ("client", client), ("agent", agent)) if v]
    if len(chosen) != 1:
        err.print("token revoke: give exactly one of --jti, --client, --agent", highlight=False)
        raise typer.Exit(2)
    from portcullis.cli.storage_cmd import cluster_database

    database = None if state_dir or revocation_file else cluster_database(config, "token revoke")
    if database is not None:  # cluster mode (storage.postgresql): the list every replica reloads
        from portcullis.identity.pg_revocation import revoke as revoke_in_database

        try:
            revoke_in_database(database, chosen[0][0], chosen[0][1], reason)
        except PortcullisError as exc:
            err.print(f"token revoke: {exc.message}: {exc.detail}", highlight=False, markup=False)
            raise typer.Exit(1) from None
        finally:
            database.close()
        out.print(f"revoked {chosen[0][0]} {chosen[0][1]} in {database.name}", highlight=False, markup=False)
        from portcullis.cli.notices import announce_change  # replicas reload at once, not at their 1 s poll

        announce_change(config, "revocations", chosen[0][0], command="token revoke", backstop="within 1 s")
        return
    if revocation_file is not None:
        path = revocation_file.expanduser().resolve()
    elif state_dir is not None:
        path = state_dir.expanduser().resolve() / REVOCATIONS_FILE
    else:
        path = StatePaths.from_raw(_raw_gateway(config) if config is not None else None).revocations
    if not path.parent.is_dir():
        err.print(f"token revoke: {path.parent} does not exist; is this the gateway's state directory? "
                  "(--state-dir, --revocation-file)", highlight=False, markup=False)
        raise typer.Exit(2)
    if not path.exists():
        err.print(f"warning: {path} did not exist: no running gateway reads this list yet; check that it is the "
                  "one your gateway uses", highlight=False, markup=False)
    revoke(path, chosen[0][0], chosen[0][1], reason)
    out.print(f"revoked {chosen[0][0]} {chosen[0][1]} in {path}", highlight=False, markup=False)


def _raw_gateway(config: Path) -> object:
    """gateway.yaml parsed, not validated: only where the state lives is read from it."""
    from portcullis.config.yaml_lines import MAX_BYTES, YamlError, load_yaml

    path = config / "gateway.yaml"
    try:
        return load_yaml(path.read_bytes()[: MAX_BYTES + 1]).value
    except (OSError, YamlError) as exc:
        err.print(f"token revoke: cannot read {path} ({type(exc).__name__}); name the list with --state-dir or "
                  "--revocation-file", highlight=False, markup=False)
        raise typer.Exit(2) from None


@app.command()
def version(as_json: Annotated[bool, typer.Option("--json", help="The build as JSON: version, commit, policy "
                                                  "revision, SBOM digest (as GET /version reports it).")] = False,
            ) -> None:
    """Print the version."""
    if as_json:
        from portcullis.build_info import current

        out.print(json_text(current().report(None)), highlight=False)
        return
    out.print(f"portcullis {__version__}", highlight=False)
