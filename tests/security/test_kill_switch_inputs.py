"""Hostile operator input for kill switches: what the store refuses (and what it accepts), through the
same checks the admin API and the CLI use (portcullis.kill.model)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from portcullis.kill.model import MAX_REASON_CHARS, MAX_TARGET_CHARS, KillSwitchInputError
from portcullis.kill.store import FILE_NAME, SqliteKillSwitchStore

HOSTILE_TARGETS = [
    ("empty", ""),
    ("spaces only", "   "),
    ("leading space", " billing"),
    ("trailing newline", "billing\n"),
    ("overlong", "a" * (MAX_TARGET_CHARS + 1)),
    ("NUL", "bill\x00ing"),
    ("ANSI escape", "\x1b[31mbilling"),
    ("DEL", "billing\x7f"),
    ("bidi override", "billing\u202egnp.exe"),
    ("zero-width space", "bill\u200bing"),
    ("BOM", "\ufeffbilling"),
    ("line separator", "bill\u2028ing"),
    ("private use", "bill\ue000ing"),
    ("lone surrogate", "bill\ud800ing"),
    ("not a string", 42),
    ("None", None),
]
HOSTILE_REASONS = [
    ("empty", ""),
    ("overlong", "x" * (MAX_REASON_CHARS + 1)),
    ("newline (log forging)", "ok\n{\"level\": \"info\", \"msg\": \"forged\"}"),
    ("carriage return", "ok\rforged"),
    ("ANSI", "ok \x1b]8;;http://evil/\x07link"),
    ("bidi", "ok \u2066hidden\u2069"),
    ("not a string", ["a"]),
]
BAD_KINDS = ["", "Tool", "credential", "tools", "tool ", "service\x00", "source-app", None, 1]


@pytest.fixture
def store(tmp_path: Path) -> SqliteKillSwitchStore:
    return SqliteKillSwitchStore(tmp_path / FILE_NAME)


@pytest.mark.parametrize(("label", "target"), HOSTILE_TARGETS, ids=[t[0] for t in HOSTILE_TARGETS])
def test_hostile_targets_are_refused(store: SqliteKillSwitchStore, label: str, target: object) -> None:
    with pytest.raises(KillSwitchInputError):
        store.set("agent", target, "incident", "cli:oncall")  # type: ignore[arg-type]
    assert store.active(time.time()) == () and store.pending_events() == ()


@pytest.mark.parametrize(("label", "reason"), HOSTILE_REASONS, ids=[r[0] for r in HOSTILE_REASONS])
def test_hostile_reasons_are_refused_on_set_and_lift(store: SqliteKillSwitchStore, label: str, reason: object) -> None:
    with pytest.raises(KillSwitchInputError):
        store.set("tool", "billing.get_invoice", reason, "cli:oncall")  # type: ignore[arg-type]
    switch = store.set("tool", "billing.get_invoice", "fine", "cli:oncall")
    with pytest.raises(KillSwitchInputError):
        store.lift(switch.id, reason, "cli:oncall")  # type: ignore[arg-type]
    assert [s.id for s in store.active(time.time())] == [switch.id]  # not lifted


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_unknown_kinds_are_refused(store: SqliteKillSwitchStore, kind: object) -> None:
    with pytest.raises(KillSwitchInputError):
        store.set(kind, "billing", "incident", "cli:oncall")  # type: ignore[arg-type]


@pytest.mark.parametrize("expires", [0.0, -1.0, float("nan"), float("inf"), True, "tomorrow", 1.0])
def test_bad_expiry_is_refused(store: SqliteKillSwitchStore, expires: object) -> None:
    with pytest.raises(KillSwitchInputError):
        store.set("tool", "billing", "incident", "cli:oncall", expires)  # type: ignore[arg-type]


@pytest.mark.parametrize("target", ["billing.get_invoice", "Ünïcödé-agent", "user@example.com", "a" * MAX_TARGET_CHARS,
                                    "spiffe://acme/ns/prod/sa/bot", "租户-1"])
def test_benign_targets_are_kept_exactly(store: SqliteKillSwitchStore, target: str) -> None:
    switch = store.set("agent", target, "reason with 'quotes'; DROP TABLE kill_switches; --", "cli:oncall")
    assert store.active(time.time())[0].target == target and switch.target == target


def test_sql_metacharacters_are_data(store: SqliteKillSwitchStore) -> None:
    store.set("tool", "x'); DELETE FROM kill_switches; --", "r", "cli:oncall")
    store.set("tool", "y", "r", "cli:oncall")
    assert len(store.active(time.time())) == 2
