"""Resources, resource templates and prompts: manifests joined with what each upstream lists.

Like the tool catalog (:mod:`portcullis.catalog`), the manifest is the source of truth for what a
caller sees, and the upstream's live definition only decides whether the item may be served: its
hash (:func:`portcullis.pinning.surface_hash`) must equal the manifest's ``pin``. Like tools, the
live definitions are checked *off the request path*: :class:`portcullis.surface_watch.SurfaceWatch`
re-lists each service's kinds in the background (when it connects, every ``refresh_s``, and at once
when it announces a list change) and records a verdict per entry here; a list, read or get only
consults that in-memory verdict (:meth:`SurfaceCatalog.verdict`, O(1); see docs/mcp-surface.md).

Namespacing (docs/mcp-surface.md): a resource URI or URI template is exposed as
``<resource_prefix><upstream URI>``, the prefix defaulting to ``<service>+`` (``files+docs://a``);
the loader refuses prefixes that are prefixes of one another, so at most one service's prefix
starts any URI. Prompts are named like tools: ``<tool_prefix><name>`` (default ``<service>.``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio

from portcullis.config.loader import Deployment, LoadedSurface
from portcullis.config.model import PromptManifest, ResourceManifest, resource_prefix
from portcullis.pinning import surface_hash
from portcullis.policy.active import ActivePolicy, as_active
from portcullis.policy.engine import ToolInfo

if TYPE_CHECKING:
    from portcullis.identity.principal import Principal
    from portcullis.pipeline.context import ReadContext
    from portcullis.policy.engine import PolicyEngine
    from portcullis.policy.model import ToolPolicy
    from portcullis.upstream.registry import UpstreamRegistry

log = logging.getLogger("portcullis.catalog")
LIST_FIELD = {"resource": "uri", "template": "uriTemplate", "prompt": "name"}


@dataclass(frozen=True, slots=True)
class SurfaceEntry:
    """One declared resource, template or prompt: where it lives and how callers see it."""

    loaded: LoadedSurface
    kind: str  # resource | template | prompt
    service: str
    upstream: str  # the URI, URI template or prompt name at the service
    prefix: str  # the resource prefix of its service ("" for prompts)
    pattern: re.Pattern[str] | None  # a template's URIs
    wire: Mapping[str, Any]  # as the list method shows it

    @property
    def exposed(self) -> str:
        return self.loaded.exposed


def template_pattern(template: str) -> re.Pattern[str]:
    """The URIs an RFC 6570 level-1 template admits: each ``{name}`` is one or more characters other
    than ``/``, ``?``, ``#`` (a simple expansion percent-encodes them), the rest literal."""
    parts = re.split(r"\{[A-Za-z0-9_]{1,64}\}", template)
    return re.compile("[^/?#]+".join(re.escape(part) for part in parts))


def _wire(loaded: LoadedSurface) -> dict[str, Any]:
    m = loaded.manifest
    if isinstance(m, PromptManifest):
        wire: dict[str, Any] = {"name": loaded.exposed, "description": m.description}
        if m.arguments:
            wire["arguments"] = [a.model_dump(exclude_none=True) for a in m.arguments]
        return wire
    wire = {"uri" if m.uri is not None else "uriTemplate": loaded.exposed, "name": m.name,
            "description": m.description}
    if m.mime_type is not None:
        wire["mimeType"] = m.mime_type
    return wire


class SurfaceCatalog:
    """Every resource, template and prompt manifest of a deployment; pins checked against live lists."""

    def __init__(self, deployment: Deployment) -> None:
        entries = []
        self._prefixes: dict[str, str] = {}
        for loaded in deployment.surface:
            m = loaded.manifest
            service = deployment.gateway.services[m.service]
            if isinstance(m, ResourceManifest):
                prefix = self._prefixes[m.service] = resource_prefix(m.service, service.resource_prefix)
                upstream = m.uri or m.uri_template or ""
                pattern = template_pattern(upstream) if m.uri is None else None
            else:
                prefix, upstream, pattern = "", m.name, None
            entries.append(SurfaceEntry(loaded, loaded.kind, m.service, upstream, prefix, pattern, _wire(loaded)))
        self.entries: tuple[SurfaceEntry, ...] = tuple(sorted(entries, key=lambda e: (e.kind, e.exposed)))
        self._prompts = {e.exposed: e for e in self.entries if e.kind == "prompt"}
        self.timeouts = {name: cfg.timeout_s for name, cfg in deployment.gateway.services.items()}
        self._states: dict[str, str] = {}
        self._announced: dict[str, int] = {}  # service -> list changes it announced
        self._verified: dict[str, int] = {}  # service -> announcements answered by a checked re-listing
        self._checked: set[str] = set()  # services with at least one checked re-listing
        self._settled: dict[str, anyio.Event] = {}
        self.verify_wait_s = 5.0

    def of_kind(self, kind: str) -> list[SurfaceEntry]:
        return [e for e in self.entries if e.kind == kind]

    def prompt(self, name: str) -> SurfaceEntry | None:
        return self._prompts.get(name)

    def resolve_uri(self, uri: str) -> tuple[SurfaceEntry, str] | None:
        """The entry admitting ``uri`` and the URI at its service; a static resource before a template.
        At most one service's prefix starts ``uri`` (the loader refuses prefixes of one another)."""
        for service, prefix in self._prefixes.items():
            if not uri.startswith(prefix):
                continue
            rest = uri[len(prefix):]
            candidates = [e for e in self.entries if e.service == service and e.kind in ("resource", "template")]
            for entry in candidates:
                if entry.kind == "resource" and entry.upstream == rest:
                    return entry, rest
            for entry in candidates:
                if entry.pattern is not None and entry.pattern.fullmatch(rest):
                    return entry, rest
            return None
        return None

    def check(self, entry: SurfaceEntry, live: Iterable[Mapping[str, Any]]) -> str:
        """``serving``, ``unpinned`` or ``quarantined`` for ``entry`` against its service's live list."""
        field = LIST_FIELD[entry.kind]
        found = next((d for d in live if isinstance(d, Mapping) and d.get(field) == entry.upstream), None)
        pin = entry.loaded.manifest.pin
        if found is None:
            state, reason, live_hash = "quarantined", "the service no longer offers it", None
        else:
            live_hash = surface_hash(entry.kind, found)
            state, reason = (("unpinned", "manifest has no pin") if pin is None
                             else ("serving", "") if live_hash == pin
                             else ("quarantined", "live definition differs from the pin"))
        if state != "serving" and self._states.get(entry.exposed) != state:
            log.warning("resource or prompt not served", extra={"fields": {
                "kind": entry.kind, "name": entry.exposed, "state": state, "reason": reason, "pinned": pin,
                "live": live_hash}})
        self._states[entry.exposed] = state
        return state

    def state(self, exposed: str) -> str:
        """The last state seen for an entry (``pending`` before its first check)."""
        return self._states.get(exposed, "pending")

    def verdict(self, entry: SurfaceEntry) -> str:
        """The entry's in-memory verdict (O(1), no upstream request); ``verifying`` while its service
        announced a list change that no checked re-listing has answered yet."""
        service = entry.service
        if service not in self._checked or self._verified.get(service, 0) < self._announced.get(service, 0):
            return "verifying"
        return self._states.get(entry.exposed, "pending")

    async def settled_verdict(self, entry: SurfaceEntry) -> str:
        """:meth:`verdict` once the service's announced changes are checked (bounded by ``verify_wait_s``;
        still unverified then: ``verifying``, which is refused like any state but ``serving``)."""
        if self.verdict(entry) == "verifying":
            await self.settle(entry.service)
        return self.verdict(entry)

    async def settle(self, service: str) -> None:
        """Wait (at most ``verify_wait_s``) until ``service`` was checked and its announcements answered."""
        with anyio.move_on_after(self.verify_wait_s):
            while service not in self._checked or self._verified.get(service, 0) < self._announced.get(service, 0):
                await self._settled.setdefault(service, anyio.Event()).wait()

    def note_change(self, service: str) -> int:
        """``service`` announced a resource or prompt list change: hold its reads until re-checked."""
        self._announced[service] = count = self._announced.get(service, 0) + 1
        return count

    def announced(self, service: str) -> int:
        return self._announced.get(service, 0)

    def served(self, kind: str) -> frozenset[str]:
        """Exposed names of ``kind`` whose verdict is ``serving`` (the exposed view, before policy)."""
        return frozenset(e.exposed for e in self.entries if e.kind == kind and self._states.get(e.exposed) == "serving")

    def adopt(self, fresh: SurfaceCatalog) -> frozenset[str]:
        """Serve ``fresh``'s entries from now on (a policy version's reload, docs/policy-versions.md); returns
        the services whose entries must be re-listed.

        An entry whose verdict inputs did not change (kind, service, upstream URI or name, ``pin``) keeps its
        verdict: owner, classification, policy, description, content rules... are the manifest's alone and
        apply from the next read. A new entry, or one whose pin or upstream changed, has no verdict: its
        service counts as having announced a change (:meth:`note_change`), so its reads wait (bounded) for
        the re-listing the caller asks for, as after an upstream's list change. A removed entry is unknown
        from the next read. Synchronous: no read sees half of it."""
        running = {e.exposed: _verdict_inputs(e) for e in self.entries}
        states: dict[str, str] = {}
        relist: set[str] = set()
        for entry in fresh.entries:
            if running.get(entry.exposed) == _verdict_inputs(entry):
                if entry.exposed in self._states:
                    states[entry.exposed] = self._states[entry.exposed]
            else:
                relist.add(entry.service)
        self.entries, self._prompts, self._prefixes, self._states = (
            fresh.entries, fresh._prompts, fresh._prefixes, states)
        for service in sorted(relist):
            self.note_change(service)
        return frozenset(relist)

    def views(self) -> dict[str, tuple[Mapping[str, Any], ...]]:
        """What the list methods could show, by view (``resources``, ``prompts``), before policy and pins."""
        return {view: tuple(e.wire for e in self.entries if (e.kind == "prompt") == (view == "prompts"))
                for view in ("resources", "prompts")}

    def update_service(self, service: str, lists: Mapping[str, list[dict[str, Any]] | None], as_of: int) -> None:
        """Record the verdicts of ``service``'s entries from a fresh re-listing, kind -> live list (``None``:
        the kind could not be listed: its entries are ``unlisted``, refused, fail closed); ``as_of``: the
        announcements made before the re-listing started (now answered)."""
        for entry in self.entries:
            if entry.service != service or entry.kind not in lists:
                continue
            live = lists[entry.kind]
            if live is None:
                if self._states.get(entry.exposed) != "unlisted":
                    log.warning("resource or prompt not served", extra={"fields": {
                        "kind": entry.kind, "name": entry.exposed, "state": "unlisted",
                        "reason": "the service could not be listed"}})
                self._states[entry.exposed] = "unlisted"
            else:
                self.check(entry, live)
        self._checked.add(service)
        self._verified[service] = max(self._verified.get(service, 0), as_of)
        event = self._settled.pop(service, None)
        if event is not None:
            event.set()


def _verdict_inputs(entry: SurfaceEntry) -> tuple[str, str, str, str | None]:
    """What an entry's pin verdict depends on (:meth:`SurfaceCatalog.check`)."""
    return entry.kind, entry.service, entry.upstream, entry.loaded.manifest.pin


LIST_METHOD = {"resource": "list_resources", "template": "list_resource_templates", "prompt": "list_prompts"}


def surface_policies(catalog: SurfaceCatalog) -> dict[str, tuple[ToolPolicy | None, ToolInfo]]:
    """Exposed URI, URI template or prompt name -> its policy and facts (for a :class:`PolicyEngine`)."""
    out: dict[str, tuple[ToolPolicy | None, ToolInfo]] = {}
    for entry in catalog.entries:
        m = entry.loaded.manifest
        out[entry.exposed] = (m.policy, ToolInfo(
            exposed_name=entry.exposed, service=entry.service, upstream_name=entry.upstream, risk=str(m.risk or "low"),
            owner=m.owner, classification_input=str(m.classification.input),
            classification_output=str(m.classification.output)))
    return out


class GatewaySurface:
    """The dispatcher's access to resources and prompts: listings filtered by the caller's policy and the
    live pins, and the read pipeline (:func:`portcullis.pipeline.chain.build_read_pipeline`)."""

    def __init__(self, catalog: SurfaceCatalog, engine: PolicyEngine | ActivePolicy, upstreams: UpstreamRegistry,
                 reads: Callable[[ReadContext], Awaitable[dict[str, Any]]], clock: Callable[[], float],
                 completions: Callable[[ReadContext], Awaitable[dict[str, Any]]] | None = None) -> None:
        self._catalog, self._active, self._upstreams, self._reads, self._clock = (
            catalog, as_active(engine), upstreams, reads, clock)
        # completion/complete (portcullis.pipeline.chain.build_completion_pipeline); None: refused as unknown
        self._completions = completions
        self.subscriptions: Any = None  # a portcullis.subscriptions.SubscriptionHub, set by the gateway
        # (service, caller) -> True when a kill switch contains it (portcullis.kill): left out of the listings
        self.contained: Callable[[str, Principal], bool] | None = None

    async def listing(self, kind: str, principal: Principal) -> list[Mapping[str, Any]]:
        """The entries of ``kind`` the caller may see whose in-memory verdict is ``serving`` (no upstream
        request: the verdicts are kept current by :class:`portcullis.surface_watch.SurfaceWatch`)."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        engine = self._active.current
        visible = [entry for entry in self._catalog.of_kind(kind) if engine.may_call(entry.exposed, principal, now=now)]
        contained = self.contained
        if contained is not None:
            visible = [entry for entry in visible if not contained(entry.service, principal)]
        for service in sorted({e.service for e in visible if self._catalog.verdict(e) == "verifying"}):
            await self._catalog.settle(service)  # once per service, bounded
        return [entry.wire for entry in visible if self._catalog.verdict(entry) == "serving"]

    async def read(self, ctx: ReadContext) -> dict[str, Any]:
        return await self._reads(ctx)

    async def complete(self, ctx: ReadContext) -> dict[str, Any]:
        if self._completions is None:
            from portcullis.pipeline.reads import refused_like_unknown

            raise refused_like_unknown(ctx)
        return await self._completions(ctx)
