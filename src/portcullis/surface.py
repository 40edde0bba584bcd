"""Resources, resource templates and prompts: manifests joined with what each upstream lists.

Like the tool catalog (:mod:`portcullis.catalog`), the manifest is the source of truth for what a
caller sees, and the upstream's live definition only decides whether the item may be served: its
hash (:func:`portcullis.pinning.surface_hash`) must equal the manifest's ``pin``. Unlike tools, the
live definitions are listed *at use*: every list, read and get lists the kind it needs from the
service first and checks the pins on that answer, so a changed definition is quarantined on the
very next request (one extra upstream round trip per request; see docs/mcp-surface.md).

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

from portcullis.config.loader import Deployment, LoadedSurface
from portcullis.config.model import PromptManifest, ResourceManifest, resource_prefix
from portcullis.errors import PortcullisError
from portcullis.pinning import surface_hash
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


async def visible_listing(catalog: SurfaceCatalog, kind: str, may_see: Callable[[str], bool],
                          live_list: Callable[[str, str], Awaitable[list[dict[str, Any]]]]) -> list[Mapping[str, Any]]:
    """The list method's answer for ``kind``: entries the caller may see (``may_see(exposed)``) whose pins
    match their service's live list (``live_list(service, kind)``, asked once per service). A service that
    cannot be listed contributes nothing (fail closed; logged)."""
    visible = [entry for entry in catalog.of_kind(kind) if may_see(entry.exposed)]
    live: dict[str, list[dict[str, Any]] | None] = {}
    for service in sorted({entry.service for entry in visible}):
        try:
            live[service] = await live_list(service, kind)
        except PortcullisError as exc:
            live[service] = None
            log.warning("service could not be listed; its resources and prompts are not shown",
                        extra={"fields": {"service": service, "kind": kind, "error": type(exc).__name__}})
    return [entry.wire for entry in visible
            if (found := live[entry.service]) is not None and catalog.check(entry, found) == "serving"]


LIST_METHOD = {"resource": "list_resources", "template": "list_resource_templates", "prompt": "list_prompts"}


def surface_policies(catalog: SurfaceCatalog) -> dict[str, tuple[ToolPolicy | None, ToolInfo]]:
    """Exposed URI, URI template or prompt name -> its policy and facts (for a :class:`PolicyEngine`)."""
    out: dict[str, tuple[ToolPolicy | None, ToolInfo]] = {}
    for entry in catalog.entries:
        m = entry.loaded.manifest
        out[entry.exposed] = (m.policy, ToolInfo(
            exposed_name=entry.exposed, service=entry.service, upstream_name=entry.upstream, risk="low",
            owner=m.owner, classification_input=str(m.classification.input),
            classification_output=str(m.classification.output)))
    return out


class GatewaySurface:
    """The dispatcher's access to resources and prompts: listings filtered by the caller's policy and the
    live pins, and the read pipeline (:func:`portcullis.pipeline.chain.build_read_pipeline`)."""

    def __init__(self, catalog: SurfaceCatalog, engine: PolicyEngine, upstreams: UpstreamRegistry,
                 reads: Callable[[ReadContext], Awaitable[dict[str, Any]]], clock: Callable[[], float],
                 completions: Callable[[ReadContext], Awaitable[dict[str, Any]]] | None = None) -> None:
        self._catalog, self._engine, self._upstreams, self._reads, self._clock = (
            catalog, engine, upstreams, reads, clock)
        # completion/complete (portcullis.pipeline.chain.build_completion_pipeline); None: refused as unknown
        self._completions = completions

    async def listing(self, kind: str, principal: Principal) -> list[Mapping[str, Any]]:
        now = datetime.fromtimestamp(self._clock(), UTC)

        def may_see(exposed: str) -> bool:
            return self._engine.may_call(exposed, principal, now=now)

        async def live_list(service: str, kind: str) -> list[dict[str, Any]]:
            conn = self._upstreams.get(service).connection()
            result: list[dict[str, Any]] = await getattr(conn, LIST_METHOD[kind])()
            return result

        return await visible_listing(self._catalog, kind, may_see, live_list)

    async def read(self, ctx: ReadContext) -> dict[str, Any]:
        return await self._reads(ctx)

    async def complete(self, ctx: ReadContext) -> dict[str, Any]:
        if self._completions is None:
            from portcullis.pipeline.reads import refused_like_unknown

            raise refused_like_unknown(ctx)
        return await self._completions(ctx)
