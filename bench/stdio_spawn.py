"""Sandboxed stdio spawn: what confinement adds to starting a stdio service, unconfined vs confined.

Each variant starts a stdio service ``--n`` times in turn (interleaved, so machine load hits them
alike) through the gateway's own spawn path (:func:`portcullis.upstream.stdio_spawn.prepare_spawn`
and the bounded stdio transport), and prints the median and p90 wall time in milliseconds:

- ``cat``: ``/bin/cat`` started and stopped (no MCP handshake): the spawn alone;
- ``demo``: the bundled billing service (``module: portcullis.demo.services.billing``) up to the end
  of its first ``tools/list`` answer: what a gateway waits for before a service counts as connected.

Each ``confined`` variant is the same service with the default sandbox (bwrap, seccomp, prlimit, as
root a pids cgroup); ``unconfined`` is ``sandbox.unsafe_no_sandbox: true``.

Run: ``.venv/bin/python -m bench.stdio_spawn`` (``--n 20``).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from typing import Any

import anyio
from mcp import Client

from portcullis.cli.main import demo_deployment
from portcullis.config.model import StdioService
from portcullis.identity.minting import service_audience
from portcullis.service.env import gateway_env
from portcullis.upstream.confined_spawn import StdioSandbox
from portcullis.upstream.sdk_client import stdio_launch
from portcullis.upstream.stdio_bounded import bounded_stdio_client
from portcullis.upstream.stdio_spawn import prepare_spawn


def _service(launcher: dict[str, Any], *, confined: bool) -> StdioService:
    return StdioService.model_validate({"transport": "stdio", **launcher,
                                        "sandbox": {} if confined else {"unsafe_no_sandbox": True}})


async def _once(name: str, cfg: StdioService, sandbox: StdioSandbox, *, handshake: bool) -> float:
    extra = gateway_env({"keys": []}, "bench", service_audience("billing"), policy_root=demo_deployment(),
                        environment="development") if handshake else {}
    argv, env = stdio_launch(cfg, {}, extra)
    started = time.perf_counter()
    spawn = await prepare_spawn(name, cfg, argv, env, sandbox, None)
    try:
        transport = bounded_stdio_client(spawn.params, max_line_bytes=1 << 20, max_depth=64, closed=anyio.Event(),
                                         pass_fds=spawn.pass_fds)
        if handshake:
            async with Client(transport, cache=None, mode="legacy") as client:
                await client.list_tools()
        else:
            async with transport:
                pass
        return (time.perf_counter() - started) * 1000
    finally:
        spawn.cleanup()


async def main(n: int) -> None:
    logging.disable(logging.WARNING)
    sandbox = StdioSandbox()
    variants = {
        f"{kind} {state}": (_service(launcher, confined=state == "confined"), kind == "demo")
        for kind, launcher in (("cat", {"command": "/bin/cat"}),
                               ("demo", {"module": "portcullis.demo.services.billing"}))
        for state in ("unconfined", "confined")}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(n):
        for name, (cfg, handshake) in variants.items():
            times[name].append(await _once("billing", cfg, sandbox, handshake=handshake))
    for name, values in times.items():
        values.sort()
        p90 = values[min(len(values) - 1, int(len(values) * 0.9))]
        print(f"{name:18} p50 {statistics.median(values):7.1f} ms   p90 {p90:7.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20)
    anyio.run(main, parser.parse_args().n)
