"""Rego and limits on reads through a gateway process (its Rego worker processes), with the SDK client.

The demo deployment plus a Rego module that closes one handbook page and a limit of two prompt gets an
hour: the closed page answers the unknown-resource bytes and is recorded as a denial, another page reads;
the third get is refused like a limited call; a module that fails at run time refuses reads too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from mcp import MCPError

from tests.e2e.harness import GatewayProcess, copy_demo

READS_REGO = """package portcullis.reads

import rego.v1

deny contains {"id": "reads/holidays_closed", "reason": "page_closed"} if {
    input.method == "resources/read"
    input.resource.template == "files+handbook://pages/{topic}"
    input.resource.upstream_uri == "handbook://pages/holidays"
}
"""


def staff(gateway: GatewayProcess) -> str:
    return gateway.token(roles=["analyst", "employee"], employment_type="full_time")


@pytest.fixture(scope="module")
def read_policy_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = copy_demo(tmp_path_factory.mktemp("reads") / "deployment")
    (root / "policy" / "reads.rego").write_text(READS_REGO)
    config = yaml.safe_load((root / "gateway.yaml").read_text())
    config["authorization"] = {"environment": "production", "limits": [
        {"id": "prompt-gets", "tools": ["files.summarize_file"], "methods": ["prompts/get"], "per": ["user", "agent"],
         "window_s": 3600, "max_calls": 2}]}
    (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with GatewayProcess(root) as gateway:
        yield gateway


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_rego_denies_one_page_and_the_limit_counts_gets(read_policy_gateway: GatewayProcess, mode: str) -> None:
    gateway = read_policy_gateway
    async with gateway.client(mode=mode, token=staff(gateway)) as client:
        page = (await client.read_resource("files+handbook://pages/expenses")).contents[0]
        with pytest.raises(MCPError) as closed:
            await client.read_resource("files+handbook://pages/holidays")
        with pytest.raises(MCPError) as missing:
            await client.read_resource("files+handbook://holidays")  # no manifest admits it
    assert page.text
    assert (closed.value.code, closed.value.error.message, closed.value.error.data) == (
        -32602, "Resource not found", {"uri": "files+handbook://pages/holidays"})
    assert (missing.value.code, missing.value.error.message) == (-32602, "Resource not found")
    assert closed.value.error.model_dump(exclude={"data"}) == missing.value.error.model_dump(exclude={"data"})


async def test_a_third_prompt_get_is_refused_like_a_limited_call(read_policy_gateway: GatewayProcess) -> None:
    gateway = read_policy_gateway
    token = gateway.token(roles=["employee"], user_id="limit-tester")
    async with gateway.client(token=token) as client:
        for _ in range(2):
            await client.get_prompt("files.summarize_file", {"path": "handbook/expenses.txt"})
        with pytest.raises(MCPError) as limited:
            await client.get_prompt("files.summarize_file", {"path": "handbook/expenses.txt"})
    assert (limited.value.code, limited.value.error.message, limited.value.error.data) == (
        -31020, "Call refused by policy", {"rule_id": "limits/prompt-gets", "retry_after_s": 3600})


def test_a_failing_module_refuses_reads(tmp_path: Path) -> None:
    """A Rego module that fails at evaluation time refuses a prompt get with rego/policy_error (fail closed)."""
    import anyio

    root = copy_demo(tmp_path / "deployment")
    (root / "policy" / "broken.rego").write_text(
        "package portcullis.broken\n\nimport rego.v1\n\n"
        "deny contains {\"id\": \"broken\", \"reason\": \"never\"} if {\n"
        "    input.method == \"prompts/get\"\n    to_number(\"not a number\") > 1\n}\n")
    with GatewayProcess(root) as gateway:
        async def attempt() -> MCPError:
            async with gateway.client(token=staff(gateway)) as client:
                with pytest.raises(MCPError) as caught:
                    await client.get_prompt("files.summarize_file", {"path": "handbook/expenses.txt"})
                await client.read_resource("files+handbook://index")  # a read the module does not cover
            return caught.value

        error = anyio.run(attempt)
    assert (error.code, error.error.data) == (-31020, {"rule_id": "rego/policy_error"})
