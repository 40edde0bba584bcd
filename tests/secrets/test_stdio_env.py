"""A stdio child gets exactly its declared env (references resolved at spawn) and its passthrough: no token."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from typing import Any, cast

import pytest

from portcullis.config.model import StdioService
from portcullis.config.secret_providers.config import SecretsConfig
from portcullis.config.secret_store import SecretStore, activate
from portcullis.upstream.registry import UpstreamRegistry
from portcullis.upstream.sdk_client import stdio_launch
from portcullis.upstream.secret_rotation import rotation_recycler
from portcullis.upstream.stderr_relay import StderrRelay
from tests.secrets.conftest import Bao

PRINT_ENV = "import json, os; print(json.dumps(dict(os.environ)))"


def _service() -> StdioService:
    return StdioService.model_validate({
        "transport": "stdio", "command": sys.executable, "args": ["-c", PRINT_ENV],
        "env": {"API_KEY": "secret://vault/secret/svc/api#key", "MODE": "plain"}, "env_passthrough": ["HOME"]})


def _child_env(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(argv, env=env, capture_output=True, check=True, timeout=60)  # as an unconfined spawn
    return cast(dict[str, Any], json.loads(done.stdout))


@pytest.fixture
def store(bao: Bao, monkeypatch: pytest.MonkeyPatch) -> Any:
    token = bao.root_token
    for name in ("PORTCULLIS_TEST_VAULT_TOKEN", "VAULT_TOKEN", "BAO_TOKEN"):
        monkeypatch.setenv(name, token)
    monkeypatch.setenv("HOME", "/nonexistent-home")
    made = SecretStore(SecretsConfig.model_validate({"vault": {
        "address": bao.address, "auth": {"method": "token", "token_ref": "secret://env/PORTCULLIS_TEST_VAULT_TOKEN"}}}))
    activate(made)
    yield made
    activate(None)
    assert made.vault is not None
    made.vault.close()


def test_child_env_is_exactly_the_declared_env_with_secrets_resolved(bao: Bao, store: SecretStore) -> None:
    """The child sees API_KEY's vault value, MODE, HOME and the gateway's extras; no Vault token anywhere."""
    value = secrets.token_hex(16)
    bao.put("svc/api", {"key": value})
    argv, env = stdio_launch(_service(), os.environ, {"PORTCULLIS_EXTRA": "1"})
    seen = _child_env(argv, env)
    assert {k: v for k, v in seen.items() if k not in ("PWD", "SHLVL", "_", "LC_CTYPE")} == {
        "API_KEY": value, "MODE": "plain", "HOME": "/nonexistent-home", "PORTCULLIS_EXTRA": "1"}
    assert bao.root_token not in json.dumps(seen)


def test_a_respawn_gets_the_rotated_value_and_the_reader_is_recycled(bao: Bao, store: SecretStore) -> None:
    """After a rotation is refreshed, the next spawn resolves the new value, and that service is recycled."""
    bao.put("svc/api", {"key": "first-value-123"})
    store.prime(["secret://vault/secret/svc/api#key"])
    bao.put("svc/api", {"key": "second-value-456"})
    changed = store.refresh()
    assert [str(ref) for ref in changed] == ["secret://vault/secret/svc/api#key"]
    _argv, env = stdio_launch(_service(), os.environ)
    assert env["API_KEY"] == "second-value-456"

    class Handle:
        def __init__(self, name: str) -> None:
            self.name, self.recycled = name, 0

        def recycle(self) -> None:
            self.recycled += 1

    handles = [Handle("reader"), Handle("other")]
    registry = cast(UpstreamRegistry, type("Registry", (), {"handles": lambda self: handles})())
    other = StdioService.model_validate({"transport": "stdio", "command": "/bin/true",
                                         "env": {"K": "secret://vault/secret/svc/other#key"}})
    recycle = rotation_recycler(registry, {"reader": _service(), "other": other})
    for ref in changed:
        recycle(ref)
    assert [h.recycled for h in handles] == [1, 0]


def test_stderr_redacts_a_referenced_value_whatever_its_name() -> None:
    """A value set from a secret:// reference is redacted from the child's stderr even under a plain name."""
    relay = StderrRelay("svc", env={"MODE": "resolved-value-789"}, secret_keys={"MODE"})
    assert relay.redact("got resolved-value-789 here") == "got [redacted] here"
