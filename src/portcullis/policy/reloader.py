"""Hot reload: a policy set is validated whole, stored as a version, audited, then swapped in atomically.

Three triggers reach :class:`PolicyReloader` (docs/policy-versions.md): SIGHUP (re-read the
deployment directory the gateway was started from), ``POST /policy/reload`` on the admin
listener (a pushed set, from ``portcullis policy apply DIR``) and ``POST /policy/rollback``
(a stored version, by default the one active before the current one). Every change goes the
same way, one at a time:

1. the set is validated whole (:func:`~portcullis.policy.policy_set.validate`, in a worker
   thread); a refused set changes nothing: the running version stays (last known good), the
   refusal is kept in the history and the audit trail, and ``/readyz`` says ``degraded`` with
   the fixed reason until a good version is applied;
2. new Rego modules get their own worker processes, started and ready before the swap (same
   modules: the running workers are kept);
3. the version is stored (content-addressed, immutable), a ``policy_version`` audit record is
   made durable — if the trail is unavailable the change is refused (fail closed) — and only
   then :meth:`ActivePolicy.swap` makes it active for every call that starts afterwards.

Workers of a replaced version are stopped after a grace period (calls already pinned to it
finish first); the start version's workers are kept (its engines were built before the reloader).
The commit hook and both swaps (the tools' engine, the resources' and prompts' engine) run in one
step of the event loop, with no await between them: a call or read sees the old set or the new
one, never a mix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import unicodedata
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from portcullis.config.loader import Deployment
from portcullis.policy import policy_set
from portcullis.policy.active import ActivePolicy
from portcullis.policy.engine import PolicyEngine
from portcullis.policy.rego_pool import PoolSettings, RegoWorkers
from portcullis.policy.versions import Action, PolicyVersion, PolicyVersionStore, VersionStoreUnavailable

log = logging.getLogger("portcullis.policy")
AUDIT_KIND = "policy_version"
AUDIT_FAILED = "audit trail unavailable"
STORE_FAILED = "policy version store unavailable"
WORKERS_FAILED = "Rego workers did not start"
UNKNOWN_VERSION = "unknown policy version"
NO_PREVIOUS = "no previous policy version"
NOT_VALIDATED = "policy set could not be validated"
SHADOW_REGO = "a shadow version's Rego modules must be the active version's"
MAX_MESSAGE = 500
RETIRE_AFTER_S = 30.0


@dataclass(frozen=True, slots=True)
class ReloadSettings:
    root: Path  # the deployment directory the gateway started from (SIGHUP re-reads it)
    gateway_yaml: bytes  # the running gateway.yaml, as read at start (a reload never changes it)
    scratch: Path  # private directory for validation (in the state directory)
    rego_dir: str | None
    environment: str
    rego_budget_s: float
    pool: PoolSettings
    workers_ready_s: float = 30.0


def clean_text(text: object, limit: int = MAX_MESSAGE) -> str:
    """An author or message as stored: a string without control characters, clipped."""
    value = text if isinstance(text, str) else ""
    return "".join(c for c in value if unicodedata.category(c)[0] != "C")[:limit]


class PolicyReloader:
    """Applies policy versions to a running gateway (see the module docstring)."""

    def __init__(self, active: ActivePolicy, store: PolicyVersionStore, settings: ReloadSettings,
                 audit: Callable[[Mapping[str, Any]], Awaitable[None]], clock: Callable[[], float] = time.time,
                 on_commit: Callable[[Deployment], None] | None = None,
                 companion: tuple[ActivePolicy, Callable[[PolicyEngine, Deployment], PolicyEngine]] | None = None,
                 ) -> None:
        """``on_commit``: called with the new set's manifests right before the swap, in the same step
        (the gateway's catalogs adopt them: tools, resources and prompts added, removed or changed).
        ``companion``: a second holder (the resources' and prompts' engine) and how to build its engine
        from the new tools' engine (its Rego) and the new set's manifests, in the validation thread;
        swapped in the same step."""
        self._active, self._store, self._settings, self._audit, self._clock = active, store, settings, audit, clock
        self._on_commit, self._companion = on_commit, companion
        self._lock = anyio.Lock()
        self._initial_rego = active.current.rego
        self._pools: set[RegoWorkers] = set()
        self._retiring: set[asyncio.Task[None]] = set()
        self.version = ""  # the active policy set's id (ps-…)
        self.degraded: str | None = None  # the fixed reason of the last refused change, until one is applied

    # ------------------------------------------------------------------ what operators see

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {"version": self.version, "engine_version": self._active.current.version,
                                "status": "degraded" if self.degraded else "ok"}
        if self.degraded:
            body["reason"] = self.degraded
        shadow = self._active.shadow
        if shadow is not None:
            body["shadow"] = {"version": shadow[0], "engine_version": shadow[1].version}
        return body

    def workers_ready(self) -> bool | None:
        """Whether the active version's Rego workers are ready (None: it has no Rego)."""
        rego = self._active.current.rego
        pool = None if rego is None else rego.workers()
        return None if pool is None else pool.ready

    async def history(self, limit: int = 100) -> list[dict[str, Any]]:
        events = await anyio.to_thread.run_sync(self._store.history, limit)
        return [event.to_json() for event in events]

    async def fetch(self, ref: str) -> PolicyVersion | None:
        return await anyio.to_thread.run_sync(self._store.get, ref)

    # ------------------------------------------------------------------ changes

    async def reload_root(self, author: str, message: str) -> dict[str, Any]:
        """Re-read the deployment directory and apply what is there (SIGHUP)."""
        try:
            files = await anyio.to_thread.run_sync(policy_set.collect, self._settings.root, self._settings.rego_dir)
        except policy_set.SetRefused as refused:
            return await self._refuse("", refused.reason, refused.problems, author, message)
        return await self.apply(files, author, message)

    async def rollback(self, ref: str | None, author: str, message: str) -> dict[str, Any]:
        """Apply a stored version again: ``ref``, or the one active before the current one."""
        try:
            if ref is None:
                ref = await anyio.to_thread.run_sync(self._previous)
                if ref is None:
                    return await self._refuse("", NO_PREVIOUS, [], author, message)
            stored = await anyio.to_thread.run_sync(self._store.get, ref)
        except VersionStoreUnavailable:
            return await self._refuse("", STORE_FAILED, [], author, message)
        if stored is None:
            return {"status": "refused", "reason": UNKNOWN_VERSION, "problems": []}
        return await self.apply(stored.files, author, message, action="rolled_back")

    async def apply(self, files: Mapping[str, str], author: str, message: str,
                    action: Action = "applied") -> dict[str, Any]:
        """Validate ``files`` whole and, if good, make them the active version."""
        author, message = clean_text(author, 200), clean_text(message)
        async with self._lock:
            try:
                policy_set.check_names(files, self._settings.rego_dir)
            except policy_set.SetRefused as refused:
                return await self._refuse("", refused.reason, refused.problems, author, message)
            vid = policy_set.content_id(files)
            current = self._active.current
            try:
                engine, deployment, extra = await anyio.to_thread.run_sync(lambda: self._build(files, current))
            except policy_set.SetRefused as refused:
                return await self._refuse(vid, refused.reason, refused.problems, author, message)
            except Exception as exc:  # anything unforeseen refuses the set too: the running version stays
                log.warning("policy set validation failed", extra={"fields": {"error": type(exc).__name__}})
                return await self._refuse(vid, NOT_VALIDATED, [], author, message)
            if not await self._start_workers(engine):
                return await self._refuse(vid, WORKERS_FAILED, [], author, message)
            surface_version = "" if extra is None else extra.version
            try:
                await anyio.to_thread.run_sync(self._store.put, PolicyVersion(
                    vid, engine.version, self._clock(), author, message, dict(files), surface_version))
            except VersionStoreUnavailable:
                self._retire(engine, current)
                return await self._refuse(vid, STORE_FAILED, [], author, message)
            try:
                await self._audit({"action": action, "version": vid, "engine_version": engine.version,
                                   **({"surface_engine_version": surface_version} if surface_version else {}),
                                   "previous": self.version, "author": author, "message": message})
            except Exception as exc:  # fail closed: an unaudited change is not made
                log.warning("policy change not audited: refused", extra={"fields": {"error": type(exc).__name__}})
                self._retire(engine, current)
                return {"status": "refused", "reason": AUDIT_FAILED, "problems": []}
            if self._on_commit is not None:
                self._on_commit(deployment)  # no await between this and the swaps: one step of the loop
            if self._companion is not None and extra is not None:
                self._companion[0].swap(extra)
            self._active.swap(engine)
            if self._active.shadow is not None and self._active.shadow[1].rego is not engine.rego:
                self._active.shadow = None  # its Rego workers retire with the old version: the shadow stops
                log.warning("shadow version cleared: the new active version's Rego differs")
            self._retire(current, engine)
            previous, self.version, self.degraded = self.version, vid, None
            with contextlib.suppress(VersionStoreUnavailable):
                await anyio.to_thread.run_sync(lambda: self._store.record(self._clock(), action, vid, author, message))
            log.info("policy version active", extra={"fields": {"action": action, "version": vid,
                                                                 "policy_version": engine.version}})
            return {"status": action, "version": vid, "engine_version": engine.version, "previous": previous}

    async def set_shadow(self, ref: str | None, author: str) -> dict[str, Any]:
        """Evaluate stored version ``ref`` beside the active one without enforcing it (None: stop).

        Built the validated way :meth:`apply` builds; Rego is evaluated only by the active version's
        workers, so a version whose Rego modules differ is refused. The change is audited (fail closed)."""
        engine: PolicyEngine | None = None
        vid = ""
        async with self._lock:
            if ref is not None:
                try:
                    stored = await anyio.to_thread.run_sync(self._store.get, ref)
                except VersionStoreUnavailable:
                    return {"status": "refused", "reason": STORE_FAILED, "problems": []}
                if stored is None:
                    return {"status": "refused", "reason": UNKNOWN_VERSION, "problems": []}
                current, vid = self._active.current, stored.id
                try:
                    engine = (await anyio.to_thread.run_sync(lambda: self._build(stored.files, current)))[0]
                except policy_set.SetRefused as refused:
                    return {"status": "refused", "reason": refused.reason, "problems": refused.problems}
                except Exception:  # anything unforeseen refuses the shadow too
                    return {"status": "refused", "reason": NOT_VALIDATED, "problems": []}
                if engine.rego is not current.rego:
                    return {"status": "refused", "reason": SHADOW_REGO, "problems": []}
            try:
                await self._audit({"action": "shadow_set" if engine else "shadow_cleared", "version": vid,
                                   "active": self.version, "author": clean_text(author, 200)})
            except Exception:  # fail closed: an unaudited change is not made
                return {"status": "refused", "reason": AUDIT_FAILED, "problems": []}
            self._active.shadow = None if engine is None else (vid, engine)
            return {"status": "shadow_set" if engine else "shadow_cleared", "version": vid,
                    "engine_version": engine.version if engine else ""}

    async def start(self, author: str = "gateway", message: str = "start") -> None:
        """Store the start version and record it as applied when it is not already the active one."""
        try:
            files = await anyio.to_thread.run_sync(policy_set.collect, self._settings.root, self._settings.rego_dir)
        except policy_set.SetRefused as refused:  # the running engine is fine; only its record is incomplete
            log.warning("the start version's files could not be stored", extra={"fields": {"reason": refused.reason}})
            files = {}
        vid = policy_set.content_id(files)
        self.version = vid
        engine = self._active.current
        try:
            await anyio.to_thread.run_sync(self._store.put, PolicyVersion(
                vid, engine.version, self._clock(), author, message, files,
                "" if self._companion is None else self._companion[0].current.version))
            if await anyio.to_thread.run_sync(self._store.active) != vid:
                await anyio.to_thread.run_sync(lambda: self._store.record(self._clock(), "applied", vid, author,
                                                                          message))
        except VersionStoreUnavailable:
            log.warning("policy version store unavailable: the start version is not recorded")

    async def run(self) -> None:
        """Background task: the start version, SIGHUP reloads, and stopping retired workers at shutdown."""
        await self.start()
        hup = asyncio.Event()
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, hup.set)
        except (RuntimeError, ValueError, NotImplementedError):  # not the main thread (an embedded gateway)
            log.info("SIGHUP reload unavailable here: use POST /policy/reload")
        try:
            while True:
                await hup.wait()
                hup.clear()
                await self.reload_root("signal:SIGHUP", "reload on SIGHUP")
        finally:
            with contextlib.suppress(RuntimeError, ValueError, NotImplementedError):
                loop.remove_signal_handler(signal.SIGHUP)
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                for pool in list(self._pools):
                    await pool.aclose()

    # ------------------------------------------------------------------ helpers

    def _build(self, files: Mapping[str, str],
               current: PolicyEngine) -> tuple[PolicyEngine, Deployment, PolicyEngine | None]:
        """Validate (blocking: a worker thread) and build the companion engine over the same Rego."""
        s = self._settings
        engine, deployment = policy_set.validate(files, s.gateway_yaml, scratch=s.scratch, rego_dir=s.rego_dir,
                                                 environment=s.environment, rego_budget_s=s.rego_budget_s,
                                                 reuse=current.rego)
        return engine, deployment, None if self._companion is None else self._companion[1](engine, deployment)

    def _previous(self) -> str | None:
        current = self._store.active()
        for event in self._store.history(1000):
            if event.action in ("applied", "rolled_back") and event.version != current:
                return event.version
        return None

    async def _refuse(self, vid: str, reason: str, problems: list[str], author: str,
                      message: str) -> dict[str, Any]:
        self.degraded = reason
        log.warning("policy change refused: the running version stays", extra={"fields": {"reason": reason}})
        with contextlib.suppress(VersionStoreUnavailable):
            await anyio.to_thread.run_sync(lambda: self._store.record(self._clock(), "refused", vid, author, message,
                                                                      reason))
        with contextlib.suppress(Exception):  # a refusal changes nothing, so its audit record is best effort
            await self._audit({"action": "refused", "version": vid, "previous": self.version, "author": author,
                               "message": message, "reason": reason})
        return {"status": "refused", "reason": reason, "problems": problems}

    async def _start_workers(self, engine: PolicyEngine) -> bool:
        rego = engine.rego
        if rego is None or rego is self._active.current.rego or rego is self._initial_rego:
            return True
        pool = rego.workers(self._settings.pool)
        self._pools.add(pool)
        await pool.start()
        if await pool.wait_ready(self._settings.workers_ready_s):
            return True
        self._pools.discard(pool)
        await pool.aclose()
        return False

    def _retire(self, old: PolicyEngine, new: PolicyEngine) -> None:
        """Stop ``old``'s workers after the grace period, unless ``new`` or the start version uses them."""
        rego = old.rego
        if rego is None or rego is new.rego or rego is self._initial_rego:
            return
        pool = rego.workers()
        if pool not in self._pools:
            return

        async def later() -> None:
            await asyncio.sleep(RETIRE_AFTER_S)
            if self._active.current.rego is not rego:
                self._pools.discard(pool)
                await pool.aclose()

        task = asyncio.get_running_loop().create_task(later())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
