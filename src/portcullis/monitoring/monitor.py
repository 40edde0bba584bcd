"""The gateway side of monitoring: observe each call cheaply, judge and alert off the request path.

:meth:`Monitor.observe` runs in the record stage's ``finally`` for every ``tools/call``. It reads
a few attributes, builds one tuple and appends it to a bounded deque — no lock, no I/O, no
statistics; when the deque is full the observation is dropped and counted (:attr:`Monitor.dropped`).
:meth:`Monitor.run` (a gateway background task) drains the deque every ``drain_s``, feeds the
:class:`~portcullis.monitoring.detectors.Detector`, closes ended windows, and sends each alert to the
sinks: one JSON log line (caller-chosen text escaped), an ``alert`` audit record, the
``portcullis_alerts_total{rule}`` counter and the notifier webhook when one is configured; then the
containment rules propose or apply their kill switches through the
:class:`~portcullis.monitoring.containment.Containment` seam. With a
:class:`~portcullis.monitoring.state.MonitorStateStore`, the task first restores the last snapshot
(:meth:`Monitor.restore`) and saves a new one whenever a window closes (:meth:`Monitor.persist`), both
in a worker thread; a snapshot that cannot be read is logged and the monitor starts fresh.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio

from portcullis.monitoring.config import AlertsConfig
from portcullis.monitoring.containment import Containment, ContainmentRule, NoContainment, actions, carry_out
from portcullis.monitoring.detectors import Alert, Detector, Observation, Settings
from portcullis.monitoring.regions import RegionMap
from portcullis.monitoring.snapshot import restore, take
from portcullis.monitoring.state import MonitorStateStore, MonitorStateUnavailable
from portcullis.text import escape_invisible

log = logging.getLogger("portcullis.alerts")
MAX_SHAPE_NAMES = 32  # argument names of one call's shape (validation already bounds them by the schema)


def argument_bytes(arguments: Mapping[str, Any]) -> int:
    """A shallow, O(top-level arguments) estimate of the arguments' size: the length of each
    top-level key and string/bytes value, 8 per other scalar, the item count of a container.
    Never a JSON encoding on the request path; big strings (the usual exfiltration shape) count fully."""
    total = 0
    for key, value in arguments.items():
        kind = type(value)  # exact types: JSON decodes to these, and it is several times cheaper than isinstance
        total += len(key) + (len(value) if kind is str or kind is dict or kind is list or kind is bytes else 8)
    return total


def egress_capable(manifest: Any) -> bool:
    """The manifest's ``egress``, else the MCP ``openWorldHint`` (unset: egress-capable, the MCP default)."""
    if manifest.egress is not None:
        return bool(manifest.egress)
    return manifest.annotations.openWorldHint is not False


def caller_of(principal: Any) -> tuple[tuple[str, str], ...]:
    """The caller's identities: its agent and its user, else its client."""
    agent, user = principal.agent_id, principal.user_id
    if agent is not None:
        return (("agent", agent), ("user", user)) if user is not None else (("agent", agent),)
    return (("user", user),) if user is not None else (("client", str(principal.client_id)),)


class Monitor:
    """Observations in, alerts out (see the module docstring); :meth:`from_config` builds the gateway's."""

    @classmethod
    def from_config(cls, cfg: AlertsConfig, *, clock: Callable[[], float],
                    audit: Callable[[str, dict[str, Any]], Awaitable[Any]] | None,
                    counted: Callable[[str], None] | None, notify: Callable[[dict[str, Any]], bool] | None,
                    containment: Containment | None = None, store: MonitorStateStore | None = None) -> Monitor:
        return cls(cfg.settings(), clock=clock, max_pending=cfg.max_pending, egress_arguments=cfg.egress_arguments,
                   containment_rules=cfg.containment_rules(), containment=containment, audit=audit,
                   counted=counted, notify=notify if cfg.notify else None, regions=cfg.region_map(),
                   store=store if cfg.persist else None)

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time, drain_s: float = 1.0,
                 max_pending: int = 10000, egress_arguments: tuple[str, ...] = ("url", "destination", "to", "host"),
                 containment_rules: Mapping[str, tuple[ContainmentRule, ...]] | None = None,
                 containment: Containment | None = None,
                 audit: Callable[[str, dict[str, Any]], Awaitable[Any]] | None = None,
                 counted: Callable[[str], None] | None = None,
                 notify: Callable[[dict[str, Any]], bool] | None = None, regions: RegionMap | None = None,
                 store: MonitorStateStore | None = None) -> None:
        self.detector = Detector(settings, started=clock())
        self._regions = regions if regions is not None and regions.configured else None
        self._store = store
        self._saved_bucket = -1  # the window bucket of the last snapshot saved
        self._clock, self._drain_s, self._max_pending = clock, drain_s, max_pending
        self._egress_arguments = egress_arguments
        self._rules = containment_rules or {}
        self._containment: Containment = containment or NoContainment()
        self._audit, self._counted, self._notify = audit, counted, notify
        self._pending: deque[_Raw] = deque()
        self.dropped = 0
        self.raised = 0
        self._reported = (0, 0, 0)  # dropped, evicted, suppressed as last logged

    # ------------------------------------------------------------------ request path
    def observe(self, ctx: Any, outcome: str, output_bytes: int) -> None:
        """One finished call (the record stage's ``finally``). O(1) in the traffic; never raises.

        Only what the call's objects will not keep is computed here (sizes, the destination, the argument
        names); the route and the principal are kept by reference and read by the background task."""
        try:
            pending = self._pending
            if len(pending) >= self._max_pending:
                self.dropped += 1
                return
            record, arguments = ctx.record, ctx.arguments
            route = record.route
            destination = None
            if route is not None and egress_capable(route.manifest.manifest):
                for name in self._egress_arguments:
                    value = arguments.get(name)
                    if type(value) is str:
                        destination = value[:2048]
                        break
            pending.append((self._clock(), route, ctx.principal, record.result_tenant, argument_bytes(arguments),
                            output_bytes, outcome, destination,
                            tuple(arguments)[:MAX_SHAPE_NAMES] if outcome == "ok" or outcome == "tool_error"
                            else None, ctx.source))
        except Exception:  # monitoring never fails a call
            self.dropped += 1

    # ------------------------------------------------------------------ background
    def pending(self) -> list[Observation]:
        """What waits for the background task, as observations (for tests and debugging)."""
        return [_observation(raw, self._regions) for raw in self._pending]

    def drain(self) -> list[Alert]:
        """Feed what is pending to the detector and close ended windows; the alerts raised."""
        pending, detector, regions = self._pending, self.detector, self._regions
        alerts: list[Alert] = []
        while pending:
            try:
                observation = _observation(pending.popleft(), regions)
            except Exception:  # a context the request path could not vouch for: dropped, never fatal
                self.dropped += 1
                continue
            alerts += detector.observe(observation)
        alerts += detector.tick(self._clock())
        self._report_losses()
        return alerts

    def _report_losses(self) -> None:
        """One warning line when observations were dropped, keys evicted or alerts suppressed since the
        last one: a flood that blinds the monitor (evicted baselines start over) is itself visible."""
        now = (self.dropped, self.detector.evicted, self.detector.suppressed)
        if now != self._reported:
            last, self._reported = self._reported, now
            log.warning("alert monitor under pressure", extra={"fields": {
                "dropped": now[0] - last[0], "evicted": now[1] - last[1], "suppressed": now[2] - last[2]}})

    async def emit(self, alert: Alert) -> None:
        """Send one alert to every sink, then carry out the containment rules for it."""
        self.raised += 1
        done = [{"kind": a.kind, "target": escape_invisible(a.target), "mode": a.mode}
                for a in actions(alert, self._rules) if carry_out(a, self._containment)]
        fields = alert_fields(alert, done)
        log.warning("alert", extra={"fields": fields})
        if self._counted is not None:
            self._counted(alert.rule)
        if self._notify is not None:
            self._notify({"text": f"Portcullis alert: {fields['rule']} {fields['key_text']}", "alert": fields})
        if self._audit is not None:
            try:
                await self._audit("alt_" + secrets.token_hex(12), fields)
            except Exception:  # the audit sink refused (unavailable): logged; the log line above stands
                log.error("alert not audited", extra={"fields": {"rule": alert.rule}})

    # ------------------------------------------------------------------ persistence (worker thread)
    def restore(self) -> bool:
        """Load the last snapshot into the detector (before anything was drained); whether one was restored.
        An unreadable one is logged and set aside: the monitor starts fresh, the gateway serves on."""
        if self._store is None:
            return False
        try:
            snapshot = self._store.load(self.detector.s.max_keys)
            if snapshot is None:
                return False
            restored = restore(self.detector, snapshot, self._clock())
        except (MonitorStateUnavailable, ValueError) as exc:
            corrupt = not isinstance(exc, MonitorStateUnavailable) or exc.corrupt
            log.error("alert monitor state not restored: starting fresh", extra={"fields": {
                "error": type(exc).__name__, "detail": getattr(exc, "detail", ""), "corrupt": corrupt}})
            if corrupt:
                try:
                    self._store.reset()
                except MonitorStateUnavailable:
                    log.error("alert monitor state could not be set aside")
            return False
        log.info("alert monitor state restored", extra={"fields": {
            "entries": restored, "age_s": round(self._clock() - snapshot.taken_at, 1),
            "learning_left_s": round(max(0.0, self.detector.learn_until - self._clock()), 1)}})
        return True

    def persist(self, *, force: bool = False) -> bool:
        """Save a snapshot when a window closed since the last one (``force``: anyway); whether one was saved.
        A failing store is logged, never raised."""
        ticked = self.detector.ticked
        if self._store is None or (ticked == self._saved_bucket and not force):
            return False
        try:
            self._store.save(take(self.detector, self._clock()))
        except MonitorStateUnavailable as exc:
            log.error("alert monitor state not saved", extra={"fields": {"detail": exc.detail}})
            return False
        self._saved_bucket = ticked
        return True

    async def run(self) -> None:
        if self._store is not None:
            await anyio.to_thread.run_sync(self.restore)
        try:
            while True:
                await anyio.sleep(self._drain_s)
                for alert in self.drain():
                    await self.emit(alert)
                if self._store is not None and self.detector.ticked != self._saved_bucket:
                    # off the event loop; nothing else changes the detector while this task waits
                    await anyio.to_thread.run_sync(self.persist)
        finally:
            if self._store is not None:  # what was observed since the last save, on a clean stop (best effort)
                with anyio.move_on_after(5, shield=True):
                    for alert in self.drain():
                        await self.emit(alert)
                    await anyio.to_thread.run_sync(lambda: self.persist(force=True))


#: what the request path queues: at, route, principal, result tenant, argument bytes, output bytes, outcome,
#: destination, argument names, source address
_Raw = tuple[float, Any, Any, Any, int, int, str, "str | None", "tuple[str, ...] | None", Any]


def _observation(raw: _Raw, regions: RegionMap | None = None) -> Observation:
    at, route, principal, tenant, arg_bytes, out_bytes, outcome, destination, names, source = raw
    if route is not None:
        tool, risk = route.exposed_name, str(route.manifest.manifest.risk)
    else:
        tool, risk = "unknown", ""
    return Observation(at, tool, risk, caller_of(principal), tenant if isinstance(tenant, str) else principal.tenant,
                       arg_bytes, out_bytes, outcome not in ("ok", "denied", "input_required"), outcome == "denied",
                       destination, names, None if regions is None else regions.region(source, principal))


def alert_fields(alert: Alert, containment: list[dict[str, str]]) -> dict[str, Any]:
    """The alert as log, audit and webhook fields: caller-chosen text escaped (invisible characters shown)."""
    key = {escape_invisible(name): escape_invisible(value) for name, value in alert.key}
    observed = escape_invisible(alert.observed) if isinstance(alert.observed, str) else alert.observed
    return {"rule": alert.rule, "key": key, "key_text": escape_invisible(alert.key_text()), "observed": observed,
            "baseline": alert.baseline, "threshold": alert.threshold, "window_start": alert.window_start,
            "window_s": alert.window_s, "containment": containment}
