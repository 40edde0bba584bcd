"""Shared helpers for end-to-end tests: deployments on disk and gateway processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx2
import yaml

from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "src" / "portcullis" / "demo" / "deployment"


def wait_port(port: int, timeout: float = 30.0) -> None:
    """Return once something listens on ``127.0.0.1:port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port}")


def stop_child(proc: subprocess.Popen[Any]) -> None:
    """SIGINT (a clean stop), then SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def copy_demo(target: Path) -> Path:
    shutil.copytree(DEMO, target)
    return target


def copy_demo_services(target: Path, *services: str) -> Path:
    """The demo deployment at ``target`` with only ``services`` (each a demo service: billing, analytics, files).

    A test that calls one demo service does not pay for starting the others (each stdio child is
    about a second of CPU at every gateway start): the other services' entries, tool manifests,
    prompts, resources and policy fixtures are removed; everything else is the demo's own.
    """
    root = copy_demo(target)
    config = yaml.safe_load((root / "gateway.yaml").read_text())
    unknown = set(services) - set(config["services"])
    assert not unknown, f"not demo services: {sorted(unknown)}"
    for name in [s for s in config["services"] if s not in services]:
        del config["services"][name]
        for folder in ("tools", "prompts", "resources"):
            shutil.rmtree(root / folder / name, ignore_errors=True)
        (root / "policy" / "fixtures" / f"{name}.yaml").unlink(missing_ok=True)
    (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def copy_demo_with_operators(target: Path, *operators: str, services: tuple[str, ...] | None = None) -> Path:
    """The demo deployment at ``target`` with ``admin.operators`` set (who may use the ``/policy…`` admin API);
    with ``services``, only those demo services (:func:`copy_demo_services`)."""
    root = copy_demo(target) if services is None else copy_demo_services(target, *services)
    config = yaml.safe_load((root / "gateway.yaml").read_text())
    config["admin"] = {"operators": list(operators)}
    (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def audit_fields(state_dir: Path, kind: str) -> list[dict[str, Any]]:
    """The fields of every audit record of ``kind`` in a gateway's embedded audit store, oldest first."""
    with sqlite3.connect(state_dir / "audit.sqlite3") as db:
        rows = db.execute("SELECT fields FROM audit_record WHERE kind = ? ORDER BY idx", (kind,)).fetchall()
    return [json.loads(row[0]) for row in rows]


def write_deployment(root: Path, gateway: Mapping[str, Any], manifests: list[Mapping[str, Any]]) -> Path:
    """Write gateway.yaml and tools/<service>/<name>.yml."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "gateway.yaml").write_text(yaml.safe_dump(dict(gateway), sort_keys=False))
    for manifest in manifests:
        path = root / "tools" / manifest["service"] / f"{manifest['name']}.yml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(dict(manifest), sort_keys=False))
    return root


def manifest_from_live(service: str, tool: Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    """A manifest whose schemas are the live tool's own (wire-format dict)."""
    manifest: dict[str, Any] = {
        "name": tool["name"], "service": service, "owner": "tests@example.com",
        "description": tool.get("description") or tool["name"], "risk": "low",
        "classification": {"input": "Internal", "output": "Internal"},
        "input_schema": tool["inputSchema"],
        # every test token holds the mcp:tools scope, the mTLS tests' certificate names agent
        # billing-bot; default deny would refuse everyone else
        "policy": {"allowed_callers": ["scope:mcp:tools", "agent:billing-bot"]},
        # test services send nothing out of the deployment: the toxic-flow rule (docs/content-security.md)
        # is exercised by its own tests, which declare egress tools explicitly
        "egress": False,
    }
    if tool.get("outputSchema"):
        manifest["output_schema"] = tool["outputSchema"]
    if service == "flaky" and tool["name"] == "actor_token":
        # the test service returns the gateway-minted actor token so that tests can read its claims:
        # a JWT the output filter would redact, allowed for this one tool as an operator would
        manifest["content"] = {"rules": [{"id": "tests.actor-token", "kinds": ["jwt"], "action": "allow"}]}
    manifest.update(overrides)
    return manifest


def run_cli(*args: str, env: Mapping[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "portcullis", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, check=False)


def run_cli_in_process(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """:func:`run_cli` without a new interpreter: the same typer app run in this process.

    No interpreter start and CLI imports per run (seconds on a loaded machine); in a thread of its own, so
    that a test inside a running event loop can call it too. A crash is raised, never mistaken for the
    command's own failure exit. ``env`` is set for the run (typer's runner restores the environment)."""
    import concurrent.futures

    from typer.testing import CliRunner

    from portcullis.cli.main import app

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        result = pool.submit(CliRunner(env=dict(env) if env else None).invoke, app, list(args)).result()
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert "Traceback" not in result.output
    return subprocess.CompletedProcess(["portcullis", *args], result.exit_code, result.stdout, result.stderr)


def cli_in_process(*args: str) -> tuple[int, str]:
    """A ``portcullis`` command run in this process (:func:`run_cli_in_process`): its exit code and output
    (stdout, then stderr)."""
    done = run_cli_in_process(*args)
    return done.returncode, done.stdout + done.stderr


def dev_identity(gateway: dict[str, Any]) -> dict[str, Any]:
    """Trust the development issuer (tests sign their own tokens with it)."""
    return {**gateway, "identity": {"allow_insecure_dev_issuer": True}}


class GatewayProcess:
    """``portcullis serve`` as a child process, ready when /healthz answers 200.

    Its state directory (development issuer key, revocations) is ``<config>/../state-<port>``
    unless ``state_dir`` is given; :meth:`token` signs development tokens for it. ``args`` are added to
    the command line (``("--workers", "2")`` runs a supervisor and its workers). ``admin_port`` is for a
    deployment that must name its admin listener's URL in its configuration (the console's OIDC redirect).
    """

    def __init__(self, config: Path, *, port: int | None = None, env: Mapping[str, str] | None = None,
                 state_dir: Path | None = None, audience: str | None = None,
                 ssl_context: ssl.SSLContext | None = None, args: tuple[str, ...] = (),
                 admin_port: int | None = None) -> None:
        self.port = port or free_port()
        self.admin_port = admin_port or free_port()
        self.admin_base = f"http://127.0.0.1:{self.admin_port}"
        scheme = "https" if ssl_context is not None else "http"
        self.ssl_context = ssl_context
        self.url = f"{scheme}://127.0.0.1:{self.port}/mcp"
        self.base = f"{scheme}://127.0.0.1:{self.port}"
        self.config = config
        self.audience = audience or self.url
        self.state_dir = state_dir or config.parent / f"state-{self.port}"
        self._log = config.parent / f"gateway-{self.port}.log"
        self._out = open(self._log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "portcullis", "serve", "--config", str(config), "--port", str(self.port),
             "--admin-port", str(self.admin_port), *args],
            stdout=self._out, stderr=subprocess.STDOUT,
            env={**os.environ, "PORTCULLIS_STATE_DIR": str(self.state_dir), **(env or {})})

    def token(self, *, user: str | None = "alice", agent: str | None = "billing-bot", scopes: tuple[str, ...] = (
            "mcp:tools",), **claims: Any) -> str:
        """A development token for this gateway's audience."""
        from portcullis.identity.dev_issuer import issue_token

        self.state_dir.mkdir(parents=True, exist_ok=True)
        return issue_token(self.state_dir, audience=self.audience, user=user, agent=agent,
                           client=claims.pop("client", None), scopes=scopes, tenant=claims.pop("tenant", None),
                           extra=claims or None)

    def client(self, *, mode: str = "auto", token: str | None = None, **client_kwargs: Any) -> Any:
        """The official SDK client, authenticated with ``token`` (a fresh development token by default)."""
        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client

        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token or self.token()}"},
                                  timeout=httpx2.Timeout(30.0, read=60.0))
        return _OwningClient(Client(streamable_http_client(self.url, http_client=http), cache=None, mode=mode,
                                    **client_kwargs), http)

    def wait_ready(self, timeout: float = 90.0, *, require_ready: bool = True) -> None:
        # generous: a gateway starting its stdio services on a loaded machine (parallel workers on 2 cores)
        # can take tens of seconds; an early exit still fails at once
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited early:\n{self.log()}")
            try:
                status = httpx2.get(f"{self.base}/healthz", timeout=1,
                                    verify=self.ssl_context or True).status_code
                if status == 200 or (not require_ready and status == 503):
                    return
            except httpx2.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"gateway not ready:\n{self.log()}")

    def log(self) -> str:
        self._out.flush()
        return self._log.read_text(errors="replace")

    def stop(self) -> None:
        stop_child(self.proc)
        self._out.close()

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    def __enter__(self) -> GatewayProcess:
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _OwningClient:
    """``async with`` wrapper that also closes the HTTP client it was given."""

    def __init__(self, client: Any, http: httpx2.AsyncClient) -> None:
        self._client, self._http = client, http

    async def __aenter__(self) -> Any:
        return await self._client.__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self._client.__aexit__(*exc)
        finally:
            await self._http.aclose()
