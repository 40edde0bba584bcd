"""``/metrics`` under ``portcullis serve --workers 2`` reports the whole host, whichever worker answers.

Calls are spread over both workers (a new connection per call; the test goes on until each worker's own file
has counted some), then several scrapes (a new connection each: either worker answers) all show the total.
A worker killed with SIGKILL and replaced: its counts stay (its file stays in the sum, written through at
every increment), the replacement starts from zero, so the total neither drops nor doubles.
"""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

import httpx2
import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster.replicas import ClusterDeployment, cluster_deployment, start_supervisor
from tests.cluster.test_workers import FAST_RESTARTS, _healthz, _poll, _workers
from tests.e2e.harness import GatewayProcess

TOOL = "billing.get_invoice"
META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str, redis_url: str, redis_prefix: str) -> ClusterDeployment:
    # only the service called: every worker start spawns each service
    return cluster_deployment(tmp_path / "deployment", pg_url, redis_url, redis_prefix, services=("billing",))


def _call(gateway: GatewayProcess, token: str, i: int) -> None:
    """One stateless tools/call on a connection of its own (so either worker may accept it). A replacement
    worker accepts only once its services are connected, so it never answers "Unknown tool" (docs/cluster.md)."""
    body = {"jsonrpc": "2.0", "id": i, "method": "tools/call",
            "params": {"name": TOOL, "arguments": {"invoice_id": "INV-1001"}, "_meta": META}}
    headers = {"Authorization": f"Bearer {token}", "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call",
               "Mcp-Name": TOOL, "Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    answer = httpx2.post(gateway.url, headers=headers, content=json.dumps(body), timeout=30)
    assert answer.status_code == 200 and "result" in answer.json(), answer.text


def _scraped(gateway: GatewayProcess) -> tuple[float, float]:
    """(calls counted, calls timed) in one scrape of the shared admin socket."""
    text = httpx2.get(f"{gateway.admin_base}/metrics", timeout=30).text
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    return (sum(s.value for s in samples if s.name == "portcullis_calls_total"),
            sum(s.value for s in samples if s.name == "portcullis_call_seconds_count"))


def _metrics_dir(pid: int) -> Path:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return Path(next(v for k, _, v in (e.partition(b"=") for e in environ) if k == b"PROMETHEUS_MULTIPROC_DIR"
                     ).decode())


def _own_calls(directory: Path, pid: int) -> float:
    """The calls one worker counted, from its own file."""
    path = directory / f"counter_{pid}.db"
    if not path.exists():
        return 0.0
    return sum(value for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path))
               if json.loads(key)[1] == "portcullis_calls_total")


def _both_ready(gateway: GatewayProcess) -> None:
    _poll(lambda: len(_workers(gateway)) == 2, "two workers")
    _poll(lambda: all(_healthz(gateway) == 200 for _ in range(10)), "both workers ready")


def test_any_worker_reports_every_workers_calls_and_a_restart_neither_loses_nor_doubles(
        cluster: ClusterDeployment) -> None:
    gateway = start_supervisor(cluster, 2, extra_env=FAST_RESTARTS)
    try:
        gateway.wait_ready()
        _both_ready(gateway)
        pids = sorted(_workers(gateway))
        directory = _metrics_dir(pids[0])
        assert _metrics_dir(pids[1]) == directory
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700 and directory.stat().st_uid == os.getuid()
        token = gateway.token()
        made = 0
        while made < 6 or not all(_own_calls(directory, pid) > 0 for pid in pids):  # spread over both
            assert made < 200, "the calls never reached both workers"
            _call(gateway, token, made)
            made += 1
        for _ in range(8):  # a new connection each: both workers answer some of them
            assert _scraped(gateway) == (made, made)

        victim = pids[0]
        os.kill(victim, signal.SIGKILL)
        _poll(lambda: victim not in _workers(gateway) and len(_workers(gateway)) == 2, "a replacement worker")
        for _ in range(8):
            assert _scraped(gateway) == (made, made)  # the dead worker's counts stay; none counted twice
        for i in range(8):  # right away: whichever worker accepts serves the tool
            _call(gateway, token, made + i)
        for _ in range(4):
            assert _scraped(gateway) == (made + 8, made + 8)
        gateway.proc.send_signal(signal.SIGTERM)
        assert gateway.proc.wait(timeout=60) == 0
        assert not directory.exists()  # the supervisor removes its directory when it exits
    finally:
        gateway.stop()
