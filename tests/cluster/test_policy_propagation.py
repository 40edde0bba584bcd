"""A policy version applied on one replica is adopted by another through a Redis notice, without re-auditing.

Two reloaders share one version store (the in-memory double stands for the shared PostgreSQL store: what is
under test is the notice and the adoption, not the store). Replica B's poll is off (no ``follow`` task), so
only the notice can carry the change; ``follow`` is tested on its own as the backstop.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from portcullis.config.loader import load_deployment
from portcullis.policy import policy_set
from portcullis.policy.active import ActivePolicy
from portcullis.policy.engine import PolicyEngine
from portcullis.policy.rego_pool import PoolSettings
from portcullis.policy.reloader import PolicyReloader, ReloadSettings
from portcullis.policy.versions import MemoryPolicyVersionStore
from portcullis.storage.bus import LocalNoticeBus, RedisNoticeBus

DEMO = Path(__file__).resolve().parents[2] / "src" / "portcullis" / "demo" / "deployment"
GET_INVOICE = "tools/billing/get_invoice.yml"


class Replica:
    def __init__(self, root: Path, scratch: Path, store: MemoryPolicyVersionStore) -> None:
        self.engine = PolicyEngine.from_deployment(load_deployment(root), environment="production", rego_budget_s=10)
        self.active = ActivePolicy(self.engine)
        self.records: list[Mapping[str, Any]] = []
        settings = ReloadSettings(root=root, gateway_yaml=(root / "gateway.yaml").read_bytes(), scratch=scratch,
                                  rego_dir="policy", environment="production", rego_budget_s=10, pool=PoolSettings())
        self.reloader = PolicyReloader(self.active, store, settings, self.audit, clock=time.time)

    async def audit(self, fields: Mapping[str, Any]) -> None:
        self.records.append(fields)


async def wait_for(condition: Callable[[], bool], deadline_s: float = 10.0) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > deadline_s:
            pytest.fail("condition not met in time")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[tuple[Replica, Replica, dict[str, str]]]:
    root = Path(shutil.copytree(DEMO, tmp_path / "deployment"))
    store = MemoryPolicyVersionStore()
    a, b = Replica(root, tmp_path / "a", store), Replica(root, tmp_path / "b", store)
    await a.reloader.start()
    await b.reloader.start()
    files = policy_set.collect(root)
    changed = {k: v for k, v in files.items() if not k.startswith("policy/fixtures/")}
    changed[GET_INVOICE] = files[GET_INVOICE].replace('"issuer:dev/agent:billing-bot", ', "")
    yield a, b, changed


async def test_an_applied_version_reaches_the_other_replica_by_notice(
        replicas: tuple[Replica, Replica, dict[str, str]], redis_url: str, redis_prefix: str) -> None:
    a, b, changed = replicas
    buses = [RedisNoticeBus(redis_url, key_prefix=redis_prefix) for _ in range(2)]
    tasks = [asyncio.create_task(bus.run()) for bus in buses]
    try:
        await asyncio.wait_for(asyncio.gather(*(bus.connected.wait() for bus in buses)), 10)
        a.reloader.connect(buses[0])
        b.reloader.connect(buses[1])
        start = b.reloader.version
        applied = await a.reloader.apply(changed, "ops", "tighten")
        assert applied["status"] == "applied"
        took = await wait_for(lambda: b.reloader.version == applied["version"])
        print(f"policy version adopted by the other replica after {took * 1000:.0f} ms")
        assert b.active.current.version == a.active.current.version != b.engine.version
        assert b.records == []  # adopted, not audited again
        back = await a.reloader.rollback(start, "ops", "undo")
        assert back["status"] == "rolled_back"
        await wait_for(lambda: b.reloader.version == start)
        assert b.active.current.version == b.engine.version and b.records == []
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for bus in buses:
            await bus.aclose()


async def test_follow_adopts_without_any_notice_and_tampered_versions_are_never_adopted(
        replicas: tuple[Replica, Replica, dict[str, str]]) -> None:
    """The backstop: no bus between the replicas, B's ``follow`` poll adopts A's version. A stored version whose
    files do not hash to its id is ignored."""
    a, b, changed = replicas
    a.reloader.connect(LocalNoticeBus())  # A announces only to itself
    applied = await a.reloader.apply(changed, "ops", "tighten")
    follower = asyncio.create_task(b.reloader.follow(poll_s=0.05))
    try:
        await wait_for(lambda: b.reloader.version == applied["version"])
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
    store = a.reloader._store
    assert isinstance(store, MemoryPolicyVersionStore)
    stored = store.get(applied["version"])
    assert stored is not None
    stored.files[GET_INVOICE] += "\n# tampered\n"
    store.record(time.time(), "applied", applied["version"], "x", "y")
    b.reloader.version = "ps-other"
    assert await b.reloader.adopt_active() is None


async def test_a_replica_restarted_from_an_old_directory_adopts_the_clusters_version(tmp_path: Path) -> None:
    """With a shared store, a start never records the directory's version over the cluster's newer one."""
    root = Path(shutil.copytree(DEMO, tmp_path / "deployment"))
    store = MemoryPolicyVersionStore()
    a = Replica(root, tmp_path / "a", store)
    a.reloader.shared = True
    await a.reloader.start()
    files = policy_set.collect(root)
    changed = {k: v for k, v in files.items() if not k.startswith("policy/fixtures/")}
    changed[GET_INVOICE] = files[GET_INVOICE].replace('"issuer:dev/agent:billing-bot", ', "")
    applied = await a.reloader.apply(changed, "ops", "tighten")
    assert applied["status"] == "applied" and store.active() == applied["version"]
    # replica B starts from the old directory (the start version)
    b = Replica(root, tmp_path / "b", store)
    b.reloader.shared = True
    await b.reloader.start()
    assert store.active() == applied["version"]  # not rolled back
    assert b.reloader.version == applied["version"]  # adopted the cluster's
    assert not b.records  # adopting is not a change of its own: nothing audited
    # without a shared store (the embedded default), the directory's version is recorded as before
    c = Replica(root, tmp_path / "c", store)
    await c.reloader.start()
    assert store.active() == policy_set.content_id(files) == c.reloader.version
