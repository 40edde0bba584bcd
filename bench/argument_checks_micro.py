"""Per-call cost of the two argument checks issue 10 hardened, in microseconds (no network).

Measures ``within_root`` (:func:`portcullis.policy.paths.canonical_segments` through the policy's
``path_within_root``) on typical ASCII and non-ASCII paths, and an ECMA-262 manifest pattern
(RE2 via :mod:`portcullis.policy.ecma_regex`) next to Python's ``re`` on the same pattern, plus a
whole schema validation with the ECMA keywords and with stock ``jsonschema``. Best of 5 runs.
Run: ``.venv/bin/python -m bench.argument_checks_micro``.
"""

from __future__ import annotations

import re
import timeit
from collections.abc import Callable

from jsonschema import Draft202012Validator

from portcullis.config.schema_patterns import manifest_validator
from portcullis.policy.ecma_regex import compile_pattern
from portcullis.policy.native import path_within_root

SCHEMA = {"type": "object", "additionalProperties": False, "properties": {
    "order_id": {"type": "string", "pattern": "^ORD-[0-9]+$"},
    "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}, "amount": {"type": "number"}}}
ARGUMENTS = {"order_id": "ORD-20001", "currency": "USD", "amount": 5}


def _us(fn: Callable[[], object], n: int) -> float:
    return min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6


def main() -> None:
    rows: list[tuple[str, float]] = []
    for path in ("reports/q3-summary.md", "notes/../notes/a.txt", "r\u00e9sum\u00e9.txt",
                 "\u65e5\u672c/\u30e1\u30e2.txt", "%2e%2e/etc/passwd"):
        rows.append((f"within_root {path!r}", _us(lambda path=path: path_within_root("/srv/files", path), 100_000)))
    ecma, python = compile_pattern("^ORD-[0-9]+$"), re.compile("^ORD-[0-9]+$")
    rows.append(("pattern, ECMA-262 via RE2", _us(lambda: ecma.search("ORD-20001"), 100_000)))
    rows.append(("pattern, Python re (before)", _us(lambda: python.search("ORD-20001"), 100_000)))
    value = "x" * 1000
    rows.append(("pattern, ECMA-262 via RE2, 1000-char value", _us(lambda: ecma.search(value), 20_000)))
    ours, stock = manifest_validator(SCHEMA), Draft202012Validator(SCHEMA)
    rows.append(("schema with 2 patterns, ECMA keywords", _us(lambda: list(ours.iter_errors(ARGUMENTS)), 20_000)))
    rows.append(("schema with 2 patterns, stock jsonschema", _us(lambda: list(stock.iter_errors(ARGUMENTS)), 20_000)))
    for label, micros in rows:
        print(f"{label:48s} {micros:7.2f} us")


if __name__ == "__main__":
    main()
