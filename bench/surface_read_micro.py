"""CPU per ``resources/read`` in process: the real dispatcher and read pipeline, the test double upstream.

No network, so what is measured is the gateway's own work per read, including (before issue 13's
change) listing the kind from the service and hashing each live definition for the pin check. CPU time
of the process (``time.process_time``), which a loaded machine disturbs less than wall time.

    .venv/bin/python -m bench.surface_read_micro [reads]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import anyio
from tests.security.test_surface import surface_gateway

WARMUP = 200


async def _run(reads: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with surface_gateway(Path(tmp), content=False) as gw:
            conn = gw.connector.current
            assert conn is not None
            watch = getattr(gw, "watch", None)  # the background re-listing (absent before it existed)
            if watch is not None:
                watch._poll_s = 60.0  # the test fixture polls every 10 ms; the gateway every 200 ms
                await anyio.sleep(0.05)
            for _ in range(WARMUP):
                await gw.request("resources/read", {"uri": "billing+docs://terms"})
            listed = len(conn.surface.reads)
            started = time.process_time()
            for _ in range(reads):
                result, error = await gw.request("resources/read", {"uri": "billing+docs://terms"})
                assert result is not None, error
            cpu = time.process_time() - started
    print(f"resources/read in process, {reads} reads: {cpu / reads * 1e6:.0f} us CPU per read "
          f"({len(conn.surface.reads) - listed} upstream reads)")


if __name__ == "__main__":
    anyio.run(_run, int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
