"""The ``portcullis`` command line: serve, init, lint, pin, schema, version."""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from portcullis import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Portcullis: a secure gateway for MCP tools.")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

ConfigDir = Annotated[Path | None, typer.Option("--config", "-c", help="Deployment directory (default: the "
                                                "bundled demo).", file_okay=False)]


def demo_deployment() -> Path:
    """The demo deployment directory shipped inside the package."""
    return Path(str(resources.files("portcullis.demo").joinpath("deployment")))


def _load(config: Path | None):
    from portcullis.config.loader import load_deployment
    from portcullis.errors import ConfigError

    root = config or demo_deployment()
    try:
        return load_deployment(root)
    except ConfigError as exc:
        for problem in exc.problems:
            err.print(str(problem), highlight=False, markup=False)
        raise typer.Exit(2) from None


@app.command()
def serve(config: ConfigDir = None,
          host: Annotated[str | None, typer.Option(help="Bind address (overrides gateway.yaml).")] = None,
          port: Annotated[int | None, typer.Option(help="TCP port (overrides gateway.yaml).")] = None,
          log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info") -> None:
    """Run the gateway. With no --config: the embedded default with the bundled demo services."""
    import uvicorn

    from portcullis import logs
    from portcullis.gateway import build_gateway

    logs.configure(log_level.upper())
    deployment = _load(config)
    gateway = build_gateway(deployment)
    bind_host = host or deployment.gateway.listen.host
    bind_port = deployment.gateway.listen.port if port is None else port
    url = f"http://{bind_host}:{bind_port}/mcp"
    out.print(f"Portcullis {__version__} — deployment: {deployment.root}", highlight=False)
    out.print(f"MCP endpoint: {url}", highlight=False)
    out.print("Try it (2026-07-28 stateless request):", highlight=False)
    out.print(_example(url), highlight=False, markup=False)
    sys.stdout.flush()
    uvicorn.run(gateway.app, host=bind_host, port=bind_port, log_level="warning", access_log=False,
                lifespan="on", http="httptools", loop="uvloop", timeout_graceful_shutdown=5)


def _example(url: str) -> str:
    body = ('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"billing.get_invoice",'
            '"arguments":{"invoice_id":"INV-1001"},"_meta":{"io.modelcontextprotocol/protocolVersion":'
            '"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}')
    return (f"  curl -s {url} -H 'Content-Type: application/json' -H 'Accept: application/json' \\\n"
            "    -H 'MCP-Protocol-Version: 2026-07-28' -H 'Mcp-Method: tools/call' "
            "-H 'Mcp-Name: billing.get_invoice' \\\n"
            f"    -d '{body}'")


@app.command()
def init(target: Annotated[Path, typer.Argument(help="Directory to create.")],
         force: Annotated[bool, typer.Option(help="Write into a non-empty directory.")] = False) -> None:
    """Scaffold a deployment directory (gateway.yaml, tools/<domain>/<tool>.yml, policy/)."""
    from portcullis.config.scaffold import init_deployment

    try:
        written = init_deployment(target, force=force)
    except (FileExistsError, ValueError) as exc:
        err.print(f"init: {exc}", highlight=False)
        raise typer.Exit(2) from None
    for path in written:
        out.print(f"created {path}", highlight=False)


@app.command()
def lint(target: Annotated[Path, typer.Argument(help="Deployment directory to check.")]) -> None:
    """Check a deployment directory against the published schemas and cross-file rules."""
    from portcullis.config.loader import lint_deployment

    problems = lint_deployment(target)
    for problem in problems:
        (err if problem.severity == "error" else out).print(str(problem), highlight=False, markup=False)
    errors = sum(p.severity == "error" for p in problems)
    out.print(f"{errors} error(s), {len(problems) - errors} warning(s)", highlight=False)
    raise typer.Exit(1 if errors else 0)


@app.command()
def pin(target: Annotated[Path | None, typer.Argument(help="Deployment directory (default: the demo).")] = None,
        service: Annotated[list[str] | None, typer.Option(help="Only these services.")] = None,
        check: Annotated[bool, typer.Option(help="Only report; write nothing; exit 1 on any drift.")] = False,
        ) -> None:
    """Record the hash of each tool's live definition in its manifest (after a person reviewed it)."""
    import anyio

    from portcullis.pin_command import pin_deployment

    deployment = _load(target)
    rows = anyio.run(pin_deployment, deployment, service, not check)
    table = Table("tool", "state", "pin")
    for row in rows:
        table.add_row(row.exposed_name, row.state, row.pin or "-")
    out.print(table)
    drift = [r for r in rows if r.state not in ("unchanged",)]
    failed = [r for r in rows if r.state in ("missing upstream", "service unreachable")]
    if failed or (check and drift):
        raise typer.Exit(1)


@app.command()
def schema(target: Annotated[Path, typer.Argument(help="Directory to write the JSON Schemas into.")] = Path(
        "schemas")) -> None:
    """Write the JSON Schemas of gateway.yaml and the tool manifests."""
    from portcullis.config.schemas import write_schemas

    for path in write_schemas(target):
        out.print(f"wrote {path}", highlight=False)


@app.command()
def version() -> None:
    """Print the version."""
    out.print(f"portcullis {__version__}", highlight=False)
