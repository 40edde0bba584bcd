"""Builds the gateway's policy reloader (keeps the composition root short)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from portcullis.catalog import Catalog
from portcullis.config.loader import Deployment
from portcullis.errors import ConfigError, Problem, UpstreamUnavailable
from portcullis.policy.active import ActivePolicy
from portcullis.policy.engine import PolicyEngine
from portcullis.policy.rego_pool import PoolSettings
from portcullis.policy.rego_probe import EVAL_FLOOR_S, ProbeLimits
from portcullis.policy.reloader import PolicyReloader, ReloadSettings
from portcullis.policy.versions import (
    VERSIONS_FILE,
    PolicyVersionStore,
    SqlitePolicyVersionStore,
    VersionStoreUnavailable,
)
from portcullis.surface import SurfaceCatalog
from portcullis.surface_watch import SurfaceWatch
from portcullis.upstream.registry import UpstreamRegistry

SCRATCH_DIR = "policy-scratch"


def build_reloader(deployment: Deployment, active: ActivePolicy, state_dir: Path, pool: PoolSettings,
                   audit: Callable[[Mapping[str, Any]], Awaitable[None]],
                   clock: Callable[[], float] = time.time,
                   on_commit: Callable[[Deployment], None] | None = None,
                   companion: tuple[ActivePolicy, Callable[[PolicyEngine, Deployment], PolicyEngine]] | None = None,
                   store: PolicyVersionStore | None = None) -> PolicyReloader:
    """The reloader over ``store`` (default: the versions file in ``state_dir``); ConfigError when that cannot
    be opened."""
    authz = deployment.gateway.authorization
    if store is None:
        try:
            store = SqlitePolicyVersionStore(state_dir / VERSIONS_FILE)
        except VersionStoreUnavailable as exc:
            raise ConfigError([Problem(deployment.root / "gateway.yaml", None, f"policy versions: {exc}")]) from None
    try:
        gateway_yaml = (deployment.root / "gateway.yaml").read_bytes()
    except OSError:
        gateway_yaml = b""  # every reload is then refused (the set does not load); the start version serves
    budget_s = authz.rego_evaluation.budget_ms / 1000
    probe = ProbeLimits(eval_cpu_s=max(budget_s, EVAL_FLOOR_S), memory_bytes=pool.memory_bytes)
    settings = ReloadSettings(root=deployment.root, gateway_yaml=gateway_yaml, scratch=state_dir / SCRATCH_DIR,
                              rego_dir=authz.rego_dir, environment=authz.environment,
                              rego_budget_s=budget_s, pool=pool, probe=probe)
    return PolicyReloader(active, store, settings, audit, clock, on_commit, companion)


def manifest_adopter(catalog: Catalog, upstreams: UpstreamRegistry, view_changed: Sequence[Callable[[str], None]],
                     surface: tuple[SurfaceCatalog, SurfaceWatch] | None = None) -> Callable[[Deployment], None]:
    """The reloader's commit hook: the catalogs serve the new version's manifests. Each service with a
    new or changed tool announces a change (its calls are held until a fresh listing is checked); each
    with a new or re-pinned resource or prompt is re-listed at once (its reads wait for that verdict);
    callers are told when a list changed. Synchronous: one step with the engines' swap."""

    def adopt(deployment: Deployment) -> None:
        fresh = None if surface is None else SurfaceCatalog(deployment)  # first: it changes nothing if it fails
        before = catalog.listing()
        for service in sorted(catalog.adopt(deployment)):
            with contextlib.suppress(UpstreamUnavailable):  # the set loaded against the same gateway.yaml
                upstreams.get(service).tools_changed()
        changed = {"tools"} if catalog.listing() != before else set()
        if surface is not None and fresh is not None:
            entries, watch = surface
            views = entries.views()
            watch.adopt(entries.adopt(fresh))
            changed |= {view for view, wires in entries.views().items() if wires != views[view]}
        for view in sorted(changed):
            for tell in view_changed:
                tell(view)

    return adopt
