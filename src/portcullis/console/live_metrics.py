"""The live view's figures, read from what ``/metrics`` serves (the gateway's own registry, rendered in the
Prometheus text format and parsed back here: one source of truth, no second set of counters).

Pure: :func:`live_figures` takes the exposition text and returns calls per tool and decision, latency
quantiles per tool from the ``portcullis_call_seconds`` histogram buckets (as ``histogram_quantile`` does:
linear within the bucket; counted since the gateway started), errors, queue depths, and how the shadow
policy version's decisions compared with the active one's.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

MAX_ROWS = 200  # tools (or other label sets) shown per table


def quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a cumulative histogram ``[(upper bound, count), …]`` (None when empty)."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower  # in the open top bucket: its lower bound, as Prometheus does
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def live_figures(text: str) -> dict[str, Any]:
    calls: dict[tuple[str, str], float] = defaultdict(float)
    buckets: dict[str, list[tuple[float, float]]] = defaultdict(list)
    counts: dict[str, float] = {}
    errors: dict[str, float] = defaultdict(float)
    queues: dict[str, float] = {}
    shadow: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels, value = s.labels, s.value
            if s.name == "portcullis_calls_total":
                calls[(labels.get("tool", ""), labels.get("decision", ""))] += value
                if labels.get("outcome") not in (None, "", "ok", "denied"):
                    errors[f"calls: {labels.get('outcome')}"] += value
            elif s.name == "portcullis_call_seconds_bucket":
                buckets[labels.get("tool", "")].append((float(labels["le"]), value))
            elif s.name == "portcullis_call_seconds_count":
                counts[labels.get("tool", "")] = value
            elif s.name == "portcullis_upstream_errors_total":
                errors[f"upstream {labels.get('service', '')}: {labels.get('kind', '')}"] += value
            elif s.name in ("portcullis_policy_errors_total", "portcullis_audit_failures_total",
                            "portcullis_state_store_errors_total"):
                errors[s.name.removeprefix("portcullis_").removesuffix("_total").replace("_", " ")] += value
            elif s.name == "portcullis_shadow_version_total":
                shadow[labels.get("result", "")] += value
            elif s.name == "portcullis_audit_queue_depth":
                queues["audit queue"] = value
            elif s.name == "portcullis_export_queue_depth":
                queues[f"export queue ({labels.get('exporter', '')})"] = value
            elif s.name == "portcullis_approvals_open":
                queues[f"approvals {labels.get('status', '')}"] = value
    top = max(calls.values(), default=0.0)
    call_rows = [{"tool": t, "decision": d, "count": int(c), "share": 0 if top <= 0 else round(100 * c / top)}
                 for (t, d), c in sorted(calls.items(), key=lambda kv: (-kv[1], kv[0]))][:MAX_ROWS]
    latency = [{"tool": tool, "count": int(counts.get(tool, 0)), "p50": _ms(quantile(0.5, b)),
                "p95": _ms(quantile(0.95, b))} for tool, b in sorted(buckets.items())][:MAX_ROWS]
    return {"calls": call_rows, "latency": latency,
            "errors": [{"what": k, "count": int(v)} for k, v in sorted(errors.items()) if v > 0][:MAX_ROWS],
            "queues": [{"what": k, "depth": int(v)} for k, v in sorted(queues.items())],
            "shadow": {k: int(v) for k, v in sorted(shadow.items())}}


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:.1f} ms"
