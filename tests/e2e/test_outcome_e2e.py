"""One outcome record per decision, and the credential in the records, through a real gateway.

A hostile stdio service (``tests.security.hostile_stdio``) answers a call with a result holding an
integer beyond 64 bits: valid JSON, which the SDK client path reads as a Python int, but which the
gateway cannot write back. The caller gets -31004; the trail holds that call's decision and one
``upstream_error`` outcome (never an ``ok`` for an answer the caller did not get). A good call
after it is answered and recorded as usual. Both decision records name the token's ``jti`` and
the ``txn`` claim it carried.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import anyio
import pytest
from mcp import MCPError

from tests.e2e.audit_load import STORE_FILE, read_chain
from tests.e2e.harness import REPO, GatewayProcess, manifest_from_live, run_cli, write_deployment
from tests.security.hostile_stdio import TOOL

ECHO = "hostile.echo"


def build(root: Path) -> Path:
    gateway = {
        "version": 1,
        "identity": {"allow_insecure_dev_issuer": True},
        "services": {"hostile": {"transport": "stdio", "command": sys.executable,
                                 "args": ["-m", "tests.security.hostile_stdio"], "cwd": str(REPO),
                                 "timeout_s": 10}},
    }
    write_deployment(root, gateway, [manifest_from_live("hostile", TOOL)])
    done = run_cli("pin", str(root))
    assert done.returncode == 0, done.stdout + done.stderr
    return root


def jti_of(token: str) -> str:
    payload = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"])


def test_an_unencodable_result_is_one_upstream_error_outcome(tmp_path: Path) -> None:
    root = build(tmp_path / "deployment")

    async def calls(gateway: GatewayProcess, token: str) -> None:
        async with gateway.client(token=token) as client:
            with pytest.raises(MCPError) as caught:
                await client.call_tool(ECHO, {"who": "w", "mode": "big-int"})
            assert caught.value.error.code == -31004
            assert "1180591620717411303424" not in str(caught.value.error)
            good = await client.call_tool(ECHO, {"who": "after", "mode": "ok"})
            assert good.content[0].text == "after"  # type: ignore[union-attr]

    with GatewayProcess(root) as gateway:
        token = gateway.token(txn="txn-e2e-0001")
        anyio.run(calls, gateway, token)
    records = anyio.run(read_chain, gateway.state_dir / STORE_FILE)
    calls_ = [r for r in records if r.kind in ("decision", "outcome", "rejected")]
    assert [(r.kind, r.fields.get("outcome")) for r in calls_] == [
        ("decision", None), ("outcome", "upstream_error"), ("decision", None), ("outcome", "ok")]
    assert calls_[0].request_id == calls_[1].request_id != calls_[2].request_id == calls_[3].request_id
    assert calls_[1].fields["error_code"] == -31004 and calls_[1].fields["output"]["bytes"] == 0
    for decision in (calls_[0], calls_[2]):
        assert decision.fields["credential"] == {"jti": jti_of(token), "txn": "txn-e2e-0001"}
