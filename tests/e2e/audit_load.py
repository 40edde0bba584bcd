"""Helpers for the audit end-to-end tests: a server-everything deployment, concurrent load, chain reading."""

from __future__ import annotations

import shutil
import signal
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from portcullis.audit.export import iter_store
from portcullis.audit.record import AuditRecord
from portcullis.audit.store import SqliteAuditStore
from tests.e2e.harness import REPO, GatewayProcess, cli_in_process, manifest_from_live, write_deployment

EVERYTHING = REPO / ".tools/everything/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
ECHO = "everything.echo"
STORE_FILE = "audit.sqlite3"


def node() -> str:
    found = shutil.which("node")
    if found is None or not EVERYTHING.exists():
        pytest.fail("server-everything is not installed: run scripts/install-node-tools.sh (make test does)")
    return found


async def live_echo(node_path: str) -> dict[str, Any]:
    """server-everything's own ``echo`` definition (wire format)."""
    params = StdioServerParameters(command=node_path, args=[str(EVERYTHING), "stdio"])
    async with Client(params, cache=None) as client:
        tools = (await client.list_tools()).tools
    echo = next(t for t in tools if t.name == "echo")
    return echo.model_dump(by_alias=True, exclude_none=True, mode="json")


def echo_deployment(root: Path, node_path: str, echo: Mapping[str, Any], **manifest: Any) -> Path:
    """A pinned deployment serving only server-everything's ``echo`` over stdio."""
    write_deployment(root, {"version": 1, "identity": {"allow_insecure_dev_issuer": True}, "services": {
        "everything": {"transport": "stdio", "command": node_path, "args": [str(EVERYTHING), "stdio"],
                       "sandbox": {"read_only_paths": [str(REPO / ".tools/everything")]}}}},  # the script node runs
        [manifest_from_live("everything", echo, **manifest)])
    code, output = cli_in_process("pin", str(root))
    if code != 0:
        pytest.fail(f"portcullis pin failed:\n{output}")
    return root


async def read_chain(store_path: Path) -> list[AuditRecord]:
    """Every record of the store, in index order, through the read-only forensics API."""
    async with await SqliteAuditStore.open_readonly(store_path) as store, store.snapshot():
        return [record async for record in iter_store(store)]


def copy_store(source: Path, target: Path) -> Path:
    """A consistent one-file copy of a (WAL-mode) store, through SQLite's backup API."""
    src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    return target


def echo_text(result: Any) -> str:
    """The text server-everything's echo answered with ('' for anything else)."""
    content = result.content
    return content[0].text if content and getattr(content[0], "type", None) == "text" else ""


@dataclass
class LoadReport:
    acknowledged: list[str] = field(default_factory=list)  # messages whose call returned their echo
    attempted: int = 0
    client_errors: int = 0


async def _client_loop(gateway: GatewayProcess, client_no: int, report: LoadReport) -> None:
    n = 0
    try:
        async with gateway.client() as client:
            while True:
                message = f"m-{client_no}-{n}"
                n += 1
                report.attempted += 1
                # a call cut off by the kill must not hang the test; a call on a loaded machine may be slow
                with anyio.fail_after(30):
                    result = await client.call_tool(ECHO, {"message": message})
                if not result.is_error and echo_text(result) == f"Echo: {message}":
                    report.acknowledged.append(message)
    except Exception:  # the gateway died under this client: expected; what it acknowledged counts
        report.client_errors += 1


async def load_then_kill(gateway: GatewayProcess, *, clients: int, kill_after_acknowledged: int,
                         patience_s: float = 90.0) -> LoadReport:
    """``clients`` concurrent SDK clients calling echo in a loop; SIGKILL the gateway once ``kill_after_acknowledged``
    calls were answered (or after ``patience_s``, or when every client has failed).

    Not after a fixed time: on a loaded machine the clients may not even have connected by then, and the
    kill would test nothing. The calls still in flight at that moment are the ones the kill cuts off.
    """
    report = LoadReport()
    with anyio.fail_after(patience_s + 60):
        async with anyio.create_task_group() as tg:
            for client_no in range(clients):
                tg.start_soon(_client_loop, gateway, client_no, report)
            with anyio.move_on_after(patience_s):
                while len(report.acknowledged) < kill_after_acknowledged and report.client_errors < clients:
                    await anyio.sleep(0.02)
            gateway.proc.send_signal(signal.SIGKILL)
            # clients now fail on their own (connection refused or reset); the group waits for them
    await anyio.to_thread.run_sync(gateway.proc.wait)
    return report
