"""Prometheus metrics for one gateway, in its own registry, cheap enough for every call.

Metrics (``portcullis_`` prefix; ``_seconds`` are histograms):

==========================================  =====================================  =============================
name                                         labels                                 meaning
==========================================  =====================================  =============================
``portcullis_calls_total``                   tool, decision, outcome                ``tools/call`` requests
``portcullis_call_seconds``                  tool                                   whole-call latency
``portcullis_stage_seconds``                 stage                                  latency of one pipeline stage
``portcullis_upstream_errors_total``         service, kind                          upstream failures
``portcullis_policy_errors_total``           (none)                                 policy evaluations that failed
``portcullis_policy_shadow_total``           rule                                   log-only rules that would deny
``portcullis_shadow_version_total``          result                                 shadow version vs active:
                                                                                    agree, disagree, error,
                                                                                    dropped
``portcullis_limit_exceeded_total``          rule                                   limit rules that tripped
``portcullis_content_findings_total``        kind, action                           output-filter findings (kind
                                                                                    from a closed set, else other)
``portcullis_content_withheld_total``        reason                                 results the output filter
                                                                                    withheld
``portcullis_notifications_total``          outcome                                streamed notifications by
                                                                                    outcome (relayed, withheld,
                                                                                    after_end, …; closed set)
``portcullis_client_requests_total``        kind, outcome                          server-to-client requests
                                                                                    relayed to a 2025-era caller
                                                                                    or refused (closed sets)
``portcullis_client_answers_total``         outcome                                callers' JSON-RPC responses:
                                                                                    matched or why dropped
``portcullis_completions_total``            outcome                                completion/complete by outcome
                                                                                    (ok, refused, invalid_params,
                                                                                    upstream_error, timeout)
``portcullis_subscription_notifications_total`` outcome                            subscription notifications
                                                                                    (list changes, resource
                                                                                    updates) relayed or dropped
``portcullis_alerts_total``                  rule                                   anomaly alerts raised (rule
                                                                                    from a closed set, else other)
``portcullis_audit_records_total``           kind                                   audit records written
``portcullis_audit_failures_total``          (none)                                 audit writes that failed
``portcullis_audit_queue_depth``             (none)                                 records waiting to commit *
``portcullis_export_sent_total``             exporter                               records exported *
``portcullis_export_dropped_total``          exporter                               records dropped by exporters *
``portcullis_export_failed_attempts_total``  exporter                               failed export attempts *
``portcullis_export_queue_depth``            exporter                               records waiting to export *
``portcullis_approvals_open``                status                                 approvals pending / approved *
``portcullis_connections_refused_total``     listener, reason                       connections refused at the
                                                                                    HTTP layer *
``portcullis_response_cache_total``         event                                  response cache hits, misses,
                                                                                    stores, evictions *
``portcullis_response_cache_bytes``         (none)                                 bytes the cache holds *
``portcullis_log_records_dropped_total``     (none)                                 log records dropped: the log
                                                                                    sink was too slow
``portcullis_state_store_errors_total``      store, op                              state-store operations that
                                                                                    failed (fail closed; store
                                                                                    ``redis``, op from a closed set)
==========================================  =====================================  =============================

``*``: read at scrape time from a callback (:meth:`GatewayMetrics.set_audit_queue_depth_source`,
:meth:`GatewayMetrics.set_export_stats_source`, :meth:`GatewayMetrics.set_approvals_source`);
absent until one is set. ``decision`` is
``allow``, ``deny``, ``require_approval`` or ``none``; ``outcome`` is ``ok``, ``tool_error``,
``denied``, ``error`` or the name of the error class. The standard ``process_*``, ``python_gc_*``
and ``python_info`` metrics are included unless turned off.

Cardinality. Label values can come from callers (tool names) or from policy code (rule ids), and
every new value is a new time series held forever. Three bounds, outermost first:

1. :func:`tool_label` and :func:`rule_label` map anything that is not a known served tool or
   configured rule to ``"unknown"``; :class:`GatewayMetrics` applies them itself when given
   ``known_tools`` / ``known_rules``.
2. Every label value is cut to 128 characters.
3. Every metric holds at most ``max_series`` series; once full, new label combinations are
   counted under one series whose labels are all ``"other"``. Nothing a caller sends can grow
   memory or the scrape past that.

Speed. The hot path is plain Python arithmetic on cached children (no locks): about ten times
cheaper than ``prometheus_client``'s own ``Counter``/``Histogram`` (``bench/observability_micro.py``);
``prometheus_client`` is used only to format the scrape. Update from the event-loop thread, as
the pipeline does; a scrape from any thread sees each value whole.

Workers (``serve --workers N``): given ``shared`` (:mod:`portcullis.observability.multiprocess`), every
series is also written through to prometheus-client's multiprocess files and :meth:`GatewayMetrics.render`
reports every worker of the host; without it (one process, replicas) nothing above changes.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Callable, Container, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from portcullis import logs
from portcullis.monitoring.detectors import RULES as ALERT_RULES
from portcullis.notifications import ANSWER_OUTCOMES
from portcullis.notifications import OUTCOMES as NOTIFICATION_OUTCOMES
from portcullis.subscriptions import OUTCOMES as SUBSCRIPTION_OUTCOMES

if TYPE_CHECKING:
    from portcullis.observability.multiprocess import SharedMetrics

_LIVE_ONLY = frozenset({"portcullis_approvals_open"})  # the shared store's figure: read live in every mode
CLIENT_REQUEST_KINDS = frozenset({"sampling", "elicitation_form", "elicitation_url", "roots"})

log = logging.getLogger("portcullis.metrics")

MAX_LABEL_CHARS = 128
UNKNOWN = "unknown"  # a tool or rule that is not known
OVERFLOW = "other"  # every label of the one series that takes values past ``max_series``

#: 10 µs … 5 s: a stage is usually tens of microseconds; forward includes the upstream.
STAGE_BUCKETS_S = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05,
                   0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: 100 µs … 60 s: a whole call, upstream included, up to the longest configurable timeout.
CALL_BUCKETS_S = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                  1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

#: What an export stats source returns: exporter name -> {"sent", "dropped", "depth", "failed_attempts"}.
ExportStats = Mapping[str, Mapping[str, int]]


STATE_STORE_OPS = frozenset({"window_add", "window_total", "window_remove", "value_set", "value_get",
                             "key_count", "bucket_count"})


def cap_label(value: object) -> str:
    """``value`` as a label value of at most 128 characters."""
    text = value if type(value) is str else str(value)
    return text[:MAX_LABEL_CHARS]


def tool_label(name: str, known: Container[str]) -> str:
    """``name`` if it is a served tool, else ``"unknown"``: callers choose tool names, so raw names
    would let anyone create series. Names over 128 characters are never known (tool names are
    limited to 128), which also keeps a huge name from being hashed."""
    return name if type(name) is str and len(name) <= MAX_LABEL_CHARS and name in known else UNKNOWN


# output-filter finding kinds and withheld reasons: closed sets, so their labels stay bounded
CONTENT_KINDS = frozenset({
    "anthropic_api_key", "atlassian_token", "aws_access_key_id", "aws_secret_access_key", "azure_ad_client_secret",
    "azure_sas_token", "azure_storage_key", "connection_string_password", "datadog_api_key", "digitalocean_token",
    "discord_token", "discord_webhook", "doppler_token", "gcp_api_key", "gcp_service_account_key", "generic_secret",
    "github_token", "gitlab_token", "google_oauth_access_token", "google_oauth_client_secret", "heroku_api_key",
    "huggingface_token", "jwt", "linear_api_key", "mailgun_api_key", "npm_token", "openai_api_key", "private_key",
    "pypi_token", "sendgrid_api_key", "shopify_token", "slack_token", "slack_webhook", "stripe_key",
    "stripe_publishable_key", "telegram_bot_token", "twilio_api_key", "url_basic_auth", "vault_token",
    "card_number", "us_ssn", "email", "phone_number", "iban"})

COMPLETION_OUTCOMES = frozenset({"ok", "refused", "invalid_params", "upstream_error", "timeout", "error"})
WITHHELD_REASONS = frozenset({"policy", "budget_exceeded", "input_too_large", "too_many_findings", "decode_limit",
                              "detector_error", "injection", "undecodable_blob"})


def content_kind_label(kind: str) -> str:
    return kind if kind in CONTENT_KINDS else OVERFLOW


def rule_label(rule_id: str, known: Container[str]) -> str:
    """``rule_id`` if it is a configured rule, else ``"unknown"`` (Rego can build ids from input)."""
    return tool_label(rule_id, known)


class CounterChild:
    """One counter series."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (never negative)."""
        self.value += amount


class HistogramChild:
    """One histogram series: a count per bucket (not cumulative; the last bucket is +Inf) and a sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds  # upper bounds, ending with +Inf
        self.counts = [0] * len(bounds)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        """Record one observation (seconds from a monotonic clock)."""
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds


C = TypeVar("C", CounterChild, HistogramChild)


class Family(Generic[C]):
    """A metric and its series. ``labels(...)`` returns the cached series for those values, so
    the pipeline can also fetch a series once (``stage_seconds.labels("authorize")``) and keep it."""

    __slots__ = ("_children", "_max_series", "_new", "_overflow", "documentation", "labelnames", "name")

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...],
                 new: Callable[[tuple[str, ...]], C], *, max_series: int) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, labelnames
        self._new: Callable[[tuple[str, ...]], C] = new  # called with the series' label values
        self._max_series = max_series
        self._overflow = (OVERFLOW,) * len(labelnames)
        self._children: dict[tuple[str, ...], C] = {}

    def labels(self, *values: str) -> C:
        """The series for ``values`` (in ``labelnames`` order), created on first use."""
        child = self._children.get(values)
        return child if child is not None else self._admit(values)

    def series(self) -> list[tuple[tuple[str, ...], C]]:
        """A snapshot of (label values, series)."""
        return list(self._children.items())

    def _admit(self, values: tuple[str, ...]) -> C:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {len(values)} values")
        key = tuple(map(cap_label, values))
        child = self._children.get(key)
        if child is not None:  # a value that was cut or converted: not cached under its raw form
            return child
        if len(self._children) >= self._max_series:
            key = self._overflow
            child = self._children.get(key)
            if child is not None:
                return child
        child = self._children[key] = self._new(key)
        return child


class GatewayMetrics:
    """All of one gateway's metrics, in :attr:`registry` (never the process-wide default one).

    The methods ``call_done`` … ``upstream_error`` match :class:`~portcullis.pipeline.hooks.Hooks`,
    so an instance is passed to the pipeline as its hooks. ``known_tools`` / ``known_rules`` may
    be live containers (the gateway's catalog, the loaded policy's rule ids); when given, tool and
    rule labels outside them become ``"unknown"``.
    """

    def __init__(self, *, known_tools: Container[str] | None = None, known_rules: Container[str] | None = None,
                 max_series: int = 2000, process_metrics: bool = True, shared: SharedMetrics | None = None) -> None:
        if max_series < 1:
            raise ValueError("max_series must be at least 1")
        self._known_tools, self._known_rules = known_tools, known_rules
        self._export_source: Callable[[], ExportStats] | None = None
        self._audit_depth_source: Callable[[], int] | None = None
        self._approvals_source: Callable[[], Mapping[str, int]] | None = None
        self._refusals_source: Callable[[], Mapping[str, Mapping[str, int]]] | None = None
        self._cache_source: Callable[[], Any] | None = None

        self._shared = shared  # multiprocess mode (serve --workers N): series also written to shared files

        def counter(name: str, doc: str, *labels: str) -> Family[CounterChild]:
            full = f"portcullis_{name}"
            new = (lambda _values: CounterChild()) if shared is None else shared.counter(full, doc, labels)
            return Family(full, doc, labels, new, max_series=max_series)

        def histogram(name: str, doc: str, buckets: tuple[float, ...], *labels: str) -> Family[HistogramChild]:
            full, bounds = f"portcullis_{name}", (*buckets, float("inf"))
            new = ((lambda _values: HistogramChild(bounds)) if shared is None
                   else shared.histogram(full, doc, labels, bounds))
            return Family(full, doc, labels, new, max_series=max_series)

        self.calls_total = counter("calls_total", "tools/call requests.", "tool", "decision", "outcome")
        self.call_seconds = histogram("call_seconds", "Whole tools/call latency.", CALL_BUCKETS_S, "tool")
        self.stage_seconds = histogram("stage_seconds", "Latency of one pipeline stage.", STAGE_BUCKETS_S, "stage")
        self.upstream_errors_total = counter("upstream_errors_total", "Upstream failures.", "service", "kind")
        self.policy_errors_total = counter("policy_errors_total", "Policy evaluations that failed (denied).")
        self.policy_shadow_total = counter("policy_shadow_total", "Log-only policy rules that would deny.", "rule")
        self.shadow_version_total = counter("shadow_version_total", "Shadow-version decisions against the active "
                                            "one's: agree, disagree, error, dropped.", "result")
        self.limit_exceeded_total = counter("limit_exceeded_total", "Limit rules that tripped.", "rule")
        self.audit_records_total = counter("audit_records_total", "Audit records written.", "kind")
        self.audit_failures_total = counter("audit_failures_total", "Audit writes that failed.")
        self.attempts_total = counter("attempts_total", "Requests refused before the pipeline (attempt records).",
                                      "reason")
        self.definition_findings_total = counter(
            "definition_findings_total", "Tool-poisoning findings in newly listed or changed live definitions.", "rule")
        self.content_findings_total = counter("content_findings_total", "Output-filter findings by kind and "
                                              "action (links and injection hits too).", "kind", "action")
        self.content_withheld_total = counter("content_withheld_total", "Results the output filter withheld.",
                                              "reason")
        self.notifications_total = counter("notifications_total", "Upstream notifications of streamed calls, by "
                                           "outcome (relayed or why dropped).", "outcome")
        self.client_requests_total = counter("client_requests_total", "Server-to-client requests (sampling, "
                                             "elicitation, roots) relayed to 2025-era callers or refused.", "kind",
                                             "outcome")
        self.client_answers_total = counter("client_answers_total", "JSON-RPC responses POSTed by 2025-era callers: "
                                            "matched to a pushed request, or why dropped.", "outcome")
        self.completions_total = counter("completions_total", "completion/complete requests, by outcome.", "outcome")
        self.subscription_notifications_total = counter(
            "subscription_notifications_total", "Notifications to subscribed callers (list changes, resource "
            "updates), by outcome (relayed or why dropped).", "outcome")
        self.alerts_total = counter("alerts_total", "Anomaly alerts raised, by rule (docs/alerts.md).", "rule")
        self.state_store_errors_total = counter("state_store_errors_total", "State-store operations that failed "
                                                "(the caller failed closed), by store and operation.", "store", "op")
        self._counters = (self.alerts_total, self.state_store_errors_total, self.definition_findings_total,
                          self.content_findings_total,
                          self.content_withheld_total,
                          self.notifications_total, self.client_requests_total, self.client_answers_total,
                          self.completions_total, self.subscription_notifications_total,
                          self.calls_total, self.upstream_errors_total, self.policy_errors_total,
                          self.policy_shadow_total, self.shadow_version_total, self.limit_exceeded_total,
                          self.audit_records_total,
                          self.audit_failures_total, self.attempts_total)
        self._histograms = (self.call_seconds, self.stage_seconds)
        self._policy_errors = self.policy_errors_total.labels()  # unlabelled: present at 0 from the start
        self._audit_failures = self.audit_failures_total.labels()

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        if process_metrics and shared is None:  # per-process figures have no sum across workers
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)  # registers nothing where gc has no stats

    # ------------------------------------------------------------------ per call (Hooks)

    def call_done(self, tool: str, decision: str, outcome: str, seconds: float) -> None:
        """One finished ``tools/call``: counts it and observes its latency."""
        if self._known_tools is not None:
            tool = tool_label(tool, self._known_tools)
        self.calls_total.labels(tool, decision, outcome).inc()
        self.call_seconds.labels(tool).observe(seconds)

    def stage_done(self, stage: str, seconds: float) -> None:
        """One stage's own time. On the hot path prefer ``stage_seconds.labels(stage)`` fetched once."""
        self.stage_seconds.labels(stage).observe(seconds)

    def shadow(self, decision: Any) -> None:
        """A log-only policy decision that would not have allowed: one count per failing rule."""
        for rule in getattr(decision, "rule_ids", ()) or ("none",):
            self.policy_shadow_total.labels(self._rule(rule)).inc()

    def shadow_version(self, result: str) -> None:
        """A shadow version's decision: ``agree``/``disagree`` with the active effect, ``error``, or
        ``dropped`` (not evaluated: too many background shadow evaluations at once)."""
        self.shadow_version_total.labels(result if result in ("agree", "disagree", "dropped") else "error").inc()

    def policy_error(self) -> None:
        self._policy_errors.inc()

    def limit_exceeded(self, rule_id: str) -> None:
        self.limit_exceeded_total.labels(self._rule(rule_id)).inc()

    def audit_record(self, kind: str) -> None:
        self.audit_records_total.labels(kind).inc()

    def audit_failure(self) -> None:
        self._audit_failures.inc()

    def attempt(self, reason: str) -> None:
        """One refused request; ``reason`` is one of the closed set in audit/attempts.py."""
        self.attempts_total.labels(reason).inc()

    def alert(self, rule: str) -> None:
        """One anomaly alert; ``rule`` is one of the closed set in portcullis.monitoring.detectors."""
        self.alerts_total.labels(rule if rule in ALERT_RULES else OVERFLOW).inc()

    def definition_finding(self, rule: str) -> None:
        """One scanner finding in a live tool definition; ``rule`` is a scanner rule id (a closed set in code)."""
        label = rule if len(rule) <= 48 and rule.startswith("poisoning.") and rule[10:].replace("_", "").isalpha() \
            else "unknown"
        self.definition_findings_total.labels(label).inc()

    def content_findings(self, report: Any) -> None:
        """One filtered result's findings (a :class:`~portcullis.content.output_filter.ContentReport`)."""
        for (kind, action), count in report.findings.items():
            if count:
                self.content_findings_total.labels(content_kind_label(kind), action).inc(count)
        if report.links_neutralised:
            self.content_findings_total.labels("link", "neutralise").inc(report.links_neutralised)
        if report.injection_rules:
            self.content_findings_total.labels("injection", report.injection_action or "flag").inc()

    def content_withheld(self, reason: str) -> None:
        self.content_withheld_total.labels(reason if reason in WITHHELD_REASONS else "other").inc()

    def completion(self, outcome: str) -> None:
        """One ``completion/complete``: ok, refused (unknown or hidden), invalid_params, upstream_error, …"""
        self.completions_total.labels(outcome if outcome in COMPLETION_OUTCOMES else "other").inc()

    def notification(self, outcome: str) -> None:
        """One upstream notification of a streamed call: relayed, or the reason it was dropped."""
        self.notifications_total.labels(outcome if outcome in NOTIFICATION_OUTCOMES else "other").inc()

    def client_request(self, kind: str, outcome: str) -> None:
        """One server-to-client request of a call: ``relayed`` or ``refused``."""
        self.client_requests_total.labels(kind if kind in CLIENT_REQUEST_KINDS else "other",
                                          outcome if outcome in ("relayed", "refused") else "other").inc()

    def client_answer(self, outcome: str) -> None:
        """One JSON-RPC response a caller POSTed (transport/push.py): matched, or why it was dropped."""
        self.client_answers_total.labels(outcome if outcome in ANSWER_OUTCOMES else "other").inc()

    def subscription_notification(self, outcome: str) -> None:
        """One notification to one subscriber: relayed, or why it was dropped (a closed set)."""
        self.subscription_notifications_total.labels(outcome if outcome in SUBSCRIPTION_OUTCOMES else "other").inc()

    def state_store_error(self, store: str, op: str) -> None:
        """One failed state-store operation (``op`` from the store's closed set, else ``other``)."""
        self.state_store_errors_total.labels(cap_label(store), op if op in STATE_STORE_OPS else "other").inc()

    def upstream_error(self, service: str, kind: str) -> None:
        self.upstream_errors_total.labels(service, kind).inc()

    def _rule(self, rule_id: str) -> str:
        return rule_id if self._known_rules is None else rule_label(rule_id, self._known_rules)

    # ------------------------------------------------------------------ scrape time

    def set_audit_queue_depth_source(self, source: Callable[[], int] | None) -> None:
        """Read ``portcullis_audit_queue_depth`` from ``source()`` at every scrape."""
        self._audit_depth_source = source

    def set_export_stats_source(self, source: Callable[[], ExportStats] | None) -> None:
        """Read the ``portcullis_export_*`` metrics from ``source()`` at every scrape."""
        self._export_source = source

    def set_approvals_source(self, source: Callable[[], Mapping[str, int]] | None) -> None:
        """Read ``portcullis_approvals_open`` (status -> count) from ``source()`` at every scrape."""
        self._approvals_source = source

    def set_connection_refusals_source(self, source: Callable[[], Mapping[str, Mapping[str, int]]] | None) -> None:
        """Read ``portcullis_connections_refused_total`` (listener -> reason -> count) from ``source()``
        at every scrape."""
        self._refusals_source = source

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The scrape body and its content type; ``accept`` (the request's Accept header) may ask
        for OpenMetrics."""
        if self._shared is not None:  # the whole host: every worker's files, this worker's own copied first
            families = list(self._callback_families())
            self._shared.publish(families)
            return self._shared.render(accept, [f for f in families if f.name in _LIVE_ONLY])
        if accept is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    @property
    def multiprocess(self) -> bool:
        """Whether this worker reports for every worker of its host (``serve --workers N``)."""
        return self._shared is not None

    async def run(self) -> None:
        """Multiprocess mode: copy the scrape-time figures into this worker's files every second (the
        gateway's task group runs it; returns at once otherwise)."""
        if self._shared is None:
            return
        import anyio

        while True:
            await anyio.sleep(1.0)
            try:
                self._shared.publish(self._callback_families())
            except Exception:  # a broken source must not stop the copies of the others
                log.warning("copying scrape-time metrics failed", exc_info=True)

    def set_response_cache_source(self, source: Callable[[], Any] | None) -> None:
        """Read ``portcullis_response_cache_total`` (event -> count) and ``portcullis_response_cache_bytes``
        from ``source()`` (a :class:`~portcullis.state.response_cache.CacheStats`) at every scrape."""
        self._cache_source = source

    def _collect(self) -> Iterator[Metric]:
        for counter in self._counters:
            family = CounterMetricFamily(counter.name, counter.documentation, labels=counter.labelnames)
            for values, child in counter.series():
                family.add_metric(values, child.value)
            yield family
        for histogram in self._histograms:
            family_h = HistogramMetricFamily(histogram.name, histogram.documentation, labels=histogram.labelnames)
            for values, child_h in histogram.series():
                buckets, total = [], 0
                for bound, count in zip(child_h.bounds, list(child_h.counts), strict=True):
                    total += count
                    buckets.append((floatToGoString(bound), float(total)))  # type: ignore[no-untyped-call]
                family_h.add_metric(values, buckets, child_h.sum)
            yield family_h
        yield from self._callback_families()

    def _callback_families(self) -> Iterator[Metric]:
        if self._audit_depth_source is not None:
            try:
                depth = float(self._audit_depth_source())
            except Exception:  # a broken source must not break the scrape; the gauge goes absent
                log.warning("audit queue depth source failed", exc_info=True)
            else:
                yield GaugeMetricFamily("portcullis_audit_queue_depth", "Audit records waiting to commit.", depth)
        if self._export_source is not None:
            try:
                yield from _export_families(self._export_source())
            except Exception:
                log.warning("export stats source failed", exc_info=True)
        if self._approvals_source is not None:
            try:
                counts = self._approvals_source()
                family = GaugeMetricFamily("portcullis_approvals_open", "Approvals waiting for approvers "
                                           "(pending) or for the agent's retry (approved).", labels=["status"])
                for status in ("pending", "approved"):
                    family.add_metric([status], float(counts.get(status, 0)))
            except Exception:
                log.warning("approvals source failed", exc_info=True)
            else:
                yield family
        if self._refusals_source is not None:
            try:
                refused = CounterMetricFamily("portcullis_connections_refused_total", "Connections or requests "
                                              "refused at the HTTP layer (per-client cap, header limits, "
                                              "header or body read timeout).", labels=["listener", "reason"])
                for listener, reasons in self._refusals_source().items():
                    for reason, count in reasons.items():
                        refused.add_metric([cap_label(listener), cap_label(reason)], float(count))
            except Exception:
                log.warning("connection refusals source failed", exc_info=True)
            else:
                yield refused
        if self._cache_source is not None:
            try:
                stats = self._cache_source()
                events = CounterMetricFamily("portcullis_response_cache_total", "Response cache lookups and "
                                             "changes (hit, miss, store, eviction).", labels=["event"])
                for event, name in (("hit", "hits"), ("miss", "misses"), ("store", "stores"),
                                    ("eviction", "evictions")):
                    events.add_metric([event], float(getattr(stats, name)))
                held = GaugeMetricFamily("portcullis_response_cache_bytes", "Bytes of results the response "
                                         "cache holds.", float(stats.bytes))
            except Exception:
                log.warning("response cache source failed", exc_info=True)
            else:
                yield events
                yield held
        yield CounterMetricFamily("portcullis_log_records_dropped_total", "Log records dropped because the log "
                                  "sink could not keep up (the queue is bounded).", value=float(logs.dropped()))


def _export_families(stats: ExportStats) -> list[Metric]:
    labels = ["exporter"]
    sent = CounterMetricFamily("portcullis_export_sent_total", "Audit records exported.", labels=labels)
    dropped = CounterMetricFamily("portcullis_export_dropped_total", "Audit records dropped by an exporter "
                                  "(queue full or retries exhausted).", labels=labels)
    failed = CounterMetricFamily("portcullis_export_failed_attempts_total", "Failed export attempts.",
                                 labels=labels)
    depth = GaugeMetricFamily("portcullis_export_queue_depth", "Audit records waiting to export.", labels=labels)
    for name, s in stats.items():
        label = [cap_label(name)]
        sent.add_metric(label, float(s.get("sent", 0)))
        dropped.add_metric(label, float(s.get("dropped", 0)))
        failed.add_metric(label, float(s.get("failed_attempts", 0)))
        depth.add_metric(label, float(s.get("depth", 0)))
    return [sent, dropped, failed, depth]  # built whole first, so a bad entry yields none of them


class _Collector(Collector):
    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics._collect()
