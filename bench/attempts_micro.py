"""Cost of one refused attempt on the request path (figures for the docs; never asserted).

Drives the real GatewayApp (ASGI call, in process) with a real Authenticator, with and without an
AttemptRecorder, for an unauthenticated POST and for one with a forged bearer token; the recorder's
writes go to a real inline SQLite chain, flushed outside the timed loop.

    .venv/bin/python -m bench.attempts_micro
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import anyio
from tests.unit.test_audit_attempts import BASE, KEY, Clock, build_app, call

from portcullis.audit import AuditWriter, SqliteAuditStore
from portcullis.audit.attempts import AttemptRecorder

N = 20_000


async def timed(app: object, headers: dict[str, str]) -> float:
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for i in range(N):
            await call(app, headers, client=("203.0.113.9", i))  # type: ignore[arg-type]
        samples.append((time.perf_counter() - start) / N * 1e6)
    return statistics.median(samples)


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp)
        async with await SqliteAuditStore.open(path / "a.db", durability="process") as store:
            async with AuditWriter(store, clock=time.time) as writer:
                recorder = AttemptRecorder(writer, audit_key=KEY, clock=Clock())
                with_rec, without = build_app(path, recorder), build_app(path, None)
                for name, headers in (("no token", BASE), ("forged token", {**BASE, "Authorization": "Bearer x.y.z"})):
                    base = await timed(without, headers)
                    rec = await timed(with_rec, headers)
                    print(f"{name:13s} refusal without recorder {base:6.1f} µs, with {rec:6.1f} µs "
                          f"(+{rec - base:.1f} µs)")
                    await recorder.flush(every=True)


if __name__ == "__main__":
    anyio.run(main)
