"""The tool catalog: manifests joined with what each upstream says it serves.

The manifest is the source of truth for what a caller sees (description, schemas,
annotations). An upstream's live definition only decides whether the tool may be served: its
hash must equal the manifest's ``pin``. States per manifest:

* ``serving``      — pin matches the live definition;
* ``unpinned``     — the manifest has no pin yet (``portcullis pin``);
* ``quarantined``  — the live definition changed (a rug pull) or the tool vanished upstream;
* ``pending``      — its service has not answered ``tools/list`` yet;
* ``flagged``      — the pin matches, but the tool-poisoning scanner has findings in the live
  definition that no person accepted for that pin (``findings_accepted``); findings come from
  :class:`portcullis.definition_watch.DefinitionWatch`, which scans off the event loop.

Upstream tools with no manifest are never exposed; each is logged once per listing. Lookups
read an immutable snapshot that is replaced whole, so a reader never sees half an update.

**Pending verification.** When a service announces that its tools changed, :meth:`note_change`
records it synchronously, before any other call can be routed. From then on no call of that
service is forwarded until a listing *started after* the announcement has been checked
(``update_service(..., as_of=…)``): :meth:`settle` (route stage, and again just before
forwarding) waits for that verdict, at most ``verify_wait_s``, and then answers from the new
snapshot: tools whose definitions still match are released, changed ones are quarantined. A call
whose verdict does not come in time is not forwarded (``Unknown tool``). The check on the hot path
is two dictionary reads when nothing is pending.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from jsonschema.protocols import Validator

from portcullis.config.loader import Deployment, LoadedManifest
from portcullis.config.model import ToolManifest
from portcullis.config.schema_patterns import manifest_validator
from portcullis.content.rule_findings import Finding
from portcullis.pinning import definition_hash

log = logging.getLogger("portcullis.catalog")


@dataclass(frozen=True, slots=True)
class Route:
    """A served tool: where calls go and what they are checked against."""

    exposed_name: str
    service: str
    upstream_name: str
    manifest: LoadedManifest
    validator: Validator
    wire: Mapping[str, Any]  # the tool as tools/list shows it
    timeout_s: float | None
    param_headers: tuple[tuple[str, str], ...] = ()  # (argument, lower-case Mcp-Param-* header name)


@dataclass(frozen=True, slots=True)
class ToolStatus:
    exposed_name: str
    service: str
    state: str  # serving | unpinned | quarantined | pending | flagged
    reason: str
    live_hash: str | None
    findings: tuple[Finding, ...] = ()  # the poisoning scanner's, in the live definition last checked
    accepted: bool = False  # the findings were accepted by a person for this pin (findings_accepted)


class Catalog:
    """Joins manifests with live upstream listings; answers lookups from a snapshot."""

    def __init__(self, deployment: Deployment, *, verify_wait_s: float = 5.0) -> None:
        self._by_service: dict[str, list[LoadedManifest]] = {}
        self._validators: dict[str, Validator] = {}
        self._timeouts = {name: svc.timeout_s for name, svc in deployment.gateway.services.items()}
        for loaded in deployment.manifests:
            self._by_service.setdefault(loaded.manifest.service, []).append(loaded)
            schema = loaded.manifest.input_schema  # its own $schema dialect (2020-12 by default), ECMA-262 patterns
            self._validators[loaded.exposed_name] = manifest_validator(schema)
        self._status: dict[str, ToolStatus] = {
            m.exposed_name: ToolStatus(m.exposed_name, m.manifest.service, "pending", "service not listed yet", None)
            for m in deployment.manifests
        }
        self._routes: dict[str, Route] = {}
        self._listing: tuple[Mapping[str, Any], ...] = ()
        self._service_of = {m.exposed_name: m.manifest.service for m in deployment.manifests}
        self._announced: dict[str, int] = {}  # service -> changes it announced
        self._verified: dict[str, int] = {}  # service -> announcements answered by a checked listing
        self._verdict: dict[str, anyio.Event] = {}  # set when a listing of the service is checked
        self._verify_wait_s = verify_wait_s

    # ------------------------------------------------------------------ reads (hot path)

    def lookup(self, name: str) -> Route | None:
        return self._routes.get(name)

    def listing(self) -> tuple[Mapping[str, Any], ...]:
        return self._listing

    def statuses(self) -> list[ToolStatus]:
        return sorted(self._status.values(), key=lambda s: s.exposed_name)

    def unsettled(self, name: str) -> bool:
        """Whether tool ``name``'s service announced a change no checked listing has answered yet."""
        service = self._service_of.get(name)
        return service is not None and self._verified.get(service, 0) < self._announced.get(service, 0)

    async def settle(self, name: str) -> Route | None:
        """:meth:`lookup` once every change announced so far by ``name``'s service is verified; None if
        the tool is not served then, or the verdict did not come within ``verify_wait_s``."""
        service = self._service_of.get(name)
        if service is None:
            return None
        needed = self._announced.get(service, 0)
        with anyio.move_on_after(self._verify_wait_s):
            while self._verified.get(service, 0) < needed:
                await self._verdict.setdefault(service, anyio.Event()).wait()
        if self._verified.get(service, 0) < needed:
            log.warning("call held back: the service's changed tools were not re-verified in time",
                        extra={"fields": {"tool": name, "service": service}})
            return None
        return self._routes.get(name)

    def pin_report(self) -> list[dict[str, Any]]:
        """Each manifest's pin against the live definition this gateway last checked, by exposed name:
        ``{tool, service, state, reason, pin, live, verifying, findings, findings_accepted}``
        (``verifying``: its service announced a change not checked yet; ``findings``: the scanner's, each
        ``{rule, severity, pointer, excerpt, detail}`` with the excerpt already escaped)."""
        pins = {m.exposed_name: m.manifest.pin for ms in self._by_service.values() for m in ms}
        pending = self.pending_services()
        return [{"tool": status.exposed_name, "service": status.service, "state": status.state,
                 "reason": status.reason, "pin": pins.get(status.exposed_name), "live": status.live_hash,
                 "verifying": status.service in pending,
                 "findings": [{"rule": f.rule, "severity": f.severity, "pointer": f.pointer, "excerpt": f.excerpt,
                               "detail": f.detail} for f in status.findings],
                 "findings_accepted": status.accepted} for status in self.statuses()]

    def declared(self, service: str) -> frozenset[str]:
        """Upstream names of the tools ``service``'s manifests declare."""
        return frozenset(m.manifest.name for m in self._by_service.get(service, []))

    def other_tools(self, service: str) -> tuple[str, ...]:
        """Upstream and exposed names of the other services' tools (the scanner's shadowing list)."""
        return tuple(sorted({name for other, ms in self._by_service.items() if other != service
                             for m in ms for name in (m.manifest.name, m.exposed_name)}))

    def pending_services(self) -> dict[str, int]:
        """Services with announced changes not yet verified, and how many."""
        return {service: count - self._verified.get(service, 0) for service, count in self._announced.items()
                if count > self._verified.get(service, 0)}

    # ------------------------------------------------------------------ updates

    def note_change(self, service: str, count: int) -> None:
        """``service`` announced its ``count``-th tool-list change: hold its calls until it is verified."""
        if count > self._announced.get(service, 0):
            self._announced[service] = count

    def update_service(self, service: str, live_tools: Iterable[Mapping[str, Any]], as_of: int | None = None, *,
                       findings: Mapping[str, Sequence[Finding]] | None = None) -> None:
        """Re-check every manifest of ``service`` against a fresh ``tools/list`` answer; ``as_of`` is
        how many changes the service had announced when that listing started (they are now verified).
        ``findings``: the poisoning scanner's, by upstream tool name; ``None`` only where no scanner runs
        (the catalog's own tests): a gateway always passes them (:mod:`portcullis.definition_watch`)."""
        live = {t.get("name"): t for t in live_tools if isinstance(t, Mapping)}
        manifests = self._by_service.get(service, [])
        declared = {m.manifest.name for m in manifests}
        for name in sorted(set(live) - declared, key=str):
            log.warning("upstream tool has no manifest; not exposed",
                        extra={"fields": {"service": service, "upstream_tool": str(name)[:128]}})
        statuses = dict(self._status)
        routes = {k: v for k, v in self._routes.items() if v.service != service}
        for loaded in manifests:
            status = self._check(service, loaded, live.get(loaded.manifest.name),
                                 () if findings is None else tuple(findings.get(loaded.manifest.name, ())))
            previous = self._status.get(loaded.exposed_name)
            if status.state != "serving" and (previous is None or previous.state != status.state):
                log.warning("tool not served", extra={"fields": {
                    "tool": loaded.exposed_name, "state": status.state, "reason": status.reason,
                    "pinned": loaded.manifest.pin, "live": status.live_hash}})
            statuses[loaded.exposed_name] = status
            if status.state == "serving":
                routes[loaded.exposed_name] = self._route(service, loaded)
        self._status, self._routes = statuses, routes
        self._listing = tuple(routes[name].wire for name in sorted(routes))
        if as_of is not None and as_of > self._verified.get(service, 0):
            self._verified[service] = as_of
        verdict = self._verdict.pop(service, None)
        if verdict is not None:
            verdict.set()  # waiting calls look again (and wait on, if a later change is still open)

    def adopt(self, deployment: Deployment) -> frozenset[str]:
        """Serve ``deployment``'s manifests from now on (a policy version's reload); returns the services to re-list.

        A manifest that differs from the running one at most in its ``policy:`` keeps its status (its
        live definition was checked against the same pin, schemas and acceptance already) and gets a
        route over the new manifest. A new or otherwise changed manifest starts ``pending`` and its
        service is returned:
        the caller announces a change there (:meth:`note_change`, through the service handle), so calls
        to it are held until a fresh listing is checked — scanner included — against the new
        manifests; a removed manifest is no longer served. Synchronous: no call sees half of it.
        """
        fresh = Catalog(deployment, verify_wait_s=self._verify_wait_s)
        running = {m.exposed_name: m.manifest for ms in self._by_service.values() for m in ms}
        relist: set[str] = set()
        for loaded in deployment.manifests:
            name = loaded.exposed_name
            before = running.get(name)
            if before is not None and name in self._status and _without_policy(before) == _without_policy(
                    loaded.manifest):
                fresh._status[name] = self._status[name]
                if name in self._routes:
                    fresh._routes[name] = fresh._route(loaded.manifest.service, loaded)
            else:
                relist.add(loaded.manifest.service)
        fresh._listing = tuple(fresh._routes[name].wire for name in sorted(fresh._routes))
        self._by_service, self._validators, self._status = fresh._by_service, fresh._validators, fresh._status
        self._routes, self._listing, self._service_of = fresh._routes, fresh._listing, fresh._service_of
        return frozenset(relist)

    def live_hashes(self, service: str, live_tools: Iterable[Mapping[str, Any]]) -> dict[str, str]:
        """Hashes of the live definitions of the tools that ``service``'s manifests declare."""
        declared = {m.manifest.name for m in self._by_service.get(service, [])}
        return {t["name"]: definition_hash(t) for t in live_tools if t.get("name") in declared}

    def _check(self, service: str, loaded: LoadedManifest, live: Mapping[str, Any] | None,
               findings: tuple[Finding, ...]) -> ToolStatus:
        name = loaded.exposed_name
        if live is None:
            return ToolStatus(name, service, "quarantined", "the service no longer offers this tool", None)
        live_hash = definition_hash(live)
        if loaded.manifest.pin is None:
            return ToolStatus(name, service, "unpinned", "manifest has no pin", live_hash, findings)
        if live_hash != loaded.manifest.pin:
            return ToolStatus(name, service, "quarantined", "live definition differs from the pin", live_hash,
                              findings)
        accepted = bool(findings) and loaded.manifest.findings_accepted == loaded.manifest.pin
        if findings and not accepted:
            return ToolStatus(name, service, "flagged", "possible tool poisoning in the live definition: review "
                              "with `portcullis pin`", live_hash, findings)
        return ToolStatus(name, service, "serving", "", live_hash, findings, accepted)

    def _route(self, service: str, loaded: LoadedManifest) -> Route:
        m = loaded.manifest
        wire: dict[str, Any] = {"name": loaded.exposed_name, "description": m.description,
                                "inputSchema": m.input_schema}
        if m.output_schema is not None:
            wire["outputSchema"] = m.output_schema
        annotations = m.annotations.model_dump(exclude_none=True)
        if annotations:
            wire["annotations"] = annotations
        props = m.input_schema.get("properties")
        params = tuple((arg, "mcp-param-" + spec["x-mcp-header"].lower())
                       for arg, spec in (props.items() if isinstance(props, Mapping) else ())
                       if isinstance(spec, Mapping) and isinstance(spec.get("x-mcp-header"), str))
        return Route(loaded.exposed_name, service, m.name, loaded, self._validators[loaded.exposed_name],
                     wire, self._timeouts.get(service), params)


def _without_policy(manifest: ToolManifest) -> ToolManifest:
    return manifest.model_copy(update={"policy": None})
