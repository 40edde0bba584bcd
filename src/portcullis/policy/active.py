"""The running gateway's policy engine behind one atomic reference (hot reload, docs/policy-versions.md).

A reload builds a whole new :class:`~portcullis.policy.engine.PolicyEngine` and then swaps it in
with one attribute assignment. A call reads the reference **once**, at its gate stage, and pins
that engine in a context variable for the rest of its stages, so the gate and the authorize stage
of one call always consult the same version: each decision is attributable to exactly one version
(the decision record names it), whatever reload happens meanwhile.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar, Token

from portcullis.policy.engine import PolicyEngine


class ActivePolicy:
    """Holds the active engine; :meth:`swap` replaces it atomically."""

    __slots__ = ("_engine", "_pinned", "shadow")

    def __init__(self, engine: PolicyEngine, name: str = "policy") -> None:
        self._engine = engine
        # one variable per holder: a tool call and a read never see each other's pin
        self._pinned: ContextVar[PolicyEngine | None] = ContextVar(f"portcullis_{name}_engine", default=None)
        # a candidate version evaluated beside the active one, never enforced: (ps-…, engine) or None
        # (set by the reloader; the authorize stage reads it once per call, docs/policy-versions.md)
        self.shadow: tuple[str, PolicyEngine] | None = None

    @property
    def current(self) -> PolicyEngine:
        return self._engine

    def swap(self, engine: PolicyEngine) -> PolicyEngine:
        """Make ``engine`` active; returns the one it replaces (calls already pinned to it finish with it)."""
        old, self._engine = self._engine, engine
        return old

    @contextlib.contextmanager
    def pinned(self) -> Iterator[PolicyEngine]:
        """Read the reference once and pin it for the nested stages of this call."""
        engine = self._engine
        token = self._pinned.set(engine)
        try:
            yield engine
        finally:
            self._pinned.reset(token)

    def pin(self) -> tuple[PolicyEngine, Token[PolicyEngine | None]]:
        """:meth:`pinned` without the generator, for the gate on the request path: release the token with
        :meth:`unpin` in a ``finally``."""
        engine = self._engine
        return engine, self._pinned.set(engine)

    def unpin(self, token: Token[PolicyEngine | None]) -> None:
        self._pinned.reset(token)

    def for_call(self) -> PolicyEngine:
        """The engine pinned by this call's gate, else the active one."""
        pinned = self._pinned.get()
        return self._engine if pinned is None else pinned


def as_active(engine: PolicyEngine | ActivePolicy) -> ActivePolicy:
    """``engine`` itself when it is a holder, else a holder that never changes (tests, the CLI)."""
    return engine if isinstance(engine, ActivePolicy) else ActivePolicy(engine)
