"""The scan budget: every limit gives a *blocked* result, never a clean one; the clock is injected."""

from __future__ import annotations

import base64

import pytest

from portcullis.content import DetectorSet, ScanBudget, scan_parts
from portcullis.content.budget import CHECK_UNITS, BudgetExceeded, Meter
from portcullis.content.findings import Finding
from portcullis.content.view import TextView, Window

SECRET = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"


class StepClock:
    """A clock that advances ``step_ns`` at every read: deterministic CPU time."""

    def __init__(self, step_ns: int) -> None:
        self.now, self.step, self.reads = 0, step_ns, 0

    def __call__(self) -> int:
        self.now += self.step
        self.reads += 1
        return self.now


def test_past_the_cpu_budget_the_result_is_blocked_not_clean() -> None:
    """A 1 MB text on a clock that runs 10 ms per read exceeds a 5 ms budget: blocked, reason named."""
    text = ("lorem ipsum " * 90_000) + SECRET
    result = DetectorSet.build().scan(text, ScanBudget(cpu_ms=5), clock=StepClock(10_000_000))
    assert result.blocked and result.reason == "budget_exceeded" and result.detail == "cpu_ms=5"
    assert not result.clean


def test_a_clock_that_stands_still_lets_a_large_text_finish() -> None:
    """The same text with no CPU time passing is scanned to the end (the budget is time, not size)."""
    text = ("lorem ipsum " * 90_000) + SECRET
    clock = StepClock(0)
    result = DetectorSet.build().scan(text, ScanBudget(cpu_ms=5), clock=clock)
    assert not result.blocked and [f.kind for f in result.findings] == ["stripe_key"]
    assert clock.reads > 1  # the clock was consulted along the way, not only at the start


def test_the_meter_reads_the_clock_once_per_check_units() -> None:
    clock = StepClock(1)
    meter = Meter(ScanBudget(), clock)
    for _ in range(CHECK_UNITS // 100):
        meter.charge(100)
    assert clock.reads == 1  # only the start: fewer than CHECK_UNITS charged
    meter.charge(CHECK_UNITS)
    assert clock.reads == 2


def test_input_above_max_chars_is_blocked_without_scanning() -> None:
    result = DetectorSet.build().scan("x" * 101, ScanBudget(max_chars=100))
    assert result.blocked and result.reason == "input_too_large" and not result.findings


def test_too_many_findings_is_blocked() -> None:
    text = " ".join(f"user{i}@example.com" for i in range(50))
    result = DetectorSet.build().scan(text, ScanBudget(max_findings=10))
    assert result.blocked and result.reason == "too_many_findings"


def test_decoded_content_past_its_cap_is_blocked() -> None:
    text = base64.b64encode(b"just some harmless words, nothing else " * 10).decode()
    result = DetectorSet.build().scan(text, ScanBudget(max_decoded_chars=100))
    assert result.blocked and result.reason == "decode_limit"


class Exploding:
    name = "exploding"
    gate = None

    def detect(self, view: TextView, window: Window, meter: Meter) -> list[Finding]:
        raise RuntimeError(f"failed on {view.text}")  # a message that echoes the input


def test_a_failing_detector_blocks_and_the_detail_names_it_without_input_text() -> None:
    """Fail closed on a detector bug; the detail is the detector's name, never the exception message."""
    result = DetectorSet((Exploding(),)).scan(f"the value {SECRET}")
    assert result.blocked and result.reason == "detector_error" and result.detail == "exploding"
    assert SECRET not in repr(result)


def test_scan_parts_shares_one_budget_and_blocks_too() -> None:
    parts = ["lorem ipsum " * 30_000 for _ in range(4)]
    result = scan_parts(parts, ScanBudget(cpu_ms=5), clock=StepClock(10_000_000))
    assert result.blocked and result.reason == "budget_exceeded"
    assert scan_parts(["x" * 60, "y" * 60], ScanBudget(max_chars=100)).reason == "input_too_large"


def test_budget_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        ScanBudget(cpu_ms=0)
    with pytest.raises(BudgetExceeded):
        Meter(ScanBudget(max_findings=1)).count_findings(2)
