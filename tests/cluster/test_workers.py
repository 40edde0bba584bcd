"""``portcullis serve --workers N``: refused without shared state; the supervisor's sockets, signals and restarts.

The supervisor tests run today over a deployment whose storage section points at the real PostgreSQL
and Redis (so they stay meaningful once the stores are wired); until then each worker keeps its own
embedded audit chain and counters file (tests/cluster/replicas.py), which is what lets N workers start.

Starting a supervisor and its workers is the slow part: the restart, SIGHUP and SIGTERM tests share one (started
again if an earlier test stopped it), each reading only the log written since it began.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
import yaml

from portcullis.serving.restarts import RESTART_DELAY_ENV
from portcullis.storage.workers import SharedState, workers_problem
from tests.cluster.conftest import REDIS_BASE, fresh_pg_schema, pg_url_for, private_redis_prefix
from tests.cluster.replicas import ClusterDeployment, cluster_deployment, keep_services, start_supervisor
from tests.e2e.harness import GatewayProcess, copy_demo, run_cli

pytestmark = pytest.mark.xdist_group("cluster/test_workers.py")  # one worker: the shared supervisor
DENIED = "denied_callers: [\"app:public-chat\"]"
FAST_RESTARTS = {RESTART_DELAY_ENV: "0.05"}  # the backoff still doubles; only its first step is short


def _children(pid: int) -> set[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(part) for part in text.split()}


def _workers(gateway: GatewayProcess) -> set[int]:
    return {pid for pid in _children(gateway.proc.pid)
            if b"portcullis.serving.worker" in Path(f"/proc/{pid}/cmdline").read_bytes()}


def _poll(condition: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {what}")


def _healthz(gateway: GatewayProcess) -> int:
    return httpx2.get(f"{gateway.base}/healthz", timeout=10).status_code


def _deployment(root: Path, pg_url: str, redis_url: str, redis_prefix: str) -> ClusterDeployment:
    # one stdio service (the one the SIGHUP test edits): every worker start spawns each service
    return cluster_deployment(root, pg_url, redis_url, redis_prefix, services=("billing",))


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str, redis_url: str, redis_prefix: str) -> ClusterDeployment:
    return _deployment(tmp_path / "deployment", pg_url, redis_url, redis_prefix)


@dataclass
class _Shared:
    cluster: ClusterDeployment
    gateway: GatewayProcess | None = None


@pytest.fixture(scope="module")
def _shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Shared]:
    with fresh_pg_schema() as schema, private_redis_prefix() as prefix:
        shared = _Shared(_deployment(tmp_path_factory.mktemp("workers") / "deployment", pg_url_for(schema),
                                     REDIS_BASE, prefix))
        try:
            yield shared
        finally:
            if shared.gateway is not None:
                shared.gateway.stop()


@pytest.fixture
def supervisor(_shared: _Shared) -> GatewayProcess:
    """``serve --workers 2`` with both workers serving and ready, shared (started again once a test stopped it)."""
    if _shared.gateway is None or _shared.gateway.proc.poll() is not None:
        if _shared.gateway is not None:
            _shared.gateway.stop()
        _shared.gateway = start_supervisor(_shared.cluster, 2, extra_env=FAST_RESTARTS)
    gateway = _shared.gateway
    _poll(lambda: len(_workers(gateway)) == 2, "two workers")
    _poll(lambda: gateway.log().count("worker serving") >= 2, "both workers serving")
    # a worker accepts as soon as it serves and answers 503 until its services are connected (a loaded
    # machine: seconds); either worker may take a connection, so ready means several 200s in a row
    _poll(lambda: all(_healthz(gateway) == 200 for _ in range(10)), "both workers ready")
    return gateway


def test_one_worker_by_default_is_one_process_without_a_supervisor(tmp_path: Path) -> None:
    """Without --workers the gateway serves in the process that was started, as before."""
    with GatewayProcess(keep_services(copy_demo(tmp_path / "deployment"), "billing")) as gateway:
        assert _healthz(gateway) == 200
        assert _workers(gateway) == set()


@pytest.mark.parametrize(("shared", "missing"), [
    (SharedState(False, False, False), ["storage.postgresql", "storage.redis", "sessions.key_ref"]),
    (SharedState(True, False, True), ["storage.redis"]),
    (SharedState(True, True, False), ["sessions.key_ref"]),
])
def test_several_workers_name_every_missing_piece_of_shared_state(shared: SharedState, missing: list[str]) -> None:
    """The refusal lists exactly what is missing; one worker, or everything configured, is allowed."""
    problem = workers_problem(3, shared)
    assert problem is not None and problem.startswith("listen.workers: 3 worker processes must share their state")
    for name in ("storage.postgresql", "storage.redis", "sessions.key_ref"):
        assert (f"{name} (" in problem) == (name in missing)
    assert workers_problem(1, shared) is None
    assert workers_problem(3, SharedState(True, True, True)) is None


def test_serve_and_lint_refuse_several_workers_over_the_embedded_default(tmp_path: Path) -> None:
    """``serve --workers 2`` and ``listen.workers: 2`` in gateway.yaml are refused with the same message."""
    root = copy_demo(tmp_path / "deployment")
    expected = workers_problem(2, SharedState(False, False, False))
    assert expected is not None
    served = run_cli("serve", "--config", str(root), "--workers", "2", "--port", "0", timeout=60)
    assert served.returncode == 2
    assert expected in " ".join(served.stderr.split())
    config = yaml.safe_load((root / "gateway.yaml").read_text())
    config["listen"] = {**config.get("listen", {}), "workers": 2}
    (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    linted = run_cli("lint", "--format", "text", str(root), timeout=60)
    assert linted.returncode == 1
    assert expected in " ".join(linted.stderr.split())


@pytest.mark.parametrize("count", ["0", "-1", "65", "two"])
def test_serve_refuses_a_worker_count_out_of_range(tmp_path: Path, count: str) -> None:
    """--workers is bounded (1..64) before anything starts."""
    served = run_cli("serve", "--config", str(copy_demo(tmp_path / "d")), "--workers", count, timeout=60)
    assert served.returncode == 2 and "--workers" in served.stderr


def test_supervisor_serves_on_shared_sockets_and_restarts_a_killed_worker(supervisor: GatewayProcess) -> None:
    """Two workers answer on one port and one admin port; a worker killed with SIGKILL is replaced."""
    gateway = supervisor
    assert httpx2.get(f"{gateway.admin_base}/livez", timeout=10).status_code == 200
    before = _workers(gateway)
    victim = min(before)
    since = len(gateway.log())
    subprocess.run(["kill", "-KILL", str(victim)], check=True)
    _poll(lambda: len(_workers(gateway)) == 2 and victim not in _workers(gateway), "a replacement worker")
    assert "worker exited; restarting" in gateway.log()[since:]
    _poll(lambda: gateway.log()[since:].count("worker serving") == 1, "the replacement serving")
    # the replacement accepts at once and answers 503 until its services are connected, then 200
    _poll(lambda: all(_healthz(gateway) == 200 for _ in range(10)), "both workers ready")
    assert gateway.proc.poll() is None


def test_supervisor_forwards_sighup_to_every_worker(supervisor: GatewayProcess) -> None:
    """SIGHUP to the supervisor makes each worker re-read the deployment; none of them dies of it."""
    gateway = supervisor
    pids = _workers(gateway)
    active = gateway.log().count("policy version active")
    manifest = gateway.config / "tools" / "billing" / "get_invoice.yml"
    manifest.write_text(manifest.read_text().replace(DENIED, "denied_callers: [\"app:public-chat\", "
                                                              "\"app:nobody\"]"))
    gateway.proc.send_signal(signal.SIGHUP)
    _poll(lambda: gateway.log().count("policy version active") >= active + 2, "a reload in each worker")
    assert _workers(gateway) == pids
    assert gateway.proc.poll() is None


def test_sigterm_drains_every_worker_and_exits_zero(supervisor: GatewayProcess) -> None:
    """SIGTERM: each worker stops gracefully, then the supervisor exits 0 and leaves no process behind."""
    gateway = supervisor
    pids = _workers(gateway)
    since = len(gateway.log())
    gateway.proc.send_signal(signal.SIGTERM)
    assert gateway.proc.wait(timeout=60) == 0
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids)
    assert "draining workers" in gateway.log()[since:]
    assert "worker exited; restarting" not in gateway.log()[since:]


def test_supervisor_gives_up_when_workers_keep_failing_at_start(cluster: ClusterDeployment) -> None:
    """Workers that cannot start (their state directory is a file) are retried with backoff, then the
    supervisor exits 1 instead of restarting forever."""
    cluster.state_dir.parent.mkdir(parents=True, exist_ok=True)
    cluster.state_dir.write_text("not a directory")
    gateway = start_supervisor(cluster, 2, extra_env=FAST_RESTARTS)
    try:
        assert gateway.proc.wait(timeout=120) == 1
        log = gateway.log()
        assert "workers keep failing at start: giving up" in log
        assert log.count("worker exited; restarting") >= 4
        assert not _workers(gateway)
    finally:
        gateway.stop()
