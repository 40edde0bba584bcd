"""A policy push cannot stall or exhaust the serving gateway: pushed Rego is compiled and evaluated
first in a limited process (policy/rego_probe.py), never in the gateway's own, and a push that
blows a limit is refused whole with its precise reason while the running version keeps deciding.

Each hostile module (a table row) is pushed through a real :class:`PolicyReloader` whose running
version evaluates in a real worker pool. Every limit is small (64 MiB, a fraction of a CPU second)
so that nothing here can exhaust the machine; the hostile modules need seconds of CPU or gigabytes
if nothing stops them. No timing margin is asserted: "kept answering" is an ordering (a decision
finished while the push was being checked) and "not in this process" is the CPU time this process
used, far below what any hostile module needs.
"""

from __future__ import annotations

import asyncio
import resource
import shutil
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from portcullis.config.loader import load_deployment
from portcullis.identity.principal import Principal
from portcullis.policy import policy_set
from portcullis.policy import rego_probe as probe
from portcullis.policy.active import ActivePolicy
from portcullis.policy.engine import PolicyEngine
from portcullis.policy.rego import MAX_MODULES, MAX_SOURCE_BYTES
from portcullis.policy.rego_pool import PoolSettings
from portcullis.policy.reloader import PolicyReloader, ReloadSettings
from portcullis.policy.versions import MemoryPolicyVersionStore

DEMO = Path(__file__).resolve().parents[2] / "src" / "portcullis" / "demo" / "deployment"
MIB = 1024 * 1024
HEADER = "package portcullis.hostile\n\nimport rego.v1\n\n"
USES_X = 'deny contains {"id": "hostile", "reason": "hostile"} if x < 0\n'
SMALL = probe.ProbeLimits(compile_cpu_s=2.0, eval_cpu_s=0.05, memory_bytes=64 * MIB, wall_s=60.0)
ROOMY_CPU = probe.ProbeLimits(compile_cpu_s=2.0, eval_cpu_s=5.0, memory_bytes=64 * MIB, wall_s=60.0)
TINY_COMPILE = probe.ProbeLimits(compile_cpu_s=0.001, eval_cpu_s=0.05, memory_bytes=64 * MIB, wall_s=60.0)


def _many_rules(count: int) -> str:
    return "".join(f'deny contains {{"id": "r{i}", "reason": "r"}} if input.arguments.k == {i}\n' for i in range(count))


# name → (modules added to the set, probe limits, the fixed refusal reason)
HOSTILE: dict[str, tuple[dict[str, str], probe.ProbeLimits, str]] = {
    # ~10^9 iterations over two small ranges: minutes of CPU on an empty call, little memory
    "cpu-burn-on-empty-input": ({"policy/hostile.rego": HEADER + (
        'deny contains {"id": "hostile", "reason": "hostile"} if {\n  some i in numbers.range(1, 30000)\n'
        '  some j in numbers.range(1, 30000)\n  i * j == -1\n}\n')}, SMALL, probe.EVAL_CPU),
    # a billion numbers: stopped by the memory cap (the CPU budget is roomy here)
    "memory-hungry-comprehension": ({"policy/hostile.rego": HEADER + 'x := count([v | some v in numbers.range(1, '
                                     '1000000000)])\n' + USES_X}, ROOMY_CPU, probe.EVAL_CRASH),
    "string-blow-up": ({"policy/hostile.rego": HEADER + 'x := count(concat("", [s | some i in numbers.range(1, '
                        '20000000); s := "aaaaaaaaaa"]))\n' + USES_X}, ROOMY_CPU, probe.EVAL_CRASH),
    # the parser recurses per nesting level: 20,000 levels overflow its stack (in-process: a segfault)
    "deep-recursion-nested-term": ({"policy/hostile.rego": HEADER + "x := " + "[" * 20000 + "1" + "]" * 20000
                                    + "\n" + USES_X}, SMALL, probe.COMPILE_CRASH),
    # a legitimate-looking module that compiles beyond its CPU limit (tiny here)
    "slow-compile": ({"policy/hostile.rego": HEADER + _many_rules(3000)}, TINY_COMPILE, probe.COMPILE_CPU),
    "huge-module": ({"policy/hostile.rego": HEADER + "# " + "x" * MAX_SOURCE_BYTES + "\n" + USES_X.replace(
        "x < 0", "input.arguments.k == 1")}, SMALL, policy_set.REGO_SIZE),
    "many-modules": ({f"policy/m{i}.rego": f"package portcullis.m{i}\n" for i in range(MAX_MODULES + 1)},
                     SMALL, policy_set.REGO_SIZE),
}
INVOICE = "billing.get_invoice"
BOT = Principal.from_claims({"client_id": "c", "auth_method": "dev", "issuer": "dev", "issuer_name": "dev",
                             "agent_id": "billing-bot", "tenant": "acme", "roles": ["finance"]})


class Rig:
    def __init__(self, root: Path, state: Path, limits: probe.ProbeLimits) -> None:
        deployment = load_deployment(root)
        self.engine = PolicyEngine.from_deployment(deployment, environment="production", rego_budget_s=0.5)
        assert self.engine.rego is not None
        self.pool = self.engine.rego.workers(PoolSettings(size=1, memory_bytes=64 * MIB))
        self.active = ActivePolicy(self.engine)
        self.records: list[Mapping[str, Any]] = []
        settings = ReloadSettings(root=root, gateway_yaml=(root / "gateway.yaml").read_bytes(), scratch=state,
                                  rego_dir="policy", environment="production", rego_budget_s=0.05,
                                  pool=PoolSettings(size=1, memory_bytes=64 * MIB), probe=limits)
        self.reloader = PolicyReloader(self.active, MemoryPolicyVersionStore(), settings, self.audit,
                                       clock=lambda: 1.0)
        self.files = policy_set.collect(root)

    async def audit(self, fields: Mapping[str, Any]) -> None:
        self.records.append(fields)

    async def decide(self) -> str:
        decision = await self.active.current.decide_async(INVOICE, BOT, {"invoice_id": "INV-1001"},
                                                          now=datetime(2027, 1, 15, 10, tzinfo=UTC))
        assert "policy_error" not in decision.reasons, decision
        return decision.effect


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(shutil.copytree(DEMO, tmp_path_factory.mktemp("demo") / "deployment"))


async def _rig(demo: Path, state: Path, limits: probe.ProbeLimits) -> AsyncIterator[Rig]:
    rig = Rig(demo, state, limits)
    assert await rig.pool.wait_ready(60)
    await rig.reloader.start()
    try:
        yield rig
    finally:
        for pool in [rig.pool, *rig.reloader._pools]:  # the pushed versions' workers too (no grace period here)
            await pool.aclose()


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_a_hostile_push_is_refused_whole_and_the_running_version_keeps_deciding(
        demo: Path, tmp_path: Path, name: str) -> None:
    added, limits, reason = HOSTILE[name]
    async for rig in _rig(demo, tmp_path / "scratch", limits):
        before_effect = await rig.decide()
        start_version, start_engine = rig.reloader.version, rig.active.current
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        cpu_before = time.process_time()
        push = asyncio.ensure_future(rig.reloader.apply({**rig.files, **added}, "ops", name))
        during = 0
        while not push.done():  # the running version answers while the push is being checked
            assert await rig.decide() == before_effect
            during += 1
            await asyncio.sleep(0.01)
        answer = await push
        assert answer == {"status": "refused", "reason": reason, "problems": answer["problems"]}
        assert "Traceback" not in str(answer) and len(str(answer)) < 2000
        assert rig.active.current is start_engine and rig.reloader.version == start_version
        assert rig.reloader.status()["status"] == "degraded" and rig.reloader.status()["reason"] == reason
        assert rig.records[-1]["action"] == "refused" and rig.records[-1]["reason"] == reason
        assert await rig.decide() == before_effect and during >= 1
        # none of it ran here: the hostile modules need many seconds of CPU or gigabytes unstopped
        assert time.process_time() - cpu_before < 5.0
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 256 * 1024  # KiB


async def test_a_benign_rego_change_still_applies_and_is_decided_in_workers(demo: Path, tmp_path: Path) -> None:
    """The probe does not refuse a good module, and the set's fixtures pass through the new workers."""
    benign = {"policy/extra.rego": HEADER + 'deny contains {"id": "never", "reason": "never"} if '
                                             'input.arguments.invoice_id == "NOPE"\n'}
    async for rig in _rig(demo, tmp_path / "scratch", SMALL):
        answer = await rig.reloader.apply({**rig.files, **benign}, "ops", "benign")
        assert answer["status"] == "applied", answer
        new_rego = rig.active.current.rego
        assert new_rego is not None and new_rego is not rig.engine.rego and new_rego.workers().ready
        assert await rig.decide() == "allow"


async def test_a_fixture_that_burns_cpu_is_stopped_in_a_worker_not_here(demo: Path, tmp_path: Path) -> None:
    """Cheap on the empty call, expensive on a fixture's arguments: the fixture is decided by the new
    version's worker (stopped at its budget: policy_error), so the fixtures fail and the push is refused."""
    body = HEADER + ('deny contains {"id": "hostile", "reason": "hostile"} if {\n  input.arguments.invoice_id\n'
                     '  some i in numbers.range(1, 30000)\n  some j in numbers.range(1, 30000)\n  i * j == -1\n}\n')
    async for rig in _rig(demo, tmp_path / "scratch", SMALL):
        cpu_before = time.process_time()
        answer = await rig.reloader.apply({**rig.files, "policy/hostile.rego": body}, "ops", "fixture burn")
        assert answer["status"] == "refused" and answer["reason"] == policy_set.FIXTURES, answer
        assert time.process_time() - cpu_before < 5.0
        assert await rig.decide() == "allow"
