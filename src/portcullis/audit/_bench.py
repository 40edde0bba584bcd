"""Append throughput of the audit writer: ``python -m portcullis.audit._bench [records] [concurrency]``.

Writes to a fresh SQLite file in a temporary directory (WAL, synchronous=FULL), chained and
group-committed, then verifies the result. Prints records/s and the number of transactions.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from portcullis.audit.record import AuditRecord
from portcullis.audit.store import SqliteAuditStore
from portcullis.audit.verify import verify_store
from portcullis.audit.writer import AuditWriter


async def bench(total: int, concurrency: int, max_delay_s: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with await SqliteAuditStore.open(Path(tmp) / "audit.db") as store:
            batches: list[int] = []
            append = store.append

            async def counted(batch: Sequence[AuditRecord]) -> None:
                await append(batch)
                batches.append(len(batch))

            store.append = counted  # type: ignore[method-assign]

            async def worker(w: int) -> None:
                for i in range(total // concurrency + (w < total % concurrency)):
                    fields = {"tool": "refund", "principal": {"sub": f"user-{w}"}, "decision": "allow",
                              "rules": ["r1"], "policy_version": "v1", "arguments": {"amount": i}}
                    await writer.record("decision", f"req-{w}-{i}", fields)

            start = time.perf_counter()
            async with AuditWriter(store, clock=time.time, max_delay_s=max_delay_s) as writer:
                async with anyio.create_task_group() as tg:
                    for w in range(concurrency):
                        tg.start_soon(worker, w)
            elapsed = time.perf_counter() - start
            n = total
            t0 = time.perf_counter()
            report = await verify_store(store, Ed25519PrivateKey.generate().public_key())
            verify_s = time.perf_counter() - t0
            print(f"max_delay_s={max_delay_s}: {n} records, concurrency {concurrency}: {n / elapsed:,.0f} records/s; "
                  f"{len(batches)} transactions (mean batch {n / len(batches):.1f}); "
                  f"verify {report.records_checked} ok={report.ok} in {verify_s:.2f}s")


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    for delay in (0.002, 0.0):
        anyio.run(bench, total, concurrency, delay)


if __name__ == "__main__":
    main()
