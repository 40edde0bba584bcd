"""What the audit trail says about a call: pure field builders and the recorder the stages use.

Three record kinds (see ``docs/audit.md`` for the full layout):

* ``decision`` — written, and durable, *before* a call is forwarded (write-ahead), and also for
  every policy denial and approval request. Tool identity (exposed and upstream name,
  definition hash, service version), every principal field, the decision (effect, reasons,
  rule ids, policy version, shadow) and the arguments with sensitive values replaced by keyed
  hashes.
* ``outcome`` — after the upstream answered (or failed): outcome, error code, output size and
  classification, duration. Durable before the client sees the answer.
* ``rejected`` — refused before a decision existed: unknown tool, invalid arguments.

Sensitive values: every argument at a pointer listed in the manifest's ``sensitive_arguments``
or in a ``redact`` obligation of the decision becomes ``hmac-sha256:<hex>`` under the audit
key, so equal values correlate without being readable. Obligations apply whatever the effect:
a denied or held call's sensitive arguments are hashed like an allowed call's, and a decision
whose obligations are unknown (a policy error, a refusal at the gate with Rego modules loaded)
has every argument value hashed. Nothing else of the output is recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from portcullis.audit.errors import AuditUnavailable
from portcullis.audit.record import AuditRecord, redact
from portcullis.audit.writer import AuditWriter
from portcullis.catalog import Route
from portcullis.config.model import Classification, GovernanceConfig, Sink
from portcullis.errors import InternalError
from portcullis.governance.sinks import arguments_in_clear
from portcullis.notifications import CURRENT
from portcullis.pipeline.context import CallContext, ReadContext
from portcullis.pipeline.hooks import Hooks
from portcullis.transport.push import PUSH

log = logging.getLogger("portcullis.audit")
MAX_NAME_CHARS = 128


def decision_json(decision: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"effect": decision.effect, "reasons": list(decision.reasons),
                           "rule_ids": list(decision.rule_ids), "policy_version": decision.policy_version}
    if decision.shadow is not None:
        out["shadow"] = decision_json(decision.shadow)
    risk = getattr(decision, "risk", None)
    if risk is not None:
        out["risk"] = dict(risk)
    shadow_version = getattr(decision, "shadow_version", None)
    if shadow_version is not None:
        out["shadow_version"] = dict(shadow_version)
    return out


def redaction_pointers(route: Route, decision: Any) -> list[str]:
    """Every pointer whose value a call's records hide: the manifest's ``sensitive_arguments`` and
    the decision's ``redact`` obligations (``""``, the whole object, when they are unknown)."""
    return [*route.manifest.manifest.sensitive_arguments,
            *(o.pointer for o in decision.obligations if o.kind == "redact" and o.pointer is not None)]


def _common(ctx: CallContext | ReadContext, environment: str) -> dict[str, Any]:
    trace = ctx.trace
    fields = {"environment": environment, "protocol_version": ctx.protocol_version,
              "trace_id": getattr(trace, "trace_id_hex", None), "span_id": getattr(trace, "span_id_hex", None),
              "principal": ctx.principal.to_claims()}
    credential = ctx.principal.credential
    if credential is not None:  # the exact token (jti) and the caller's transaction (txn), when they say
        fields["credential"] = credential.to_json()
    return fields


def presented_unchecked(ctx: CallContext) -> dict[str, Any] | None:
    """``approval_presented`` of a call refused before the approve stage looked at what it presented."""
    if not ctx.presents_approval:
        return None
    return {"id": ctx.approval_id, "via": "meta" if ctx.approval_id else "request_state",
            "poll": ctx.approval_poll, "result": "not_checked"}


def tool_json(route: Route, service_version: str | None) -> dict[str, Any]:
    return {"name": route.exposed_name, "service": route.service, "upstream_name": route.upstream_name,
            "definition_hash": route.manifest.manifest.pin, "service_version": service_version}


class CallAuditor:
    """Writes a call's records through the :class:`AuditWriter` (which also hands them to the SIEM export)."""

    def __init__(self, writer: AuditWriter, *, audit_key: bytes, environment: str, hooks: Hooks,
                 service_version: Callable[[str], str | None] = lambda _service: None,
                 sinks: Mapping[Classification, Sequence[Sink]] | None = None) -> None:
        self._writer, self._key, self._environment = writer, audit_key, environment
        self._sinks = GovernanceConfig().sinks if sinks is None else sinks
        self._hooks, self._service_version = hooks, service_version

    async def decision(self, ctx: CallContext, route: Route, decision: Any,
                       presented: Mapping[str, Any] | None = None) -> AuditRecord:
        """The decision record. ``presented`` (default: ``ctx.approval_presented``) is what the call
        presented of an approval and what came of it: ``{"id", "via", "poll", "result"}``."""
        manifest = route.manifest.manifest
        # a tool whose input class may not reach the audit trail or SIEM in clear: every value keyed-hashed
        pointers = redaction_pointers(route, decision) if arguments_in_clear(manifest, self._sinks) else [""]
        fields = _common(ctx, self._environment)
        fields.update(tool=tool_json(route, self._service_version(route.service)),
                      decision=decision_json(decision),
                      arguments=redact(ctx.arguments, pointers, self._key) if pointers else ctx.arguments)
        if ctx.record.shadow is not None:  # a shadow decided in the background: its result, or "pending"
            fields["decision"]["shadow_version"] = ctx.record.shadow.for_decision()
        approval = ctx.approval
        if approval is not None:  # the call runs on a human approval: name it and who gave it
            fields["approval"] = {"id": approval.id, "arguments_hash": approval.arguments_hash,
                                  "approvers": [dict(v.approver) for v in approval.approvals()]}
        if manifest.retention_class is not None:  # the chain keeps it for audit.retention_days; this labels it
            fields["retention_class"] = manifest.retention_class
        if ctx.justification:
            fields["justification"] = ctx.justification
        presented = presented or ctx.approval_presented or presented_unchecked(ctx)
        if presented is not None:
            fields["approval_presented"] = dict(presented)
        return await self._write("decision", ctx.request_id, fields, ctx.record.decision_durable)

    async def outcome(self, ctx: CallContext, route: Route, *, outcome: str, error_code: int | None,
                      output_bytes: int, duration_ms: float, upstream_span_id: str | None,
                      cancelled_by: str | None = None) -> AuditRecord:
        fields: dict[str, Any] = {"outcome": outcome, "error_code": error_code,
                                  "output": {"bytes": output_bytes,
                                             "classification": str(route.manifest.manifest.classification.output)},
                                  "duration_ms": duration_ms, "upstream_span_id": upstream_span_id}
        if cancelled_by is not None:  # "caller": its connection went away mid-call (portcullis.cancellation)
            fields["cancelled_by"] = cancelled_by
        if ctx.record.cache is not None:  # the response cache's verdict (hit: answered without forwarding)
            fields["cache"] = ctx.record.cache
        if ctx.record.content is not None:  # what the output filter did: counts and rule ids, never values
            fields["content"] = ctx.record.content.to_json()
        stream = CURRENT.get()
        if stream is not None and stream.counts:  # streamed notifications: counts by outcome, never values
            report = ctx.record.content.to_json() if ctx.record.content is not None else {}
            fields["content"] = {**report, "notifications": stream.summary()}
        if ctx.record.governance:  # what data governance did: {"taint": cause, "withheld": reason}
            fields["governance"] = dict(ctx.record.governance)
        push = PUSH.get()
        if push is not None and (push.records or push.unrecorded):  # client requests: kind and outcome, no content
            taken, unrecorded = push.take_records()
            fields["client_requests"] = [{**entry, "service": entry["service"] or route.service,
                                          "tool": route.exposed_name} for entry in taken]
            if unrecorded:
                fields["client_requests_unrecorded"] = unrecorded
        if ctx.record.client_input is not None:  # MRTR: round, kinds and keys relayed or refused, never values
            fields["client_input"] = ctx.record.client_input
        if ctx.record.shadow is not None and (late := ctx.record.shadow.for_outcome()) is not None:
            fields["shadow_version"] = late  # the background shadow's result the decision record did not have
        if ctx.record.outcome_written:  # exactly one per decision, whoever asks twice
            raise InternalError(detail="second outcome record for one call")
        return await self._write("outcome", ctx.request_id, fields, ctx.record.outcome_durable)

    async def rejected(self, ctx: CallContext, *, reason: str, error_code: int | None,
                       presented: Mapping[str, Any] | None = None) -> AuditRecord:
        fields = _common(ctx, self._environment)
        fields.update(tool={"name": ctx.tool_name[:MAX_NAME_CHARS]}, reason=reason, error_code=error_code)
        presented = presented or presented_unchecked(ctx)
        if presented is not None:
            fields["approval_presented"] = dict(presented)
        return await self._write("rejected", ctx.request_id, fields)

    # ------------------------------------------------------------------ resources/read and prompts/get

    def _read_target(self, ctx: ReadContext) -> dict[str, Any]:
        entry = ctx.entry
        return {"name": entry.exposed, "kind": entry.kind, "service": entry.service,
                "upstream_name": ctx.upstream_target[:2048], "definition_hash": entry.loaded.manifest.pin,
                "service_version": self._service_version(entry.service)}

    async def read_decision(self, ctx: ReadContext, decision: Any) -> AuditRecord:
        """The decision record of a read or prompt get (``tool`` names the resource or prompt, ``kind`` says
        which); argument values are keyed hashes unless the input class may reach the audit trail in clear."""
        manifest = ctx.entry.loaded.manifest
        fields = _common(ctx, self._environment)
        arguments = {"uri": ctx.upstream_target} if ctx.method == "resources/read" else dict(ctx.arguments)
        in_clear = arguments_in_clear(manifest, self._sinks)
        pointers = [o.pointer for o in decision.obligations if o.kind == "redact" and o.pointer is not None]
        fields.update(method=ctx.method, tool=self._read_target(ctx), decision=decision_json(decision),
                      arguments=redact(arguments, pointers if in_clear else [""], self._key)
                      if pointers or not in_clear else arguments)
        if manifest.retention_class is not None:
            fields["retention_class"] = manifest.retention_class
        return await self._write("decision", ctx.request_id, fields, ctx.record.decision_durable)

    async def read_outcome(self, ctx: ReadContext, *, outcome: str, error_code: int | None, output_bytes: int,
                           duration_ms: float) -> AuditRecord:
        fields: dict[str, Any] = {
            "method": ctx.method, "outcome": outcome, "error_code": error_code,
            "output": {"bytes": output_bytes, "classification": str(ctx.entry.loaded.manifest.classification.output)},
            "duration_ms": duration_ms, "upstream_span_id": None}
        if ctx.record.content is not None:
            fields["content"] = ctx.record.content.to_json()
        if ctx.record.client_input is not None:
            fields["client_input"] = ctx.record.client_input
        if ctx.record.outcome_written:
            raise InternalError(detail="second outcome record for one read")
        return await self._write("outcome", ctx.request_id, fields, ctx.record.outcome_durable)

    async def read_rejected(self, ctx: ReadContext, *, reason: str, error_code: int | None) -> AuditRecord:
        fields = _common(ctx, self._environment)
        fields.update(method=ctx.method, tool={"name": ctx.target[:MAX_NAME_CHARS]}, reason=reason,
                      error_code=error_code)
        return await self._write("rejected", ctx.request_id, fields)

    async def approval(self, event: str, approval: Any, *, request_id: str, approver: Any = None,
                       reason: str = "") -> AuditRecord:
        """One step of an approval: ``proposed``, ``approved`` / ``denied`` (an approver's vote,
        with who and when), ``expired``, ``executed``. Arguments appear only as their hash here;
        the proposing call's decision record holds them (keyed-hashed where sensitive)."""
        fields: dict[str, Any] = {
            "event": event, "approval_id": approval.id, "status": approval.status,
            "tool": {"name": approval.tool}, "arguments_hash": approval.arguments_hash,
            "requester": dict(approval.requester), "policy_version": approval.policy_version,
            "rule_ids": list(approval.rule_ids), "required": approval.required,
            "approvals": len(approval.approvals()), "expires_at": approval.expires_at,
            "environment": self._environment,
        }
        if approval.risk:
            fields["risk"] = dict(approval.risk)
        if approver is not None:
            fields["approver"] = approver.to_claims()
        if reason:
            fields["reason"] = reason[:1000]
        return await self._write("approval", request_id, fields)

    async def kill_switch(self, request_id: str, fields: Mapping[str, Any]) -> AuditRecord:
        """A kill switch set or lifted (portcullis.kill.runtime.event_fields): who, why, on what."""
        return await self._write("kill_switch", request_id, {**fields, "environment": self._environment})

    async def alert(self, request_id: str, fields: dict[str, Any]) -> AuditRecord:
        """An anomaly alert (portcullis.monitoring): rule, key, observed value, baseline, threshold, window
        and the containment it proposed or applied; exported and counted like every record."""
        return await self._write("alert", request_id, {**fields, "environment": self._environment})

    async def _write(self, kind: str, request_id: str, fields: dict[str, Any],
                     on_durable: Callable[[], None] | None = None) -> AuditRecord:
        try:
            record = await self._writer.record(kind, request_id, fields, on_durable=on_durable)
        except AuditUnavailable:
            self._hooks.audit_failure()
            raise
        except ValueError as exc:  # fields that are not canonical JSON: a bug, never a silent skip
            self._hooks.audit_failure()
            raise AuditUnavailable(detail=f"audit record not serialisable: {exc}") from None
        self._hooks.audit_record(kind)
        return record
