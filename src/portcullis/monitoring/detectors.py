"""The alert rules, as a pure state machine over observations and a clock (no I/O, no wall time).

:meth:`Detector.observe` takes one finished call; :meth:`Detector.tick` closes the windows that
have ended. Both return the :class:`Alert` objects raised. Every alert says which rule fired, for
which key, the observed value, the baseline, the threshold it crossed and the window — so a
responder can see why without reading code.

Rules (``rule`` of an alert):

* ``call_rate_spike``, ``argument_size_spike``, ``output_size_spike``, ``error_rate_spike``,
  ``denial_rate_spike`` — per tool per hour of day (UTC) and per caller: a closed window whose value
  is above ``mean + k·sd`` of that key's baseline **and** above the rule's absolute floor, once the
  key has ``min_history`` windows. Ratios are judged only in windows of at least ``min_calls`` calls.
* ``cross_tenant_spike`` — one caller's calls touched more distinct tenants in a window than its
  baseline allows (and at least the floor).
* ``cross_region_spike`` — one caller's calls came from more distinct regions in a window than its
  baseline allows (and at least the floor, 2); judged over windows with at least one known region
  (:mod:`.regions` resolves an observation's region; an unknown one is not counted unless configured).
* ``new_identity_high_risk`` — an agent or user (else a client) seen for the first time on a tool
  whose manifest risk is ``high``.
* ``new_egress_destination`` — a destination host not seen before for a tool.
* ``new_argument_shape`` — a set of top-level argument names not seen before for a tool, in a call
  that passed validation and policy (a tool's usual shapes are few; a new one is a new way of calling it).

"First time" is since the process started, or since the first start whose state a restart restored
(:mod:`.snapshot`): the first ``learn_s`` seconds of a fresh state are learned silently.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from portcullis.monitoring.baseline import (
    Baseline,
    BoundedTable,
    count_noise,
    ratio_noise,
    region_noise,
    size_noise,
)

SPIKE_RULES = ("call_rate_spike", "argument_size_spike", "output_size_spike", "error_rate_spike",
               "denial_rate_spike")
CALLER_RULES = (*SPIKE_RULES, "cross_tenant_spike", "cross_region_spike")
RULES = frozenset({*CALLER_RULES, "new_identity_high_risk", "new_egress_destination", "new_argument_shape"})
MAX_TENANTS_PER_WINDOW = 64  # distinct tenants counted per caller and window (a count past it saturates)
MAX_REGIONS_PER_WINDOW = 64  # distinct regions likewise
MAX_TEXT = 256  # key parts and destinations are cut to this many characters


class Observation(NamedTuple):
    """One finished ``tools/call`` as the monitor sees it (built on the request path: plain values only)."""

    at: float  # wall-clock seconds
    tool: str
    risk: str  # the manifest's risk level ("" when the call had no route)
    caller: tuple[tuple[str, str], ...]  # (("agent", id), ("user", id)) or (("client", id),)
    tenant: str | None
    argument_bytes: int
    output_bytes: int
    error: bool
    denied: bool
    destination: str | None  # raw egress destination argument, if the tool has one
    shape: tuple[str, ...] | None = None  # the top-level argument names of an allowed call (None: not judged)
    region: str | None = None  # where the call came from (regions.RegionMap; None: unknown, not counted)


@dataclass(frozen=True, slots=True)
class Settings:
    window_s: float = 60.0
    alpha: float = 0.1
    k: float = 4.0
    min_history: int = 30
    min_calls: int = 10
    max_gap_windows: int = 10
    floors: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_FLOORS))
    max_keys: int = 10000
    learn_s: float = 3600.0
    cooldown_s: float = 900.0
    max_alerts_per_window: int = 100


DEFAULT_FLOORS: Mapping[str, float] = {
    "call_rate_spike": 60.0, "argument_size_spike": 65536.0, "output_size_spike": 1048576.0,
    "error_rate_spike": 0.5, "denial_rate_spike": 0.5, "cross_tenant_spike": 3.0, "cross_region_spike": 2.0}


@dataclass(frozen=True, slots=True)
class Alert:
    rule: str
    key: tuple[tuple[str, str], ...]  # what it is about: (("tool", "x"), ("hour", "13")), (("agent", "a"),)
    observed: float | str
    baseline: float | None  # the baseline mean (None for first-seen rules)
    threshold: float | None  # what ``observed`` crossed (None for first-seen rules)
    window_start: float
    window_s: float
    at: float

    def subject(self, kind: str) -> str | None:
        return next((value for name, value in self.key if name == kind), None)

    def key_text(self) -> str:
        return " ".join(f"{name}={value}" for name, value in self.key)

    def to_json(self) -> dict[str, object]:
        return {"rule": self.rule, "key": dict(self.key), "observed": self.observed, "baseline": self.baseline,
                "threshold": self.threshold, "window_start": self.window_start, "window_s": self.window_s,
                "at": self.at}


class Window:
    """One key's open window and its baselines (one per spike rule, the tenant and region counts)."""

    __slots__ = ("args", "baselines", "bucket", "calls", "denials", "errors", "out", "regions", "tenants")

    def __init__(self, bucket: int, rules: tuple[str, ...]) -> None:
        self.bucket = bucket
        self.calls = self.args = self.out = self.errors = self.denials = 0
        self.tenants: set[str] = set()
        self.regions: set[str] = set()
        self.baselines = {rule: Baseline() for rule in rules}

    def reset(self, bucket: int) -> None:
        self.bucket = bucket
        self.calls = self.args = self.out = self.errors = self.denials = 0
        self.tenants = set()
        self.regions = set()


def _cut(text: str) -> str:
    return text[:MAX_TEXT]


def destination_host(raw: str) -> str:
    """The host a destination names: a URL's host, an address's domain, else the value (lower-cased, cut)."""
    text = raw.strip()[:2048]
    if "://" in text:
        try:
            host = urlsplit(text).hostname or ""
        except ValueError:
            host = ""
    elif "@" in text:
        host = text.rpartition("@")[2]
    else:
        host = text
    return _cut(host.lower().rstrip(".")) or "-"


_ANY_CALLS = frozenset({"call_rate_spike", "cross_tenant_spike", "cross_region_spike"})  # no min_calls


class Detector:
    """All rules over all keys; bounded by ``settings.max_keys`` per table (see :attr:`evicted`)."""

    def __init__(self, settings: Settings, *, started: float) -> None:
        self.s = settings
        self.learn_until = started + settings.learn_s  # first-seen rules are silent before it (restore moves it)
        cap = settings.max_keys
        self._tools: BoundedTable[tuple[tuple[str, str], ...], Window] = BoundedTable(cap)
        self._callers: BoundedTable[tuple[tuple[str, str], ...], Window] = BoundedTable(cap)
        self._identities: BoundedTable[tuple[str, str, str], bool] = BoundedTable(cap)
        self._destinations: BoundedTable[tuple[str, str], bool] = BoundedTable(cap)
        self._shapes: BoundedTable[tuple[str, str], bool] = BoundedTable(cap)
        self._recent: BoundedTable[tuple[str, tuple[tuple[str, str], ...]], list[float]] = BoundedTable(cap)
        self._alert_bucket, self._alerts_in_bucket = -1, 0
        self._ticked = -1  # the last window tick() closed up to
        self.suppressed = 0  # alerts not raised: cooldown or the per-window cap

    @property
    def ticked(self) -> int:
        """The window bucket the last :meth:`tick` closed up to (-1: none yet)."""
        return self._ticked

    def window_tables(self) -> dict[str, BoundedTable[tuple[tuple[str, str], ...], Window]]:
        """The per-key windows and baselines by table name (what :mod:`.snapshot` saves and restores)."""
        return {"tool": self._tools, "caller": self._callers}

    def seen_tables(self) -> dict[str, BoundedTable[Any, bool]]:
        """The first-seen sets by table name (likewise)."""
        return {"identity": self._identities, "destination": self._destinations, "shape": self._shapes}

    @property
    def evicted(self) -> int:
        return sum(t.evicted for t in (self._tools, self._callers, self._identities, self._destinations,
                                             self._shapes))

    def tracked(self) -> int:
        return sum(len(t) for t in (self._tools, self._callers, self._identities, self._destinations,
                                             self._shapes))

    def observe(self, obs: Observation) -> list[Alert]:
        out: list[Alert] = []
        bucket = int(obs.at // self.s.window_s)
        tool = _cut(obs.tool)
        hour = str(int(obs.at // 3600) % 24)
        self._count(self._tools, (("tool", tool), ("hour", hour)), SPIKE_RULES, bucket, obs, out)
        caller = tuple((kind, _cut(value)) for kind, value in obs.caller[:1])
        self._count(self._callers, caller, CALLER_RULES, bucket, obs, out)
        if obs.risk == "high":
            for kind, value in obs.caller:
                _, new = self._identities.get_or_add((tool, kind, _cut(value)), lambda: True)
                if new:
                    self._first_seen("new_identity_high_risk", (("tool", tool), (kind, _cut(value))), obs.at, out)
        if obs.destination is not None:
            host = destination_host(obs.destination)
            _, new = self._destinations.get_or_add((tool, host), lambda: True)
            if new:
                self._first_seen("new_egress_destination", (("tool", tool), ("destination", host)), obs.at, out)
        if obs.shape is not None:
            shape = _cut(",".join(sorted(obs.shape)))
            _, new = self._shapes.get_or_add((tool, shape), lambda: True)
            if new:
                self._first_seen("new_argument_shape", (("tool", tool), ("shape", shape)), obs.at, out)
        return out

    def tick(self, now: float) -> list[Alert]:
        """Close every window that ended before ``now`` (call at least once per window)."""
        out: list[Alert] = []
        bucket = int(now // self.s.window_s)
        if bucket == self._ticked:  # nothing ended since the last tick: O(1), not a scan of every key
            return out
        self._ticked = bucket
        for table in (self._tools, self._callers):
            for key, window in table.items():
                if window.bucket < bucket:
                    self._close(key, window, bucket, now, out)
        return out

    def _count(self, table: BoundedTable[tuple[tuple[str, str], ...], Window], key: tuple[tuple[str, str], ...],
               rules: tuple[str, ...], bucket: int, obs: Observation, out: list[Alert]) -> None:
        window, _ = table.get_or_add(key, lambda: Window(bucket, rules))
        if window.bucket < bucket:
            self._close(key, window, bucket, obs.at, out)
        window.calls += 1
        window.args += obs.argument_bytes
        window.out += obs.output_bytes
        window.errors += obs.error
        window.denials += obs.denied
        if obs.tenant is not None and len(window.tenants) < MAX_TENANTS_PER_WINDOW:
            window.tenants.add(_cut(obs.tenant))
        region, regions = obs.region, window.regions
        if region is not None and len(regions) < MAX_REGIONS_PER_WINDOW and "cross_region_spike" in window.baselines:
            regions.add(_cut(region))

    def _close(self, key: tuple[tuple[str, str], ...], w: Window, bucket: int, now: float,
               out: list[Alert]) -> None:
        """Judge the ended window against its baselines, then fold it (and a short silence) in."""
        s, calls = self.s, w.calls
        start = w.bucket * s.window_s
        values: dict[str, tuple[float, Callable[[float], float]]] = {"call_rate_spike": (float(calls), count_noise)}
        if calls:
            values["argument_size_spike"] = (w.args / calls, size_noise)
            values["output_size_spike"] = (w.out / calls, size_noise)
            values["error_rate_spike"] = (w.errors / calls, ratio_noise)
            values["denial_rate_spike"] = (w.denials / calls, ratio_noise)
        if "cross_tenant_spike" in w.baselines:
            values["cross_tenant_spike"] = (float(len(w.tenants)), count_noise)
        if w.regions:  # windows with a known region only: an idle or unlocated window says nothing of roaming
            values["cross_region_spike"] = (float(len(w.regions)), region_noise)
        for rule, (value, noise) in values.items():
            base = w.baselines[rule]
            judged = calls >= s.min_calls or rule in _ANY_CALLS
            if judged and base.n >= s.min_history:
                threshold = base.threshold(s.k, noise(base.mean))
                if value > threshold and value >= s.floors.get(rule, 0.0):
                    self._raise(Alert(rule, key, round(value, 4), round(base.mean, 4), round(threshold, 4),
                                      start, s.window_s, now), out)
            base.fold(value, s.alpha)
        gap = bucket - w.bucket - 1
        if 0 < gap <= s.max_gap_windows:  # a short silence is zero-call windows; a long one is not folded
            for _ in range(gap):
                w.baselines["call_rate_spike"].fold(0.0, s.alpha)
                if "cross_tenant_spike" in w.baselines:
                    w.baselines["cross_tenant_spike"].fold(0.0, s.alpha)
        w.reset(bucket)

    def _first_seen(self, rule: str, key: tuple[tuple[str, str], ...], at: float, out: list[Alert]) -> None:
        if at >= self.learn_until:
            start = int(at // self.s.window_s) * self.s.window_s
            self._raise(Alert(rule, key, key[-1][1], None, None, start, self.s.window_s, at), out)

    def _raise(self, alert: Alert, out: list[Alert]) -> None:
        s = self.s
        recent, new = self._recent.get_or_add((alert.rule, alert.key), lambda: [alert.at])
        if not new:
            if alert.at - recent[0] < s.cooldown_s:
                self.suppressed += 1
                return
            recent[0] = alert.at
        bucket = int(alert.at // s.window_s)
        if bucket != self._alert_bucket:
            self._alert_bucket, self._alerts_in_bucket = bucket, 0
        if self._alerts_in_bucket >= s.max_alerts_per_window:
            self.suppressed += 1
            return
        self._alerts_in_bucket += 1
        out.append(alert)
