"""Limits an attacker would like to reset or overflow: restarts, crashes, clocks, huge limits, a
failing store. Every limit a valid rule states is counted exactly as the rule says, and keeps
counting across restarts of the real gateway process."""

from __future__ import annotations

import signal
import sqlite3
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcp import MCPError
from pydantic import ValidationError

from portcullis.config.loader import load_deployment
from portcullis.errors import ConfigError
from portcullis.identity.principal import Principal
from portcullis.policy.limits import LimitOutcome, LimitRule, check_limits, counter_key
from portcullis.state import InMemoryStateStore, SqliteStateStore, StateUnavailable
from portcullis.state.buckets import BUCKETS
from portcullis.state.interface import MAX_AMOUNT
from tests.e2e.harness import GatewayProcess, copy_demo, run_cli
from tests.security.conftest import billing_demo_with

T0 = 1_700_000_000.0
DAY = 86_400.0
TOOL = "billing.get_invoice"
BOT = Principal(client_id="console", auth_method="bearer", issuer="https://idp.example", agent_id="billing-bot")


def rule(**changes: Any) -> LimitRule:
    fields: dict[str, Any] = {"id": "daily", "tools": [TOOL], "per": ["agent"], "window_s": DAY, "max_calls": 3}
    return LimitRule.model_validate({**fields, **changes})


async def call(store: Any, rules: list[LimitRule], now: float, principal: Principal = BOT,
               **arguments: Any) -> LimitOutcome:
    return await check_limits(rules, store, tool=TOOL, principal=principal, arguments=arguments, now=now)


def reason(outcome: LimitOutcome) -> str | None:
    return outcome.failures[0].reason if outcome.failures else None


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "counters.sqlite3"


@pytest.fixture
def opened(path: Path) -> Iterator[list[SqliteStateStore]]:
    """Stores opened on ``path`` by a test; whatever is still open is closed at the end."""
    stores: list[SqliteStateStore] = []
    yield stores
    for store in stores:
        store.close()


def reopen(path: Path, opened: list[SqliteStateStore], previous: SqliteStateStore | None = None) -> SqliteStateStore:
    """A gateway restart, as far as the store is concerned: close (if running) and open the same file."""
    if previous is not None:
        previous.close()
    store = SqliteStateStore.open(path)
    opened.append(store)
    return store


# ----------------------------------------------------------------------------- counting past 10,000


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_limit_of_20000_per_window_counts_every_call(kind: str, path: Path,
                                                              opened: list[SqliteStateStore]) -> None:
    """20,000 calls fit a 20,000-per-day limit (the old store gave up at 10,000 and said "Unknown tool");
    the 20,001st is refused as over the limit, never as a store error."""
    store = InMemoryStateStore() if kind == "memory" else reopen(path, opened)
    limit = [rule(max_calls=20_000)]
    for i in range(20_000):
        outcome = await call(store, limit, T0 + i * 4.0)  # spread over most of the day: many buckets
        assert outcome.allowed, (i, outcome)
    over = await call(store, limit, T0 + 80_000.0)
    assert reason(over) == "limit_exceeded" and not over.detail
    assert store.buckets(counter_key(limit[0], BOT)) <= BUCKETS + 1


async def test_twenty_thousand_counted_calls_survive_a_restart(path: Path, opened: list[SqliteStateStore]) -> None:
    """The 20,000 calls counted before a restart are still counted after it, and expire on time."""
    store = reopen(path, opened)
    limit = [rule(max_calls=20_000)]
    for i in range(20_000):
        assert (await call(store, limit, T0 + i * 0.01)).allowed
    store = reopen(path, opened, store)
    assert reason(await call(store, limit, T0 + 300.0)) == "limit_exceeded"
    assert (await call(store, limit, T0 + DAY + DAY / BUCKETS + 200.0)).allowed


# Extreme rules that pass the schema: each must be counted (first call allowed, the one over the
# limit refused as limit_exceeded), never fail as a store error (policy_error).
EXTREMES = [
    pytest.param({"window_s": 5e-324}, id="smallest positive window"),
    pytest.param({"window_s": 1e-9}, id="nanosecond window"),
    pytest.param({"window_s": 366 * DAY}, id="366-day window"),
    pytest.param({"max_calls": MAX_AMOUNT}, id="max_calls 10**18"),
    pytest.param({"max_calls": None, "max_total": MAX_AMOUNT, "amount_pointer": "/amount"}, id="max_total 10**18"),
    pytest.param({"max_calls": None, "max_total": 1e-18, "amount_pointer": "/amount"},
                 id="max_total 1e-18"),
]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize("changes", EXTREMES)
async def test_every_limit_a_valid_rule_states_is_honoured(kind: str, changes: dict[str, Any], path: Path,
                                                           opened: list[SqliteStateStore]) -> None:
    """Whatever bound a rule that passes the schema states, the store counts it; nothing becomes policy_error."""
    limit = [rule(**changes)]
    store = InMemoryStateStore() if kind == "memory" else reopen(path, opened)
    capacity = limit[0].limit
    amount: dict[str, Any] = {"amount": float(capacity) if capacity >= 1 else 1e-18} if limit[0].max_total else {}
    if limit[0].max_calls is not None and limit[0].max_calls > 3:
        first = await call(store, limit, T0)
        assert first.allowed and not first.detail
        assert await store.window_total(counter_key(limit[0], BOT), now=T0) == 1
        return
    for _ in range(int(capacity) if capacity >= 1 and not limit[0].max_total else 1):
        outcome = await call(store, limit, T0, **amount)
        assert outcome.allowed and not outcome.detail, outcome
    over = await call(store, limit, T0, **amount)
    assert reason(over) == "limit_exceeded" and not over.detail


# Rules the stores could not honour do not get that far: the schema refuses them (lint and serve).
BEYOND = [
    pytest.param({"max_calls": MAX_AMOUNT + 1}, "less than or equal", id="max_calls over 10**18"),
    pytest.param({"max_calls": 0}, "greater than or equal", id="max_calls 0"),
    pytest.param({"max_calls": None, "max_total": 1e-19, "amount_pointer": "/a"}, "decimal places",
                 id="max_total finer than 1e-18"),
    pytest.param({"window_s": 367 * DAY}, "less than or equal", id="window over 366 days"),
    pytest.param({"window_s": 0}, "greater than", id="zero window"),
    pytest.param({"window_s": float("inf")}, "window_s", id="infinite window"),
]


@pytest.mark.parametrize(("changes", "message"), BEYOND)
def test_limits_beyond_what_stores_hold_are_configuration_errors(tmp_path: Path, changes: dict[str, Any],
                                                                 message: str) -> None:
    """An unhonourable bound is a schema error with its place in gateway.yaml, so lint and serve refuse it."""
    fields = {"id": "daily", "tools": [TOOL], "per": ["agent"], "window_s": DAY, "max_calls": 3, **changes}
    with pytest.raises(ValidationError, match=message):
        LimitRule.model_validate(fields)
    root = copy_demo(tmp_path / "deployment")
    config = yaml.safe_load((root / "gateway.yaml").read_text())
    config["authorization"] = {"limits": [{k: v for k, v in fields.items() if v is not None}]}
    (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(ConfigError) as caught:
        load_deployment(root, {})
    assert any("limits" in p.message for p in caught.value.problems)


# ----------------------------------------------------------------------------- restarts (store level)

Scenario = Callable[[Path, list[SqliteStateStore]], Any]


async def _restart_inside_window(path: Path, opened: list[SqliteStateStore]) -> None:
    store = reopen(path, opened)
    for i in range(3):
        assert (await call(store, [rule()], T0 + i)).allowed
    store = reopen(path, opened, store)
    assert reason(await call(store, [rule()], T0 + DAY - 1)) == "limit_exceeded"


async def _restart_after_window(path: Path, opened: list[SqliteStateStore]) -> None:
    store = reopen(path, opened)
    for i in range(3):
        assert (await call(store, [rule()], T0 + i)).allowed
    store = reopen(path, opened, store)
    assert (await call(store, [rule()], T0 + DAY + DAY / BUCKETS + 3)).allowed


async def _clock_back_after_restart(path: Path, opened: list[SqliteStateStore]) -> None:
    store = reopen(path, opened)
    for i in range(3):
        assert (await call(store, [rule()], T0 + 1000 + i)).allowed
    store = reopen(path, opened, store)
    assert reason(await call(store, [rule()], T0)) == "limit_exceeded"  # the restarted host's clock is behind


async def _window_shortened_after_restart(path: Path, opened: list[SqliteStateStore]) -> None:
    store = reopen(path, opened)
    for i in range(3):
        assert (await call(store, [rule()], T0 + i)).allowed
    store = reopen(path, opened, store)  # the operator edits the rule to one hour, same id
    assert reason(await call(store, [rule(window_s=3600)], T0 + 7200)) == "limit_exceeded"


async def _refused_call_leaves_nothing(path: Path, opened: list[SqliteStateStore]) -> None:
    store = reopen(path, opened)
    tight = rule(id="tight", max_calls=1)
    assert (await call(store, [tight], T0)).allowed
    assert not (await call(store, [rule(id="loose", max_calls=99), tight], T0 + 1)).allowed  # loose rolled back
    store = reopen(path, opened, store)
    assert await store.window_total(counter_key(rule(id="loose"), BOT), now=T0 + 2) == 0


async def _many_principals(path: Path, opened: list[SqliteStateStore]) -> None:
    store = reopen(path, opened)
    bots = [Principal(client_id="c", auth_method="bearer", issuer="https://i", agent_id=f"bot-{n}") for n in range(500)]
    for bot in bots:
        assert (await call(store, [rule(max_calls=1)], T0, bot)).allowed
    store = reopen(path, opened, store)
    assert all([reason(await call(store, [rule(max_calls=1)], T0 + 1, bot)) == "limit_exceeded" for bot in bots])


async def _amounts_persist_exactly(path: Path, opened: list[SqliteStateStore]) -> None:
    store = reopen(path, opened)
    money = [rule(max_calls=None, max_total=Decimal("1000.01"), amount_pointer="/amount")]
    for _ in range(10):
        assert (await call(store, money, T0, amount=100.001)).allowed
    store = reopen(path, opened, store)
    assert await store.window_total(counter_key(money[0], BOT), now=T0) == Decimal("1000.01")
    assert reason(await call(store, money, T0 + 1, amount=1e-18)) == "limit_exceeded"


async def _pruned_rows_change_nothing(path: Path, opened: list[SqliteStateStore]) -> None:
    store = reopen(path, opened)
    for i in range(200):
        assert (await call(store, [rule(max_calls=1000, window_s=60)], T0 + i * 2)).allowed
    await store.maintain(T0 + 400)
    rows = sqlite3.connect(path).execute("SELECT count(*) FROM window_bucket").fetchone()[0]
    before = await store.window_total(counter_key(rule(window_s=60), BOT), now=T0 + 400)
    store = reopen(path, opened, store)
    assert await store.window_total(counter_key(rule(window_s=60), BOT), now=T0 + 400) == before > 0
    assert rows <= BUCKETS + 1


RESTARTS: dict[str, Scenario] = {
    "restart inside the window keeps the count": _restart_inside_window,
    "restart after the window forgets it": _restart_after_window,
    "clock behind after a restart still counts": _clock_back_after_restart,
    "rule window shortened across a restart": _window_shortened_after_restart,
    "a refused call's rollback is persisted": _refused_call_leaves_nothing,
    "500 principals' counters": _many_principals,
    "decimal totals survive exactly": _amounts_persist_exactly,
    "pruning expired rows keeps live counts": _pruned_rows_change_nothing,
}


@pytest.mark.parametrize("scenario", list(RESTARTS))
async def test_counts_carry_across_a_store_restart(scenario: str, path: Path, opened: list[SqliteStateStore]) -> None:
    """Each way a restart could reset or loosen a limit leaves the count where the rule says."""
    await RESTARTS[scenario](path, opened)


# ----------------------------------------------------------------------------- the store failing

CORRUPT = {
    "not a database": lambda p: p.write_bytes(b"this is not sqlite" * 100),
    "a NaN total": lambda p: _row(p, "limits/daily/agent=x", T0, "NaN"),
    "a negative total": lambda p: _row(p, "limits/daily/agent=x", T0, "-5"),
    "a non-numeric total": lambda p: _row(p, "limits/daily/agent=x", T0, "lots"),
    "an infinite expiry": lambda p: _row(p, "limits/daily/agent=x", float("inf"), "1"),
    "an empty key": lambda p: _row(p, "", T0, "1"),
}


def _row(path: Path, key: str, expires_at: float, total: str) -> None:
    SqliteStateStore.open(path).close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO window_bucket (key, expires_at, total) VALUES (?, ?, ?)", (key, expires_at, total))


@pytest.mark.parametrize("damage", list(CORRUPT))
def test_a_damaged_counters_file_refuses_to_open(damage: str, path: Path) -> None:
    """A file the store cannot read exactly is refused at open: never started with counts reset."""
    CORRUPT[damage](path)
    with pytest.raises(StateUnavailable):
        SqliteStateStore.open(path)


def test_a_second_process_cannot_share_the_counters_file(path: Path, opened: list[SqliteStateStore]) -> None:
    """Two gateways on one file would each count only their own calls: the second open is refused."""
    reopen(path, opened)
    with pytest.raises(StateUnavailable) as refused:
        SqliteStateStore.open(path)
    assert "in use by another gateway process" in refused.value.detail


async def test_a_full_disk_denies_calls_and_never_counts_what_it_could_not_write(
        path: Path, opened: list[SqliteStateStore]) -> None:
    """SQLITE_FULL (a full disk) is a policy_error deny; memory is never ahead of the disk."""
    store = reopen(path, opened)
    store._conn.execute(f"PRAGMA max_page_count={store._conn.execute('PRAGMA page_count').fetchone()[0]}")
    bots = (Principal(client_id="c", auth_method="bearer", issuer="https://i", agent_id=f"b{n}") for n in range(10**6))
    for bot in bots:
        outcome = await call(store, [rule()], T0, bot)
        if not outcome.allowed:
            break
    assert reason(outcome) == "policy_error" and "StateUnavailable" in outcome.detail
    failed = counter_key(rule(), bot)
    assert await store.window_total(failed, now=T0) == 0
    store = reopen(path, opened, store)
    assert await store.window_total(failed, now=T0) == 0


async def test_a_closed_store_fails_closed(path: Path, opened: list[SqliteStateStore]) -> None:
    """After close (the gateway shutting down) every check is a policy_error deny."""
    store = reopen(path, opened)
    store.close()
    assert reason(await call(store, [rule()], T0)) == "policy_error"


# ----------------------------------------------------------------------------- the real gateway

# per user too: each row counts for a user of its own, so the rows can share the gateways they restart
LIMIT = {"id": "invoices-daily", "tools": [TOOL], "per": ["agent", "user"], "window_s": DAY, "max_calls": 3}


async def _call(gateway: GatewayProcess, user: str) -> str:
    async with gateway.client(token=gateway.token(user=user)) as client:
        try:
            result = await client.call_tool(TOOL, {"invoice_id": "INV-1001"})
        except MCPError as exc:
            return exc.error.message
    return "ok" if not result.is_error else "error"


class Restarts:
    """Gateways started one after another on one deployment and one state directory: each row stops (or kills)
    the running one and starts the next, which the next row stops in turn."""

    def __init__(self, tmp: Path) -> None:
        self.state = tmp / "state"
        self.root = billing_demo_with(tmp / "deployment",
                                      authorization={"environment": "production", "limits": [LIMIT]})
        self.running: GatewayProcess | None = None

    def current(self) -> GatewayProcess:
        if self.running is None:
            self.start()
        assert self.running is not None
        return self.running

    def start(self) -> GatewayProcess:
        self.running = GatewayProcess(self.root, state_dir=self.state)
        self.running.wait_ready()
        return self.running


@pytest.fixture(scope="module")
def restarts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Restarts]:
    chain = Restarts(tmp_path_factory.mktemp("restarts"))
    try:
        yield chain
    finally:
        if chain.running is not None:
            chain.running.stop()


@pytest.mark.xdist_group("security/test_limit_persistence.py-restarts")  # the rows share their gateways
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
async def test_a_per_day_total_survives_restarting_the_gateway(restarts: Restarts, how: signal.Signals) -> None:
    """Two calls, the gateway stopped (or killed), started again on the same state: one more call
    fits a three-a-day limit and the next is refused."""
    user = f"limits-{how.name.lower()}"
    first = restarts.current()
    assert [await _call(first, user), await _call(first, user)] == ["ok", "ok"]
    first.proc.send_signal(how)
    first.proc.wait(timeout=30)
    first.stop()
    second = restarts.start()
    assert [await _call(second, user), await _call(second, user)] == ["ok", "Call refused by policy"]
    assert '"limits/invoices-daily"' in second.log() or "limits/invoices-daily" in _decisions(restarts.state, user)


def _decisions(state: Path, user: str) -> str:
    """The decision records about ``user``'s calls."""
    with sqlite3.connect(f"file:{state / 'audit.sqlite3'}?mode=ro", uri=True) as db:
        rows = [row[0] for row in db.execute("SELECT fields FROM audit_record WHERE kind = 'decision'")]
    return "\n".join(row for row in rows if f'"{user}"' in row)


def test_the_gateway_refuses_to_start_on_a_damaged_counters_file(tmp_path: Path) -> None:
    """A counters file that does not read back refuses the start (exit 2), naming the limits store."""
    root = copy_demo(tmp_path / "deployment")
    state = tmp_path / "state"
    state.mkdir()
    (state / "counters.sqlite3").write_bytes(b"not sqlite" * 200)
    done = run_cli("serve", "--config", str(root), "--port", "0", env={"PORTCULLIS_STATE_DIR": str(state)})
    assert done.returncode == 2
    assert "limits:" in done.stderr and "counters.sqlite3" in done.stderr
