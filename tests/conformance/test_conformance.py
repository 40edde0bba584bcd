"""The official MCP conformance suite, run THROUGH the gateway in front of the conformance fixture.

fixture_server.py (subprocess) <- Portcullis (``python -m portcullis serve``) <- the suite (Node 22).

Both suite versions run with a baseline of expected failures (baseline-2025.yml, baseline-2026.yml,
one comment per entry). The suite fails a run on any failure (or WARNING) not in the baseline, and
on any baseline entry that now passes, so the baselines must move with the gateway.
Needs the Node tools: ``bash scripts/install-node-tools.sh``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
import yaml

from portcullis.config.model import GatewayConfig, ToolManifest

from .conftest import (
    HERE,
    PYTHON,
    REPO_ROOT,
    ChildProcess,
    NodeTools,
    SuiteRun,
    free_port,
    run_suite,
    start_child,
    wait_http_ok,
)
from .manifests import DOMAIN, PUSH_SERVICE, PUSH_TOOLS, SERVICE, fixture_tools, write_deployment

pytestmark = [pytest.mark.conformance, pytest.mark.timeout(900)]

BASELINE_2025 = HERE / "baseline-2025.yml"
BASELINE_2026 = HERE / "baseline-2026.yml"


@dataclass(frozen=True)
class Gateway:
    url: str  # the MCP endpoint
    process: ChildProcess
    upstream: ChildProcess
    deployment: Path


def _pin(deployment: Path, log_dir: Path) -> None:
    argv = [PYTHON, "-m", "portcullis", "pin", str(deployment)]
    completed = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180, check=False)
    (log_dir / "pin.log").write_text(completed.stdout + completed.stderr, encoding="utf-8")
    if completed.returncode != 0:
        pytest.fail(f"`{' '.join(argv)}` exited {completed.returncode}\n--- stdout:\n{completed.stdout[-4000:]}"
                    f"\n--- stderr:\n{completed.stderr[-4000:]}", pytrace=False)


@pytest.fixture(scope="module")
def gateway(node_tools: NodeTools, fixture_upstream: tuple[ChildProcess, str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Fixture upstream + pinned deployment + running gateway; all processes stopped afterwards."""
    upstream, upstream_url = fixture_upstream
    work = tmp_path_factory.mktemp("gateway")
    deployment = work / "deployment"
    write_deployment(deployment, upstream_url)
    _pin(deployment, work)
    port = free_port()
    # its own state directory: the default (./.portcullis, the repository) is shared with every other
    # gateway a parallel worker starts there, and its stores refuse a second gateway
    process = start_child("gateway", [PYTHON, "-m", "portcullis", "serve", "--config", str(deployment),
                                      "--port", str(port)], work, env={"PORTCULLIS_STATE_DIR": str(work / "state")})
    try:
        try:
            wait_http_ok(f"http://127.0.0.1:{port}/healthz", 90, child=process)
        except (TimeoutError, RuntimeError) as exc:
            pytest.fail(f"gateway did not become healthy: {exc}\n{process.describe()}\n{upstream.describe(20)}",
                        pytrace=False)
        yield Gateway(f"http://127.0.0.1:{port}/mcp", process, upstream, deployment)
    finally:
        process.stop()


def _check(run: SuiteRun, gw: Gateway) -> None:
    if run.returncode != 0:
        pytest.fail(run.report(gw.process.describe(80), gw.upstream.describe(20)), pytrace=False)


def test_suite_2025_through_gateway(gateway: Gateway, node_tools: NodeTools, tmp_path: Path) -> None:
    """0.1.16, every scenario (2025-06-18 and 2025-11-25), against the baseline of this release."""
    run = run_suite(node_tools, node_tools.conformance_0_1, gateway.url,
                    ["--suite", "all", "--expected-failures", str(BASELINE_2025)], tmp_path)
    _check(run, gateway)


def test_suite_2026_through_gateway(gateway: Gateway, node_tools: NodeTools, tmp_path: Path) -> None:
    """0.2.0-alpha.12, the frozen 2026-07-28 requirement set, against the baseline of this release."""
    run = run_suite(node_tools, node_tools.conformance_0_2, gateway.url,
                    ["--requirements", "2026-07-28", "--expected-failures", str(BASELINE_2026)], tmp_path)
    _check(run, gateway)


def test_deployment_files_validate(tmp_path: Path) -> None:
    """write_deployment's files load as GatewayConfig / ToolManifest and mirror the fixture's live tools."""
    write_deployment(tmp_path, "http://127.0.0.1:9/mcp")
    gateway = GatewayConfig.model_validate(yaml.safe_load((tmp_path / "gateway.yaml").read_text(encoding="utf-8")))
    service = gateway.services[SERVICE]
    assert service.transport == "http"
    assert service.url == "http://127.0.0.1:9/mcp"
    assert service.tool_prefix == ""
    assert gateway.listen.host == "127.0.0.1"

    live = {tool["name"]: tool for tool in anyio.run(fixture_tools)}
    files = sorted((tmp_path / "tools" / DOMAIN).glob("*.yml"))
    assert [path.stem for path in files] == sorted(live)
    for path in files:
        manifest = ToolManifest.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
        tool = live[manifest.name]
        assert manifest.service == (PUSH_SERVICE if manifest.name in PUSH_TOOLS else SERVICE)
        assert manifest.pin is None
        assert manifest.input_schema == tool["inputSchema"]
        assert manifest.output_schema == tool.get("outputSchema")
        assert manifest.description == tool["description"]
        assert manifest.annotations.model_dump(exclude_none=True) == tool.get("annotations", {})
    expected = {
        "test_simple_text", "test_image_content", "test_audio_content", "test_embedded_resource",
        "test_multiple_content_types", "test_tool_with_logging", "test_tool_with_progress", "test_error_handling",
        "test_sampling", "test_elicitation", "test_elicitation_sep1034_defaults", "test_elicitation_sep1330_enums",
        "json_schema_2020_12_tool", "test_x_mcp_header", "test_input_required_result_elicitation",
    }
    assert expected <= set(live), sorted(expected - set(live))
    resources = sorted(path.stem for path in (tmp_path / "resources" / DOMAIN).glob("*.yml"))
    prompts = sorted(path.stem for path in (tmp_path / "prompts" / DOMAIN).glob("*.yml"))
    assert {"static-text", "static-binary", "template-data"} <= set(resources), resources
    assert {"test_simple_prompt", "test_prompt_with_arguments", "test_prompt_with_image"} <= set(prompts), prompts
    assert gateway.services[SERVICE].resource_prefix == ""  # the suite reads the fixture's own URIs
    push = gateway.services[PUSH_SERVICE]  # the push-style tools, over a session leg that may relay their asks
    assert push.protocol == "legacy" and push.client_requests.sampling and push.client_requests.elicitation_form
    assert not (push.client_requests.roots or push.client_requests.elicitation_url)


def test_install_script_is_idempotent_when_tools_present(node_tools: NodeTools) -> None:
    """A second run of the installer finds everything in place: exit 0, nothing installed, offline."""
    env = {**os.environ, "npm_config_offline": "true"}  # any registry access would fail
    completed = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "install-node-tools.sh")], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=120, check=False, env=env)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "install  " not in output, output  # nothing was (re)installed
    assert f"NODE22={node_tools.node22}" in output, output
