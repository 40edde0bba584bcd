"""``portcullis pin``: record each tool's live definition hash in its manifest.

Pinning is a human decision — run it after reviewing what the service now offers. Each service
is connected once, listed, and disconnected; a manifest is rewritten only when its pin changes.

Each live definition whose pin would change first goes through the tool-poisoning scanner
(:mod:`portcullis.content.poisoning`, with the other services' tools as the shadowing list). A
definition with findings is not pinned (state ``flagged``): an unpinned or stale pin keeps the tool
out of service until a person has read the findings and pins with ``accept_findings`` (the CLI's
``--accept-findings``, which warns on every use). Accepting writes ``findings_accepted: <pin>`` into
the manifest with a comment naming the reviewer, the time (UTC) and the rules: the running gateway,
which scans every live definition too (:mod:`portcullis.definition_watch`), serves a definition
with findings only while ``findings_accepted`` equals its pin. A pinned definition whose findings
were never accepted (pinned before the scanner, or the scanner learned a rule) is ``flagged`` too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from portcullis.config.loader import Deployment, write_acceptance, write_pin
from portcullis.config.model import PromptManifest
from portcullis.content.definition_review import live_findings
from portcullis.content.rule_findings import Finding
from portcullis.errors import UpstreamFailed
from portcullis.identity.minting import KeyRing, gateway_issuer, service_audience
from portcullis.pinning import definition_hash, surface_hash
from portcullis.service.env import gateway_env
from portcullis.surface import LIST_FIELD, LIST_METHOD
from portcullis.upstream.registry import UpstreamRegistry

log = logging.getLogger("portcullis.pin")


@dataclass(frozen=True, slots=True)
class PinRow:
    exposed_name: str
    state: str  # unchanged | pinned | re-pinned | would pin | accepted | would accept | flagged | missing upstream
    #             | service unreachable
    pin: str | None
    findings: tuple[Finding, ...] = ()  # the poisoning scanner's, for a definition whose pin would change


async def list_services(deployment: Deployment, services: Sequence[str] | None,
                        connect_timeout_s: float = 30.0,
                        surface: dict[str, dict[str, list[dict[str, Any]]]] | None = None,
                        ) -> dict[str, list[dict[str, Any]]]:
    """Each reachable service's live ``tools/list`` (connected once, listed, disconnected); an unreachable
    service is absent (and logged). ``surface``, when given, is filled with each service's live resources,
    resource templates and prompts by kind (``resource``, ``template``, ``prompt``), for the services
    whose manifests declare any (a kind the service does not offer lists as empty)."""
    listings: dict[str, list[dict[str, Any]]] = {}
    wanted = {item.manifest.service for item in deployment.surface}
    keyring = KeyRing.generate()  # throwaway: kit services need gateway trust to start, pinning calls no tool

    def child_env(service: str) -> dict[str, str]:
        return gateway_env(keyring.jwks(), gateway_issuer("pin"), service_audience(service),
                           policy_root=deployment.root.resolve(),
                           environment=deployment.gateway.authorization.environment)

    registry = UpstreamRegistry.from_config(deployment.gateway, lambda *_: None, dict(os.environ),
                                            child_env=child_env)
    for handle in registry.handles():
        if services and handle.name not in services:
            continue
        for connector in handle._connectors:
            try:
                with anyio.fail_after(connect_timeout_s):
                    async with connector.open() as conn:
                        listings[handle.name] = await conn.list_tools()
                        if surface is not None and handle.name in wanted:
                            surface[handle.name] = {kind: await _listed(conn, kind) for kind in LIST_METHOD}
                break
            except Exception as exc:  # reported per tool as "service unreachable"
                log.warning("pin: could not list service", extra={"fields": {
                    "service": handle.name, "via": type(connector).__name__, "error": type(exc).__name__}})
    return listings


async def _listed(conn: Any, kind: str) -> list[dict[str, Any]]:
    try:
        listed: list[dict[str, Any]] = await getattr(conn, LIST_METHOD[kind])()
    except UpstreamFailed:  # the service does not offer this kind (method not found)
        return []
    return listed


def pin_surface(deployment: Deployment, services: Sequence[str] | None, write: bool,
                live: dict[str, dict[str, list[dict[str, Any]]]]) -> list[PinRow]:
    """Pin rows for resources, resource templates and prompts (their hash: :func:`surface_hash`).
    The tool-poisoning scanner reads tool definitions only; these are pinned on review alone."""
    rows = []
    for item in sorted(deployment.surface, key=lambda i: (i.kind, i.exposed)):
        m = item.manifest
        if services and m.service not in services:
            continue
        if m.service not in live:
            rows.append(PinRow(item.exposed, "service unreachable", m.pin))
            continue
        field = LIST_FIELD[item.kind]
        key = m.name if isinstance(m, PromptManifest) else (m.uri or m.uri_template)
        found = next((d for d in live[m.service][item.kind] if d.get(field) == key), None)
        if found is None:
            rows.append(PinRow(item.exposed, "missing upstream", m.pin))
            continue
        new = surface_hash(item.kind, found)
        if new == m.pin:
            rows.append(PinRow(item.exposed, "unchanged", new))
            continue
        if write:
            write_pin(item.path, new)
        rows.append(PinRow(item.exposed, "would pin" if not write else ("re-pinned" if m.pin else "pinned"), new))
    return rows


async def pin_deployment(deployment: Deployment, services: Sequence[str] | None, write: bool,
                         connect_timeout_s: float = 30.0, *, accept_findings: bool = False,
                         reviewer: str = "") -> list[PinRow]:
    """``reviewer``: who accepts findings (``--accept-findings``), written with the time beside
    ``findings_accepted`` in the manifest."""
    surface_live: dict[str, dict[str, list[dict[str, Any]]]] = {}
    listings = await list_services(deployment, services, connect_timeout_s, surface_live)
    rows = pin_surface(deployment, services, write, surface_live)
    for loaded in sorted(deployment.manifests, key=lambda m: m.exposed_name):
        service = loaded.manifest.service
        if services and service not in services:
            continue
        if service not in listings:
            rows.append(PinRow(loaded.exposed_name, "service unreachable", loaded.manifest.pin))
            continue
        live = next((t for t in listings[service] if t.get("name") == loaded.manifest.name), None)
        if live is None:
            rows.append(PinRow(loaded.exposed_name, "missing upstream", loaded.manifest.pin))
            continue
        new = definition_hash(live)
        if new == loaded.manifest.pin and loaded.manifest.findings_accepted == new:
            rows.append(PinRow(loaded.exposed_name, "unchanged", new))  # reviewed, findings and all
            continue
        others = [str(t.get("name", "")) for name, tools in listings.items() if name != service for t in tools]
        findings = tuple(live_findings(live, others))
        if new == loaded.manifest.pin and not findings:
            rows.append(PinRow(loaded.exposed_name, "unchanged", new))
            continue
        if findings and not accept_findings:
            rows.append(PinRow(loaded.exposed_name, "flagged", loaded.manifest.pin, findings))
            continue
        if new == loaded.manifest.pin:
            state = "accepted" if write else "would accept"
        else:
            state = "would pin" if not write else ("re-pinned" if loaded.manifest.pin else "pinned")
        if write:
            if findings:
                log.warning("pin: pinning a definition with poisoning findings (--accept-findings)",
                            extra={"fields": {"tool": loaded.exposed_name, "findings": len(findings)}})
                write_acceptance(loaded.path, new, reviewer, sorted({f.rule for f in findings}))
            if new != loaded.manifest.pin:
                write_pin(loaded.path, new)
        rows.append(PinRow(loaded.exposed_name, state, new, findings))
    return rows
