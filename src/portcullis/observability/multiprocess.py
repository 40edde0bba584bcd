"""``/metrics`` for the whole host under ``portcullis serve --workers N``: prometheus-client's multiprocess mode.

The supervisor gives every worker one private directory (``PROMETHEUS_MULTIPROC_DIR``, fresh, mode 0700, set
in the workers' environment before they start, removed when it exits) and calls ``mark_process_dead`` for each
worker it reaps. In each worker (:class:`SharedMetrics`):

- **Per-call counters and histograms** are written through to this worker's files (prometheus-client's
  mmap'ed ``counter_<pid>.db`` / ``histogram_<pid>.db``) at every increment, besides the in-process value.
  The mmap'ed page outlives the process, so a worker killed with SIGKILL loses nothing it counted.
- **Scrape-time figures** (the callback sources of :class:`~portcullis.observability.metrics.GatewayMetrics`:
  audit and export queues, exporters, connection refusals, response cache, dropped log records) cannot be
  computed by another process, so each worker copies them into its files every second (:meth:`publish`;
  also right before it answers a scrape). Counters among them are ``counter`` files (a dead worker's last
  copy stays in the sum, so totals never go back; its last second may be missing); gauges are ``livesum``
  (see :data:`GAUGE_MODES`).
- **Approvals** (``portcullis_approvals_open``) come from the shared store: every worker reads the same
  numbers, so the worker that answers reports its own reading, live (a sum would count them N times).
- A scrape (:meth:`render`) merges every file of the directory (``MultiProcessCollector``): any worker answers
  for the whole host. Each worker's ``process_*`` and ``python_gc_*`` figures are per process and have no
  meaningful sum: they are left out in this mode (``python_info`` stays).

Bounds: each worker keeps ``max_series`` per metric as before, so the union holds at most ``workers x
max_series`` plus the series of dead workers (their files stay until the supervisor exits); copied
scrape-time series are capped at :data:`MAX_COPIED_SERIES` per worker.
"""

from __future__ import annotations

import logging
import os
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, PlatformCollector, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from portcullis.observability.metrics import _LIVE_ONLY, CounterChild, HistogramChild

log = logging.getLogger("portcullis.metrics")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MAX_COPIED_SERIES = 2000
#: How each scrape-time gauge combines across workers. ``livesum``: each worker holds its own queue or cache,
#: the host holds their sum, and a dead worker's share is gone with it (``mark_process_dead`` drops its file).
GAUGE_MODES = {"portcullis_audit_queue_depth": "livesum", "portcullis_export_queue_depth": "livesum",
               "portcullis_response_cache_bytes": "livesum"}
#: Read live from the answering worker, never copied: the same shared-store figure in every worker.
LIVE_ONLY = _LIVE_ONLY


class SharedCounterChild(CounterChild):
    """A counter series also written through to this worker's file."""

    __slots__ = ("_shared",)

    def __init__(self, shared: Any) -> None:
        super().__init__()
        self._shared = shared

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount
        self._shared.inc(amount)


class SharedHistogramChild(HistogramChild):
    """A histogram series also written through: one file value per bucket (not cumulative) and the sum."""

    __slots__ = ("_shared_buckets", "_shared_sum")

    def __init__(self, bounds: tuple[float, ...], buckets: list[Any], total: Any) -> None:
        super().__init__(bounds)
        self._shared_buckets, self._shared_sum = buckets, total

    def observe(self, seconds: float) -> None:
        index = bisect_left(self.bounds, seconds)
        self.counts[index] += 1
        self.sum += seconds
        self._shared_buckets[index].inc(1.0)
        self._shared_sum.inc(seconds)


class SharedMetrics:
    """One worker's side of multiprocess mode over ``directory`` (module docstring).

    ``value_class`` is prometheus-client's mmap'ed value class; by default the one it chose at import, which
    is the multiprocess one only when ``PROMETHEUS_MULTIPROC_DIR`` was set before the import (the supervisor
    sets it in the worker's environment). Two value classes over one directory in one process would write
    the same file through two maps, so no other is ever made here."""

    def __init__(self, directory: Path, *, value_class: Any = None) -> None:
        if value_class is None:
            from prometheus_client import values

            value_class = values.ValueClass
            if os.environ.get(MULTIPROC_ENV) != str(directory):
                raise RuntimeError(f"{MULTIPROC_ENV} must name {directory} before prometheus_client is imported")
        if not getattr(value_class, "_multiprocess", False):
            raise RuntimeError(f"prometheus_client is not in multiprocess mode ({MULTIPROC_ENV} was not set "
                               "before it was imported)")
        self.directory = directory
        self._value = value_class
        self._copied: dict[tuple[str, str, tuple[tuple[str, str], ...]], Any] = {}
        self._live: list[Metric] = []  # this scrape's live families (render sets them; one loop thread)
        self._registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(self._registry, path=str(directory))  # type: ignore[no-untyped-call]
        self._registry.register(_Live(lambda: self._live))
        PlatformCollector(registry=self._registry)

    # ------------------------------------------------------------------ per-call series

    def counter(self, name: str, documentation: str, labelnames: tuple[str, ...]
                ) -> Callable[[tuple[str, ...]], CounterChild]:
        """The factory of ``name``'s series (a ``…_total`` family: its metric name drops the suffix)."""
        metric = name.removesuffix("_total")

        def new(values: tuple[str, ...]) -> CounterChild:
            return SharedCounterChild(self._value("counter", metric, name, labelnames, values, documentation))
        return new

    def histogram(self, name: str, documentation: str, labelnames: tuple[str, ...], bounds: tuple[float, ...]
                  ) -> Callable[[tuple[str, ...]], HistogramChild]:
        withle = (*labelnames, "le")

        les = [floatToGoString(bound) for bound in bounds]  # type: ignore[no-untyped-call]

        def new(values: tuple[str, ...]) -> HistogramChild:
            buckets = [self._value("histogram", name, f"{name}_bucket", withle, (*values, le), documentation)
                       for le in les]
            total = self._value("histogram", name, f"{name}_sum", labelnames, values, documentation)
            return SharedHistogramChild(bounds, buckets, total)
        return new

    # ------------------------------------------------------------------ scrape-time figures

    def publish(self, families: Iterable[Metric]) -> None:
        """Copy this worker's scrape-time ``families`` into its files (``LIVE_ONLY`` ones are skipped)."""
        for family in families:
            if family.name in LIVE_ONLY or family.type not in ("counter", "gauge"):
                continue
            mode = GAUGE_MODES.get(family.name, "livesum")
            for sample in family.samples:
                labels = tuple(sorted(sample.labels.items()))
                key = (family.name, sample.name, labels)
                value = self._copied.get(key)
                if value is None:
                    if len(self._copied) >= MAX_COPIED_SERIES:
                        continue
                    value = self._copied[key] = self._value(
                        family.type, family.name, sample.name, [k for k, _ in labels], [v for _, v in labels],
                        family.documentation, multiprocess_mode=mode)
                value.set(sample.value)

    def render(self, accept: str | None, live: Iterable[Metric]) -> tuple[bytes, str]:
        """The whole host's scrape: every worker's files merged, plus ``live`` families from this worker."""
        self._live = list(live)
        try:
            if accept is None:
                return generate_latest(self._registry), CONTENT_TYPE_LATEST
            encoder, content_type = choose_encoder(accept)
            return encoder(self._registry), content_type
        finally:
            self._live = []


class _Live(Collector):
    def __init__(self, live: Callable[[], list[Metric]]) -> None:
        self._live = live

    def collect(self) -> Iterator[Metric]:
        return iter(self._live())
