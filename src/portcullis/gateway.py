"""Wires a loaded deployment into a running gateway: catalog, upstreams, pipeline, transport.

This module only assembles parts; each part's behaviour lives in its own module. Clocks and the
environment are injected so that tests control them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from portcullis.catalog import Catalog
from portcullis.config.loader import Deployment
from portcullis.config.secrets import resolve_secret
from portcullis.errors import ConfigError, Problem
from portcullis.pipeline.chain import build_pipeline
from portcullis.transport.app import GatewayApp
from portcullis.transport.origin_guard import OriginGuard
from portcullis.transport.protocol import Dispatcher
from portcullis.transport.session_token import SessionSealer, decode_keys
from portcullis.upstream.registry import UpstreamRegistry

log = logging.getLogger("portcullis.gateway")


@dataclass(frozen=True, slots=True)
class Gateway:
    deployment: Deployment
    catalog: Catalog
    upstreams: UpstreamRegistry
    app: GatewayApp


def _session_keys(deployment: Deployment, environ: Mapping[str, str]) -> list[bytes]:
    ref = deployment.gateway.sessions.key_ref
    if ref is None:
        log.warning("no sessions.key_ref configured: 2025-era sessions use a random per-process key "
                    "and will not survive a restart or span replicas")
        return [os.urandom(32)]
    try:
        return decode_keys(resolve_secret(ref))
    except ValueError as exc:
        raise ConfigError([Problem(deployment.root / "gateway.yaml", None, f"sessions.key_ref: {exc}")]) from None


def build_gateway(deployment: Deployment, *, environ: Mapping[str, str] | None = None,
                  clock: Callable[[], float] = time.time, **upstream_timing: float) -> Gateway:
    """Assemble every part of the gateway for ``deployment``; nothing is started yet."""
    env = dict(os.environ if environ is None else environ)
    cfg = deployment.gateway
    catalog = Catalog(deployment)
    upstreams = UpstreamRegistry.from_config(cfg, catalog.update_service, env, **upstream_timing)
    pipeline = build_pipeline(catalog, upstreams, default_timeout_s=cfg.limits.call_timeout_s)
    sealer = SessionSealer(_session_keys(deployment, env), ttl_s=cfg.sessions.ttl_s, clock=clock)

    def readiness() -> tuple[bool, dict[str, Any]]:
        services = {h.name: ("connected" if h.connected else "down") for h in upstreams.handles()}
        ready = all(h.ready.is_set() for h in upstreams.handles())
        return ready, {"services": services}

    app = GatewayApp(dispatcher=Dispatcher(catalog, pipeline), sealer=sealer,
                     guard=OriginGuard(cfg.listen.allowed_hosts, cfg.listen.allowed_origins),
                     max_body_bytes=cfg.limits.max_body_bytes, max_json_depth=cfg.limits.max_json_depth,
                     background=upstreams.run, readiness=readiness)
    return Gateway(deployment, catalog, upstreams, app)
