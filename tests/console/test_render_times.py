"""Time fields in nested values (the agent's recent calls, a request's timeline) read as UTC for people."""

from __future__ import annotations

import pytest

from portcullis.console.render import value_html


def test_an_at_field_in_unix_seconds_is_shown_in_utc_beside_the_number() -> None:
    html = str(value_html({"at": 1796546926.52645, "expires_at": 1796546986, "tool": "billing.refund"}))
    assert "1796546926.52645" in html and "(2026-12-06 " in html  # the stored figure and the instant
    assert html.count(" UTC)") == 2


@pytest.mark.parametrize("value", [True, "1796546926", -5, 1e12, None, [1796546926]])
def test_anything_else_under_a_time_key_gets_no_time(value: object) -> None:
    assert " UTC)" not in str(value_html({"at": value}))


def test_other_keys_and_a_hostile_key_get_no_time_and_stay_escaped() -> None:
    html = str(value_html({"count": 1796546926, "<b>_at": 1796546926}))
    assert html.count(" UTC)") == 1 and "<b>" not in html and "&lt;b&gt;_at" in html
