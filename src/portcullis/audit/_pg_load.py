"""One audit writer process against the PostgreSQL store, for cluster tests and ``bench/audit_pg.py``.

``python -m portcullis.audit._pg_load URL KEY_PEM ACKED_FILE --seconds S --tasks N`` opens the store
as a gateway replica does (``AuditWriter`` with group commit and a ``Checkpointer`` signing with the
shared key), runs ``N`` callers recording back to back for ``S`` seconds, and appends
``"<index> <hash>\\n"`` to ``ACKED_FILE`` (``O_APPEND``, one ``write`` per record) the moment each
record is acknowledged: a SIGKILL loses none of those lines. At the end it prints one JSON line:
records, group commits, failures, and per-commit latency percentiles (ms).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from typing import Any

import anyio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from portcullis.audit.checkpoint import Checkpointer, CheckpointPolicy
from portcullis.audit.errors import AuditUnavailable
from portcullis.audit.pg_store import PostgresAuditStore, open_postgres_audit
from portcullis.audit.record import AuditRecord
from portcullis.audit.writer import AuditWriter
from portcullis.storage.config import PostgresConfig


class _Timed:
    """The store, with each group commit's wall time noted."""

    chains_at_append = True

    def __init__(self, store: PostgresAuditStore) -> None:
        self._store = store
        self.commits: list[float] = []

    async def append_chained(self, chain: Callable[[tuple[int, str] | None], list[AuditRecord]]) -> list[AuditRecord]:
        start = time.perf_counter()
        records = await self._store.append_chained(chain)
        self.commits.append(time.perf_counter() - start)
        return records

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


async def run(url: str, key_pem: bytes, acked: str, *, seconds: float, tasks: int, name: str) -> dict[str, Any]:
    key = load_pem_private_key(key_pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SystemExit("the audit signing key must be Ed25519")
    store = await open_postgres_audit(PostgresConfig(url_ref="secret://env/UNUSED", pool_size=4), url=url)
    timed = _Timed(store)
    fd = os.open(acked, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    ok = failed = 0
    checkpointer = Checkpointer(store, key, clock=time.time,
                                policy=CheckpointPolicy(every_records=500, every_s=0.5))
    try:
        async with AuditWriter(timed, clock=time.time, checkpointer=checkpointer) as writer:
            deadline = time.monotonic() + seconds

            async def caller(n: int) -> None:
                nonlocal ok, failed
                i = 0
                while time.monotonic() < deadline:
                    i += 1
                    try:
                        record = await writer.record("decision", f"{name}-{n}-{i}", {"writer": name, "n": i})
                    except AuditUnavailable:
                        failed += 1
                        await anyio.sleep(0.01)
                        continue
                    os.write(fd, f"{record.index} {record.hash}\n".encode("ascii"))
                    ok += 1

            async with anyio.create_task_group() as tg:
                for n in range(tasks):
                    tg.start_soon(caller, n)
    finally:
        os.close(fd)
        await store.aclose()
    commits = timed.commits
    return {"writer": name, "records": ok, "failed": failed, "commits": len(commits), "seconds": seconds,
            "p50_ms": round(_percentile(commits, 0.5), 3), "p99_ms": round(_percentile(commits, 0.99), 3),
            "mean_batch": round(ok / len(commits), 1) if commits else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("key_pem")
    parser.add_argument("acked")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--name", default=str(os.getpid()))
    args = parser.parse_args()
    with open(args.key_pem, "rb") as f:
        pem = f.read()
    stats = anyio.run(lambda: run(args.url, pem, args.acked, seconds=args.seconds, tasks=args.tasks,
                                  name=args.name))
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
