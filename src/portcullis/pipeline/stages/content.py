"""Content: the output filter around the forwarder (response side only).

The stage sits between ``audit`` and the forwarder, so on the way back it filters the result
before the audit stage encodes it: the outcome record, the log line, approval views and anything
that might cache a result only ever hold filtered output. It runs
:func:`~portcullis.content.output_filter.filter_message` with the policy for this tool, its output
classification and this caller (:class:`OutputFilter`), puts the report on the call record
(``record.content``: counts, rule ids, ``sensitive``, ``injection``), counts findings in the
metrics and, for a withheld result, raises :class:`~portcullis.errors.ResultWithheld` (-31030)
with a closed-set reason and nothing from the result.

Errors from the upstream are not filtered here because none of their text reaches the caller: the
upstream clients turn a JSON-RPC error into :class:`~portcullis.errors.UpstreamFailed` with a fixed
message (the code only in the operator detail), and ``isError`` results are results, filtered like
any other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from typing import TYPE_CHECKING, Any

import anyio
import orjson

from portcullis.config.content import ContentConfig
from portcullis.content.budget import ScanBudget
from portcullis.content.links import normalise_hosts
from portcullis.content.output_filter import ActionRule, FilterPolicy, filter_message
from portcullis.content.scan import DetectorSet
from portcullis.content.unicode_safety import HiddenPolicy
from portcullis.errors import InternalError, ResultWithheld
from portcullis.notifications import CURRENT
from portcullis.pipeline.client_input import ScreenedInput
from portcullis.pipeline.context import CallContext, CallResult, Handler, Stage
from portcullis.policy.native import caller_matches

if TYPE_CHECKING:
    from portcullis.config.model import ToolManifest
    from portcullis.identity.principal import Principal

CHANNEL = "tools/call"
THREAD_ABOVE_CHARS = 64 * 1024  # a larger result is filtered in a worker thread (about 1 ms of CPU and up)
SECRETS_RULE, PII_RULE = "output.secrets", "output.pii"
_PII_KIND_NAMES = {"card": "card_number", "ssn": "us_ssn", "email": "email", "phone": "phone_number", "iban": "iban"}


def hash_key(audit_key: bytes) -> bytes:
    """The key of ``hash`` markers: derived from the gateway's audit HMAC key, used for nothing else."""
    return hmac.new(audit_key, b"portcullis/output-filter/hash", hashlib.sha256).digest()


class OutputFilter:
    """The gateway's output-filter settings, resolved per tool (cached) and per caller."""

    def __init__(self, config: ContentConfig, *, key: bytes, detectors: DetectorSet | None = None) -> None:
        self.config = config
        if detectors is None and (config.secrets.enabled or config.pii.kinds):
            detectors = DetectorSet.build(secrets=config.secrets.enabled, pii=config.pii.kinds,
                                          phone_region=config.pii.phone_region)
        budget = config.budget
        self._base = FilterPolicy(
            detectors=detectors,
            budget=ScanBudget(cpu_ms=budget.cpu_ms, max_findings=budget.max_findings, decode_depth=budget.decode_depth,
                              min_encoded_run=budget.min_encoded_run),
            hidden=HiddenPolicy(config.hidden_characters), injection=config.injection, links=config.links.enabled,
            allow_hosts=normalise_hosts(config.links.allow_hosts), hash_key=key)
        self._per_tool: dict[int, tuple[Any, FilterPolicy]] = {}

    def policy(self, manifest: ToolManifest, exposed_name: str, principal: Principal) -> FilterPolicy:
        cached = self._per_tool.get(id(manifest))
        if cached is None or cached[0] is not manifest:
            cached = (manifest, self._tool_policy(manifest, exposed_name))
            self._per_tool[id(manifest)] = cached
        policy = cached[1]
        tool = manifest.content
        if tool is None or not any(rule.callers for rule in tool.rules):
            return policy
        rules = [ActionRule(rule.id, frozenset(_kinds(rule.kinds)), rule.action) for rule in tool.rules
                 if not rule.callers or caller_matches(rule.callers, principal)]
        return dataclasses.replace(policy, rules=(*rules, *self._defaults(manifest)))

    def _defaults(self, manifest: ToolManifest) -> tuple[ActionRule, ...]:
        cls = str(manifest.classification.output)
        pii_action = self.config.pii.actions.get(cls, "redact")  # type: ignore[call-overload]
        return (ActionRule(SECRETS_RULE, frozenset({"secret"}), self.config.secrets.action),
                ActionRule(PII_RULE, frozenset({"pii"}), pii_action))

    def _tool_policy(self, manifest: ToolManifest, exposed_name: str) -> FilterPolicy:
        tool = manifest.content
        rules = [] if tool is None else [ActionRule(rule.id, frozenset(_kinds(rule.kinds)), rule.action)
                                         for rule in tool.rules if not rule.callers]
        injection = self._base.injection if tool is None or tool.injection is None else tool.injection
        return dataclasses.replace(self._base, rules=(*rules, *self._defaults(manifest)), injection=injection,
                                   source=exposed_name)


def _kinds(kinds: tuple[str, ...]) -> list[str]:
    """Config kinds as finding kinds: the PII short names (``card``) also name their finding kind."""
    return [_PII_KIND_NAMES.get(kind, kind) for kind in kinds]


def rough_size(result: CallResult) -> int:
    """About how many characters the filter will read: the content items' strings and the structured content."""
    size = 0
    for item in result.get("content") or ():
        if isinstance(item, dict):
            size += sum(len(v) for v in item.values() if isinstance(v, str))
            resource = item.get("resource")
            if isinstance(resource, dict):
                size += sum(len(v) for v in resource.values() if isinstance(v, str))
    structured = result.get("structuredContent")
    if structured is not None:
        try:
            size += len(orjson.dumps(structured))
        except TypeError:
            size += THREAD_ABOVE_CHARS + 1  # the audit stage refuses it; the filter runs it in a thread first
    return size


def make_stage(output_filter: OutputFilter, hooks: Any = None) -> Stage:
    counted = getattr(hooks, "content_findings", None)
    withheld = getattr(hooks, "content_withheld", None)

    async def content(ctx: CallContext, call_next: Handler) -> CallResult:
        stream = CURRENT.get()
        if stream is not None and ctx.route is not None:  # streamed notifications pass the same filter
            stream.policy = output_filter.policy(ctx.route.manifest.manifest, ctx.route.exposed_name, ctx.principal)
        result = await call_next(ctx)
        if isinstance(result, ScreenedInput):  # an upstream's input requests, screened with this same policy
            return result
        route = ctx.route
        if route is None:
            raise InternalError(detail="content ran before route")
        policy = output_filter.policy(route.manifest.manifest, route.exposed_name, ctx.principal)
        if rough_size(result) > THREAD_ABOVE_CHARS:  # a large result: off the event loop, other calls go on
            outcome = await anyio.to_thread.run_sync(filter_message, result, CHANNEL, policy)
        else:
            outcome = filter_message(result, CHANNEL, policy)
        report = ctx.record.content = outcome.report
        if counted is not None and (report.findings or report.links_neutralised or report.injection_rules):
            counted(report)
        if outcome.blocked:
            reason = report.blocked or "policy"
            if withheld is not None:
                withheld(reason)
            raise ResultWithheld(reason, detail=f"output filter withheld the result: {reason}")
        value: CallResult = outcome.value
        return value

    return content
