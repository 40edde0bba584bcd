"""Hot reload: a policy set is validated whole, stored as a version, audited, then swapped in atomically.

Three triggers reach :class:`PolicyReloader` (docs/policy-versions.md): SIGHUP (re-read the
deployment directory the gateway was started from), ``POST /policy/reload`` on the admin
listener (a pushed set, from ``portcullis policy apply DIR``) and ``POST /policy/rollback``
(a stored version, by default the one active before the current one). Every change goes the
same way, one at a time:

1. the set is validated whole (:func:`~portcullis.policy.policy_set.validate`, in a worker
   thread); a refused set changes nothing: the running version stays (last known good), the
   refusal is kept in the history and the audit trail, and ``/readyz`` says ``degraded`` with
   the fixed reason until a good version is applied. Pushed Rego is never compiled nor evaluated
   in this process before a limited process has done both (:mod:`.rego_probe`, limits from
   :attr:`ReloadSettings.probe`): a module that blows a limit is refused with the precise reason;
2. new Rego modules get their own worker processes, started and ready before the swap (same
   modules: the running workers are kept); the set's golden fixtures are then decided through
   those workers (:func:`~portcullis.policy.policy_set.check_fixtures_async`), never in this process;
3. the version is stored (content-addressed, immutable), a ``policy_version`` audit record is
   made durable — if the trail is unavailable the change is refused (fail closed) — and only
   then :meth:`ActivePolicy.swap` makes it active for every call that starts afterwards.

Workers of a replaced version are stopped after a grace period (calls already pinned to it
finish first); the start version's workers are kept (its engines were built before the reloader),
and so are the workers the shadow version evaluates with. The commit hook and both swaps (the
tools' engine, the resources' and prompts' engine) run in one step of the event loop, with no
await between them: a call or read sees the old set or the new one, never a mix.

A shadow version (:meth:`PolicyReloader.set_shadow`, :mod:`.shadow`) is built the same validated
way; Rego of its own gets its own small pool (:data:`SHADOW_WORKERS` process), started and ready
before the shadow is set, and stopped after the grace period once the shadow is cleared or
replaced. The setting is audited (fail closed), kept in the version store's history, and restored
at start when the version is still stored and validates (else logged, recorded and cleared).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import unicodedata
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from portcullis.config.loader import Deployment
from portcullis.policy import policy_set
from portcullis.policy.active import ActivePolicy
from portcullis.policy.engine import PolicyEngine
from portcullis.policy.rego_pool import PoolSettings, RegoWorkers
from portcullis.policy.rego_probe import ProbeLimits
from portcullis.policy.versions import Action, PolicyVersion, PolicyVersionStore, VersionStoreUnavailable
from portcullis.storage.bus import NoticeBus

if TYPE_CHECKING:
    from portcullis.policy.rego import RegoPolicy

log = logging.getLogger("portcullis.policy")
AUDIT_KIND = "policy_version"
AUDIT_FAILED = "audit trail unavailable"
STORE_FAILED = "policy version store unavailable"
WORKERS_FAILED = "Rego workers did not start"
UNKNOWN_VERSION = "unknown policy version"
NO_PREVIOUS = "no previous policy version"
NOT_VALIDATED = "policy set could not be validated"
MAX_MESSAGE = 500
RETIRE_AFTER_S = 30.0
NOTICE_TOPIC = "policy"
FOLLOW_POLL_S = 2.0  # how often a replica checks the shared store for another replica's version (backstop)
SHADOW_WORKERS = 1  # worker processes of a shadow version's own Rego: it is never waited for


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
    probe: ProbeLimits = field(default_factory=ProbeLimits)  # what a pushed set's Rego may use when tried first


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
        self._bus: NoticeBus | None = None
        # a version store shared by replicas (cluster mode): the cluster's active version wins over this
        # replica's deployment directory at start, so a replica restarted from an old checkout never rolls
        # every other replica back
        self.shared = False

    # ------------------------------------------------------------------ what operators see

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {"version": self.version, "engine_version": self._active.current.version,
                                "status": "degraded" if self.degraded else "ok"}
        if self.degraded:
            body["reason"] = self.degraded
        shadow = self._active.shadow
        if shadow is not None:
            body["shadow"] = {"version": shadow[0], "engine_version": shadow[1].version}
            rego = shadow[1].rego
            if rego is not None and rego is not self._active.current.rego:  # evaluated by workers of its own
                body["shadow"]["rego_workers"] = "ready" if rego.workers().ready else "down"
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

    # ------------------------------------------------------------------ cluster mode

    def connect(self, bus: NoticeBus) -> None:
        """Adopt the store's active version on every ``policy`` notice; announce each local change."""
        self._bus = bus
        bus.subscribe(NOTICE_TOPIC, lambda _payload: self._adopt_quietly())

    async def adopt_active(self) -> dict[str, Any] | None:
        """Make the version the shared store records as active this replica's too, if it is not already
        (another replica applied or rolled back). None when there is nothing to adopt or the store cannot say."""
        try:
            vid = await anyio.to_thread.run_sync(self._store.active)
            if vid is None or vid == self.version:
                return None
            stored = await anyio.to_thread.run_sync(self._store.get, vid)
        except VersionStoreUnavailable:
            return None
        if stored is None or stored.id != vid or policy_set.content_id(stored.files) != vid:
            return None  # not stored, or not what its content-addressed id says: never adopted
        result = await self.apply(stored.files, stored.author, stored.message, adopt=True)
        log.info("policy version adopted from the shared store", extra={"fields": {"version": vid,
                                                                                   "status": result["status"]}})
        return result

    async def follow(self, poll_s: float = FOLLOW_POLL_S) -> None:
        """The backstop of notices: adopt the shared active version every ``poll_s`` until cancelled."""
        while True:
            await anyio.sleep(poll_s)
            await self._adopt_quietly()

    async def _adopt_quietly(self) -> None:
        try:
            await self.adopt_active()
        except Exception as exc:  # a receiver never breaks the bus or the poll
            log.warning("policy version not adopted", extra={"fields": {"error": type(exc).__name__}})

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
                    action: Action = "applied", *, adopt: bool = False) -> dict[str, Any]:
        """Validate ``files`` whole and, if good, make them the active version.

        ``adopt``: the version another replica applied (:meth:`adopt_active`): validated and swapped the same
        way, but not stored, audited, recorded nor announced again, and a refusal is only logged."""
        author, message = clean_text(author, 200), clean_text(message)
        async with self._lock:
            try:
                policy_set.check_names(files, self._settings.rego_dir)
            except policy_set.SetRefused as refused:
                return await self._refuse("", refused.reason, refused.problems, author, message, quiet=adopt)
            vid = policy_set.content_id(files)
            if adopt and vid == self.version:
                return {"status": "unchanged", "version": vid}
            current = self._active.current
            try:
                engine, deployment, extra = await anyio.to_thread.run_sync(lambda: self._build(files, current))
            except policy_set.SetRefused as refused:
                return await self._refuse(vid, refused.reason, refused.problems, author, message, quiet=adopt)
            except Exception as exc:  # anything unforeseen refuses the set too: the running version stays
                log.warning("policy set validation failed", extra={"fields": {"error": type(exc).__name__}})
                return await self._refuse(vid, NOT_VALIDATED, [], author, message, quiet=adopt)
            if not await self._start_workers(engine):
                return await self._refuse(vid, WORKERS_FAILED, [], author, message, quiet=adopt)
            try:
                await policy_set.check_fixtures_async(engine, files, extra)  # Rego in the new version's workers
            except policy_set.SetRefused as refused:
                self._retire(engine.rego)
                return await self._refuse(vid, refused.reason, refused.problems, author, message, quiet=adopt)
            surface_version = "" if extra is None else extra.version
            try:
                if not adopt:
                    await anyio.to_thread.run_sync(self._store.put, PolicyVersion(
                        vid, engine.version, self._clock(), author, message, dict(files), surface_version))
            except VersionStoreUnavailable:
                self._retire(engine.rego)
                return await self._refuse(vid, STORE_FAILED, [], author, message, quiet=adopt)
            try:
                if not adopt:  # the replica that applied it audited it
                    await self._audit({"action": action, "version": vid, "engine_version": engine.version,
                                       **({"surface_engine_version": surface_version} if surface_version else {}),
                                       "previous": self.version, "author": author, "message": message})
            except Exception as exc:  # fail closed: an unaudited change is not made
                log.warning("policy change not audited: refused", extra={"fields": {"error": type(exc).__name__}})
                self._retire(engine.rego)
                return {"status": "refused", "reason": AUDIT_FAILED, "problems": []}
            if self._on_commit is not None:
                self._on_commit(deployment)  # no await between this and the swaps: one step of the loop
            if self._companion is not None and extra is not None:
                self._companion[0].swap(extra)
            self._active.swap(engine)
            self._retire(current.rego)  # unless the shadow still evaluates with them
            previous, self.version, self.degraded = self.version, vid, None
            if not adopt:
                with contextlib.suppress(VersionStoreUnavailable):
                    await anyio.to_thread.run_sync(lambda: self._store.record(self._clock(), action, vid, author,
                                                                              message))
                if self._bus is not None:  # other replicas adopt it now (their poll is the backstop)
                    await self._bus.publish(NOTICE_TOPIC, vid)
            log.info("policy version active", extra={"fields": {"action": action, "version": vid,
                                                                 "policy_version": engine.version}})
            return {"status": action, "version": vid, "engine_version": engine.version, "previous": previous}

    async def set_shadow(self, ref: str | None, author: str) -> dict[str, Any]:
        """Evaluate stored version ``ref`` beside the active one without enforcing it (None: stop).

        Built the validated way :meth:`apply` builds; Rego that is not the active version's gets
        workers of its own, ready before the shadow is set. The change is audited (fail closed)
        and kept in the version store's history (restored at start)."""
        author = clean_text(author, 200)
        action: Action = "shadow_set" if ref is not None else "shadow_cleared"
        async with self._lock:
            shadow: tuple[str, PolicyEngine] | None = None
            if ref is not None:
                built = await self._shadow_engine(ref)
                if isinstance(built, str):
                    return {"status": "refused", "reason": built, "problems": []}
                shadow = built
            vid = "" if shadow is None else shadow[0]
            try:
                await self._audit({"action": action, "version": vid, "active": self.version, "author": author})
            except Exception:  # fail closed: an unaudited change is not made
                if shadow is not None:
                    self._retire(shadow[1].rego)
                return {"status": "refused", "reason": AUDIT_FAILED, "problems": []}
            self._adopt_shadow(shadow)
            try:
                await anyio.to_thread.run_sync(lambda: self._store.record(self._clock(), action, vid, author, ""))
            except VersionStoreUnavailable:
                log.warning("shadow setting not stored: it will not survive a restart")
            return {"status": action, "version": vid, "engine_version": "" if shadow is None else shadow[1].version}

    async def _shadow_engine(self, ref: str) -> tuple[str, PolicyEngine] | str:
        """Stored version ``ref`` built as a shadow with its workers ready, or the fixed reason it cannot be."""
        try:
            stored = await anyio.to_thread.run_sync(self._store.get, ref)
        except VersionStoreUnavailable:
            return STORE_FAILED
        if stored is None:
            return UNKNOWN_VERSION
        current = self._active.current
        try:
            engine = (await anyio.to_thread.run_sync(lambda: self._build(stored.files, current)))[0]
        except policy_set.SetRefused as refused:
            return refused.reason
        except Exception:  # anything unforeseen refuses the shadow too
            return NOT_VALIDATED
        if not await self._start_workers(engine, replace(self._settings.pool, size=SHADOW_WORKERS)):
            return WORKERS_FAILED
        try:
            await policy_set.check_fixtures_async(engine, stored.files)
        except policy_set.SetRefused as refused:
            self._retire(engine.rego)
            return refused.reason
        return stored.id, engine

    def _adopt_shadow(self, shadow: tuple[str, PolicyEngine] | None) -> None:
        old, self._active.shadow = self._active.shadow, shadow
        if old is not None:
            self._retire(old[1].rego)  # unless the new shadow or the active version evaluates with them

    async def _restore_shadow(self) -> None:
        """The shadow setting kept in the store, set again; one that cannot be is logged and cleared."""
        try:
            ref = await anyio.to_thread.run_sync(self._store.shadow)
        except VersionStoreUnavailable:
            log.warning("policy version store unavailable: the shadow setting is not restored")
            return
        if ref is None:
            return
        async with self._lock:
            built = await self._shadow_engine(ref)
            if isinstance(built, str):
                log.warning("shadow version not restored: cleared", extra={"fields": {"version": ref[:80],
                                                                                      "reason": built}})
                with contextlib.suppress(VersionStoreUnavailable):
                    await anyio.to_thread.run_sync(lambda: self._store.record(
                        self._clock(), "shadow_cleared", "", "gateway", "start", built))
                with contextlib.suppress(Exception):  # clearing weakens nothing: its record is best effort
                    await self._audit({"action": "shadow_cleared", "version": "", "active": self.version,
                                       "author": "gateway", "reason": built})
                return
            self._adopt_shadow(built)
        log.info("shadow version restored", extra={"fields": {"version": built[0]}})

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
            active = await anyio.to_thread.run_sync(self._store.active)
            if active != vid and (active is None or not self.shared):
                await anyio.to_thread.run_sync(lambda: self._store.record(self._clock(), "applied", vid, author,
                                                                          message))
        except VersionStoreUnavailable:
            log.warning("policy version store unavailable: the start version is not recorded")
            active = None
        await self._restore_shadow()
        if self.shared and active not in (None, vid):
            log.warning("the cluster's active policy version is not this deployment directory's: adopting the "
                        "cluster's", extra={"fields": {"directory": vid, "cluster": active}})
            await self._adopt_quietly()

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
                                                 reuse=current.rego, probe=s.probe, fixtures=False)
        return engine, deployment, None if self._companion is None else self._companion[1](engine, deployment)

    def _previous(self) -> str | None:
        current = self._store.active()
        for event in self._store.history(1000):
            if event.action in ("applied", "rolled_back") and event.version != current:
                return event.version
        return None

    async def _refuse(self, vid: str, reason: str, problems: list[str], author: str,
                      message: str, *, quiet: bool = False) -> dict[str, Any]:
        self.degraded = reason
        log.warning("policy change refused: the running version stays", extra={"fields": {"reason": reason}})
        if quiet:  # another replica's version: its refusal here is this replica's problem, not a new event
            return {"status": "refused", "reason": reason, "problems": problems}
        with contextlib.suppress(VersionStoreUnavailable):
            await anyio.to_thread.run_sync(lambda: self._store.record(self._clock(), "refused", vid, author, message,
                                                                      reason))
        with contextlib.suppress(Exception):  # a refusal changes nothing, so its audit record is best effort
            await self._audit({"action": "refused", "version": vid, "previous": self.version, "author": author,
                               "message": message, "reason": reason})
        return {"status": "refused", "reason": reason, "problems": problems}

    async def _start_workers(self, engine: PolicyEngine, settings: PoolSettings | None = None) -> bool:
        rego = engine.rego
        if rego is None or self._in_use(rego):
            return True
        pool = rego.workers(settings or self._settings.pool)
        self._pools.add(pool)
        await pool.start()
        if await pool.wait_ready(self._settings.workers_ready_s):
            return True
        self._pools.discard(pool)
        await pool.aclose()
        return False

    def _in_use(self, rego: RegoPolicy) -> bool:
        """Whether the active version, the start version or the shadow evaluates with ``rego``."""
        shadow = self._active.shadow
        return (rego is self._active.current.rego or rego is self._initial_rego
                or (shadow is not None and rego is shadow[1].rego))

    def _retire(self, rego: RegoPolicy | None) -> None:
        """Stop the workers of ``rego`` after the grace period, unless something still evaluates with them."""
        if rego is None or self._in_use(rego):
            return
        pool = rego.workers()
        if pool not in self._pools:
            return

        async def later() -> None:
            await asyncio.sleep(RETIRE_AFTER_S)
            if not self._in_use(rego):
                self._pools.discard(pool)
                await pool.aclose()

        task = asyncio.get_running_loop().create_task(later())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
