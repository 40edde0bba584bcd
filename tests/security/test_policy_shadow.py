"""Shadow evaluation (policy/shadow.py): a whole candidate version decides beside the active one and is
recorded, never enforced; its errors never touch the call; only operators set it (/policy/shadow)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import anyio
import pytest
from typer.testing import CliRunner

from portcullis.cli.main import app
from portcullis.observability import GatewayMetrics
from portcullis.policy import policy_set
from portcullis.policy import reloader as reloader_module
from portcullis.policy.engine import PolicyEngine, tool_policies
from portcullis.policy.reloader import UNKNOWN_VERSION
from portcullis.policy.shadow import SHADOW_ERROR
from portcullis.policy.versions import PolicyVersion
from portcullis.transport.policy_api import PolicyApi
from tests.security.harness import INVOICE, deployment, forwarded, in_process_gateway
from tests.security.test_policy_api import _authenticate, _request
from tests.unit.test_metrics import samples
from tests.unit.test_policy_reloader import GET_INVOICE, Rig, demo  # noqa: F401 - the module-scoped demo copy

STRICT = PolicyEngine.build(tool_policies(deployment(policies={
    "process_refund": {"allowed_callers": ["role:auditor"]}, "get_invoice": {"allowed_callers": ["role:auditor"]},
    "void_ledger": {"allowed_callers": ["role:auditor"]}}).manifests), None, environment="production")


class Broken:
    """A shadow engine that fails: the stage must record it and carry on."""

    version = "pv-broken"

    async def decide_async(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom /etc/secret")


async def test_a_shadow_that_would_deny_is_recorded_and_the_call_still_succeeds(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path, shadow=("ps-strict", STRICT)) as gateway:
        answer = await gateway.call(INVOICE, {"invoice_id": "INV-1"})
        assert answer.result is not None and len(forwarded(gateway)) == 1
        decision = (await gateway.decision_of_last_call())["decision"]
        assert decision["effect"] == "allow"
        shadow = decision["shadow_version"]
        assert shadow["version"] == "ps-strict" and shadow["policy_version"] == STRICT.version
        assert shadow["effect"] == "deny" and shadow["rule_ids"]


async def test_without_a_shadow_the_record_has_no_shadow_version(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path) as gateway:
        assert (await gateway.call(INVOICE, {"invoice_id": "INV-1"})).result is not None
        assert "shadow_version" not in (await gateway.decision_of_last_call())["decision"]


async def test_a_shadow_error_is_recorded_and_the_call_is_unaffected(tmp_path: Path) -> None:
    async with in_process_gateway(tmp_path, shadow=("ps-broken", cast(PolicyEngine, Broken()))) as gateway:
        assert (await gateway.call(INVOICE, {"invoice_id": "INV-1"})).result is not None
        shadow = (await gateway.decision_of_last_call())["decision"]["shadow_version"]
        assert shadow == {"version": "ps-broken", "error": SHADOW_ERROR}  # fixed text, nothing of the exception


@pytest.fixture
async def api(demo: Path, tmp_path: Path) -> tuple[PolicyApi, Rig]:  # noqa: F811
    rig = Rig(demo, tmp_path / "scratch")
    await rig.reloader.start()
    return PolicyApi(rig.reloader, _authenticate, ("user:ops",)), rig


async def test_operators_set_and_clear_a_shadow_and_it_is_audited(api: tuple[PolicyApi, Rig]) -> None:
    policy, rig = api
    applied = await rig.reloader.apply(rig.b, "ops", "b")  # store a second version, then go back to the first
    await rig.reloader.rollback(None, "ops", "back")
    status, body = await _request(policy, "POST", "/policy/shadow", b'{"version": "%s"}' % applied["version"].encode())
    assert status == 200 and body["status"] == "shadow_set" and rig.active.shadow is not None
    assert rig.active.shadow[0] == applied["version"] and rig.active.current.version == rig.engine.version
    shadow_engine = rig.active.shadow[1]
    assert shadow_engine.rego is rig.active.current.rego  # same modules: the active workers evaluate it
    assert (await _request(policy, "GET", "/policy"))[1]["shadow"]["version"] == applied["version"]
    assert (await _request(policy, "DELETE", "/policy/shadow")) == (200, {"status": "shadow_cleared", "version": "",
                                                                          "engine_version": ""})
    assert rig.active.shadow is None
    assert [r["action"] for r in rig.records][-2:] == ["shadow_set", "shadow_cleared"]


@pytest.mark.parametrize(("method", "body", "who", "status", "error"), [
    ("POST", b'{"version": "ps-x"}', "agent", 403, "forbidden: not one of admin.operators"),
    ("DELETE", b"", "agent", 403, "forbidden: not one of admin.operators"),
    ("POST", b'{"version": "ps-x"}', "nobody", 401, "authentication required"),
    ("POST", b'{"version": 7}', "ops", 400, "version must be a string"),
    ("POST", b'{"version": ""}', "ops", 400, "version must be a string"),
    ("POST", b"{}", "ops", 400, "version must be a string"),
    ("POST", b"not json", "ops", 400, "body must be a JSON object"),
    ("PUT", b"", "ops", 405, "method not allowed"),
    ("POST", b'{"version": "\' OR 1=1 --"}', "ops", 422, UNKNOWN_VERSION),
])
async def test_hostile_shadow_requests_change_nothing(api: tuple[PolicyApi, Rig], method: str, body: bytes, who: str,
                                                      status: int, error: str) -> None:
    policy, rig = api
    got_status, got = await _request(policy, method, "/policy/shadow", body, who=who)
    assert got_status == status and (got.get("error") or got.get("reason")) == error
    assert rig.active.shadow is None and rig.records == []


def _other_rego(rig: Rig) -> dict[str, str]:
    files = dict(rig.a)
    rego = next(name for name in files if name.endswith(".rego"))
    files[rego] += "\n# changed\n"
    return files


async def test_a_shadow_with_its_own_rego_gets_one_worker_stopped_when_it_is_cleared(
        api: tuple[PolicyApi, Rig], monkeypatch: pytest.MonkeyPatch) -> None:
    """Rego other than the active version's is evaluated by a pool of its own, one worker, ready before
    the shadow is set, and stopped once the shadow is cleared."""
    monkeypatch.setattr(reloader_module, "RETIRE_AFTER_S", 0.0)
    policy, rig = api
    files = _other_rego(rig)
    vid = policy_set.content_id(files)  # stored only: never active, no workers of its own yet
    rig.store.put(PolicyVersion(vid, "pv-other", 1.0, "ops", "other rego", files))
    status, body = await _request(policy, "POST", "/policy/shadow", b'{"version": "%s"}' % vid.encode())
    assert (status, body["status"]) == (200, "shadow_set") and rig.active.shadow is not None
    rego = rig.active.shadow[1].rego
    assert rego is not None and rego is not rig.active.current.rego
    pool = rego.workers()
    try:
        assert pool.ready and pool.settings.size == reloader_module.SHADOW_WORKERS
        assert (await _request(policy, "GET", "/policy"))[1]["shadow"]["rego_workers"] == "ready"
        assert (await _request(policy, "DELETE", "/policy/shadow"))[0] == 200
        for _ in range(500):  # retired after the (patched) grace period
            if not pool.ready:
                break
            await anyio.sleep(0.01)
        assert not pool.ready and rig.active.shadow is None
    finally:
        await pool.aclose()


async def test_an_apply_with_other_rego_keeps_the_shadow(api: tuple[PolicyApi, Rig]) -> None:
    """A shadow sharing the active version's Rego keeps those workers when an apply brings other Rego."""
    rig = api[1]
    applied = await rig.reloader.apply(rig.b, "ops", "b")
    await rig.reloader.rollback(None, "ops", "back")
    assert (await rig.reloader.set_shadow(applied["version"], "ops"))["status"] == "shadow_set"
    shared = rig.active.shadow[1].rego if rig.active.shadow else None
    assert shared is rig.active.current.rego
    no_rego = {k: v for k, v in rig.b.items() if not k.endswith(".rego")}
    assert (await rig.reloader.apply(no_rego, "ops", "no rego"))["status"] == "applied"
    assert rig.active.shadow is not None and rig.active.shadow[0] == applied["version"]
    assert rig.active.shadow[1].rego is shared and rig.active.current.rego is None
    assert rig.reloader._in_use(shared)


@pytest.mark.parametrize("argv", [["policy", "shadow"], ["policy", "shadow", "ps-1", "--off"]])
def test_the_command_wants_a_version_or_off(argv: list[str]) -> None:
    result = CliRunner().invoke(app, [*argv, "--token", "t", "--admin-url", "http://127.0.0.1:1"])
    assert result.exit_code == 2 and "give a VERSION or --off" in result.output


def test_shadow_results_are_counted_under_a_closed_label_set() -> None:
    metrics = GatewayMetrics()
    for result in ("agree", "agree", "disagree", "error", "x" * 500):
        metrics.shadow_version(result)
    assert sorted((labels["result"], value) for labels, value in samples(metrics, "portcullis_shadow_version_total")) \
        == [("agree", 2.0), ("disagree", 1.0), ("error", 2.0)]
