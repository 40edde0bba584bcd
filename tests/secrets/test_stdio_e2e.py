"""Through a real gateway (``portcullis serve``, the sandboxed spawn) and a real OpenBao: a stdio child gets
the vault value its ``env`` declares and no provider credential; a new KV version reaches a new child
without restarting the gateway."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import anyio
import pytest

from tests.e2e.harness import REPO, GatewayProcess, manifest_from_live, run_cli, write_deployment
from tests.secrets.conftest import Bao
from tests.secrets.env_service import TOOL

_WAIT_S = 90.0


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _build(root: Path, bao: Bao) -> Path:
    gateway = {
        "version": 1,
        "identity": {"allow_insecure_dev_issuer": True},
        "secrets": {"refresh_s": 1, "vault": {"address": bao.address, "auth": {
            "method": "token", "token_ref": "secret://env/PORTCULLIS_TEST_VAULT_TOKEN"}}},
        "services": {"envsvc": {"transport": "stdio", "command": sys.executable,
                                "args": ["-m", "tests.secrets.env_service"], "cwd": str(REPO), "timeout_s": 10,
                                "env": {"API_KEY": "secret://vault/secret/e2e/api#key", "MODE": "plain"}}},
    }
    write_deployment(root, gateway, [manifest_from_live("envsvc", TOOL, annotations={"readOnlyHint": True})])
    done = run_cli("pin", str(root), env={"PORTCULLIS_TEST_VAULT_TOKEN": bao.root_token})
    assert done.returncode == 0, done.stdout + done.stderr
    return root


async def _env(gateway: GatewayProcess) -> dict[str, list[str]]:
    """The child's variable names and the digests of their values."""
    async with gateway.client() as client:
        answer = await client.call_tool("envsvc.env", {})
        assert not answer.is_error, answer
        return dict(json.loads(answer.content[0].text))  # type: ignore[union-attr]


def test_child_gets_its_vault_secret_and_a_rotation_without_a_gateway_restart(bao: Bao, tmp_path: Path) -> None:
    """The child holds API_KEY's value and MODE, no token variable; after `kv put` a new child holds the new one."""
    bao.put("e2e/api", {"key": "first-api-key-value"})
    root = _build(tmp_path / "deployment", bao)
    tokens = {"PORTCULLIS_TEST_VAULT_TOKEN": bao.root_token, "VAULT_TOKEN": bao.root_token,
              "BAO_TOKEN": bao.root_token}
    with GatewayProcess(root, env=tokens) as gateway:
        first = anyio.run(_env, gateway)
        assert {"API_KEY", "MODE"} <= set(first["names"]) and not set(first["names"]) & set(tokens)
        # the rest is the gateway's trust (keys, issuer, audience); LC_CTYPE is set by the child's Python (PEP 538)
        others = set(first["names"]) - {"API_KEY", "MODE", "LC_CTYPE"}
        assert others and all(name.startswith("PORTCULLIS_") for name in others), others
        assert {_digest("first-api-key-value"), _digest("plain")} <= set(first["digests"])
        assert _digest(bao.root_token) not in first["digests"]
        pid = gateway.proc.pid
        bao.put("e2e/api", {"key": "second-api-key-value"})
        deadline = time.monotonic() + _WAIT_S
        while True:
            try:
                if _digest("second-api-key-value") in anyio.run(_env, gateway)["digests"]:
                    break
            except Exception:  # the child is being restarted: the next try reaches the new one
                pass
            if time.monotonic() > deadline:
                pytest.fail("the rotated value never reached a new child:\n" + gateway.log())
            time.sleep(0.5)
        assert gateway.proc.pid == pid and gateway.proc.poll() is None  # the same gateway throughout
        log = gateway.log()
    assert "secret rotated" in log
    for value in ("first-api-key-value", "second-api-key-value", bao.root_token):
        assert value not in log
