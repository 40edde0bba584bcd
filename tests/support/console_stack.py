"""The console's test stack: a real gateway process with the console on, and the test OpenID Provider
(:mod:`tests.support.oidc_provider`) as a process it logs people in with. Used by the browser tests
(tests/browser/) and the live HTTP test (tests/console/test_console_live.py).

    console = start_console(directory)    # ...; console.stop()
    console.url                 # http://127.0.0.1:<admin port>/console
    console.provider.issuer     # http://127.0.0.1:<op port>  (its form: Username, Password, Sign in)
    console.provider.passwords  # each person's password at the provider
    console.gateway.token()     # a development bearer token for MCP calls (tests/e2e/harness.py)

People: ``bob`` and ``carol`` hold the finance-approver role (they may decide the held refunds), ``dave``
is a person without it, ``rita`` holds oncall and platform. The agent stays billing-bot with development
tokens, as in tests/e2e/test_approvals.py; people come from the provider (issuer ``corp``), whose role claim
the approver rule names (``issuer:corp/role:finance-approver``).

``python -m tests.support.console_stack`` runs a stack to look at by hand (development login on too): it
prints its URLs and the people's passwords, and runs until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import yaml

from tests.e2e.harness import GatewayProcess, copy_demo
from tests.ports import free_port
from tests.support.oidc_provider import ProviderProcess

CLIENT_ID = "portcullis-console"
PERSON = {"principal_type": "person"}
PEOPLE: dict[str, dict[str, Any]] = {
    "bob": {**PERSON, "name": "Bob", "roles": ["finance-approver"]},
    "carol": {**PERSON, "name": "Carol", "roles": ["finance-approver"]},
    "dave": {**PERSON, "name": "Dave", "roles": ["support"]},
    "rita": {**PERSON, "name": "Rita", "roles": ["oncall", "platform"]},  # a responder and an operator
}


@dataclass
class Console:
    gateway: GatewayProcess
    provider: ProviderProcess

    @property
    def url(self) -> str:
        return f"{self.gateway.admin_base}/console"

    def stop(self) -> None:
        try:
            self.gateway.stop()
        finally:
            self.provider.stop()


def start_console(directory: Path, *, people: dict[str, dict[str, Any]] | None = None,
                  edit: Callable[[dict[str, Any]], None] | None = None,
                  prepare: Callable[[Path], None] | None = None, env: dict[str, str] | None = None) -> Console:
    """The provider, then the gateway whose console trusts it (``edit(config)`` may change gateway.yaml,
    ``prepare(root)`` the deployment's other files; ``env``: more of the gateway's environment)."""
    port, admin_port = free_port(), free_port()
    callback = f"http://127.0.0.1:{admin_port}/console/oidc/callback"
    provider = ProviderProcess(directory / "provider", users=people or PEOPLE, client_id=CLIENT_ID,
                               redirect_uris=[callback])
    try:
        root = copy_demo(directory / "deployment")
        if prepare is not None:
            prepare(root)
        config = yaml.safe_load((root / "gateway.yaml").read_text())
        config["identity"]["issuers"] = [{
            "name": "corp", "issuer": provider.issuer,
            "discovery_url": f"{provider.issuer}/.well-known/openid-configuration",
            "algorithms": ["ES256"], "audience": f"http://127.0.0.1:{port}/mcp",
            "person": {"claim": "principal_type", "equals": "person"}}]
        config["approvals"]["approvers"] = [{"tools": ["billing.*"], "approvers": [
            "issuer:dev/role:finance-approver", "issuer:corp/role:finance-approver"]}]
        config["console"] = {"enabled": True, "oidc": {"issuer": provider.issuer, "client_id": CLIENT_ID,
                                                        "redirect_url": callback}}
        if edit is not None:
            edit(config)
        (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        gateway = GatewayProcess(root, port=port, admin_port=admin_port, env=env)
        try:
            gateway.wait_ready()
        except BaseException:
            gateway.stop()
            raise
    except BaseException:
        provider.stop()
        raise
    return Console(gateway, provider)


def with_dev_login(config: dict[str, Any]) -> None:
    """An ``edit`` for :func:`start_console`: the development login on too, and the responders' and
    operators' pages (audit, containment, live) for development-login roles oncall and platform."""
    config["console"]["dev_login"] = True
    config.setdefault("admin", {}).update(responders=["issuer:dev/role:oncall"], operators=["issuer:dev/role:platform"])


def show_free_text(root: Path) -> None:
    """Drop the demo policy's obligation that hides a refund's free-text ``reason`` (as a keyed hash) from
    approvers and the audit, so that requester-chosen text reaches the approval page."""
    rego = root / "policy" / "portcullis_demo.rego"
    text = rego.read_text()
    start = text.index("# A free-text reason")
    end = text.index("}\n", text.index('obligations contains {"kind": "redact", "pointer": "/reason"}')) + 2
    rego.write_text(text[:start] + text[end:])


def status_of(console: Console, approval_id: str) -> dict[str, Any]:
    """The approval as an approver reads it through the JSON API (a development approver, not a browser)."""
    token = console.gateway.token(user="erin", agent=None, roles=["finance-approver"])
    answer = httpx2.get(f"{console.gateway.admin_base}/approvals/{approval_id}", timeout=15,
                        headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


if __name__ == "__main__":  # a stack to look at by hand
    import json
    import signal
    import tempfile
    import time

    def _interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)  # a background job ignores SIGINT: stop it with SIGTERM
    stack = start_console(Path(tempfile.mkdtemp(prefix="console-stack-")), edit=with_dev_login)
    try:
        print(json.dumps({"console": stack.url, "op": stack.provider.issuer, "mcp": stack.gateway.url,
                          "passwords": stack.provider.passwords}), flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
