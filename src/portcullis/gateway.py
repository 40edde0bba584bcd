"""Wires a loaded deployment into a running gateway: identity, catalog, upstreams, pipeline, transport.

This module only assembles parts; each part's behaviour lives in its own module. Clocks and the
environment are injected so that tests control them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from portcullis import build_info
from portcullis.approvals.api import ApprovalApi
from portcullis.approvals.notify import LinkSigner, WebhookNotifier, load_link_key
from portcullis.approvals.recent_calls import audit_recent_calls
from portcullis.approvals.service import ApprovalService
from portcullis.audit.attempts import AttemptRecorder, NullAttemptHooks
from portcullis.audit.checkpoint import Checkpointer, CheckpointPolicy
from portcullis.audit.errors import AuditUnavailable
from portcullis.audit.keys import AuditKeys
from portcullis.audit.note import checkpoint_export
from portcullis.audit.pg_store import PostgresAuditStore, prepare_postgres_audit
from portcullis.audit.reader import open_sqlite_reader, postgres_reader
from portcullis.audit.record import Checkpoint
from portcullis.audit.retention import prune_audit
from portcullis.audit.siem.config import build_queue
from portcullis.audit.store import SqliteAuditStore
from portcullis.audit.witness.client import build_witness_queue
from portcullis.audit.writer import AuditWriter
from portcullis.catalog import Catalog
from portcullis.config.loader import Deployment, cache_served
from portcullis.config.model import Sink
from portcullis.config.secret_store import open_secret_store
from portcullis.config.secrets import resolve_secret
from portcullis.console.app import ConsoleApp
from portcullis.console.build import build_console
from portcullis.console.build import build_store as build_console_store
from portcullis.console.replay import ChildReplayer
from portcullis.console.services import ConsoleServices
from portcullis.definition_watch import DefinitionWatch
from portcullis.errors import ConfigError, Problem
from portcullis.governance.sinks import logs_hash_key, services_withholding_logs
from portcullis.governance.sinks import sink_allowed as governance_sink_allowed
from portcullis.identity.authenticate import Authenticator
from portcullis.identity.certs import CertIdentityMapper
from portcullis.identity.dev_issuer import dev_issuer_config
from portcullis.identity.issuers import IssuerConfig
from portcullis.identity.jwks import JwksCache
from portcullis.identity.jwt_verify import BearerVerifier
from portcullis.identity.minting import KeyRing, TokenMinter, gateway_issuer, service_audience
from portcullis.identity.principal import Principal, principal_key
from portcullis.identity.state_dir import resolve_state_dir
from portcullis.kill.api import KillSwitchApi
from portcullis.kill.containment import KillSwitchContainment
from portcullis.monitoring.monitor import Monitor
from portcullis.observability.metrics import GatewayMetrics
from portcullis.observability.multiprocess import SharedMetrics
from portcullis.observability.tracing import Tracing
from portcullis.pipeline.auditing import CallAuditor
from portcullis.pipeline.chain import (
    PipelineParts,
    ReadParts,
    build_completion_pipeline,
    build_pipeline,
    build_read_pipeline,
)
from portcullis.pipeline.client_input import ClientInputRelay
from portcullis.pipeline.hooks import Hooks, NullHooks
from portcullis.pipeline.stages.content import OutputFilter
from portcullis.pipeline.stages.content import hash_key as content_hash_key
from portcullis.policy.active import ActivePolicy
from portcullis.policy.engine import PolicyEngine, tool_policies
from portcullis.policy.rego_pool import PoolSettings
from portcullis.policy.wiring import build_reloader, manifest_adopter
from portcullis.request_state import RequestStateSealer
from portcullis.service.env import gateway_env
from portcullis.state.interface import StateUnavailable
from portcullis.state.response_cache import MemoryResponseCache
from portcullis.storage.build import build_stores
from portcullis.storage.redis_build import build_notice_bus, build_state_store
from portcullis.subscriptions import SubscriptionBounds, SubscriptionHub
from portcullis.surface import GatewaySurface, SurfaceCatalog, surface_policies
from portcullis.surface_events import RegistrySubscriptions, event_router, make_resolver, make_settler
from portcullis.surface_watch import SurfaceWatch
from portcullis.transport.admin import AdminApp, admin_server
from portcullis.transport.app import GatewayApp
from portcullis.transport.http_guard import ClientConnections, HttpLimits, guarded_protocol
from portcullis.transport.origin_guard import OriginGuard
from portcullis.transport.pins_api import PinsApi
from portcullis.transport.policy_api import PolicyApi
from portcullis.transport.protocol import Dispatcher
from portcullis.transport.push import PushRegistry
from portcullis.transport.session_token import SessionSealer, decode_keys
from portcullis.transport.streaming import LogLevels
from portcullis.upstream.build_identity import IDENTITY_KIND
from portcullis.upstream.confinement import SPAWN_KIND
from portcullis.upstream.registry import UpstreamRegistry
from portcullis.upstream.secret_rotation import rotation_recycler

log = logging.getLogger("portcullis.gateway")
COUNTERS_FILE = "counters.sqlite3"
_PEM = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----.+?-----END [A-Z ]*PRIVATE KEY-----", re.S)


@dataclass(frozen=True, slots=True)
class Gateway:
    deployment: Deployment
    catalog: Catalog
    upstreams: UpstreamRegistry
    app: GatewayApp
    resource: str
    state_dir: Path
    minter: TokenMinter
    http_limits: HttpLimits
    connections: ClientConnections  # the MCP listener's per-client counts and refusals (/metrics)

    def http_protocol(self, base: type[HttpToolsProtocol] = HttpToolsProtocol) -> type[HttpToolsProtocol]:
        """The uvicorn protocol class for the MCP listener: ``base`` with the HTTP-layer bounds."""
        return guarded_protocol(self.http_limits, self.connections, base)


def _problem(deployment: Deployment, message: str) -> ConfigError:
    return ConfigError([Problem(deployment.root / "gateway.yaml", None, message)])


class _KnownTools:
    """The catalog's exposed tool names as a live container (for bounded metric labels)."""

    __slots__ = ("_catalog",)

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._catalog.lookup(name) is not None


def _session_keys(deployment: Deployment) -> list[bytes]:
    ref = deployment.gateway.sessions.key_ref
    if ref is None:
        log.warning("no sessions.key_ref configured: 2025-era sessions use a random per-process key "
                    "and will not survive a restart or span replicas")
        return [os.urandom(32)]
    try:
        return decode_keys(resolve_secret(ref))
    except ValueError as exc:
        raise _problem(deployment, f"sessions.key_ref: {exc}") from None


def _keyring(deployment: Deployment, clock: Callable[[], float]) -> KeyRing:
    cfg = deployment.gateway.upstream_tokens
    if cfg.keys_ref is None:
        return KeyRing.generate(cfg.algorithm, clock=clock, upcoming=cfg.prepublished_keys)
    pems = _PEM.findall(resolve_secret(cfg.keys_ref).encode())
    if not pems:
        raise _problem(deployment, "upstream_tokens.keys_ref: no PEM private key found")
    return KeyRing.from_pem(pems, clock=clock)


def _console(deployment: Deployment, issuers: list[IssuerConfig], caches: Mapping[str, JwksCache],
             services: ConsoleServices, clock: Callable[[], float]) -> ConsoleApp | None:
    """The web console (``console.enabled``), its sessions in Redis when ``storage.redis`` is set."""
    cfg = deployment.gateway
    if not cfg.console.enabled or cfg.identity is None:
        return None
    if cfg.console.dev_login:
        log.warning("console.dev_login: the web console offers a DEVELOPMENT login (anyone who reaches it picks "
                    "their own identity). Never use this in production.")
    origin = deployment.root / "gateway.yaml"
    return build_console(cfg.console, services, store=build_console_store(cfg.storage, origin=origin),
                         issuers=issuers, caches=caches, claim_map=cfg.identity.claims, origin=origin, clock=clock)


def _service_of(catalog: Catalog) -> Callable[[str], str | None]:
    def service_of(name: str) -> str | None:
        route = catalog.lookup(name)
        return None if route is None else route.service
    return service_of


def default_resource(deployment: Deployment, host: str | None, port: int | None) -> str:
    listen = deployment.gateway.listen
    scheme = "https" if listen.tls else "http"
    host = host or listen.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{listen.port if port is None else port}/mcp"


def build_gateway(deployment: Deployment, *, host: str | None = None, port: int | None = None,
                  environ: Mapping[str, str] | None = None, clock: Callable[[], float] = time.time,
                  admin_port: int | None = None, admin_sockets: list[socket.socket] | None = None,
                  metrics_dir: Path | None = None, ready_gate_s: float = 0.0, **upstream_timing: float) -> Gateway:
    """Assemble every part of the gateway for ``deployment``; nothing is started yet.

    ``admin_sockets``: the admin listener serves these (bound by a ``--workers`` supervisor) instead of
    binding ``admin.port`` itself. ``metrics_dir``: a worker of such a supervisor: its metrics go to this
    shared directory too and ``/metrics`` reports every worker (observability/multiprocess.py). ``ready_gate_s``:
    such a worker accepts MCP connections only once ready, or after this many seconds."""
    env = dict(os.environ if environ is None else environ)
    cfg = deployment.gateway
    ident = cfg.identity
    if ident is None:
        raise _problem(deployment, "identity: missing; configure how callers authenticate (issuers, mtls, or "
                       "allow_insecure_dev_issuer for local development)")
    state_dir = resolve_state_dir(cfg.state_dir, env)
    resource = ident.resource or default_resource(deployment, host, port)
    # every secret:// reference resolved now (fail closed); vault ones then come from this store, kept fresh
    secret_store = open_secret_store(cfg, deployment.root)
    # the control-plane stores: embedded SQLite files, or the cluster's PostgreSQL (schema checked); the kill
    # switches are read whole first: unreadable means no start (fail closed) (storage/build.py)
    stores = build_stores(deployment, state_dir, env, clock)
    kills = stores.kills

    # identity: issuers (plus the development issuer when explicitly allowed)
    issuers = list(ident.issuers)
    if ident.allow_insecure_dev_issuer:
        log.warning("allow_insecure_dev_issuer: trusting the LOCAL DEVELOPMENT token issuer; anyone who can "
                    "read the state directory can mint tokens. Never use this in production.",
                    extra={"fields": {"state_dir": str(state_dir)}})
        issuers.append(dev_issuer_config(state_dir, resource))
    if ident.allow_insecure_anonymous:
        log.warning("allow_insecure_anonymous: requests WITHOUT credentials are accepted as 'anonymous'")
    for issuer in issuers:
        if issuer.audience != resource:
            raise _problem(deployment, f"identity.issuers[{issuer.name}].audience must equal the gateway's "
                           f"resource URI {resource}")
    caches = {issuer.name: JwksCache(issuer, clock=clock) for issuer in issuers}
    verifier = BearerVerifier(issuers, caches, clock=clock) if issuers else None
    revocations = stores.revocations
    revocations.load()
    metadata_url = resource.replace("/mcp", "/.well-known/oauth-protected-resource/mcp", 1)
    authenticator = Authenticator(
        verifier=verifier, claim_map=ident.claims, required_scopes=ident.required_scopes,
        revocations=revocations, cert_mapper=CertIdentityMapper(ident.mtls) if ident.mtls else None,
        allow_anonymous=ident.allow_insecure_anonymous, resource_metadata_url=metadata_url,
        issuer_names={i.name: i.issuer for i in issuers},
        dev_issuer_name="dev" if ident.allow_insecure_dev_issuer else None,
        person_signals={i.name: i.person for i in issuers if i.person is not None})
    prm = {"resource": resource, "authorization_servers": [i.issuer for i in issuers],
           "scopes_supported": list(ident.required_scopes), "bearer_methods_supported": ["header"]}

    # no token passthrough: each upstream call carries a token the gateway mints for that service
    keyring = _keyring(deployment, clock)
    minter = TokenMinter(keyring, issuer=gateway_issuer(cfg.upstream_tokens.gateway_name),
                         ttl_s=cfg.upstream_tokens.ttl_s, clock=clock)

    spawned_with: dict[str, frozenset[str]] = {}  # service -> key ids its running child was given

    def child_env(service: str) -> dict[str, str]:
        jwks = keyring.jwks()
        spawned_with[service] = frozenset(key["kid"] for key in jwks["keys"])
        return gateway_env(jwks, minter.issuer, service_audience(service), policy_root=deployment.root.resolve(),
                           environment=cfg.authorization.environment)

    # audit keys: loaded here, before the services, because a service's stderr key is derived from them
    audit_keys = AuditKeys.load_or_create(state_dir)
    catalog = Catalog(deployment)
    watch = DefinitionWatch(catalog)  # the poisoning scanner on every new or changed live definition, off the loop
    view_changed: list[Callable[[str], None]] = []  # the subscription hub's list_changed, once built (below)
    service_events: list[Callable[[str, str, Any], None]] = []  # resource/prompt list changes, resource updates
    connecting: list[Callable[[str], None]] = []  # the surface watch's, once built

    async def on_tools(service: str, live_tools: list[dict[str, Any]], as_of: int) -> None:
        for hold in connecting:
            hold(service)  # a connection opening: its resources and prompts are re-checked on it first
        before = catalog.listing()
        await watch.on_tools(service, live_tools, as_of)
        if catalog.listing() != before:  # the exposed tools changed (a quarantine, a release): callers are told
            for tell in view_changed:
                tell("tools")

    def on_event(service: str, method: str, params: Any) -> None:
        for route in service_events:
            route(service, method, params)

    async def record_spawn(fields: Mapping[str, Any], kind: str = SPAWN_KIND) -> None:
        """Each stdio spawn and its confinement, durable before the child starts, and each connection's
        service identity, durable before it serves (docs/audit.md)."""
        await audit_writer.record(kind, f"{'spawn' if kind == SPAWN_KIND else 'identity'}-{uuid.uuid4().hex}", fields)

    upstreams = UpstreamRegistry.from_config(cfg, on_tools, env, on_change=catalog.note_change, on_event=on_event,
                                             child_env=child_env, gateway_keys=minter, on_spawn=record_spawn,
                                             on_identity=lambda fields: record_spawn(fields, IDENTITY_KIND),
                                             stderr_withhold_keys=dict.fromkeys(
                                                 services_withholding_logs((m.manifest for m in deployment.manifests),
                                                                           cfg.governance.sinks),
                                                 logs_hash_key(audit_keys.hmac_key)),
                                             **upstream_timing)
    secret_store.subscribe(rotation_recycler(upstreams, cfg.services))  # a child's rotated secret: a new spawn

    # authorization: the policy engine is built (and Rego compiled) once, here, per policy version
    authz = cfg.authorization
    rego_dir = None if authz.rego_dir is None else deployment.root / authz.rego_dir
    evaluation = authz.rego_evaluation
    if rego_dir is not None and any(rego_dir.glob("*.rego")):
        engine = PolicyEngine.from_deployment(deployment, environment=authz.environment, rego_dir=rego_dir,
                                              rego_budget_s=evaluation.budget_ms / 1000)
    else:
        engine = PolicyEngine.build(tool_policies(deployment.manifests), None, environment=authz.environment)
    # Rego never runs on the event loop: decision-cache misses go to worker processes, each
    # evaluation terminated at its CPU budget (policy/rego_pool.py)
    pool_settings = PoolSettings(
        size=evaluation.workers, memory_bytes=evaluation.memory_mb * 1024 * 1024,
        max_wait_s=evaluation.max_wait_ms / 1000, wall_s=max(1.0, 50 * evaluation.budget_ms / 1000))
    rego_workers = None if engine.rego is None else engine.rego.workers(pool_settings)
    active = ActivePolicy(engine)  # hot reload swaps the engine here; each call reads it once (policy/active.py)
    for loaded in deployment.manifests:
        if loaded.manifest.policy is None:
            log.warning("tool has no policy: it is denied to every caller",
                        extra={"fields": {"tool": loaded.exposed_name}})
    log.info("policy loaded", extra={"fields": {"policy_version": engine.version,
                                                 "environment": authz.environment}})
    # limits: windows written through to a file in the state directory, so "per day" survives restarts;
    # with storage.redis, in Redis shared by every replica (docs/cluster.md), failures counted by the metric
    try:
        state = build_state_store(cfg.storage, origin=deployment.root / "gateway.yaml",
                                  sqlite_path=Path(env.get("PORTCULLIS_COUNTERS_PATH") or state_dir / COUNTERS_FILE),
                                  on_error=lambda op: metrics.state_store_error("redis", op))
    except StateUnavailable as exc:
        raise _problem(deployment, f"limits: {exc.detail}") from None

    # audit: the chain's store is opened here (synchronously, at start) and its writer runs in
    # the background task group; records are signed with a key kept in the state directory. In cluster
    # mode every replica appends to one chain in PostgreSQL (same signing key; its pool opens in the loop).
    audit_path = Path(env.get("PORTCULLIS_AUDIT_PATH") or cfg.audit.path or state_dir / "audit.sqlite3")
    audit_store: Any
    try:
        if cfg.storage.postgresql is not None:
            audit_store = prepare_postgres_audit(cfg.storage.postgresql, origin=deployment.root / "gateway.yaml",
                                                 key_id=audit_keys.key_id)
        else:
            audit_store = SqliteAuditStore.open_sync(audit_path, durability=cfg.audit.durability)
    except AuditUnavailable as exc:
        raise _problem(deployment, f"audit: {exc.detail}") from None
    siem = None if cfg.audit.siem is None else build_queue(
        cfg.audit.siem, base_dir=deployment.root, current=secret_store.current,
        resolve_secret=lambda ref: resolve_secret(ref, origin=deployment.root / "gateway.yaml").encode())
    witness = None if cfg.audit.witness is None else build_witness_queue(
        cfg.audit.witness, base_dir=deployment.root, current=secret_store.current,
        resolve_secret=lambda ref: resolve_secret(ref, origin=deployment.root / "gateway.yaml").encode())
    # every checkpoint also leaves the machine: to each SIEM exporter and the witness, as a C2SP signed note
    def export_checkpoint(checkpoint: Checkpoint) -> None:
        exported = checkpoint_export(audit_keys.signing_key, checkpoint)
        for queue in (siem, witness):
            if queue is not None:
                queue.offer(exported)

    checkpointer = Checkpointer(audit_store, audit_keys.signing_key, clock=clock, policy=CheckpointPolicy(
        every_records=cfg.audit.checkpoint_every_records, every_s=cfg.audit.checkpoint_every_s),
        on_checkpoint=None if siem is None and witness is None else export_checkpoint)
    # every durable record goes to the SIEM from the writer, batch by batch in chain order (audit/writer.py)
    audit_writer = AuditWriter(audit_store, clock=clock, checkpointer=checkpointer,
                               export=None if siem is None else siem.offer)
    # metrics: the pipeline's hooks; tool and rule labels are bounded by the catalog and policy
    metrics = GatewayMetrics(known_tools=_KnownTools(catalog), known_rules=frozenset(engine.rule_ids()),
                             shared=None if metrics_dir is None else SharedMetrics(metrics_dir))
    metrics.set_audit_queue_depth_source(audit_writer.queue_depth)
    watch.on_finding = metrics.definition_finding
    hooks: Hooks = metrics if cfg.observability.metrics.enabled else NullHooks()
    tracing = Tracing.from_config(cfg.observability.tracing, "portcullis-gateway")
    auditor = CallAuditor(audit_writer, audit_key=audit_keys.hmac_key, environment=authz.environment, hooks=hooks,
                          service_version=upstreams.server_version,
                          sinks=cfg.governance.sinks)
    # refused requests (no or a bad credential, a refused Host, body, session...): aggregated
    # attempt records, counted on the request path and written by a background task (audit/attempts.py)
    attempts = AttemptRecorder(audit_writer, audit_key=audit_keys.hmac_key, clock=clock,
                               window_s=cfg.audit.attempts.window_s, max_keys=cfg.audit.attempts.max_keys,
                               hooks=metrics if cfg.observability.metrics.enabled else NullAttemptHooks())
    kills.audit = auditor.kill_switch  # changes are audited from the first refresh on (also those made while down)
    approval_store = stores.approvals  # pending requests survive restarts (and span replicas in cluster mode)
    notifier: WebhookNotifier | None = None
    link_signer: LinkSigner | None = None
    notify_cfg = cfg.approvals.notify
    if notify_cfg is not None:
        try:
            link_signer = LinkSigner(load_link_key(state_dir), notify_cfg.link_base)
            notifier = WebhookNotifier(
                notify_cfg.webhook_url, resolve_secret(notify_cfg.secret_ref, origin=deployment.root / "gateway.yaml"
                                                       ).encode(), link_signer,
                allow_insecure_http=notify_cfg.allow_insecure_http, timeout_s=notify_cfg.timeout_s, clock=clock)
        except (ValueError, OSError) as exc:
            raise _problem(deployment, f"approvals.notify: {exc}") from None
    # approvers see the requester's recent decided calls: read-only reads of the trail (the SQLite file through
    # its own read-only connection, never the writer's; in cluster mode READ ONLY transactions on the PG pool)
    pg_reader = postgres_reader(audit_store) if isinstance(audit_store, PostgresAuditStore) else None
    open_reader = ((lambda: contextlib.nullcontext(pg_reader)) if pg_reader is not None
                   else (lambda: open_sqlite_reader(audit_path)))
    recent_calls = audit_recent_calls(open_reader, clock)
    metrics.set_approvals_source(approval_store.open_counts)
    approvals = ApprovalService(approval_store, cfg.approvals, clock=clock, audit=auditor.approval,
                                notify=None if notifier is None else notifier.offer, links=link_signer,
                                recent_calls=recent_calls, arguments_key=audit_keys.hmac_key)
    # anomaly alerts: observed on the request path in O(1), judged by a background task (docs/alerts.md);
    # a rule's applied containment sets a kill switch; a proposed one is an approval request that sets it once
    # approved (the vote, else the approvals sweep, executes it: docs/alerts.md); registered even with alerts
    # off, so a proposal approved after a restart with alerts disabled still takes effect
    containment = KillSwitchContainment(kills, approvals)
    monitor = None if not cfg.alerts.enabled else Monitor.from_config(
        cfg.alerts, clock=clock, audit=auditor.alert, notify=None if notifier is None else notifier.offer_payload,
        counted=metrics.alert if cfg.observability.metrics.enabled else None,
        containment=containment,
        store=stores.monitor_state)  # baselines survive restarts; opened lazily
    response_cache = None
    if any(m.manifest.cache is not None and cache_served(cfg, m.manifest) for m in deployment.manifests):
        response_cache = MemoryResponseCache(max_entries=cfg.response_cache.max_entries,
                                             max_bytes=cfg.response_cache.max_bytes)
        metrics.set_response_cache_source(response_cache.stats)
    session_keys = _session_keys(deployment)  # also the root of the MRTR requestState key (HKDF, its own info)
    parts = PipelineParts(
        catalog=catalog, upstreams=upstreams, minter=minter, engine=active, auditor=auditor, state=state,
        limit_rules=authz.limits, hooks=hooks, tracing=tracing, approvals=approvals, risk=cfg.approvals.risk,
        content=(OutputFilter(cfg.content, key=content_hash_key(audit_keys.hmac_key)) if cfg.content.enabled
                 else None),
        governance=cfg.governance, environment=authz.environment, clock=clock,
        default_timeout_s=cfg.limits.call_timeout_s, response_cache=response_cache,
        cache_classifications=tuple(str(c) for c in cfg.response_cache.classifications
                                    if governance_sink_allowed(c, Sink.CACHE, cfg.governance.sinks)),
        client_input=ClientInputRelay(RequestStateSealer(session_keys, clock=clock),
                                      lambda service: cfg.services[service].client_requests), kills=kills,
        observe=None if monitor is None else monitor.observe)
    pipeline = build_pipeline(parts)
    # resources and prompts: their own manifests and policy engine (their native rules, the deployment's Rego
    # modules and workers), and the read pipeline declared next to the tools one (docs/mcp-surface.md)
    surface_catalog = SurfaceCatalog(deployment)
    def surface_engine_for(tools: PolicyEngine, version: Deployment) -> PolicyEngine:  # the tools' Rego and workers
        return PolicyEngine.build(surface_policies(SurfaceCatalog(version)), tools.rego, environment=authz.environment)

    surface_engine = ActivePolicy(surface_engine_for(engine, deployment), "surface")  # swapped with the tools' one
    read_parts = ReadParts(surface=surface_catalog, engine=surface_engine)
    surface = GatewaySurface(surface_catalog, surface_engine, upstreams, build_read_pipeline(parts, read_parts), clock,
                             completions=build_completion_pipeline(
                                 parts, read_parts, metrics.completion if cfg.observability.metrics.enabled else None))
    # the surface pin check off the request path, and callers' subscriptions (list changes, resource updates)
    surface_watch = SurfaceWatch(surface_catalog, upstreams,
                                 refresh_s={name: svc.refresh_s for name, svc in cfg.services.items()})
    hub = SubscriptionHub(make_resolver(surface_catalog, surface_engine, clock), RegistrySubscriptions(upstreams),
                          principal_key, bounds=SubscriptionBounds(session_idle_s=float(cfg.sessions.ttl_s)),
                          counted=metrics.subscription_notification
                          if cfg.observability.metrics.enabled else None, settle=make_settler(surface_catalog))
    surface_watch.on_view_changed = hub.list_changed
    surface_watch.on_connected = hub.resubscribe
    view_changed.append(hub.list_changed)
    service_events.append(event_router(surface_watch, hub))
    connecting.append(surface_watch.connecting)
    surface.subscriptions = hub
    surface.contained = lambda service, principal: kills.snapshot.for_read(service, principal, clock()) is not None
    sealer = SessionSealer(session_keys, ttl_s=cfg.sessions.ttl_s, clock=clock)

    async def audit_policy(fields: Mapping[str, Any]) -> None:
        await audit_writer.record("policy_version", f"policy-{uuid.uuid4().hex}", fields)

    reloader = build_reloader(deployment, active, state_dir, pool_settings, audit_policy, clock, store=stores.versions,
                              on_commit=manifest_adopter(catalog, upstreams, view_changed,
                                                         (surface_catalog, surface_watch)),
                              companion=(surface_engine, surface_engine_for))
    reloader.shared = stores.kind == "postgresql"  # the cluster's active version wins at start

    def readiness() -> tuple[bool, dict[str, Any]]:
        services = {h.name: ("connected" if h.connected else "down") for h in upstreams.handles()}
        ready = all(h.ready.is_set() for h in upstreams.handles())
        workers = reloader.workers_ready()  # the active version's Rego workers
        detail: dict[str, Any] = {"services": services, "kill_switches": kills.health()}
        if workers is None:
            return ready, detail
        return ready and workers, {**detail, "rego_workers": "ready" if workers else "down"}

    def admin_readiness() -> tuple[bool, dict[str, Any]]:
        """Also the policy version; after a refused push "degraded" with its reason (the last good one serves)."""
        ready, detail = readiness()
        return ready, {**detail, "policy": reloader.status(), **({"status": "degraded"} if reloader.degraded else {})}

    async def rotate_keys() -> None:
        every = cfg.upstream_tokens.rotate_every_s
        if every is None or cfg.upstream_tokens.keys_ref is not None:
            return
        while True:
            await anyio.sleep(every)
            current = minter.rotate()  # also endorses the new key set, chained to the last
            log.info("upstream token signing key rotated", extra={"fields": {"kid": current.kid}})
            # A child that lacks the key signing next is restarted now, a whole interval ahead of
            # need. Correctness does not hang on that restart's speed: until a child has the signing
            # key, its calls carry the endorsed key set (sdk_client), which it adopts. The restart
            # keeps an idle child's keys from all leaving the ring before its next call.
            needed = {current.kid, *(key.kid for key in keyring.upcoming[:1])}
            for handle in upstreams.handles():
                kids = spawned_with.get(handle.name)
                if kids is not None and not needed <= kids:
                    handle.recycle()

    async def run_audit() -> None:
        if isinstance(audit_store, PostgresAuditStore):  # its pool belongs to this loop; fail closed if it cannot
            await audit_store.open(cfg.storage.postgresql.connect_timeout_s if cfg.storage.postgresql else 5.0)
        try:
            async with audit_writer, contextlib.AsyncExitStack() as exports:
                for queue in (siem, witness):  # entered after the writer, so they flush before the writer closes
                    if queue is not None:
                        await exports.enter_async_context(queue)
                try:
                    async with anyio.create_task_group() as housekeeping:
                        # the tail window: a durable record is signed at most checkpoint_every_s later
                        housekeeping.start_soon(checkpointer.run, name="audit-checkpoints")
                        housekeeping.start_soon(attempts.run, name="audit-attempts")
                        ticks = 0
                        while True:
                            await anyio.sleep(1.0)
                            if isinstance(audit_store, SqliteAuditStore):
                                await audit_store.checkpoint_wal()
                            ticks += 1
                            if ticks % 5 == 0:  # approvals nobody touched expire (audited) within seconds; approved
                                # containment proposals decided elsewhere (or whose switch failed) are executed
                                try:
                                    await approvals.sweep()
                                    if ticks % 3600 == 5:  # at start, then hourly: finished approvals past retention
                                        await approvals.prune()
                                except Exception as exc:  # the next sweep retries; redeem checks expiry itself
                                    log.warning("approval sweep failed",
                                                extra={"fields": {"error": type(exc).__name__}})
                            if ticks % 3600 == 5 and cfg.audit.retention_days is not None:  # at start, then hourly
                                try:
                                    await prune_audit(audit_store, audit_writer.record,
                                                      lambda: checkpointer.tick(force=True),
                                                      audit_keys.signing_key.public_key(),
                                                      retention_days=cfg.audit.retention_days, now=clock())
                                except Exception as exc:  # the next run retries; nothing is deleted unattested
                                    log.warning("audit retention failed",
                                                extra={"fields": {"error": type(exc).__name__}})
                finally:
                    with anyio.CancelScope(shield=True):
                        await attempts.flush(every=True)  # also done by attempts.run; here for a run that never started
                        await checkpointer.tick(force=True)
        finally:
            if isinstance(audit_store, PostgresAuditStore):
                with anyio.CancelScope(shield=True):
                    await audit_store.aclose()

    async def run_state() -> None:
        try:
            while True:
                await anyio.sleep(1.0)
                try:
                    await state.maintain(clock())
                except StateUnavailable as exc:  # calls fail closed on their own; this is for the operator
                    log.warning("state store maintenance failed", extra={"fields": {"detail": exc.detail}})
        finally:
            state.close()

    export_queues = [queue for queue in (siem, witness) if queue is not None]
    if export_queues:  # the witness is the series exporter="audit.witness" (no SIEM exporter name has a dot)
        metrics.set_export_stats_source(lambda: {name: {"sent": st.sent, "dropped": st.dropped, "depth": st.depth,
                                                        "failed_attempts": st.failed_attempts}
                                                 for queue in export_queues for name, st in queue.stats().items()})

    def metrics_render(accept: str | None = None) -> tuple[bytes, str]:
        if not cfg.observability.metrics.enabled:
            return b"# metrics are turned off (observability.metrics.enabled)\n", "text/plain; charset=utf-8"
        return metrics.render(accept)

    limits = cfg.limits
    http_limits = HttpLimits(max_header_count=limits.max_header_count, max_header_bytes=limits.max_header_bytes,
                             header_timeout_s=limits.header_timeout_s, body_timeout_s=limits.body_timeout_s,
                             max_connections_per_client=limits.max_connections_per_client)
    connections = ClientConnections(limits.max_connections_per_client, observer=attempts)
    admin_connections = ClientConnections(limits.max_connections_per_client)
    metrics.set_connection_refusals_source(lambda: {"mcp": connections.stats(), "admin": admin_connections.stats()})
    admin_app = AdminApp(metrics=metrics_render, readiness=admin_readiness,
                         approvals=ApprovalApi(approvals, authenticator.authenticate, clock=clock),
                         guard=OriginGuard(cfg.admin.allowed_hosts, cfg.admin.allowed_origins),
                         max_header_count=limits.max_header_count,
                         pins=PinsApi(catalog, authenticator.authenticate, cfg.admin.operators),
                         kill_switches=KillSwitchApi(kills, authenticator.authenticate, cfg.admin.responders),
                         policy=PolicyApi(reloader, authenticator.authenticate, cfg.admin.operators),
                         console=_console(deployment, issuers, caches, ConsoleServices(
                             approvals=approvals, revocations=revocations, kills=kills, policy=reloader,
                             audit=audit_store, metrics=metrics_render, responders=cfg.admin.responders,
                             operators=cfg.admin.operators, audit_reader=open_reader,
                             audit_public_key=audit_keys.signing_key.public_key(), replay=ChildReplayer(
                                 deployment.root, state_dir, None if pg_reader else audit_path, env)), clock),
                         version=lambda: build_info.current().report(active.current.version))

    async def run_admin() -> None:
        port = cfg.admin.port if admin_port is None else admin_port
        if port is None and admin_sockets is None:
            return
        server = admin_server(admin_app, cfg.admin.host, port or 0,
                              http=guarded_protocol(http_limits, admin_connections))
        try:
            await server.serve(sockets=admin_sockets)
        except SystemExit:  # uvicorn exits when it cannot bind; the MCP endpoint keeps serving
            log.error("admin listener could not start", extra={"fields": {"host": cfg.admin.host, "port": port}})

    background: list[Callable[[], Coroutine[Any, Any, None]]] = [upstreams.run, revocations.run, rotate_keys, run_audit,
                                                       run_admin, run_state, surface_watch.run, hub.run, kills.run,
                                                       reloader.run, secret_store.run]
    if metrics.multiprocess:
        background.append(metrics.run)
    if cfg.storage.redis is not None:  # cluster mode: notices between replicas, polls stay the backstop
        bus = build_notice_bus(cfg.storage, origin=deployment.root / "gateway.yaml")
        kills.connect(bus)
        revocations.connect(bus)
        reloader.connect(bus)
        background += [bus.run, reloader.follow]
    if rego_workers is not None:
        background.append(rego_workers.run)
    if notifier is not None:
        background.append(notifier.run)
    if monitor is not None:
        background.append(monitor.run)
    background += [cache.keep_fresh for issuer, cache in zip(issuers, caches.values(), strict=True)
                   if issuer.jwks_file is None]

    async def run_background() -> None:
        try:
            async with anyio.create_task_group() as tg:
                for task in background:
                    tg.start_soon(task)
        finally:
            await anyio.to_thread.run_sync(tracing.shutdown)  # flushes batched spans
            if stores.database is not None:  # the control stores' PostgreSQL pool (the audit's closes itself)
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(stores.database.close)

    def visible(principal: Principal) -> frozenset[str]:
        now = clock()
        return kills.snapshot.visible(active.current.visible_tools(principal, now=datetime.fromtimestamp(now, UTC)),
                                      _service_of(catalog), principal, now)

    app = GatewayApp(dispatcher=Dispatcher(catalog, pipeline, visible, surface, subscriptions=hub), sealer=sealer,
                     guard=OriginGuard(cfg.listen.allowed_hosts, cfg.listen.allowed_origins),
                     authenticator=authenticator, protected_resource_metadata=prm, jwks=keyring.jwks,
                     max_body_bytes=limits.max_body_bytes, max_json_depth=limits.max_json_depth,
                     max_json_values=limits.max_json_values, max_header_count=limits.max_header_count,
                     background=run_background, readiness=readiness, attempts=attempts,
                     notification_counted=metrics.notification if cfg.observability.metrics.enabled else None,
                     push=PushRegistry(answer_counted=metrics.client_answer, request_counted=metrics.client_request)
                     if cfg.observability.metrics.enabled else None,
                     log_levels=LogLevels(state, clock), subscriptions=hub, ready_gate_s=ready_gate_s)
    return Gateway(deployment, catalog, upstreams, app, resource, state_dir, minter, http_limits, connections)
