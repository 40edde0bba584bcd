"""The supervisor's restart policy: backoff, give-up, and the first backoff's environment setting."""

from __future__ import annotations

import pytest

from portcullis.serving.restarts import RESTART_DELAY_ENV, RestartPolicy, SlotHistory, restart_policy


def test_the_backoff_doubles_to_its_cap_and_start_failures_give_up() -> None:
    """0.5 s doubling to 30 s; five failures at start in a row give up, a started worker resets them."""
    policy = RestartPolicy()
    assert [policy.delay_s(n) for n in (1, 2, 3, 4, 8, 10_000)] == [0.5, 1.0, 2.0, 4.0, 30.0, 30.0]
    history = SlotHistory()
    for _ in range(4):
        history = history.died(started=False, uptime_s=0.1, policy=policy)
    assert not history.gives_up(policy) and not history.started().died(
        started=True, uptime_s=0.1, policy=policy).gives_up(policy)
    assert history.died(started=False, uptime_s=0.1, policy=policy).gives_up(policy)


def test_the_environment_sets_only_the_first_backoff() -> None:
    """Unset: the production default; set: that first delay, doubling as before, the other limits unchanged."""
    assert restart_policy({}) == RestartPolicy()
    policy = restart_policy({RESTART_DELAY_ENV: "0.05"})
    assert policy == RestartPolicy(base_delay_s=0.05)
    assert [policy.delay_s(n) for n in (1, 2, 3)] == [0.05, 0.1, 0.2]


@pytest.mark.parametrize("raw", ["", "0", "0.001", "-1", "31", "nan", "inf", "-inf", "1e400", "five",
                                 "0.5\n\x1b[31m", "\x00", "٣"])
def test_an_invalid_first_backoff_is_refused_without_echoing_it(raw: str) -> None:
    """Out of range, not a number or hostile: refused, and the message names the variable, never the value."""
    with pytest.raises(ValueError, match=RESTART_DELAY_ENV) as refused:
        restart_policy({RESTART_DELAY_ENV: raw})
    assert str(refused.value) == f"{RESTART_DELAY_ENV} must be a number of seconds from 0.01 to 30"


def test_the_supervisor_refuses_to_start_over_an_invalid_setting(monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Exit status 2 before any worker starts, the log naming the variable and not the value."""
    from portcullis.serving.supervisor import Supervisor, WorkerSpec

    monkeypatch.setenv(RESTART_DELAY_ENV, "\x1b[2Jsoon")
    spec = WorkerSpec(config="/nonexistent", host="127.0.0.1", port=0, log_level="info", listen_fd=-1, admin_fd=None)
    assert Supervisor(spec, 2).run() == 2
    assert "invalid worker restart setting" in caplog.text and "\x1b" not in caplog.text
