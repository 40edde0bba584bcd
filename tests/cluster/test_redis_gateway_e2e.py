"""Two gateway replicas with ``storage.redis``: one global limit across both; an unreachable Redis denies.

Each replica is ``portcullis serve`` with a state directory of its own (its own audit, its own SQLite stores);
only the counters are shared, in the real Redis under this test's prefix. Both trust the same development
issuer key (copied) and one resource, so one token works on both. Driven by the official SDK client.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcp import MCPError

from portcullis.identity.dev_issuer import dev_issuer_config
from tests.cluster.replicas import keep_services
from tests.e2e.harness import GatewayProcess, copy_demo

pytestmark = pytest.mark.xdist_group("cluster/test_redis_gateway_e2e.py")
RESOURCE = "https://portcullis.cluster.example/mcp"
REFUSED = (-31020, "Call refused by policy")


def deployment(tmp_path: Path, prefix: str) -> Path:
    root = keep_services(copy_demo(tmp_path / "deployment"), "files")  # the one service called (each is a process)
    config = yaml.safe_load((root / "gateway.yaml").read_text())
    config["identity"]["resource"] = RESOURCE
    config["storage"] = {"redis": {"url_ref": "secret://env/PORTCULLIS_REDIS_URL", "key_prefix": prefix.rstrip(":"),
                                   "op_timeout_s": 1, "connect_timeout_s": 1}}
    config["authorization"] = {"environment": "production", "limits": [
        {"id": "files-hourly", "tools": ["files.*"], "per": ["agent"], "window_s": 3600, "max_calls": 3}]}
    (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


async def call(gateway: GatewayProcess, token: str) -> Any:
    """The call's result, or the MCPError that refused it (caught inside the client, as neighbours do)."""
    async with gateway.client(token=token) as client:
        try:
            return await client.call_tool("files.list_dir", {"path": "."})
        except MCPError as exc:
            return exc


def refusal(result: Any) -> tuple[int, str, Any]:
    assert isinstance(result, MCPError), result
    return result.code, result.error.message, result.error.data


async def test_a_limit_holds_across_two_replicas(tmp_path: Path, redis_url: str, redis_prefix: str) -> None:
    """max_calls 3 per agent per hour: two calls on A and one on B pass, the fourth (on either) is refused."""
    root = deployment(tmp_path, redis_prefix)
    env = {"PORTCULLIS_REDIS_URL": redis_url}
    state_a, state_b = tmp_path / "state-a", tmp_path / "state-b"
    state_a.mkdir()
    state_b.mkdir()
    dev_issuer_config(state_a, RESOURCE)  # the key both trust, made before either starts: they start together
    for name in ("dev-issuer-key.pem", "dev-issuer-jwks.json"):
        shutil.copy2(state_a / name, state_b / name)
    a = GatewayProcess(root, env=env, state_dir=state_a, audience=RESOURCE)
    try:
        b = GatewayProcess(root, env=env, state_dir=state_b, audience=RESOURCE)
        try:
            a.wait_ready()
            b.wait_ready()
            token = a.token(agent="support-bot")
            assert not (await call(a, token)).is_error
            assert not (await call(b, token)).is_error
            assert not (await call(a, token)).is_error
            for replica in (b, a):
                assert refusal(await call(replica, token)) == (
                    *REFUSED, {"rule_id": "limits/files-hourly", "retry_after_s": 3600})
        finally:
            b.stop()
    finally:
        a.stop()


async def test_an_unreachable_redis_denies_limited_calls_with_the_clear_error(tmp_path: Path,
                                                                              redis_prefix: str) -> None:
    """Redis on a closed port: the gateway starts (Redis is not needed to start), a limited call is refused with
    limits/policy_error, and the password in the URL appears nowhere in the log."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = deployment(tmp_path, redis_prefix)
    gateway = GatewayProcess(root, env={"PORTCULLIS_REDIS_URL": f"redis://:s3cr3t-pw@127.0.0.1:{port}/0"},
                             state_dir=tmp_path / "state", audience=RESOURCE)
    try:
        gateway.wait_ready()
        assert refusal(await call(gateway, gateway.token(agent="support-bot"))) == (
            *REFUSED, {"rule_id": "limits/policy_error"})
        assert "s3cr3t-pw" not in gateway.log()
    finally:
        gateway.stop()
