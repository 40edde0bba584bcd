"""A hostile Rego push through ``portcullis policy apply`` against a running gateway: refused whole with
its precise reason, while the gateway keeps answering calls (during the push and after) and
``/readyz`` says ``degraded`` with that reason. Small limits in gateway.yaml (64 MiB, 50 ms) keep
the machine safe; the hostile modules need minutes of CPU (or crash a parser) if nothing stops them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml

from portcullis.policy import rego_probe
from portcullis.policy.policy_set import collect
from tests.e2e.harness import GatewayProcess, copy_demo_with_operators, run_cli

pytestmark = pytest.mark.xdist_group("e2e/test_policy_push_limits.py")

TOOL = "billing.get_invoice"
ARGS = {"invoice_id": "INV-1001"}
OPERATOR = "issuer:dev/user:ops"
HEADER = "package portcullis.hostile\n\nimport rego.v1\n\n"
HOSTILE = {
    rego_probe.EVAL_CPU: HEADER + ('deny contains {"id": "hostile", "reason": "hostile"} if {\n'
                                   '  some i in numbers.range(1, 30000)\n  some j in numbers.range(1, 30000)\n'
                                   '  i * j == -1\n}\n'),
    rego_probe.COMPILE_CRASH: HEADER + "x := " + "[" * 20000 + "1" + "]" * 20000 + "\n"
                              + 'deny contains {"id": "hostile", "reason": "hostile"} if x < 0\n',
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, Path]]:
    root = copy_demo_with_operators(tmp_path_factory.mktemp("push-limits") / "deployment", OPERATOR)
    config = yaml.safe_load((root / "gateway.yaml").read_text())
    config.setdefault("authorization", {})["rego_evaluation"] = {"memory_mb": 64, "budget_ms": 50, "workers": 1}
    (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with GatewayProcess(root) as process:
        yield process, root


async def _answers(client: Any) -> str:
    result = await client.call_tool(TOOL, ARGS)
    assert not result.is_error, result
    return "allowed"


@pytest.mark.parametrize("reason", list(HOSTILE))
async def test_a_hostile_rego_push_is_refused_and_calls_keep_being_answered(
        gateway: tuple[GatewayProcess, Path], tmp_path: Path, reason: str) -> None:
    process, root = gateway
    pushed = tmp_path / "set"
    for name, text in {**collect(root), "policy/hostile.rego": HOSTILE[reason]}.items():
        (pushed / name).parent.mkdir(parents=True, exist_ok=True)
        (pushed / name).write_text(text)
    token = process.token(user="ops", agent=None)
    async with process.client() as client:
        assert await _answers(client) == "allowed"
        apply = asyncio.ensure_future(asyncio.to_thread(
            run_cli, "policy", "apply", str(pushed), "-m", "hostile", "--admin-url", process.admin_base,
            env={"PORTCULLIS_TOKEN": token}))
        during = 0
        while not apply.done():  # the gateway answers while it checks the push
            assert await _answers(client) == "allowed"
            during += 1
        done = await apply
        assert during >= 1
        assert done.returncode == 1, (done.stdout, done.stderr)
        output = done.stdout + done.stderr
        assert f"refused: {reason}" in output and "Traceback" not in output
        ready = httpx2.get(process.admin_base + "/readyz", timeout=10).json()
        assert ready["status"] == "degraded" and ready["policy"]["reason"] == reason
        assert process.proc.poll() is None  # alive
        assert await _answers(client) == "allowed"
