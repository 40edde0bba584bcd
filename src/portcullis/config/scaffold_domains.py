"""The per-domain files of ``portcullis init``: one example tool manifest and its decision fixtures.

Contract: :func:`domain_files` returns ``{relative path: text}`` for one risk domain — the manifest
``tools/<domain>/<tool>.yml`` of the example tool for that risk level (full metadata: owner, risk,
classification, annotations, a closed input schema, a policy) and ``policy/fixtures/<domain>.yaml``,
golden decisions that trip every rule of that policy (allow, deny and, for a high-risk tool, the
approval path). :func:`approver_rule` is the ``approvals.approvers`` entry of a high-risk domain.
Every caller pattern is scoped to the scaffold's one identity source, ``corp``.

The caller names are roles the identity provider asserts: ``<domain>-reader``, ``<domain>-operator``
and, for high-risk domains, ``<domain>-approver``. Inputs (domain, risk, owner) are validated by
:mod:`portcullis.config.scaffold` before they reach these templates; the owner is written as a JSON
(double-quoted YAML) string.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Risk = Literal["low", "medium", "high"]
ISSUER = "corp"  # the scaffold's identity source (gateway.yaml identity.issuers[0].name)
NOW = "2026-03-02T10:00:00Z"
TOOL_NAMES: dict[Risk, str] = {"low": "get_record", "medium": "update_record", "high": "transfer_funds"}

_MANIFEST = """\
{comment}
name: {tool}
service: {domain}
owner: {owner}
description: {description}
risk: {risk}
classification:
  input: {classified[0]}
  output: {classified[1]}
annotations:
  title: {title}
  readOnlyHint: {hints[0]}
  destructiveHint: {hints[1]}
  idempotentHint: {hints[2]}
  openWorldHint: false
input_schema:
  type: object
  properties:
{properties}
  required: [{required}]
  additionalProperties: false
# After reviewing the live definition, run `portcullis pin` to record its hash here as `pin:`.
{policy}"""
_RECORD_ID = "    record_id:\n      type: string\n      pattern: ^REC-[0-9]{4,10}$"
_OPERATOR = 'allowed_callers: ["issuer:{issuer}/role:{domain}-operator"]\n  denied_callers: ["app:public-chat"]'


@dataclass(frozen=True)
class _Example:
    """What differs between the risk levels' example tools (the rest is :data:`_MANIFEST`)."""

    comment: str
    description: str
    title: str
    classified: tuple[str, str]  # input, output
    hints: tuple[str, str, str]  # readOnlyHint, destructiveHint, idempotentHint
    properties: str
    required: str
    policy: str  # after "policy:\n  "


_EXAMPLES: dict[Risk, _Example] = {
    "low": _Example(
        "# {domain}/get_record: a read-only lookup. It changes nothing: low risk.\n"
        "# Replace it with your service's real tools (`portcullis import` drafts manifests from a live service).",
        "Look up one record by its id (for example REC-1001).", "Get record", ("Internal", "Internal"),
        ("true", "false", "true"), _RECORD_ID, "record_id",
        "# Readers and operators of this domain, as the corp identity provider asserts their roles.\n"
        'policy:\n  allowed_callers: ["issuer:{issuer}/role:{domain}-reader", '
        '"issuer:{issuer}/role:{domain}-operator"]'),
    "medium": _Example(
        "# {domain}/update_record: changes a record's status. It writes, but the same call twice has the same\n"
        "# effect and nothing is destroyed: medium risk.",
        "Set the status of one record and add a note.", "Update record", ("Confidential", "Internal"),
        ("false", "false", "true"),
        _RECORD_ID + "\n    status:\n      type: string\n      enum: [open, on_hold, closed]\n"
        "    note:\n      type: string\n      maxLength: 500", "record_id, status",
        "# Operators of this domain only, and never through the public chat front end, whoever asserts it\n"
        "# (deny overrides allow; an unscoped deny applies to every identity source).\npolicy:\n  " + _OPERATOR),
    "high": _Example(
        "# {domain}/transfer_funds: moves money. Not idempotent (each call is a new transfer) and not\n"
        "# reversible by the caller: high risk. Above 500 a person approves, above 5000 two people do, above\n"
        "# 10000 nobody may; USD and EUR only. `portcullis lint` requires the approval path and an approver.",
        "Transfer an amount to an account. Each call issues a new transfer.", "Transfer funds",
        ("Confidential", "Confidential"), ("false", "true", "false"),
        "    account_id:\n      type: string\n      pattern: ^ACC-[0-9]{4,12}$\n"
        "    amount:\n      type: number\n      exclusiveMinimum: 0\n      maximum: 1000000\n"
        "    currency:\n      type: string\n      pattern: ^[A-Z]{3}$\n"
        "    reference:\n      type: string\n      maxLength: 140", "account_id, amount, currency, reference",
        "policy:\n  " + _OPERATOR + "\n  max_amount: 10000\n  requires_approval_over: 500\n"
        '  requires_two_approvals_over: 5000\n  allowed_currencies: ["USD", "EUR"]'),
}


# (label, principal roles, extra principal fields, arguments, effect, failing rules) per risk level.
_Case = tuple[str, tuple[str, ...], Mapping[str, str], Mapping[str, object], str, tuple[str, ...]]
_RECORD: Mapping[str, object] = {"record_id": "REC-1001"}
_UPDATE: Mapping[str, object] = {"record_id": "REC-1001", "status": "closed", "note": "resolved"}


def _transfer(amount: int, currency: str = "EUR") -> dict[str, object]:
    return {"account_id": "ACC-100200", "amount": amount, "currency": currency, "reference": "invoice 42"}


_CASES: dict[Risk, tuple[_Case, ...]] = {
    "low": (
        ("a reader looks up a record", ("{domain}-reader",), {}, _RECORD, "allow", ()),
        ("an operator looks up a record", ("{domain}-operator",), {}, _RECORD, "allow", ()),
        ("a caller without a {domain} role is denied", ("staff",), {}, _RECORD, "deny", ("caller",)),
    ),
    "medium": (
        ("an operator closes a record", ("{domain}-operator",), {}, _UPDATE, "allow", ()),
        ("a reader may not change a record", ("{domain}-reader",), {}, _UPDATE, "deny", ("caller",)),
        ("an operator through the public chat is denied", ("{domain}-operator",), {"source_app": "public-chat"},
         _UPDATE, "deny", ("denied_callers",)),
    ),
    "high": (
        ("an operator transfers 100 EUR", ("{domain}-operator",), {}, _transfer(100), "allow", ()),
        ("exactly the approval threshold needs no approval", ("{domain}-operator",), {}, _transfer(500),
         "allow", ()),
        ("an operator transfers 2500 EUR: a person approves", ("{domain}-operator",), {}, _transfer(2500),
         "require_approval", ("requires_approval_over",)),
        ("an operator transfers 8000 USD: two people approve", ("{domain}-operator",), {},
         _transfer(8000, "USD"), "require_approval", ("requires_approval_over",)),
        ("over the maximum is denied", ("{domain}-operator",), {}, _transfer(20000), "deny", ("max_amount",)),
        ("a currency outside the list is denied", ("{domain}-operator",), {}, _transfer(100, "JPY"), "deny",
         ("allowed_currencies",)),
        ("a reader may not transfer", ("{domain}-reader",), {}, _transfer(100), "deny", ("caller",)),
        ("an operator through the public chat is denied", ("{domain}-operator",), {"source_app": "public-chat"},
         _transfer(100), "deny", ("denied_callers",)),
    ),
}


def tool_path(domain: str, risk: Risk) -> str:
    """The example manifest's path relative to the deployment."""
    return f"tools/{domain}/{TOOL_NAMES[risk]}.yml"


def domain_files(domain: str, risk: Risk, owner: str) -> dict[str, str]:
    """The example manifest and the fixture file of one domain (``domain`` and ``owner`` validated)."""
    example = _EXAMPLES[risk]
    manifest = _MANIFEST.format(
        comment=example.comment.format(domain=domain), tool=TOOL_NAMES[risk], domain=domain, owner=json.dumps(owner),
        description=example.description, risk=risk, classified=example.classified, title=example.title,
        hints=example.hints, properties=example.properties, required=example.required,
        policy=example.policy.format(issuer=ISSUER, domain=domain) + "\n  audit_required: true\n")
    return {tool_path(domain, risk): manifest, f"policy/fixtures/{domain}.yaml": _fixtures(domain, risk)}


def _fixtures(domain: str, risk: Risk) -> str:
    tool = f"{domain}.{TOOL_NAMES[risk]}"
    lines = [f"# Golden decisions for {tool} ({risk} risk): `portcullis policy test` runs them, and",
             "# `portcullis lint` requires every exposed tool to appear in at least one. Rule ids are <tool>/<rule>.",
             "# Add a row whenever the policy changes: a rule no fixture trips is a rule nobody has shown to work."]
    for label, roles, extra, arguments, effect, rules in _CASES[risk]:
        principal = {"issuer_name": ISSUER, "user_id": "alice", "roles": [r.format(domain=domain) for r in roles],
                     **extra}
        expect = {"effect": effect, "rule_ids": [f"{tool}/{rule}" for rule in rules]}
        lines += ["", f"- name: {json.dumps(label.format(domain=domain))}", f"  principal: {_flow(principal)}",
                  f"  tool: {tool}", f"  arguments: {_flow(arguments)}", f'  now: "{NOW}"',
                  f"  expect: {_flow(expect)}"]
    return "\n".join(lines) + "\n"


def _flow(value: Mapping[str, object]) -> str:
    """A YAML flow mapping (JSON is YAML) on one line, with the spaces YAML's flow style allows."""
    return json.dumps(value, separators=(", ", ": "))


def approver_rule(domain: str) -> str:
    """The ``approvals.approvers`` entry (YAML, indented for gateway.yaml) of a high-risk domain."""
    return (f'    - tools: ["{domain}.*"]\n'
            f'      approvers: ["issuer:{ISSUER}/role:{domain}-approver"]\n')
