"""The policy engine: each tool's native policy and the deployment's Rego modules, under one version.

A :class:`PolicyEngine` is built once per policy version (at start and on every accepted policy
push) and then only read, so :meth:`PolicyEngine.decide` is a synchronous pure function of its
arguments. The manifest's native ``policy:`` is the only source of an allow (its
``allowed_callers`` is never empty); Rego modules can only add denials, approvals and
obligations. :meth:`PolicyEngine.decide` follows these steps:

1. A tool the engine does not know, or one whose manifest has no ``policy:``, is denied with
   reason ``no_policy`` (rule id ``<tool>/no_policy``): default deny.
2. The native policy decides (:func:`~portcullis.policy.native.evaluate`).
3. If that is a deny, its effect, reasons and rule ids stand (deny overrides everything), but
   the Rego modules are still evaluated for their **obligations**: obligations apply whatever
   the effect, so a denied call's sensitive arguments are hashed in its records exactly like an
   allowed call's. If that evaluation fails, the deny gains :data:`REDACT_ALL` (obligations
   unknown: every argument is hashed). Modules that never mention ``obligations`` cannot add
   any, so for them the deny is returned at once (the cheap path stays cheap). A natively
   denied call never shows Rego rule ids, so a fixture covers a Rego rule only through a call
   the native policy lets through (or shadows, in ``log_only`` mode).
4. Otherwise the Rego modules decide over :meth:`PolicyEngine.input_document`. Their findings
   are always enforced, also when the native policy is in ``log_only`` (shadow) mode. A Rego
   evaluation error, or one stopped at its CPU budget, is a deny with reason ``policy_error``
   (rule id ``rego/policy_error``) carrying :data:`REDACT_ALL`. In the gateway
   (:meth:`PolicyEngine.decide_async`) a Rego evaluation never runs on the event loop, except to
   answer a decision-cache hit.
5. Effects combine: any deny → ``deny``; else any approval → ``require_approval``; else
   ``allow``. Reasons and rule ids are concatenated, native first, then Rego's as
   ``rego/<id>``; obligations are merged without duplicates.
6. Anything unexpected is a deny with ``policy_error`` (fail closed) carrying the native
   policy's obligations and :data:`REDACT_ALL`. Every decision carries
   :attr:`PolicyEngine.version`.

Obligations are never lost: whenever the engine cannot know every obligation that applies (an
evaluation error, a refusal at the gate, which never runs Rego), the decision carries
:data:`REDACT_ALL` (``Obligation("redact", "")``: RFC 6901's pointer to the whole arguments
object, which no policy may write) and every argument value is hashed in the records.

The Rego input document (``input`` in a module)::

    {"principal":   Principal.to_claims(),       # client_id, user_id, agent_id, roles, attributes, ...
     "tool":        {"name": "billing.process_refund", "service": "billing",
                     "upstream_name": "process_refund", "risk": "high",
                     "owner": "payments-team@example.com",
                     "classification": {"input": "Confidential", "output": "Confidential"},
                     "annotations": {"destructiveHint": true, ...}},
     "arguments":   {...},                       # as validated against the input schema
     "environment": "production",
     "now":         "2026-03-02T10:00:00Z",      # RFC 3339, UTC
     "session":     {...},                       # what the pipeline knows of the session, or {}
     "method":      "tools/call"}                # or resources/read, prompts/get (docs/rego.md)

A read adds ``resource`` (``resources/read``) or ``prompt`` (``prompts/get``): see
:func:`portcullis.pipeline.read_limits.rego_extra` and docs/rego.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from portcullis.governance.sinks import RESTRICTED_RULE_ID, outside_environment
from portcullis.identity.principal import Principal
from portcullis.pinning import canonical_json
from portcullis.policy import decision as r
from portcullis.policy.decision import Decision, Effect, Obligation
from portcullis.policy.model import ToolPolicy
from portcullis.policy.native import evaluate, may_call, rule_ids, static_obligations

if TYPE_CHECKING:
    from portcullis.config.loader import Deployment, LoadedManifest
    from portcullis.policy.rego import RegoPolicy, RegoResult

REGO_POLICY_ERROR = "rego/policy_error"
REDACT_ALL = Obligation("redact", "")  # obligations unknown: hash every argument (see the module docstring)
ENGINE_SEMANTICS = 1  # part of every version: bump when the way decisions combine changes
log = logging.getLogger("portcullis.policy")


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolInfo:
    """What the Rego input says about a tool, taken from its manifest (operator configuration).

    Fields:
        exposed_name: the name clients call (``billing.process_refund``).
        service: the service that runs it.
        upstream_name: the tool's name at that service.
        risk: ``low``, ``medium`` or ``high``.
        owner: the accountable owner.
        classification_input: the most sensitive class of data a caller sends.
        classification_output: the most sensitive class of data the tool returns.
        annotations: the manifest's MCP annotations that are set.
    """

    exposed_name: str
    service: str
    upstream_name: str
    risk: str
    owner: str
    classification_input: str
    classification_output: str
    annotations: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_manifest(cls, loaded: LoadedManifest) -> ToolInfo:
        """The tool facts of one loaded manifest."""
        manifest = loaded.manifest
        return cls(
            exposed_name=loaded.exposed_name, service=manifest.service, upstream_name=manifest.name,
            risk=str(manifest.risk), owner=manifest.owner,
            classification_input=str(manifest.classification.input),
            classification_output=str(manifest.classification.output),
            annotations=manifest.annotations.model_dump(exclude_none=True),
        )

    def document(self) -> dict[str, Any]:
        """The ``input.tool`` object."""
        return {
            "name": self.exposed_name, "service": self.service, "upstream_name": self.upstream_name,
            "risk": self.risk, "owner": self.owner,
            "classification": {"input": self.classification_input, "output": self.classification_output},
            "annotations": dict(self.annotations),
        }


@dataclass(frozen=True, slots=True)
class _Entry:
    policy: ToolPolicy | None
    info: ToolInfo
    tool_doc: dict[str, Any]  # built once; a plain dict so that it serialises as JSON


class PolicyEngine:
    """Decides ``tools/call`` requests for one policy version. Build with :meth:`build`."""

    __slots__ = ("_entries", "_rego", "environment", "version")

    def __init__(self, entries: Mapping[str, _Entry], rego: RegoPolicy | None, environment: str,
                 version: str) -> None:
        self._entries = entries
        self._rego = rego
        self.environment = environment
        self.version = version

    # ----------------------------------------------------------------------- building

    @classmethod
    def build(cls, policies: Mapping[str, tuple[ToolPolicy | None, ToolInfo]], rego: RegoPolicy | None, *,
              environment: str) -> PolicyEngine:
        """An engine over ``policies`` (exposed name → policy, or None, and tool facts) and ``rego``.

        Raises :class:`ValueError` if a key differs from its ``ToolInfo.exposed_name`` or the
        environment is empty. Building never evaluates Rego (no warm-up: nothing would bound it in
        this process; see :mod:`.rego_probe` for how a pushed module is tried under limits).
        """
        if not environment:
            raise ValueError("environment must be a non-empty name")
        entries: dict[str, _Entry] = {}
        for name, (policy, info) in sorted(policies.items()):
            if info.exposed_name != name:
                raise ValueError(f"tool {name!r}: ToolInfo names {info.exposed_name!r}")
            entries[name] = _Entry(policy, info, info.document())
        return cls(MappingProxyType(entries), rego, environment, _version(entries, rego, environment))

    @classmethod
    def from_deployment(cls, deployment: Deployment, *, environment: str, rego_dir: Path | None = None,
                        rego_budget_s: float | None = None) -> PolicyEngine:
        """The engine of a loaded deployment: its manifests' policies and the ``*.rego`` in ``rego_dir``.

        ``rego_dir`` defaults to ``<deployment root>/policy``; a directory without ``*.rego``
        files means no Rego. ``rego_budget_s`` overrides the Rego time budget (see
        :mod:`.rego`; an evaluation over budget is a deny). Raises
        :class:`~portcullis.errors.ConfigError` if a module does not compile (a policy that
        cannot be evaluated is rejected whole, never half-applied).
        """
        from portcullis.errors import ConfigError, Problem
        from portcullis.policy.rego import DEFAULT_BUDGET_S, RegoCompileError, RegoPolicy

        directory = deployment.root / "policy" if rego_dir is None else rego_dir
        budget_s = DEFAULT_BUDGET_S if rego_budget_s is None else rego_budget_s
        try:
            rego = RegoPolicy.load_dir(directory, budget_s=budget_s) if directory.is_dir() else None
        except (RegoCompileError, OSError) as exc:
            raise ConfigError([Problem(directory, None, f"Rego policy rejected: {exc}")]) from None
        return cls.build(tool_policies(deployment.manifests), rego, environment=environment)

    def with_environment(self, environment: str) -> PolicyEngine:
        """The same policies evaluated for another environment (a different version)."""
        inputs = {name: (entry.policy, entry.info) for name, entry in self._entries.items()}
        return PolicyEngine.build(inputs, self._rego, environment=environment)

    # ----------------------------------------------------------------------- reading

    @property
    def tools(self) -> tuple[str, ...]:
        """Every exposed tool name the engine knows, with or without a policy, sorted."""
        return tuple(self._entries)

    @property
    def rego(self) -> RegoPolicy | None:
        """The Rego modules, if any."""
        return self._rego

    def policy(self, tool: str) -> ToolPolicy | None:
        """The native policy of ``tool``; None if it has none or is unknown."""
        entry = self._entries.get(tool)
        return None if entry is None else entry.policy

    def rule_ids(self) -> tuple[str, ...]:
        """Every rule id a decision can cite: native ones per tool, then the Rego modules' declared ones."""
        ids: list[str] = []
        for name, entry in self._entries.items():
            ids += rule_ids(entry.policy, name) if entry.policy is not None else [f"{name}/no_policy"]
        if self._rego is not None:
            ids += [f"rego/{rule}" for rule in self._rego.rule_ids()]  # those written literally in the modules
            ids.append(REGO_POLICY_ERROR)
        return tuple(dict.fromkeys(ids))

    @property
    def wants_session(self) -> bool:
        """Whether a Rego module reads ``input.session`` (only then is it worth fetching)."""
        if self._rego is None:
            return False
        wanted = self._rego.wanted
        return wanted is True or (isinstance(wanted, dict) and "session" in wanted)

    def input_document(self, tool: str, principal: Principal, arguments: Mapping[str, Any], *, now: datetime,
                       session: Mapping[str, Any] | None = None, method: str = "tools/call",
                       extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The Rego ``input`` for one call (see the module docstring). Raises KeyError for an unknown tool.

        ``method`` and ``extra`` describe a read (``resources/read``, ``prompts/get``): ``extra`` adds its
        ``resource`` or ``prompt`` object; it never replaces a member of the tools/call shape."""
        document = {
            "principal": principal.to_claims(),
            "tool": self._entries[tool].tool_doc,
            "arguments": arguments if isinstance(arguments, dict) else dict(arguments),
            "environment": self.environment,
            "now": _rfc3339(now),
            "session": session if session is not None else {},
            "method": method,
        }
        if extra:
            document.update({key: value for key, value in extra.items() if key not in document})
        return document

    # ----------------------------------------------------------------------- deciding

    def decide(self, tool: str, principal: Principal, arguments: Mapping[str, Any], *, now: datetime,
               session: Mapping[str, Any] | None = None, method: str = "tools/call",
               extra: Mapping[str, Any] | None = None) -> Decision:
        """Decide one call of ``tool`` (its exposed name), Rego in this process. Never raises; see
        the module docstring. The gateway uses :meth:`decide_async`; this is for the CLI and tests."""
        native: Decision | None = None
        try:
            native = self._native(tool, principal, arguments, now)  # 1, 2
            if self._rego is None:
                return native
            if (done := self._without_rego(tool, native)) is not None:
                return done
            result = self._rego.evaluate(self.input_document(tool, principal, arguments, now=now,  # 3, 4
                                                             session=session, method=method, extra=extra))
            return self._with_rego(tool, native, result)  # 3, 5
        except Exception as exc:  # 6
            return self._failed(tool, native, exc)

    async def decide_async(self, tool: str, principal: Principal, arguments: Mapping[str, Any], *, now: datetime,
                           session: Mapping[str, Any] | None = None, method: str = "tools/call",
                           extra: Mapping[str, Any] | None = None) -> Decision:
        """:meth:`decide` without blocking the event loop: Rego runs as
        :meth:`~portcullis.policy.rego.RegoPolicy.evaluate_async` does (a cache hit here, a miss in
        a worker process stopped at its CPU budget). Never raises (except on cancellation)."""
        native: Decision | None = None
        try:
            native = self._native(tool, principal, arguments, now)  # 1, 2
            if self._rego is None:
                return native
            if (done := self._without_rego(tool, native)) is not None:
                return done
            result = await self._rego.evaluate_async(self.input_document(tool, principal, arguments, now=now,  # 3, 4
                                                                         session=session, method=method, extra=extra))
            return self._with_rego(tool, native, result)  # 3, 5
        except Exception as exc:  # 6
            return self._failed(tool, native, exc)

    def _without_rego(self, tool: str, native: Decision) -> Decision | None:
        """The decision when Rego need not run for this call, else None (shared by both deciders)."""
        if tool not in self._entries:  # no input document: nothing of it is recorded anyway
            return dataclasses.replace(native, obligations=(REDACT_ALL,))
        if native.effect == "deny" and not getattr(self._rego, "may_oblige", True):
            return native  # 3: no module can add an obligation, so the deny is complete as it is
        return None

    @staticmethod
    def _with_rego(tool: str, native: Decision, result: Any) -> Decision:
        if native.effect == "deny":  # 3: a native deny stands; Rego only adds its obligations
            return _with_obligations(native, result)
        return _combine(tool, native, result)  # 5

    def _native(self, tool: str, principal: Principal, arguments: Mapping[str, Any], now: datetime) -> Decision:
        entry = self._entries.get(tool)
        if entry is None or entry.policy is None:  # 1
            return Decision(effect="deny", reasons=(r.NO_POLICY,), rule_ids=(f"{tool}/no_policy",),
                            policy_version=self.version, denied_by=f"{tool}/no_policy")
        return evaluate(entry.policy, tool=tool, principal=principal, arguments=arguments,  # 2
                        environment=self.environment, now=now, policy_version=self.version)

    def _failed(self, tool: str, native: Decision | None, exc: Exception) -> Decision:
        """Step 6: fail closed, keeping the policy's obligations (audit) when known."""
        log.warning("policy evaluation failed: the call is denied", extra={"fields": {
            "tool": tool, "error": type(exc).__name__, "policy_version": self.version}})
        known = self._static_obligations(tool) if native is None else native.obligations
        return Decision(effect="deny", reasons=(r.POLICY_ERROR,), rule_ids=(f"{tool}/policy_error",),
                        obligations=_merge(known, (REDACT_ALL,)), policy_version=self.version,
                        denied_by=f"{tool}/policy_error")

    def error_decision(self, tool: str) -> Decision:
        """The deny for a call whose policy could not be evaluated (reason ``policy_error``): its
        obligations are unknown, so it carries :data:`REDACT_ALL` (every argument hashed)."""
        return Decision(effect="deny", reasons=(r.POLICY_ERROR,), rule_ids=(f"{tool}/policy_error",),
                        obligations=_merge(self._static_obligations(tool), (REDACT_ALL,)),
                        policy_version=self.version, denied_by=f"{tool}/policy_error")

    def gate_decision(self, tool: str, principal: Principal, arguments: Mapping[str, Any], *,
                      now: datetime) -> Decision:
        """The decision recorded for a caller refused at the gate (it may never call ``tool``).

        Native only, never Rego (the arguments are not validated yet, and a caller that may not
        use the tool must not be able to spend Rego evaluations); so when Rego modules exist
        their obligations are unknown and the decision carries :data:`REDACT_ALL`.
        """
        try:
            native = self._native(tool, principal, arguments, now)
        except Exception as exc:
            return self._failed(tool, None, exc)
        entry = self._entries.get(tool)
        if native.effect != "deny" and entry is not None and self._hidden(entry, principal):
            native = dataclasses.replace(native, effect="deny", reasons=(*native.reasons, r.DATA_CLASS_SINK),
                                         rule_ids=(*native.rule_ids, RESTRICTED_RULE_ID),
                                         denied_by=RESTRICTED_RULE_ID)
        if self._rego is None:
            return native
        return dataclasses.replace(native, obligations=_merge(native.obligations, (REDACT_ALL,)))

    def _static_obligations(self, tool: str) -> tuple[Obligation, ...]:
        """The obligations the native policy of ``tool`` always carries (audit, its ``redact`` list)."""
        entry = self._entries.get(tool)
        if entry is None or entry.policy is None:
            return ()
        return static_obligations(entry.policy)

    def may_call(self, tool: str, principal: Principal, *, now: datetime) -> bool:
        """True if ``principal`` could call ``tool`` with some arguments (see :meth:`visible_tools`)."""
        entry = self._entries.get(tool)
        return (entry is not None and entry.policy is not None and not self._hidden(entry, principal)
                and may_call(entry.policy, principal, environment=self.environment, now=now))

    def visible_tools(self, principal: Principal, *, now: datetime) -> frozenset[str]:
        """The tools ``principal`` could call with some arguments (to filter ``tools/list``).

        The native rules about who calls and where decide (:func:`~portcullis.policy.native.may_call`),
        and a tool with Restricted output is hidden from a caller outside the gateway's environment
        (:func:`~portcullis.governance.sinks.outside_environment`: "Restricted never leaves its environment");
        Rego, argument rules, time windows and limits are not consulted, so a listed tool may still
        be refused at call time: then with :class:`~portcullis.errors.PolicyRefused` (``-31020``,
        naming the rule), never with the unknown-tool answer a caller gets for an unlisted tool.
        """
        return frozenset(
            name for name, entry in self._entries.items()
            if entry.policy is not None and not self._hidden(entry, principal)
            and may_call(entry.policy, principal, environment=self.environment, now=now)
        )

    def _hidden(self, entry: _Entry, principal: Principal) -> bool:
        return outside_environment(entry.info.classification_output, principal.attributes, self.environment)


def configured_environment(deployment: Deployment) -> str | None:
    """The environment ``gateway.yaml`` names under ``authorization.environment``, if it does."""
    authorization = getattr(deployment.gateway, "authorization", None)
    environment = getattr(authorization, "environment", None)
    return environment if isinstance(environment, str) and environment else None


def tool_policies(manifests: Iterable[LoadedManifest]) -> dict[str, tuple[ToolPolicy | None, ToolInfo]]:
    """The :meth:`PolicyEngine.build` input for a deployment's loaded manifests."""
    return {m.exposed_name: (m.manifest.policy, ToolInfo.from_manifest(m)) for m in manifests}


def _combine(tool: str, native: Decision, result: RegoResult) -> Decision:
    if result.error is not None:
        log.warning("Rego evaluation failed: the call is denied", extra={"fields": {
            "tool": tool, "error": result.error, "policy_version": native.policy_version}})
        return Decision(effect="deny", reasons=(*native.reasons, r.POLICY_ERROR),
                        rule_ids=(*native.rule_ids, REGO_POLICY_ERROR),
                        obligations=_merge(native.obligations, (REDACT_ALL,)),
                        policy_version=native.policy_version, shadow=native.shadow, denied_by=REGO_POLICY_ERROR)
    effects = {native.effect, *(finding.effect for finding in result.findings)}
    effect: Effect = "deny" if "deny" in effects else "require_approval" if "require_approval" in effects else "allow"
    return Decision(
        effect=effect,
        reasons=tuple(dict.fromkeys((*native.reasons, *(f.reason for f in result.findings)))),
        rule_ids=tuple(dict.fromkeys((*native.rule_ids, *(f"rego/{f.rule_id}" for f in result.findings)))),
        obligations=_merge(native.obligations, result.obligations),
        policy_version=native.policy_version,
        shadow=native.shadow,
        denied_by=None if effect != "deny" else native.denied_by or next(
            (f"rego/{f.rule_id}" for f in result.findings if f.effect == "deny"), None),
    )


def _with_obligations(native: Decision, result: RegoResult) -> Decision:
    """Step 3: a native deny stands as it is, with the Rego modules' obligations added (or, if
    they could not be evaluated, :data:`REDACT_ALL`)."""
    extra = (REDACT_ALL,) if result.error is not None else result.obligations
    return dataclasses.replace(native, obligations=_merge(native.obligations, extra))


def _merge(first: tuple[Obligation, ...], second: tuple[Obligation, ...]) -> tuple[Obligation, ...]:
    return tuple(dict.fromkeys((*first, *second))) if second else first


def _rfc3339(now: datetime) -> str:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _version(entries: Mapping[str, _Entry], rego: RegoPolicy | None, environment: str) -> str:
    """``pv-`` + 16 hex digits of SHA-256 over everything that can change a decision."""
    document = {
        "engine": ENGINE_SEMANTICS,
        "environment": environment,
        "rego": None if rego is None else rego.version,
        "tools": {
            name: {"policy": None if e.policy is None else e.policy.model_dump(mode="json", by_alias=True),
                   "tool": e.tool_doc}
            for name, e in entries.items()
        },
    }
    return "pv-" + hashlib.sha256(canonical_json(_plain(document))).hexdigest()[:16]


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
