"""The reloader over a real deployment directory (the demo's), the in-memory store and a real engine."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from portcullis.config.loader import Deployment, load_deployment
from portcullis.policy import policy_set
from portcullis.policy.active import ActivePolicy
from portcullis.policy.engine import PolicyEngine
from portcullis.policy.rego_pool import PoolSettings
from portcullis.policy.reloader import AUDIT_FAILED, NO_PREVIOUS, UNKNOWN_VERSION, PolicyReloader, ReloadSettings
from portcullis.policy.versions import MemoryPolicyVersionStore
from portcullis.surface import SurfaceCatalog, surface_policies

DEMO = Path(__file__).resolve().parents[2] / "src" / "portcullis" / "demo" / "deployment"
GET_INVOICE = "tools/billing/get_invoice.yml"


def _staging_surface(tools: PolicyEngine, deployment: Deployment) -> PolicyEngine:
    """The companion engine as the gateway builds it (resources and prompts), in another environment."""
    return PolicyEngine.build(surface_policies(SurfaceCatalog(deployment)), tools.rego, environment="staging")


class Rig:
    def __init__(self, root: Path, state: Path) -> None:
        deployment = load_deployment(root)
        self.engine = PolicyEngine.from_deployment(deployment, environment="production", rego_budget_s=10)
        self.active = ActivePolicy(self.engine)
        self.store = MemoryPolicyVersionStore()
        self.records: list[Mapping[str, Any]] = []
        self.audit_fails = False
        settings = ReloadSettings(root=root, gateway_yaml=(root / "gateway.yaml").read_bytes(), scratch=state,
                                  rego_dir="policy", environment="production", rego_budget_s=10,
                                  pool=PoolSettings())
        self.surface = ActivePolicy(self.engine, "surface")
        self.reloader = PolicyReloader(self.active, self.store, settings, self.audit, clock=lambda: 1.0,
                                       companion=(self.surface, _staging_surface))
        self.a = policy_set.collect(root)
        self.b = {k: v for k, v in self.a.items() if not k.startswith("policy/fixtures/")}
        self.b[GET_INVOICE] = self.a[GET_INVOICE].replace('"issuer:dev/agent:billing-bot", ', "")

    async def audit(self, fields: Mapping[str, Any]) -> None:
        if self.audit_fails:
            raise OSError("disk full")
        self.records.append(fields)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(shutil.copytree(DEMO, tmp_path_factory.mktemp("demo") / "deployment"))


@pytest.fixture
async def rig(demo: Path, tmp_path: Path) -> Rig:
    rig = Rig(demo, tmp_path / "scratch")
    await rig.reloader.start()
    return rig


async def test_a_change_the_audit_trail_cannot_record_is_not_made(rig: Rig) -> None:
    rig.audit_fails = True
    answer = await rig.reloader.apply(rig.b, "ops", "try")
    assert answer == {"status": "refused", "reason": AUDIT_FAILED, "problems": []}
    assert rig.active.current is rig.engine and rig.surface.current is rig.engine
    assert rig.store.active() == rig.reloader.version == policy_set.content_id(rig.a)


async def test_apply_then_rollback_to_the_previous_version(rig: Rig) -> None:
    start = rig.reloader.version
    applied = await rig.reloader.apply(rig.b, "ops", "b")
    assert applied["status"] == "applied" and applied["previous"] == start
    assert rig.active.current is not rig.engine and rig.active.current.rego is rig.engine.rego  # same modules
    assert rig.active.current.version != rig.engine.version
    assert rig.surface.current.environment == "staging"  # the companion engine was built and swapped too
    back = await rig.reloader.rollback(None, "ops", "undo")
    assert back["status"] == "rolled_back" and back["version"] == start
    assert rig.active.current.version == rig.engine.version
    assert [r["action"] for r in rig.records] == ["applied", "rolled_back"]
    assert [e.action for e in rig.store.history()] == ["rolled_back", "applied", "applied"]


async def test_a_refused_push_degrades_until_a_good_one(rig: Rig) -> None:
    broken = {**rig.a, "policy/portcullis_demo.rego": "package x\nthis is not rego {\n"}
    refused = await rig.reloader.apply(broken, "ops", "broken")
    assert refused["reason"] == policy_set.REGO and rig.reloader.status()["status"] == "degraded"
    assert rig.active.current is rig.engine and rig.records[-1]["action"] == "refused"
    assert (await rig.reloader.apply(rig.b, "ops", "good"))["status"] == "applied"
    assert rig.reloader.status() == {"version": policy_set.content_id(rig.b),
                                     "engine_version": rig.active.current.version, "status": "ok"}


@pytest.mark.parametrize(("ref", "reason"), [(None, NO_PREVIOUS), ("ps-unknown", UNKNOWN_VERSION)])
async def test_rollback_without_a_target_changes_nothing(rig: Rig, ref: str | None, reason: str) -> None:
    answer = await rig.reloader.rollback(ref, "ops", "")
    assert answer["status"] == "refused" and answer["reason"] == reason
    assert rig.active.current is rig.engine
