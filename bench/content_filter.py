"""The output filter's cost: p50 on a 4 KB result, MB/s on 1 MB and 10 MB results.

:func:`portcullis.content.output_filter.filter_message` with the gateway's default policy (every
secret rule and PII kind, decoding, hidden characters stripped, links, injection ``wrap``) on

* a 4 KB clean result: two text blocks of prose with ids, a git SHA and a UUID, and a small
  ``structuredContent`` (target: at most 0.1 ms at p50);
* the same with a secret, a card number and an e-mail address planted (the redaction path);
* 1 MB and 10 MB clean results (one text block), reported in MB/s of result text.

Also the parts on their own (detection only, injection only) and, as references for how loaded the
machine is, the engine and the injection scanner alone on the same text, so a regression can be placed.
Run: ``.venv/bin/python -m bench.content_filter``. Times are wall clock on a shared machine.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from portcullis.content.budget import ScanBudget
from portcullis.content.injection import scan_result
from portcullis.content.links import normalise_hosts
from portcullis.content.output_filter import FilterPolicy, filter_message
from portcullis.content.scan import default_detectors

_WORDS = ("the quarterly report shows revenue grew while costs fell and the team shipped new features to customers "
          "across three regions order invoice status shipped delivered pending refund total amount currency").split()


def prose(size: int, seed: int = 7) -> str:
    rng = random.Random(seed)
    out: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(_WORDS)
        if rng.random() < 0.02:
            word = rng.choice(("9f1c2b3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b", "3f2a9c1e-7b4d-4e2a-9f1c-2b3d4e5f6a7b",
                               "https://docs.example.com/guide", "ORD-2026-0042"))
        out.append(word)
        length += len(word) + 1
    return " ".join(out)[:size]


def result_4k(planted: bool = False) -> dict[str, Any]:
    text = prose(3900)
    if planted:
        text = (text[:1000] + " key AKIAZ5GMHYJKLMNOPQR7 card 4242 4242 4242 4242 mail ops@corp.example.org "
                + text[1000:3800])
    return {"content": [{"type": "text", "text": text[:1950]}, {"type": "text", "text": text[1950:]}],
            "structuredContent": {"id": 42, "status": "shipped", "total": "19.99"}, "isError": False}


def policy(**changes: Any) -> FilterPolicy:
    base: dict[str, Any] = {"detectors": default_detectors(), "budget": ScanBudget(min_encoded_run=12),
                            "allow_hosts": normalise_hosts(["docs.example.com"]),
                            "hash_key": b"bench"}
    base.update(changes)
    return FilterPolicy(**base)


def median_us(fn: Callable[[], object], runs: int) -> float:
    for _ in range(min(50, runs)):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1000


def main() -> None:
    full = policy()
    print("== output filter cost (median wall time; the machine may be shared)")
    for label, value, pol in (("4 KB clean result, default policy", result_4k(), full),
                              ("4 KB result with 3 planted values, default", result_4k(True), full),
                              ("4 KB clean, detection only", result_4k(), policy(injection="off", links=False)),
                              ("4 KB clean, injection only", result_4k(), policy(detectors=None, links=False)),
                              ("4 KB clean, walk only", result_4k(),
                               policy(detectors=None, links=False, injection="off"))):
        print(f"  {label:46s} p50 {median_us(lambda v=value, p=pol: filter_message(v, 'tools/call', p), 2000):8.1f} us")
    text = " ".join(block["text"] for block in result_4k()["content"])
    detectors = default_detectors()
    for label, fn in (("reference: DetectorSet.scan, same 4 KB text", lambda: detectors.scan(text)),
                      ("reference: injection.scan_result, same text", lambda: scan_result(text))):
        print(f"  {label:46s} p50 {median_us(fn, 2000):8.1f} us")
    for size in (1 << 20, 10 << 20):
        value = {"content": [{"type": "text", "text": prose(size, seed=size)}], "isError": False}
        runs = 5 if size > (1 << 20) else 10
        us = median_us(lambda v=value: filter_message(v, "tools/call", full), runs)
        print(f"  {size >> 20:3d} MB clean result, default policy           {size / us:8.1f} MB/s")


if __name__ == "__main__":
    main()
