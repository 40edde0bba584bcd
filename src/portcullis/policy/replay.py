"""Replay-diff: the audited ``tools/call`` decisions of a window decided again under two policy versions.

Pure: :func:`replay_diff` takes decision records (:class:`~portcullis.audit.record.AuditRecord`) and
two :class:`~portcullis.policy.engine.PolicyEngine` objects and returns a frozen :class:`ReplayDiff`;
reading the audit store, the version store and the terminal is the CLI's job
(:mod:`portcullis.cli.policy_replay_cmd`).

Each record is decided with its recorded tool, principal (the claim form) and arguments, at its own
time (time windows apply as they did), with no session state. A record counts as:

* **replayed** — both engines decided it; it is a **change** when the effects differ, or when the
  effect is the same but the rule ids that decided it differ.
* **not replayable (hashed argument)** — the audit trail kept some argument only as a keyed hash
  (``hmac-sha256:…``) and either version might read it. Nothing is guessed. A hashed record is
  replayed only when this can be shown soundly: the tool is unknown to both engines or has no
  native policy in either (a deny that reads no argument), or neither engine has Rego modules and
  no native rule of either reads a pointer at, above or below a hashed value.
* **not replayable (malformed)** — the principal or arguments do not have their recorded shape.

Records of other kinds, and decisions of ``resources/read`` and ``prompts/get`` (they carry a
``method`` field), are skipped and not counted.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from portcullis.audit.record import KEYED_HASH_PREFIX, AuditRecord, canonical_bytes
from portcullis.identity.principal import Principal
from portcullis.policy.engine import PolicyEngine

HASHED = "hashed argument"
MALFORMED = "malformed record"


@dataclass(frozen=True, slots=True)
class ReplayRow:
    """One record: when, who, which tool, its arguments hash, and each version's effect and rules."""

    ts: float
    request_id: str
    agent: str
    user: str
    tenant: str
    tool: str
    arguments_hash: str
    old_effect: str
    old_rules: tuple[str, ...]
    new_effect: str
    new_rules: tuple[str, ...]
    note: str = ""  # why a record is not replayable (HASHED, MALFORMED); "" for a replayed one

    def to_json(self) -> dict[str, Any]:
        return {"ts": self.ts, "request_id": self.request_id, "agent": self.agent, "user": self.user,
                "tenant": self.tenant, "tool": self.tool, "arguments_hash": self.arguments_hash,
                "old": {"effect": self.old_effect, "rule_ids": list(self.old_rules)},
                "new": {"effect": self.new_effect, "rule_ids": list(self.new_rules)}, "note": self.note}


@dataclass(frozen=True, slots=True)
class ReplayDiff:
    """What changed between ``old_version`` and ``new_version`` over the records given."""

    old_version: str
    new_version: str
    replayed: int
    changed: tuple[ReplayRow, ...]
    not_replayable: tuple[ReplayRow, ...]

    def transitions(self) -> dict[str, int]:
        """Changed rows by ``old→new`` effect (``allow→allow`` when only the rules changed)."""
        return dict(sorted(Counter(f"{r.old_effect}→{r.new_effect}" for r in self.changed).items()))

    def summary(self) -> str:
        parts = ", ".join(f"{k} {v}" for k, v in self.transitions().items())
        return (f"{self.replayed} replayed, {len(self.changed)} changed" + (f" ({parts})" if parts else "")
                + f", {len(self.not_replayable)} not replayable")

    def to_json(self) -> dict[str, Any]:
        return {"from": self.old_version, "to": self.new_version, "replayed": self.replayed,
                "changed": len(self.changed), "transitions": self.transitions(),
                "not_replayable": len(self.not_replayable),
                "rows": [r.to_json() for r in self.changed],
                "not_replayable_rows": [r.to_json() for r in self.not_replayable]}


def replay_diff(records: Iterable[AuditRecord], old: PolicyEngine, new: PolicyEngine, *,
                old_version: str | None = None, new_version: str | None = None) -> ReplayDiff:
    """Replay every ``tools/call`` decision record under ``old`` and ``new`` (oldest first in the result)."""
    replayed, changed, skipped = 0, list[ReplayRow](), list[ReplayRow]()
    for record in sorted(records, key=lambda r: r.index):
        fields = record.fields
        if record.kind != "decision" or "method" in fields:
            continue
        tool = fields.get("tool", {}).get("name") if isinstance(fields.get("tool"), dict) else None
        claims, arguments = fields.get("principal"), fields.get("arguments")
        recorded = fields.get("decision")
        recorded = recorded if isinstance(recorded, dict) else {}
        base = _row(record, tool, claims, arguments, recorded)
        try:
            if not isinstance(tool, str) or not isinstance(arguments, dict):
                raise ValueError("shape")
            principal = Principal.from_claims(claims if isinstance(claims, dict) else {})
        except (ValueError, TypeError):
            skipped.append(_with(base, note=MALFORMED))
            continue
        hashed = tuple(hashed_paths(arguments))
        if hashed and (may_read(old, tool, hashed) or may_read(new, tool, hashed)):
            skipped.append(_with(base, note=HASHED))
            continue
        now = datetime.fromtimestamp(record.ts, UTC)
        before = old.decide(tool, principal, arguments, now=now)
        after = new.decide(tool, principal, arguments, now=now)
        replayed += 1
        if (before.effect, before.rule_ids) != (after.effect, after.rule_ids):
            changed.append(_with(base, old_effect=before.effect, old_rules=before.rule_ids,
                                 new_effect=after.effect, new_rules=after.rule_ids))
    return ReplayDiff(old_version or old.version, new_version or new.version, replayed, tuple(changed),
                      tuple(skipped))


def hashed_paths(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The JSON paths (tokens) of every keyed-hash string in a recorded arguments object."""
    if isinstance(value, str):
        if value.startswith(KEYED_HASH_PREFIX):
            yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from hashed_paths(item, (*path, str(key)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from hashed_paths(item, (*path, str(i)))


def may_read(engine: PolicyEngine, tool: str, hashed: Iterable[tuple[str, ...]]) -> bool:
    """False only when ``engine``'s decision on ``tool`` provably reads none of the ``hashed`` paths."""
    policy = engine.policy(tool)
    if policy is None:
        return False  # a no_policy deny, whatever the arguments (Rego can only add obligations to it)
    rego = engine.rego
    if rego is not None and rego.module_names:
        return True  # a module may read any argument: not decidable here, so not replayed
    reads = [_tokens(p) for p in native_pointers(policy)]
    return any(_related(h, r) for h in hashed for r in reads)


def native_pointers(policy: Any) -> list[str]:
    """Every argument pointer a native tool policy reads (see :mod:`portcullis.policy.native`)."""
    pointers: list[str] = []
    if policy.max_amount is not None or policy.requires_approval_over is not None:
        pointers.append(policy.amount_pointer)
    if policy.allowed_currencies is not None:
        pointers.append(policy.currency_pointer)
    if policy.tenant_argument is not None:
        pointers.append(policy.tenant_argument)
    pointers.extend(policy.tenant_arguments)
    pointers.extend(c.pointer for c in policy.constraints)
    return pointers


def _tokens(pointer: str) -> tuple[str, ...]:
    return tuple(p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:])


def _related(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """One path is the other or lies inside it (a hashed parent hides its children and vice versa)."""
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _row(record: AuditRecord, tool: object, claims: object, arguments: object,
         recorded: Mapping[str, Any]) -> ReplayRow:
    who = claims if isinstance(claims, dict) else {}
    try:
        digest = "sha256:" + hashlib.sha256(canonical_bytes(arguments)).hexdigest()
    except (ValueError, TypeError):
        digest = "-"
    rules = recorded.get("rule_ids")
    return ReplayRow(record.ts, record.request_id, _text(who.get("agent_id")), _text(who.get("user_id")),
                     _text(who.get("tenant")), _text(tool), digest, _text(recorded.get("effect")),
                     tuple(str(r) for r in rules) if isinstance(rules, list) else (), "-", ())


def _with(row: ReplayRow, **changes: Any) -> ReplayRow:
    return replace(row, **changes)


def _text(value: object) -> str:
    return value if isinstance(value, str) else "-"
