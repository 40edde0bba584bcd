"""Secret and PII detection (``portcullis.content``): recall, false positives and cost.

Prints, on a corpus generated with a fixed seed (tests/unit/content/corpus.py):

- recall per kind, over plain, base64, URL-encoded and hex forms and split across two parts;
- false positives per detector on look-alikes (UUIDs, SHAs, digests, base64 images, versions,
  timestamps, order numbers, Luhn-valid non-cards, schema words) and on benign 4 KB results;
- p50 per scan of a 4 KB mixed result (wall and thread CPU time), and throughput on 1 MB and
  10 MB results (plus 1 MB of mixed Unicode and 1 MB of base64).

Run: ``.venv/bin/python -m bench.content_detect [--seed N] [--per-kind N]``.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import statistics
import time
from collections import Counter
from urllib.parse import quote

from tests.unit.content.corpus import TRUE_KINDS, Corpus, samples

from portcullis.content import ScanBudget, scan_parts, scan_text
from portcullis.content.scan import default_detectors

FORMS = {
    "plain": lambda s: s,
    "base64": lambda s: base64.b64encode(s.encode()).decode(),
    "url": lambda s: quote(s, safe=""),
    "hex": lambda s: s.encode().hex(),
}
DETECTOR_OF = {"card_number": "card", "us_ssn": "ssn", "email": "email", "phone_number": "phone", "iban": "iban"}
THROUGHPUT_BUDGET = ScanBudget(cpu_ms=600_000, max_findings=10**7, max_chars=64 << 20)
WORDS = ("the of and to in is that for it as was with be by on not this are or from at which but have an they "
         "you were her there been one all would their we him if has when who will more no out do so can what up "
         "said about than its into them only some could new now time report status total").split()


def mixed_result(rng: random.Random, size: int = 4096) -> str:
    """A tool result as they come: JSON rows, prose, numbers, dates, a URL, ids; no secrets, no PII."""
    rows = [{"id": i, "sku": f"SKU-{rng.randrange(10**6)}", "title": " ".join(rng.choice(WORDS) for _ in range(4)),
             "updated": f"2026-12-{rng.randrange(1, 29):02d}T{rng.randrange(24):02d}:00:00Z",
             "amount": rng.randrange(10**6) / 100, "ref": f"{rng.getrandbits(128):032x}"} for i in range(14)]
    prose = " ".join(rng.choice(WORDS) for _ in range(160))
    text = json.dumps(rows) + "\n\n" + prose + "\nSee https://docs.example.com/guide?page=2 for details.\n"
    return (text * (size // len(text) + 1))[:size]


def recall(corpus: Corpus, per_kind: int) -> None:
    table: dict[str, Counter[str]] = {kind: Counter() for kind in TRUE_KINDS}
    for sample in samples(corpus, per_kind):
        for form, encode in FORMS.items():
            encoded = encode(sample.snippet)
            result = scan_text(f"out: {encoded} .")
            hit = any(f.kind == sample.kind and f.start < 5 + len(encoded) and f.end > 5 for f in result.findings)
            table[sample.kind][form] += hit
        cut = corpus.rng.randrange(sample.start + 1, sample.end)
        parts = scan_parts([sample.snippet[:cut], sample.snippet[cut:]])
        table[sample.kind]["split"] += any(p.finding.kind == sample.kind and p.straddles for p in parts.findings)
    print(f"recall per kind ({per_kind} generated values per kind and form; seed {corpus.seed})")
    columns = [*FORMS, "split"]
    print(f"  {'kind':30}" + "".join(f"{c:>8}" for c in columns))
    total = hits = 0
    for kind, counts in table.items():
        print(f"  {kind:30}" + "".join(f"{counts[c] / per_kind:8.0%}" for c in columns))
        total += per_kind * len(columns)
        hits += sum(counts.values())
    print(f"  overall: {hits}/{total} = {hits / total:.2%}")


def false_positives(corpus: Corpus, per_class: int) -> None:
    flagged: Counter[str] = Counter()
    scanned = 0
    for make in corpus.look_alikes().values():
        for _ in range(per_class):
            scanned += 1
            for kind in {f.kind for f in scan_text(f"value: {make()}\n").findings}:
                flagged[DETECTOR_OF.get(kind, "secrets")] += 1
    rng = random.Random(corpus.seed)
    benign = [mixed_result(rng) for _ in range(200)]
    benign_flags: Counter[str] = Counter()
    for text in benign:
        for f in scan_text(text).findings:
            benign_flags[DETECTOR_OF.get(f.kind, "secrets")] += 1
    print(f"false positives: {scanned} look-alikes ({per_class} per class), 200 benign 4 KB results (800 KB)")
    for detector in ("secrets", "card", "ssn", "email", "phone", "iban"):
        print(f"  {detector:8} look-alikes flagged {flagged[detector]:4} ({flagged[detector] / scanned:.2%})"
              f"   benign findings {benign_flags[detector]} ({benign_flags[detector] / 800:.3f} per KB)")


def cost() -> None:
    rng = random.Random(7)
    texts = [mixed_result(rng) for _ in range(50)]
    detectors = default_detectors()
    for text in texts:
        detectors.scan(text)
    wall, cpu = [], []
    for _ in range(40):
        for text in texts:
            w, c = time.perf_counter_ns(), time.thread_time_ns()
            detectors.scan(text)
            cpu.append(time.thread_time_ns() - c)
            wall.append(time.perf_counter_ns() - w)
    print(f"4 KB mixed result: p50 {statistics.median(wall) / 1000:.1f} µs wall, "
          f"{statistics.median(cpu) / 1000:.1f} µs CPU; p99 {sorted(wall)[int(len(wall) * 0.99)] / 1000:.1f} µs wall"
          f"  ({len(wall)} scans)")
    one_mb = "".join(mixed_result(rng) for _ in range(256))
    unicode_mb = "".join(rng.choice(["漢字テキスト ", "مرحبا ", "👩\u200d👩\u200d👧\u200d👦", "é\u0301", "the ", "42 "])
                         for _ in range(200_000))[: 1 << 20]
    rows = [("1 MB mixed result", one_mb), ("10 MB mixed result", one_mb * 10),
            ("1 MB mixed Unicode", unicode_mb),
            ("1 MB base64 (random bytes)", base64.b64encode(rng.randbytes(786_432)).decode())]
    for name, text in rows:
        w, c = time.perf_counter(), time.thread_time()
        result = scan_text(text, THROUGHPUT_BUDGET)
        cpu_s, wall_s = time.thread_time() - c, time.perf_counter() - w
        size = len(text) / 1e6
        print(f"  {name:28} {size / wall_s:7.1f} MB/s wall  {size / cpu_s:7.1f} MB/s CPU  "
              f"blocked={result.blocked} findings={len(result.findings)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--per-kind", type=int, default=25)
    args = parser.parse_args()
    corpus = Corpus(args.seed)
    recall(corpus, args.per_kind)
    false_positives(corpus, 100)
    cost()


if __name__ == "__main__":
    main()
