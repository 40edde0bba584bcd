"""Issue 16: what one counter increment and one call's metrics cost in the single process (embedded,
``--workers 1``) and in multiprocess mode (a worker of ``serve --workers N``: every series written through
to prometheus-client's mmap'ed file), and what one scrape of the merged files costs.

Run: ``.venv/bin/python -m bench.metrics_multiprocess``. ``--single`` times only the single process, so the
same figures can be taken against another checkout (``PYTHONPATH=<other>/src python -m bench.metrics_multiprocess
--single``) to compare before and after.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

_DIR = tempfile.mkdtemp(prefix="bench-metrics-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _DIR  # before prometheus_client is imported, as in a worker

from bench.observability_micro import _us_per_call, metrics_call  # noqa: E402
from portcullis.observability.metrics import GatewayMetrics  # noqa: E402


def main(n: int = 50_000) -> None:
    single_only = "--single" in sys.argv
    rows = []
    try:
        modes = [("single process", GatewayMetrics(process_metrics=False))]
        if not single_only:
            from pathlib import Path

            from portcullis.observability.multiprocess import SharedMetrics

            modes.append(("multiprocess", GatewayMetrics(process_metrics=False, shared=SharedMetrics(Path(_DIR)))))
        for mode, metrics in modes:
            child = metrics.calls_total.labels("billing.refund", "allow", "ok")
            rows.append((f"{mode}: counter inc (series fetched once)", _us_per_call(child.inc, n)))
            rows.append((f"{mode}: counter inc by labels", _us_per_call(
                lambda m=metrics: m.calls_total.labels("billing.refund", "allow", "ok").inc(), n)))
            rows.append((f"{mode}: one call (5 stages + call_done)", _us_per_call(metrics_call(metrics), n)))
        if not single_only:
            shared = modes[1][1]
            rows.append(("multiprocess: one scrape (1 worker's files, µs)", _us_per_call(shared.render, 200)))
    finally:
        shutil.rmtree(_DIR, ignore_errors=True)
    width = max(len(label) for label, _ in rows)
    for label, us in rows:
        print(f"{label:<{width}}  {us:8.3f} us")


if __name__ == "__main__":
    main()
