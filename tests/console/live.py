"""A real gateway with the console and the test OpenID Provider, as child processes (for the live test here
and the browser tests).

    with ConsoleStack(tmp_path) as stack:
        stack.admin_base        # http://127.0.0.1:<admin port>   (the console is stack.admin_base + "/console")
        stack.op.issuer         # http://127.0.0.1:<op port>      (its authorize form: #op-user, #op-roles, #op-login)
        stack.gateway.token()   # a development bearer token for MCP calls (tests/e2e/harness.py)

The deployment is the demo with: the console on, both the development login and OIDC against the test
provider (issuer ``corp``, client ``portcullis-console``), and approvers ``role:finance-approver`` of either
issuer (``issuer:dev/…`` and ``issuer:corp/…``) for ``billing.*``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.harness import DEMO, GatewayProcess, stop_child, wait_port
from tests.ports import free_port

CLIENT_ID = "portcullis-console"


class OpProcess:
    """``python -m tests.console.oidc_provider`` on a port of its own."""

    def __init__(self, redirect_uri: str, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.console.oidc_provider", "--port", str(self.port), "--client-id", CLIENT_ID,
             "--redirect-uri", redirect_uri], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            cwd=Path(__file__).resolve().parents[2])
        wait_port(self.port)

    def stop(self) -> None:
        stop_child(self.proc)


def console_gateway_yaml(*, op_issuer: str, port: int, admin_port: int) -> dict[str, Any]:
    """The demo's gateway.yaml with the console on (development login and OIDC against ``op_issuer``)."""
    config: dict[str, Any] = yaml.safe_load((DEMO / "gateway.yaml").read_text())
    resource = f"http://127.0.0.1:{port}/mcp"
    config["identity"] = {"allow_insecure_dev_issuer": True, "required_scopes": ["mcp:tools"], "resource": resource,
                          "issuers": [{"name": "corp", "issuer": op_issuer, "algorithms": ["ES256"],
                                       "discovery_url": f"{op_issuer}/.well-known/openid-configuration",
                                       "audience": resource,
                                       "person": {"claim": "principal_type", "equals": "user"}}]}
    config["console"] = {"enabled": True, "dev_login": True, "oidc": {
        "issuer": op_issuer, "client_id": CLIENT_ID,
        "redirect_url": f"http://127.0.0.1:{admin_port}/console/oidc/callback"}}
    # the responders' and operators' pages (audit, containment, live) for development-login roles
    config.setdefault("admin", {}).update(responders=["issuer:dev/role:oncall"], operators=["issuer:dev/role:platform"])
    config["approvals"]["approvers"] = [{"tools": ["billing.*"], "approvers": [
        "issuer:dev/role:finance-approver", "issuer:corp/role:finance-approver"]}]
    return config


class ConsoleStack:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port, self.admin_port = free_port(), free_port()
        self.admin_base = f"http://127.0.0.1:{self.admin_port}"
        self.op = OpProcess(f"{self.admin_base}/console/oidc/callback")
        root = workdir / "deployment"
        if not root.exists():
            import shutil

            shutil.copytree(DEMO, root)
        (root / "gateway.yaml").write_text(yaml.safe_dump(
            console_gateway_yaml(op_issuer=self.op.issuer, port=self.port, admin_port=self.admin_port),
            sort_keys=False))
        self.config = root
        self.gateway = _Gateway(root, port=self.port, admin_port=self.admin_port)

    def __enter__(self) -> ConsoleStack:
        try:
            self.gateway.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.gateway.stop()
        self.op.stop()


class _Gateway(GatewayProcess):
    """A GatewayProcess whose admin port is chosen before it starts (the OIDC redirect URL names it)."""

    def __init__(self, config: Path, *, port: int, admin_port: int) -> None:
        self.port, self.admin_port = port, admin_port
        self.admin_base = f"http://127.0.0.1:{admin_port}"
        self.ssl_context = None
        self.url, self.base = f"http://127.0.0.1:{port}/mcp", f"http://127.0.0.1:{port}"
        self.config, self.audience = config, self.url
        self.state_dir = config.parent / f"state-{port}"
        self._log = config.parent / f"gateway-{port}.log"
        self._out = open(self._log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "portcullis", "serve", "--config", str(config), "--port", str(port),
             "--admin-port", str(admin_port)], stdout=self._out, stderr=subprocess.STDOUT,
            env={**os.environ, "PORTCULLIS_STATE_DIR": str(self.state_dir)})


if __name__ == "__main__":  # a stack to look at by hand: prints its URLs, runs until Ctrl-C or SIGTERM
    import signal
    import tempfile
    import time

    def _interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)  # a background job ignores SIGINT: stop it with SIGTERM

    with ConsoleStack(Path(tempfile.mkdtemp(prefix="console-stack-"))) as stack:
        print(json.dumps({"console": stack.admin_base + "/console", "op": stack.op.issuer,
                          "mcp": stack.gateway.url, "config": str(stack.config)}), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
