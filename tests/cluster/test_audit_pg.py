"""The audit chain in PostgreSQL: the store contract, concurrent writer processes, SIGKILL, a killed
connection, tampering. Real PostgreSQL (``pg_url``: a schema of this test's own)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from portcullis.audit import GENESIS_HASH, AuditStore, AuditUnavailable, ChainConflict, make_record
from portcullis.audit.checkpoint import Checkpointer, sign_checkpoint
from portcullis.audit.export import iter_store
from portcullis.audit.pg_store import PG_COMPONENT, PostgresAuditStore, open_postgres_audit
from portcullis.audit.verify import verify_store
from portcullis.audit.writer import AuditWriter
from portcullis.storage.config import PostgresConfig
from portcullis.storage.migrations import migrate

CONFIG = PostgresConfig(url_ref="secret://env/PORTCULLIS_TEST_UNUSED", pool_size=4, connect_timeout_s=3)
KEY = Ed25519PrivateKey.generate()


def records(start: int, n: int, prev: str) -> list:
    out = []
    for i in range(start, start + n):
        out.append(make_record(i, float(i), f"r{i}", "decision", {"i": i}, prev))
        prev = out[-1].hash
    return out


def _migrate(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn, [PG_COMPONENT])


async def _open(url: str, **kwargs: object) -> PostgresAuditStore:
    _migrate(url)
    return await open_postgres_audit(CONFIG, url=url, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the store contract


async def test_appended_records_read_back_equal_and_head_advances(pg_url: str) -> None:
    async with await _open(pg_url) as store:
        assert isinstance(store, AuditStore)
        assert await store.head() is None
        batch = records(0, 5, GENESIS_HASH)
        await store.append(batch)
        assert await store.head() == (4, batch[-1].hash)
        assert await store.read(0, 3) == batch[:3]
        assert await store.read(3, 10) == batch[3:]


@pytest.mark.parametrize("case", ["stale-prev-hash", "index-gap", "replay-genesis", "broken-inner-link", "empty"])
async def test_append_not_continuing_the_head_is_refused_and_writes_nothing(pg_url: str, case: str) -> None:
    async with await _open(pg_url) as store:
        first = records(0, 3, GENESIS_HASH)
        await store.append(first)
        good = records(3, 3, first[-1].hash)
        bad = {
            "stale-prev-hash": records(3, 3, first[1].hash),
            "index-gap": records(4, 3, first[-1].hash),
            "replay-genesis": records(0, 3, GENESIS_HASH),
            "broken-inner-link": [good[0], records(4, 1, first[0].hash)[0]],
            "empty": [],
        }[case]
        with pytest.raises(ChainConflict):
            await store.append(bad)
        assert await store.head() == (2, first[-1].hash)
        await store.append(good)
        assert await store.head() == (5, good[-1].hash)


async def test_checkpoints_keep_the_first_per_index_and_prune_is_pinned(pg_url: str) -> None:
    async with await _open(pg_url) as store:
        batch = records(0, 6, GENESIS_HASH)
        await store.append(batch)
        first = sign_checkpoint(KEY, 2, batch[2].hash, 10.0)
        await store.add_checkpoint(first)
        await store.add_checkpoint(sign_checkpoint(KEY, 2, batch[2].hash, 11.0))  # another replica, same head
        assert await store.checkpoints() == [first]
        with pytest.raises(AuditUnavailable) as caught:
            await store.prune_through(3)  # no checkpoint there
        assert "refused" in str(caught.value.detail)
        assert await store.prune_through(2) == 3
        assert [r.index for r in await store.read(0, 10)] == [3, 4, 5]


async def test_a_replica_with_another_signing_key_is_refused(pg_url: str) -> None:
    async with await _open(pg_url, key_id="aaaa"):
        pass
    with pytest.raises(AuditUnavailable) as caught:
        await open_postgres_audit(CONFIG, url=pg_url, key_id="bbbb")
    assert "is not the cluster's (id aaaa)" in str(caught.value.detail)
    async with await open_postgres_audit(CONFIG, url=pg_url, key_id="aaaa"):
        pass


async def test_an_unmigrated_schema_or_unreachable_server_is_refused_without_the_url(pg_url: str) -> None:
    with pytest.raises(AuditUnavailable) as unmigrated:
        await open_postgres_audit(CONFIG, url=pg_url)
    assert "portcullis storage migrate" in str(unmigrated.value.detail)
    secret_url = "postgresql://auditor:hunter2-secret@127.0.0.1:1/test"
    with pytest.raises(AuditUnavailable) as caught:
        await open_postgres_audit(CONFIG.model_copy(update={"connect_timeout_s": 1}), url=secret_url)
    assert "hunter2" not in str(caught.value.detail) and "auditor" not in str(caught.value.detail)


async def test_a_readonly_store_refuses_writes(pg_url: str) -> None:
    _migrate(pg_url)
    async with await open_postgres_audit(CONFIG, url=pg_url, readonly=True) as store:
        with pytest.raises(AuditUnavailable):
            await store.append(records(0, 1, GENESIS_HASH))
        assert await store.head() is None


# --------------------------------------------------------------------------- fail closed


def _backends(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        schema = conn.execute("SELECT current_schema()").fetchone()[0]
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                            "AND datname = current_database() AND application_name = %s", (schema,)).fetchall()
    return [r[0] for r in rows]


async def test_a_connection_killed_mid_append_fails_that_batch_closed_and_later_appends_work(pg_url: str) -> None:
    """The append's connection is terminated while it waits for the chain's lock: its callers get
    AuditUnavailable, nothing of the batch is written, and the next record is chained and acknowledged."""
    url = pg_url + "&application_name=" + pg_url.rsplit("%3D", 1)[-1]
    async with await _open(url) as store, AuditWriter(store, clock=time.time) as writer:
        await writer.record("decision", "before", {"n": 0})
        with psycopg.connect(pg_url, autocommit=True) as blocker:
            blocker.execute("BEGIN")
            blocker.execute("SELECT pg_advisory_xact_lock(%s)", (0x61756474,))  # hold the chain's lock
            failures: list[BaseException] = []

            async def doomed() -> None:
                try:
                    await writer.record("decision", "doomed", {"n": 1})
                except AuditUnavailable as exc:
                    failures.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(doomed)
                with anyio.fail_after(20):
                    while not (pids := _backends(url)) or not _waiting(pg_url, pids):
                        await anyio.sleep(0.05)
                with psycopg.connect(pg_url, autocommit=True) as killer:
                    for pid in _waiting(pg_url, pids):
                        killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
            blocker.execute("ROLLBACK")
        assert len(failures) == 1 and "PostgreSQL" in str(failures[0].detail)
        after = await writer.record("decision", "after", {"n": 2})
        assert after.index == 1
        assert [r.request_id for r in await store.read(0, 10)] == ["before", "after"]


def _waiting(url: str, pids: list[int]) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s) AND wait_event_type = 'Lock'",
                            (pids,)).fetchall()
    return [r[0] for r in rows]


# --------------------------------------------------------------------------- concurrent writer processes


def _spawn(url: str, key_file: Path, acked: Path, name: str, seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "portcullis.audit._pg_load", url, str(key_file), str(acked),
                             "--seconds", str(seconds), "--tasks", "8", "--name", name],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _key_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit-signing.pem"
    path.write_bytes(KEY.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    path.chmod(0o600)
    return path


def _acked(path: Path) -> dict[int, str]:
    out: dict[int, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            index, hash_ = line.split()
            assert out.setdefault(int(index), hash_) == hash_  # no index acknowledged twice with two hashes
    return out


async def _check_chain(url: str, acked: dict[int, str]) -> int:
    async with await open_postgres_audit(CONFIG, url=url, readonly=True) as store, store.snapshot():
        report = await verify_store(store, KEY.public_key())
        assert report.ok, report
        stored = {r.index: r.hash async for r in iter_store(store)}
    assert sorted(stored) == list(range(len(stored)))  # no gap
    missing = {i for i, h in acked.items() if stored.get(i) != h}
    assert not missing, f"{len(missing)} acknowledged record(s) missing, e.g. {sorted(missing)[:5]}"
    return len(stored)


async def test_three_writer_processes_append_one_chain_without_gap_or_fork(pg_url: str, tmp_path: Path) -> None:
    _migrate(pg_url)
    key_file = _key_file(tmp_path)
    procs = [_spawn(pg_url, key_file, tmp_path / f"acked-{n}", f"w{n}", 3.0) for n in range(3)]
    stats = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-2000:]
        stats.append(json.loads(out.strip().splitlines()[-1]))
    acked: dict[int, str] = {}
    for n in range(3):
        mine = _acked(tmp_path / f"acked-{n}")
        assert mine and not set(mine) & set(acked)  # each writer acknowledged records; no index twice
        acked |= mine
    assert all(s["records"] > 0 for s in stats)
    assert sum(s["failed"] for s in stats) == 0  # replicas chain from the stored head: no append refused
    total = await _check_chain(pg_url, acked)
    assert total >= len(acked)


async def test_a_writer_killed_with_sigkill_mid_load_loses_no_acknowledged_record(pg_url: str,
                                                                                 tmp_path: Path) -> None:
    _migrate(pg_url)
    key_file = _key_file(tmp_path)
    victim = _spawn(pg_url, key_file, tmp_path / "acked-victim", "victim", 30.0)
    others = [_spawn(pg_url, key_file, tmp_path / f"acked-{n}", f"w{n}", 4.0) for n in range(2)]
    deadline = time.monotonic() + 20
    while len(_acked(tmp_path / "acked-victim")) < 200 and time.monotonic() < deadline:
        await anyio.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate(timeout=20)
    assert victim.returncode == -signal.SIGKILL
    for proc in others:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-2000:]
    acked = _acked(tmp_path / "acked-victim")
    assert len(acked) >= 200
    for n in range(2):
        acked |= _acked(tmp_path / f"acked-{n}")
    await _check_chain(pg_url, acked)


# --------------------------------------------------------------------------- tampering


@pytest.mark.parametrize("column", ["fields", "prev_hash", "delete"])
async def test_a_row_changed_in_the_database_is_detected_by_verify(pg_url: str, column: str) -> None:
    async with await _open(pg_url) as store:
        checkpointer = Checkpointer(store, KEY, clock=time.time)
        async with AuditWriter(store, clock=time.time, checkpointer=checkpointer) as writer:
            for n in range(10):
                await writer.record("decision", f"r{n}", {"n": n})
        assert (await verify_store(store, KEY.public_key())).ok
    with psycopg.connect(pg_url, autocommit=True) as conn:
        if column == "fields":
            conn.execute("""UPDATE audit_record SET fields = '{"n":99}' WHERE idx = 4""")
        elif column == "prev_hash":
            conn.execute("UPDATE audit_record SET prev_hash = %s WHERE idx = 4", (GENESIS_HASH,))
        else:
            conn.execute("DELETE FROM audit_record WHERE idx = 4")
    async with await open_postgres_audit(CONFIG, url=pg_url, readonly=True) as store:
        report = await verify_store(store, KEY.public_key())
    assert not report.ok and report.first_bad_index == 4


# --------------------------------------------------------------------------- portcullis audit (CLI)


def test_audit_verify_and_export_read_postgresql_through_gateway_yaml(pg_url: str, tmp_path: Path) -> None:
    """With storage.postgresql in gateway.yaml, `audit verify` and `audit export` read the cluster's chain;
    a tampered row fails verify; `audit search` reads it too (not a stale SQLite file)."""
    from typer.testing import CliRunner

    from portcullis.audit.keys import PUBLIC_KEY_FILE, AuditKeys
    from portcullis.cli.main import app

    runner = CliRunner()
    keys = AuditKeys.load_or_create(tmp_path / "state")

    async def write() -> None:
        async with await _open(pg_url) as store:
            checkpointer = Checkpointer(store, keys.signing_key, clock=time.time)
            async with AuditWriter(store, clock=time.time, checkpointer=checkpointer) as writer:
                for n in range(5):
                    await writer.record("decision", f"r{n}", {"n": n})

    anyio.run(write)
    deployment = tmp_path / "deployment"
    assert runner.invoke(app, ["init", str(deployment)]).exit_code == 0
    config = deployment / "gateway.yaml"
    config.write_text(config.read_text() + f"state_dir: {tmp_path / 'state'}\nstorage:\n  postgresql:\n"
                      "    url_ref: secret://env/PORTCULLIS_TEST_AUDIT_PG\n")
    env = {"PORTCULLIS_TEST_AUDIT_PG": pg_url, "COLUMNS": "400"}
    args = ["--config", str(deployment), "--public-key", str(tmp_path / "state" / PUBLIC_KEY_FILE)]
    result = runner.invoke(app, ["audit", "verify", *args], env=env)
    assert result.exit_code == 0 and "OK: 5 record(s) verified" in result.output, result.output
    out = tmp_path / "export.jsonl"
    result = runner.invoke(app, ["audit", "export", "--out", str(out), "--config", str(deployment)], env=env)
    assert result.exit_code == 0 and "exported 5 record(s)" in result.output, result.output
    assert runner.invoke(app, ["audit", "verify", "--export", str(out), *args[2:]], env=env).exit_code == 0
    result = runner.invoke(app, ["audit", "search", "--json", "--config", str(deployment)], env=env)
    assert result.exit_code == 0 and len(result.output.splitlines()) == 5, result.output  # not a stale SQLite file
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("""UPDATE audit_record SET fields = '{"n":7}' WHERE idx = 2""")
    result = runner.invoke(app, ["audit", "verify", *args], env=env)
    assert result.exit_code == 1 and "FAILED at index 2" in result.output, result.output
    result = runner.invoke(app, ["audit", "verify", *args], env={"COLUMNS": "400"})  # the secret is not set
    assert result.exit_code == 1 and "Traceback" not in result.output and "postgres@" not in result.output
