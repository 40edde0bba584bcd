"""The audit chain in PostgreSQL with 1, 2 and 3 concurrent writer processes (issue 16).

Each writer is a separate process (``portcullis.audit._pg_load``: an ``AuditWriter`` with group commit
and a checkpointer, as a gateway replica runs it) with ``--tasks`` callers recording back to back for
``--seconds``. All writers append to ONE chain, each group commit serialised by the chain's advisory
lock (``--separate``: each writer a chain of its own, the per-replica design's best case).
Reported per writer count: acknowledged records/s (all writers together), group commits/s,
mean batch size, and the latency of one group commit (p50 / p99 over every writer's commits, ms,
including the wait for the lock). The chain is verified after each run.

Run: ``.venv/bin/python -m bench.audit_pg`` (PostgreSQL on 127.0.0.1:5432, database ``test``, or
``PORTCULLIS_TEST_PG_DSN``); it works in a schema of its own and drops it afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote

import anyio
import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from portcullis.audit.pg_store import PG_COMPONENT, open_postgres_audit
from portcullis.audit.verify import verify_store
from portcullis.storage.config import PostgresConfig
from portcullis.storage.migrations import migrate

BASE = os.environ.get("PORTCULLIS_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def _run_writers(urls: list[str], key_file: Path, tmp: Path, writers: int, seconds: float, tasks: int) -> list[dict]:
    procs = [subprocess.Popen([sys.executable, "-m", "portcullis.audit._pg_load", urls[n % len(urls)], str(key_file),
                               str(tmp / f"acked-{writers}-{n}"), "--seconds", str(seconds), "--tasks", str(tasks),
                               "--name", f"w{n}"], stdout=subprocess.PIPE, text=True) for n in range(writers)]
    return [json.loads(p.communicate(timeout=seconds + 60)[0].strip().splitlines()[-1]) for p in procs]


async def _verified(url: str, key: Ed25519PrivateKey) -> str:
    config = PostgresConfig(url_ref="secret://env/UNUSED")
    async with await open_postgres_audit(config, url=url, readonly=True) as store, store.snapshot():
        report = await verify_store(store, key.public_key())
    return f"verified {report.records_checked}" if report.ok else f"FAILED at {report.first_bad_index}"


def main(seconds: float, tasks: int, separate: bool) -> None:
    key = Ed25519PrivateKey.generate()
    shape = "one chain per writer (no shared lock)" if separate else "ONE chain, appends serialised"
    print(f"audit chain in PostgreSQL, {shape}: {seconds:g} s per run, {tasks} callers per writer process")
    print("writers  records/s  commits/s  batch  commit p50 ms  commit p99 ms  chain")
    for writers in (1, 2, 3):
        schemas = ["bench_" + secrets.token_hex(6) for _ in range(writers if separate else 1)]
        urls = [f"{BASE}?options={quote(f'-c search_path={schema}', safe='')}" for schema in schemas]
        try:
            for schema, url in zip(schemas, urls, strict=True):
                with psycopg.connect(BASE, autocommit=True) as conn:
                    conn.execute(f'CREATE SCHEMA "{schema}"')
                with psycopg.connect(url, autocommit=True) as conn:
                    migrate(conn, [PG_COMPONENT])
            with tempfile.TemporaryDirectory() as tmp:
                key_file = Path(tmp) / "key.pem"
                key_file.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
                stats = _run_writers(urls, key_file, Path(tmp), writers, seconds, tasks)
            verdict = ", ".join(anyio.run(_verified, url, key) for url in urls)
        finally:
            for schema in schemas:
                with psycopg.connect(BASE, autocommit=True) as conn:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        records = sum(s["records"] for s in stats)
        commits = sum(s["commits"] for s in stats)
        p50 = max(s["p50_ms"] for s in stats)
        p99 = max(s["p99_ms"] for s in stats)
        print(f"{writers:7d}  {records / seconds:9.0f}  {commits / seconds:9.0f}  {records / max(commits, 1):5.1f}"
              f"  {p50:13.2f}  {p99:13.2f}  {verdict}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--separate", action="store_true", help="Give each writer a chain of its own (the "
                        "per-replica alternative, for comparison).")
    args = parser.parse_args()
    main(args.seconds, args.tasks, args.separate)
