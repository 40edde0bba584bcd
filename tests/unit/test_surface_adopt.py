"""Resource and prompt manifests follow a policy version: validated whole, adopted in one step with the engines.

``SurfaceCatalog.adopt`` keeps a verdict only where nothing it depends on changed; the reloader, wired as the
gateway wires it (:func:`portcullis.policy.wiring.manifest_adopter`), swaps the surface catalog, the tools'
engine and the surface engine in one step, and refuses a broken resource or prompt manifest whole.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from portcullis.catalog import Catalog
from portcullis.config.loader import Deployment, LoadedSurface, load_deployment
from portcullis.identity.principal import Principal
from portcullis.pinning import surface_hash
from portcullis.policy import policy_set
from portcullis.policy.active import ActivePolicy
from portcullis.policy.engine import PolicyEngine
from portcullis.policy.rego_pool import PoolSettings
from portcullis.policy.reloader import PolicyReloader, ReloadSettings
from portcullis.policy.versions import MemoryPolicyVersionStore
from portcullis.policy.wiring import manifest_adopter
from portcullis.surface import SurfaceCatalog, surface_policies
from portcullis.surface_watch import SurfaceWatch

DEMO = Path(__file__).resolve().parents[2] / "src" / "portcullis" / "demo" / "deployment"
INDEX = "resources/files/handbook-index.yml"
PROMPT = "prompts/files/summarize_file.yml"
INDEX_URI = "files+handbook://index"
BOT = Principal(client_id="bot", auth_method="dev", issuer="dev", issuer_name="dev", agent_id="billing-bot")
NOW = datetime(2026, 1, 5, 12, tzinfo=UTC)


def _live(entry: LoadedSurface) -> dict[str, Any]:
    m = entry.manifest
    field = {"resource": "uri", "template": "uriTemplate", "prompt": "name"}[entry.kind]
    upstream = getattr(m, "uri", None) or getattr(m, "uri_template", None) or m.name
    return {field: upstream, "name": m.name, "description": "live"}


def _lists(dep: Deployment) -> dict[str, list[dict[str, Any]]]:
    lists: dict[str, list[dict[str, Any]]] = {"resource": [], "template": [], "prompt": []}
    for entry in dep.surface:
        lists[entry.kind].append(_live(entry))
    return lists


def _pinned(dep: Deployment, **update: Any) -> Deployment:
    """``dep`` with every entry pinned to its synthetic live definition (and ``update`` on the index)."""
    surface = []
    for entry in dep.surface:
        manifest = entry.manifest.model_copy(update={"pin": surface_hash(entry.kind, _live(entry))})
        if entry.exposed == INDEX_URI:
            manifest = manifest.model_copy(update=update)
        surface.append(dataclasses.replace(entry, manifest=manifest))
    return dataclasses.replace(dep, surface=tuple(surface))


@pytest.fixture(scope="module")
def demo() -> Deployment:
    return load_deployment(DEMO)


def _serving(dep: Deployment) -> SurfaceCatalog:
    catalog = SurfaceCatalog(dep)
    catalog.update_service("files", _lists(dep), as_of=0)
    assert {catalog.verdict(e) for e in catalog.entries} == {"serving"}
    return catalog


@pytest.mark.parametrize("update", [{"owner": "someone-else@example.com"}, {"description": "Other words."},
                                    {"policy": None}, {"retention_class": "short"}])
def test_a_change_the_verdict_does_not_depend_on_keeps_serving(demo: Deployment, update: dict[str, Any]) -> None:
    catalog = _serving(_pinned(demo))
    assert catalog.adopt(SurfaceCatalog(_pinned(demo, **update))) == frozenset()
    entry, _ = catalog.resolve_uri(INDEX_URI) or (None, "")
    assert entry is not None and catalog.verdict(entry) == "serving"
    for key, value in update.items():  # the new manifest is what a read now sees
        assert getattr(entry.loaded.manifest, key) == value


def test_a_classification_change_is_served_at_once_with_the_new_class(demo: Deployment) -> None:
    base = _pinned(demo)
    (index,) = [e for e in base.surface if e.exposed == INDEX_URI]
    classified = index.manifest.classification.model_copy(update={"output": "Confidential"})
    catalog = _serving(base)
    assert catalog.adopt(SurfaceCatalog(_pinned(demo, classification=classified))) == frozenset()
    entry, _ = catalog.resolve_uri(INDEX_URI) or (None, "")
    assert entry is not None and str(entry.loaded.manifest.classification.output) == "Confidential"
    assert catalog.verdict(entry) == "serving"


def test_a_new_pin_waits_for_a_checked_listing_and_is_judged_by_it(demo: Deployment) -> None:
    catalog = _serving(_pinned(demo))
    repinned = _pinned(demo, pin="sha256:" + "0" * 64)
    assert catalog.adopt(SurfaceCatalog(repinned)) == frozenset({"files"})
    entry, _ = catalog.resolve_uri(INDEX_URI) or (None, "")
    assert entry is not None and catalog.verdict(entry) == "verifying"  # reads wait, never served unchecked
    catalog.update_service("files", _lists(repinned), as_of=catalog.announced("files"))
    assert catalog.verdict(entry) == "quarantined"  # the live definition is not the new pin
    assert {catalog.verdict(e) for e in catalog.entries if e is not entry} == {"serving"}


def test_a_removed_entry_is_unknown_and_one_added_back_waits(demo: Deployment) -> None:
    base = _pinned(demo)
    catalog = _serving(base)
    without = dataclasses.replace(base, surface=tuple(e for e in base.surface if e.kind != "prompt"))
    before = catalog.views()
    assert catalog.adopt(SurfaceCatalog(without)) == frozenset()
    assert catalog.prompt("files.summarize_file") is None and catalog.views()["prompts"] == ()
    assert catalog.views()["resources"] == before["resources"]
    assert catalog.adopt(SurfaceCatalog(base)) == frozenset({"files"})
    prompt = catalog.prompt("files.summarize_file")
    assert prompt is not None and catalog.verdict(prompt) == "verifying"


class _Upstreams:
    def get(self, service: str) -> Any:
        raise AssertionError("no tool changed: no service is asked to re-list its tools")


class Rig:
    """The reloader wired as the gateway wires it, over a copy of the demo deployment."""

    def __init__(self, root: Path, scratch: Path) -> None:
        deployment = load_deployment(root)
        self.engine = PolicyEngine.from_deployment(deployment, environment="production", rego_budget_s=10)
        self.active = ActivePolicy(self.engine)
        self.surface = SurfaceCatalog(deployment)
        self.surface_engine = ActivePolicy(self.build(self.engine, deployment), "surface")
        self.watch = SurfaceWatch(self.surface, _Upstreams(), refresh_s={})  # type: ignore[arg-type]
        self.views: list[str] = []
        adopt = manifest_adopter(Catalog(deployment), _Upstreams(), [self.views.append],  # type: ignore[arg-type]
                                 (self.surface, self.watch))
        self.seen_at_commit: list[tuple[bool, bool]] = []

        def on_commit(version: Deployment) -> None:  # what a read would see between the hook and the swaps
            self.seen_at_commit.append((self.active.current is self.engine, self.surface_engine.current is self.start))
            adopt(version)

        self.start = self.surface_engine.current
        settings = ReloadSettings(root=root, gateway_yaml=(root / "gateway.yaml").read_bytes(), scratch=scratch,
                                  rego_dir="policy", environment="production", rego_budget_s=10, pool=PoolSettings())
        self.reloader = PolicyReloader(self.active, MemoryPolicyVersionStore(), settings, self.audit,
                                       clock=lambda: 1.0, on_commit=on_commit,
                                       companion=(self.surface_engine, self.build))
        self.a = policy_set.collect(root)

    @staticmethod
    def build(tools: PolicyEngine, version: Deployment) -> PolicyEngine:
        return PolicyEngine.build(surface_policies(SurfaceCatalog(version)), tools.rego, environment="production")

    async def audit(self, fields: Mapping[str, Any]) -> None:
        pass

    def bot_may_read(self) -> bool:
        found = self.surface.resolve_uri(INDEX_URI)
        return found is not None and self.surface_engine.current.may_call(found[0].exposed, BOT, now=NOW)


@pytest.fixture
async def rig(tmp_path: Path) -> Rig:
    root = Path(shutil.copytree(DEMO, tmp_path / "deployment"))
    rig = Rig(root, tmp_path / "scratch")
    await rig.reloader.start()
    return rig


async def test_a_resource_rule_change_is_adopted_with_the_engines_in_one_step(rig: Rig) -> None:
    assert rig.bot_may_read()
    b = {**rig.a, INDEX: rig.a[INDEX].replace('"issuer:dev/agent:billing-*", ', "")}
    applied = await rig.reloader.apply(b, "ops", "billing bots off the handbook index")
    assert applied["status"] == "applied" and applied["version"] == policy_set.content_id(b)
    assert rig.seen_at_commit == [(True, True)]  # the hook ran right before the swaps...
    assert rig.active.current is not rig.engine and rig.surface_engine.current is not rig.start  # ...then both
    assert not rig.bot_may_read()
    (index, _) = rig.surface.resolve_uri(INDEX_URI) or (None, "")
    assert index is not None and "billing-*" not in str(index.loaded.manifest.policy)
    back = await rig.reloader.rollback(None, "ops", "undo")
    assert back["status"] == "rolled_back" and rig.bot_may_read()
    assert rig.surface_engine.current.version == rig.start.version  # the same manifests, the same version


async def test_removing_a_prompt_tells_callers_the_prompt_list_changed(rig: Rig) -> None:
    # its fixtures go too: a fixture that names a removed prompt is a broken test, and refuses the set
    without = {k: v for k, v in rig.a.items() if k != PROMPT and not k.startswith("policy/fixtures/")}
    assert (await rig.reloader.apply(without, "ops", "no prompt"))["status"] == "applied"
    assert rig.surface.prompt("files.summarize_file") is None and rig.views == ["prompts"]
    assert (await rig.reloader.apply(rig.a, "ops", "prompt back"))["status"] == "applied"
    prompt = rig.surface.prompt("files.summarize_file")
    assert prompt is not None and rig.surface.verdict(prompt) == "verifying"  # re-listed before it serves
    assert rig.watch._wake["files"].is_set()  # ... at once: the watch's loop for the service is woken
    assert rig.views == ["prompts", "prompts"]


BROKEN = {
    "unknown_service": (INDEX, lambda text: text.replace("service: files", "service: nowhere")),
    "schema": (INDEX, lambda text: text.replace("owner:", "proprietor:")),
    "yaml": (PROMPT, lambda text: text + "\narguments: [unclosed\n"),
    "template_operator": ("resources/files/handbook-page.yml",
                          lambda text: text.replace("{topic}", "{+topic}")),
    "duplicate_uri": ("resources/files/copy.yml", None),
}


@pytest.mark.parametrize("kind", list(BROKEN))
async def test_a_broken_resource_or_prompt_manifest_is_refused_whole(rig: Rig, kind: str) -> None:
    path, change = BROKEN[kind]
    files = {**rig.a, INDEX: rig.a[INDEX].replace('"issuer:dev/agent:billing-*", ', "")}  # a good change rides along
    files[path] = rig.a[INDEX] if change is None else change(files[path])
    entries, version = rig.surface.entries, rig.reloader.version
    refused = await rig.reloader.apply(files, "ops", f"broken {kind}")
    assert refused["status"] == "refused" and refused["reason"] == policy_set.LOAD, refused
    assert rig.reloader.status()["status"] == "degraded" and rig.reloader.status()["reason"] == policy_set.LOAD
    assert rig.reloader.version == version and rig.seen_at_commit == []
    assert rig.surface.entries is entries and rig.surface_engine.current is rig.start and rig.bot_may_read()
    assert all(str(rig.reloader._settings.scratch) not in p for p in refused["problems"])


async def test_a_surface_engine_that_cannot_be_built_refuses_the_set(rig: Rig) -> None:
    def failing(tools: PolicyEngine, version: Deployment) -> PolicyEngine:
        raise RuntimeError("boom")

    rig.reloader._companion = (rig.surface_engine, failing)
    files = {**rig.a, INDEX: rig.a[INDEX].replace('"issuer:dev/agent:billing-*", ', "")}
    refused = await rig.reloader.apply(files, "ops", "x")
    assert refused["status"] == "refused" and refused["reason"] == "policy set could not be validated"
    assert rig.seen_at_commit == [] and rig.surface_engine.current is rig.start and rig.active.current is rig.engine
