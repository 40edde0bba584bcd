"""A stdio service that cannot be confined as configured does not start: no unconfined fallback.

bwrap missing (the backend pointed at a binary that does not exist), a declared path missing, or
the spawn record not written: the child is not started, the refusal is recorded, and ``serve``
refuses a deployment whose services cannot be confined at all, with a clear message.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import MCPError

from portcullis.audit.errors import AuditUnavailable
from portcullis.config.model import StdioService
from portcullis.errors import ConfigError
from portcullis.upstream.confined_spawn import BWRAP_ENV, StdioSandbox
from portcullis.upstream.sdk_client import SdkConnector, stdio_launch
from portcullis.upstream.stdio_spawn import SpawnRefused, prepare_spawn
from tests.e2e.harness import REPO, run_cli

MISSING_BWRAP = "/nonexistent/portcullis-test/bwrap"


def _cfg(**sandbox: Any) -> StdioService:
    return StdioService(transport="stdio", command=sys.executable, args=("-c", "pass"), sandbox=sandbox)


class Records:
    """The spawn records a gateway would write (a list), or a failing audit store."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fields: list[Mapping[str, Any]] = []
        self.fail = fail

    async def __call__(self, fields: Mapping[str, Any]) -> None:
        if self.fail:
            raise AuditUnavailable(detail="store down")
        self.fields.append(fields)


def _prepare(cfg: StdioService, sandbox: StdioSandbox, records: Records) -> Any:
    argv, env = stdio_launch(cfg, {})
    return anyio.run(prepare_spawn, "svc", cfg, argv, env, sandbox, records)


def test_a_missing_bwrap_refuses_the_spawn_and_records_it() -> None:
    """The backend pointed at a missing binary: SpawnRefused, and a refused spawn record, nothing run."""
    records = Records()
    with pytest.raises(SpawnRefused):
        _prepare(_cfg(), StdioSandbox(MISSING_BWRAP), records)
    assert [(f["outcome"], f["reason"]) for f in records.fields] == [("refused", "sandbox_unavailable")]


def test_a_missing_declared_path_refuses_the_spawn(tmp_path: Path) -> None:
    """A read-only path that does not exist is not silently dropped from the view."""
    records = Records()
    with pytest.raises(SpawnRefused):
        _prepare(_cfg(read_only_paths=[str(tmp_path / "absent")]), StdioSandbox(), records)
    assert [(f["outcome"], f["reason"]) for f in records.fields] == [("refused", "view_path_missing")]


def test_no_durable_spawn_record_no_child() -> None:
    """The spawn record could not be written: the spawn fails and its sandbox resources are released."""
    fds_before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(AuditUnavailable):
        _prepare(_cfg(), StdioSandbox(), Records(fail=True))
    assert set(os.listdir("/proc/self/fd")) == fds_before  # the seccomp filter's descriptor is closed


def test_a_confined_spawn_is_a_bwrap_command_with_its_filter() -> None:
    """The benign control: a confined spawn runs bwrap, passes the seccomp filter, and is recorded first."""
    records = Records()
    prepared = _prepare(_cfg(), StdioSandbox(), records)
    try:
        command = [prepared.params.command, *prepared.params.args]
        # the filter and bwrap's options (the environment among them) on descriptors, not the command line
        assert "/usr/bin/bwrap" in command and "--args" in command and len(prepared.pass_fds) == 2
        assert "--setenv" not in command and prepared.params.env == {}
        assert [f["outcome"] for f in records.fields] == ["spawning"]
    finally:
        prepared.cleanup()


def test_unsafe_no_sandbox_runs_unconfined_with_a_clean_environment(caplog: pytest.LogCaptureFixture) -> None:
    """The explicit opt-out needs no bwrap at all, warns, and still passes only the declared environment."""
    records = Records()
    with caplog.at_level(logging.WARNING, logger="portcullis.upstream"):
        prepared = _prepare(_cfg(unsafe_no_sandbox=True), StdioSandbox(MISSING_BWRAP), records)
    # exactly the declared environment (none here), given as the process's own: no env -i K=V command line
    assert [prepared.params.command, *prepared.params.args] == [sys.executable, "-c", "pass"]
    assert prepared.params.env == {}
    assert records.fields[0]["confinement"]["backend"] == "none"
    assert records.fields[0]["confinement"]["unsafe"] == ["unsafe_no_sandbox"]
    assert any("weakened" in r.getMessage() for r in caplog.records)


def test_a_gateway_start_refuses_a_service_it_cannot_confine() -> None:
    """Building the connector with bwrap missing is a configuration error that says what to do."""
    with pytest.raises(ConfigError) as caught:
        SdkConnector("svc", _cfg(), {BWRAP_ENV: MISSING_BWRAP})
    assert "cannot be confined" in str(caught.value.problems[0])


def test_every_start_warns_about_an_unsafe_setting(caplog: pytest.LogCaptureFixture) -> None:
    """unsafe_host_network is named in a warning each time the gateway builds the service."""
    with caplog.at_level(logging.WARNING, logger="portcullis.upstream"):
        SdkConnector("svc", _cfg(unsafe_host_network=True), {})
    assert any("unsafe_host_network" in r.getMessage() for r in caplog.records)


def test_serve_exits_with_a_clear_error_when_bwrap_is_missing(tmp_path: Path) -> None:
    """`portcullis serve` on the demo deployment with the backend missing: exit 2, no service started."""
    done = run_cli("serve", "--port", "0", env={BWRAP_ENV: MISSING_BWRAP, "PORTCULLIS_STATE_DIR": str(tmp_path)},
                   timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "cannot be confined" in done.stderr and "install bubblewrap" in done.stderr


def test_a_sandbox_whose_setup_fails_leaves_the_service_down_not_unconfined() -> None:
    """bwrap that exits at once (as when the kernel refuses its namespaces): no connection, no fallback."""
    cfg = StdioService(transport="stdio", command=sys.executable, args=("-m", "tests.security.sandbox_probe_stdio"),
                       cwd=str(REPO), connect_timeout_s=20)
    connector = SdkConnector("svc", cfg, {BWRAP_ENV: "/usr/bin/false"})

    async def connect() -> None:
        with anyio.fail_after(30):
            async with connector.open() as connection:
                await connection.list_tools()

    with pytest.raises(BaseExceptionGroup) as caught:  # the SDK client's: the child's stream closed at once
        anyio.run(connect)
    leaves: list[BaseException] = [caught.value]
    while any(isinstance(e, BaseExceptionGroup) for e in leaves):
        leaves = [x for e in leaves for x in (e.exceptions if isinstance(e, BaseExceptionGroup) else (e,))]
    assert [str(e) for e in leaves] == ["Connection closed"] and isinstance(leaves[0], MCPError)
