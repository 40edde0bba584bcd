"""Issuer scopes of caller patterns, checked against the identity sources a deployment trusts.

A caller pattern can name the source that must have asserted it: ``issuer:corp/role:finance``
matches the role only in a token of the issuer configured as ``corp``. The sources are the
configured issuers' names plus the built-in ones that are switched on: ``dev``
(``allow_insecure_dev_issuer``), ``mtls`` (``mtls`` rules) and ``anonymous``
(``allow_insecure_anonymous``). :func:`scope_problems` reports, for every tool's
``allowed_callers`` and ``denied_callers`` and every ``approvals.approvers`` rule, in order:

1. a scope naming a source the deployment does not trust: the pattern can never match (an allow
   that admits nobody; worse, a deny that silently never applies);
2. when more than one source is trusted: an ``allowed_callers`` or approver pattern **without** a
   scope, since then any source can assert it (issuer B vouching for an agent, user or role that
   only issuer A should). Write the scope, or ``issuer:*/`` to say "any source" on purpose. An
   unscoped ``denied_callers`` pattern is not reported: denying whoever asserts it is the stricter
   reading.

Both are errors, for ``portcullis lint`` and for ``serve`` alike (the loader reports them, so a
deployment that lint refuses never starts). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from portcullis.policy.model import ANY_ISSUER, split_issuer_scope

if TYPE_CHECKING:
    from portcullis.config.model import GatewayConfig, ToolManifest

Loc = tuple[str | int, ...]
_SHOWN = 64


@dataclass(frozen=True, slots=True)
class ScopeProblem:
    """One finding: ``path`` is the manifest, or None for gateway.yaml; ``loc`` the YAML key."""

    path: Path | None
    loc: Loc
    message: str


def scope_problems(gateway: GatewayConfig, manifests: Iterable[tuple[Path, ToolManifest]]) -> list[ScopeProblem]:
    """Every issuer-scope problem of the deployment (see the module docstring)."""
    if gateway.identity is None:
        return []  # a gateway without identity is refused on its own, whatever its patterns say
    sources = gateway.identity.sources()
    problems = []
    for path, manifest in manifests:
        if manifest.policy is None:
            continue
        for field in ("allowed_callers", "denied_callers"):
            for index, pattern in enumerate(getattr(manifest.policy, field)):
                problems += [ScopeProblem(path, ("policy", field, index), f"{field}: {message}")
                             for message in _check(pattern, sources, unscoped_ok=field == "denied_callers")]
    for rule_index, rule in enumerate(gateway.approvals.approvers):
        for index, pattern in enumerate(rule.approvers):
            problems += [ScopeProblem(None, ("approvals", "approvers", rule_index, "approvers", index),
                                      f"approvals.approvers: {message}")
                         for message in _check(pattern, sources, unscoped_ok=False)]
    return problems


def _check(pattern: str, sources: tuple[str, ...], *, unscoped_ok: bool) -> Iterator[str]:
    source, rest = split_issuer_scope(pattern)
    if source is None:
        if len(sources) > 1 and not unscoped_ok:
            yield (f"{_show(pattern)} names no issuer, and this deployment trusts {len(sources)} identity sources "
                   f"({', '.join(sources)}): any of them can assert it. Scope it "
                   f"({_show(f'issuer:{sources[0]}/{rest}')}), or write {_show(f'issuer:*/{rest}')} to accept "
                   "every source")
    elif source != ANY_ISSUER and source not in sources:
        trusted = ", ".join(sources) or "none"
        yield (f"{_show(pattern)} names the identity source {source!r}, which this deployment does not trust "
               f"(trusted: {trusted}): the pattern can never match")


def _show(value: str) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 4] + "...'"
