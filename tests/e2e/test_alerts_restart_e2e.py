"""The alert monitor's state across real gateway restarts (``portcullis serve``, the official SDK client): a
corrupt ``monitor_state.sqlite3`` is logged and set aside and the gateway serves as usual; the calls of that
start are saved at a clean stop and restored by the next start."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from mcp import MCPError

from portcullis.monitoring.state import FILE_NAME, SqliteMonitorStateStore
from tests.e2e.harness import GatewayProcess, write_deployment

CALLER = ("agent", "billing-bot")


async def _call(gw: GatewayProcess) -> None:
    """A call of a tool that does not exist: refused, and observed like every tools/call."""
    async with gw.client() as client:
        with pytest.raises(MCPError):
            await client.call_tool("nowhere.nothing", {})


def _saved_callers(path: Path) -> set[tuple[tuple[str, str], ...]]:
    store = SqliteMonitorStateStore(path)
    try:
        snapshot = store.load(1000)
    finally:
        store.close()
    assert snapshot is not None
    return {k.key for k in snapshot.keys if k.table == "caller"}


@contextmanager
def _gateway(root: Path, state: Path) -> Iterator[GatewayProcess]:
    """A gateway whose only service is down: /healthz says 503, every call is still observed."""
    gw = GatewayProcess(root, state_dir=state)
    try:
        gw.wait_ready(require_ready=False)
        yield gw
    finally:
        gw.stop()


def _wait_for(gw: GatewayProcess, text: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if text in gw.log():
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not logged:\n{gw.log()[-3000:]}")


async def test_a_corrupt_monitor_state_does_not_stop_the_gateway_and_a_clean_one_survives_a_restart(
        tmp_path: Path) -> None:
    down = {"s": {"transport": "http", "url": "http://127.0.0.1:9/mcp"}}
    root = write_deployment(tmp_path / "deployment", {"version": 1, "identity": {"allow_insecure_dev_issuer": True},
                                                      "services": down}, [])
    state = tmp_path / "state"
    state.mkdir()
    path = state / FILE_NAME
    path.write_bytes(b"\x00not a database" * 500)
    with _gateway(root, state) as first:
        _wait_for(first, "alert monitor state not restored: starting fresh")
        await _call(first)  # serves as usual
    assert Path(str(path) + ".corrupt").exists()
    assert (CALLER,) in _saved_callers(path)  # a fresh file, written at the clean stop

    with _gateway(root, state) as second:
        _wait_for(second, "alert monitor state restored")
        await _call(second)
    assert (CALLER,) in _saved_callers(path)
