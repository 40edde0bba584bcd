"""The tool-poisoning scanner on every live definition the gateway lists, off the call path.

Between an upstream's ``tools/list`` answer and the catalog's pin check (:meth:`DefinitionWatch.on_tools`
is the registry's ``on_tools`` callback), each definition that a manifest declares and that was not
scanned before (new, or changed: keyed by its definition hash) goes through
:func:`portcullis.content.poisoning.scan_definition` in a worker thread (``anyio.to_thread``), never
on the event loop. A scan that raises, or does not answer within ``timeout_s``, is itself a
``poisoning.scan_failed`` finding: the tool is treated as poisoned (fail closed) and rescanned at
the next listing. Findings are handed to :meth:`portcullis.catalog.Catalog.update_service`, which
keeps a tool with findings out of service unless a person accepted them for exactly that pin
(``findings_accepted`` in the manifest, written by ``portcullis pin --accept-findings``).

Cost: nothing on a ``tools/call``. On a listing, one dictionary read per declared tool whose hash
was scanned before (every health check of an unchanged service); a scan (about a millisecond for a
typical definition, bounded by the scanner's own budget) only for a new or changed definition.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import anyio

from portcullis.catalog import Catalog
from portcullis.content.definition_review import finding_message, live_findings
from portcullis.content.rule_findings import Finding
from portcullis.pinning import definition_hash
from portcullis.text import escape_invisible

log = logging.getLogger("portcullis.catalog")

Scan = Callable[[Mapping[str, Any], Sequence[str]], Sequence[Finding]]  # (definition, other tools) -> findings
SCAN_FAILED = "poisoning.scan_failed"


class DefinitionWatch:
    """Scans new and changed live definitions, then feeds the listing and its findings to the catalog."""

    def __init__(self, catalog: Catalog, *, scan: Scan = live_findings, timeout_s: float = 2.0,
                 on_finding: Callable[[str], None] | None = None) -> None:
        self._catalog, self._scan, self._timeout_s = catalog, scan, timeout_s
        self.on_finding = on_finding  # a metric: called once per finding of a newly scanned definition (rule id)
        self._known: dict[tuple[str, str], tuple[str, tuple[Finding, ...]]] = {}  # (service, tool) -> (hash, found)

    async def on_tools(self, service: str, live_tools: list[dict[str, Any]], as_of: int) -> None:
        """The registry's ``on_tools``: scan what is new, then let the catalog check pins and findings."""
        findings = await self.review(service, live_tools)
        self._catalog.update_service(service, live_tools, as_of, findings=findings)

    async def review(self, service: str, live_tools: Iterable[Mapping[str, Any]]) -> dict[str, tuple[Finding, ...]]:
        """Findings by upstream tool name for each declared tool in ``live_tools``."""
        declared = self._catalog.declared(service)
        others = self._catalog.other_tools(service)
        found: dict[str, tuple[Finding, ...]] = {}
        for tool in live_tools:
            name = tool.get("name")
            if not isinstance(name, str) or name not in declared:
                continue  # never exposed: not worth a scan a hostile upstream could multiply
            digest = definition_hash(tool)
            known = self._known.get((service, name))
            if known is not None and known[0] == digest:
                found[name] = known[1]
                continue
            result = await self._scan_one(service, name, tool, others)
            if not any(f.rule == SCAN_FAILED for f in result):  # a failure is retried at the next listing
                self._known[(service, name)] = (digest, result)
            found[name] = result
        return found

    async def _scan_one(self, service: str, name: str, tool: Mapping[str, Any],
                        others: Sequence[str]) -> tuple[Finding, ...]:
        try:
            with anyio.fail_after(self._timeout_s):
                result = tuple(await anyio.to_thread.run_sync(self._scan, tool, others, abandon_on_cancel=True))
        except TimeoutError:
            result = (Finding(SCAN_FAILED, "high", "", "", f"no answer within {self._timeout_s:g} s: treated as "
                              "poisoned"),)
        except Exception as exc:  # any scanner failure blocks the tool (fail closed)
            result = (Finding(SCAN_FAILED, "high", "", "", f"the scanner failed ({type(exc).__name__}): treated as "
                              "poisoned"),)
        for finding in result:
            if self.on_finding is not None:
                self.on_finding(finding.rule)
            log.warning("tool definition has scanner findings", extra={"fields": {
                "service": service, "upstream_tool": escape_invisible(name[:128]), "rule": finding.rule,
                "finding": finding_message(finding)}})  # excerpts are escaped by the scanner
        return result
