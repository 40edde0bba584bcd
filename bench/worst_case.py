"""Worst-case single request: how long can one request block the gateway's event loop? (issue 10, item 3)

``python -m bench.worst_case`` runs the real gateway (the bundled demo deployment, its three
stdio services, the guarded HTTP protocol, uvloop) **in this process**, with a probe on its event
loop: a timer due every millisecond records how late it fires. A request that holds the loop for
*t* ms makes the probe fire about *t* ms late, so the largest lateness seen while one request is
handled is that request's block time (libuv timers tick in whole milliseconds: figures are ±1 ms).

The hostile requests are sent one at a time by a client in a **separate process** (a client thread
here would take the GIL from the loop and inflate the figures). Each case runs ``--repeats``
times; the report gives, per case, the status answered and the largest and median per-request
block. Nothing here asserts a figure: the target (50 ms) is checked by reading the report, and
``--strict`` turns a miss into exit status 1.

Cases: the largest head the bounds allow (header count and bytes, repeated headers, a forged
bearer token of maximal size), heads just past the bounds, and, with a valid token, bodies of the
largest size built to cost the most per byte: the most values the value budget allows as empty
objects, as nested arrays at the depth limit, as duplicate keys, as long digit runs, as escaped
strings, and one over-budget body of each kind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TARGET_MS = 50.0
MiB = 1_048_576
JSON_TYPE = "Content-Type: application/json"
META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}


# --------------------------------------------------------------------------- the hostile requests (client side)


def _head(lines: list[str], *, target: str = "/mcp", method: str = "POST", length: int | None = None) -> bytes:
    head = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *lines]
    if length is not None:
        head.append(f"Content-Length: {length}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")


def _call(arguments_json: bytes, name: str = "billing.get_invoice", token: str = "") -> bytes:
    body = (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"' + name.encode() +
            b'","_meta":' + json.dumps(META).encode() + b',"arguments":' + arguments_json + b"}}")
    return _head([f"Authorization: Bearer {token}", "Content-Type: application/json", "Accept: application/json",
                  "MCP-Protocol-Version: 2026-07-28", "Mcp-Method: tools/call", f"Mcp-Name: {name}"],
                 length=len(body)) + body


def _fill(unit: bytes, count: int, open_: bytes = b"[", close: bytes = b"]") -> bytes:
    return open_ + b",".join([unit] * count) + close


def cases(token: str, values: int = 20_000, header_bytes: int = 16_384) -> dict[str, Callable[[], bytes]]:
    """Case name -> request bytes. ``values`` and ``header_bytes`` are the gateway's bounds."""
    budget = values - 200  # room for the envelope's own values
    per_header = (header_bytes - 200) // 97
    return {
        # pre-authentication: heads at and past the bounds (no credentials: answered 401 / 431)
        "head: 98 headers, 16 KiB": lambda: _head([JSON_TYPE] + [f"X-H{i:02d}: " + "v" * (per_header - 5)
                                                                  for i in range(96)]),
        "head: 98 repeats of one header": lambda: _head([JSON_TYPE] + [f"X-Dup: {'v' * (per_header - 5)}"
                                                                        for _ in range(96)]),
        "head: forged 16 KiB bearer token": lambda: _head(
            [JSON_TYPE, "Authorization: Bearer " + "eyJhbGciOiJFZERTQSJ9." + "A" * (header_bytes - 300) + ".sig"]),
        "head: 16 KiB bearer token of a valid shape": lambda: _head(
            [JSON_TYPE, "Authorization: Bearer " + token.rsplit(".", 2)[0] + "." +
             "A" * (header_bytes - 300 - len(token)) + "." + token.rsplit(".", 1)[1]]),
        "head: 20,000 header lines (431)": lambda: _head(["a:b"] * 20_000),
        "head: one 1 MiB header (431)": lambda: _head(["X-Big: " + "b" * MiB]),
        # authenticated: bodies at the value budget, the shapes that cost most per value
        "body: empty objects at the budget": lambda: _call(_fill(b"{}", budget // 2), token=token),
        "body: one-key objects at the budget": lambda: _call(_fill(b'{"k":0}', budget // 3), token=token),
        "body: arrays nested to the depth limit": lambda: _call(
            _fill(b"[" * 56 + b"0" + b"]" * 56, budget // 57), token=token),
        "body: duplicate keys at the budget": lambda: _call(
            b"{" + b",".join(b'"k":0' for _ in range(budget // 2)) + b"}", token=token),
        "body: distinct keys at the budget": lambda: _call(
            b"{" + b",".join(b'"k%06d":0' % i for i in range(budget // 2)) + b"}", token=token),
        "body: 20-digit integers at the budget": lambda: _call(_fill(b"9" * 19, budget), token=token),
        "body: floats at the budget": lambda: _call(_fill(b"1.7976931348623157e308", budget), token=token),
        "body: 4300-digit integers, 1 MiB": lambda: _call(_fill(b"9" * 4300, MiB // 4301 - 1), token=token),
        "body: 1 MiB string of escapes": lambda: _call(
            b'{"invoice_id":"' + b"\\u00e9\\n" * (MiB // 8 - 64) + b'"}', token=token),
        "body: 1 MiB of separators in strings": lambda: _call(
            b'{"invoice_id":"' + b",:[{" * (MiB // 4 - 64) + b'"}', token=token),
        "body: 1 MiB of empty objects (over budget)": lambda: _call(_fill(b"{}", MiB // 3 - 100), token=token),
        "body: 1 MiB of integers (over budget)": lambda: _call(_fill(b"1", MiB // 2 - 1000), token=token),
        "body: 1 MiB of short strings (over budget)": lambda: _call(_fill(b'"a"', MiB // 4 - 100), token=token),
        # reference: an ordinary call
        "reference: one ordinary tools/call": lambda: _call(b'{"invoice_id":"INV-1001"}', token=token),
    }


def _send(port: int, data: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    response = b"".join(chunks)
    return int(response[9:12]) if response.startswith(b"HTTP/1.1 ") else 0


def client_main(port: int, token: str) -> None:
    """The client process: reads "<case index>" lines, answers "<status>" after each request."""
    table = list(cases(token).values())
    built: dict[int, bytes] = {}
    for line in sys.stdin:
        index = int(line)
        data = built.setdefault(index, table[index]())
        print(_send(port, data), flush=True)


# --------------------------------------------------------------------------- the gateway and its probe (server side)


class LagProbe:
    """A timer due every ``period_s``. Since :meth:`reset`: :attr:`worst_s` is the latest it has fired
    (wall time: includes the loop thread being preempted on a busy machine), :attr:`worst_cpu_s`
    the most CPU time the loop thread spent between two ticks (the loop's own work, whatever else
    runs on the machine)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, period_s: float = 0.001) -> None:
        self._loop, self._period = loop, period_s
        self.worst_s = self.worst_cpu_s = 0.0
        self._cpu = time.thread_time()
        self._due = loop.time() + period_s
        self._handle = loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        now, cpu = self._loop.time(), time.thread_time()
        self.worst_s = max(self.worst_s, now - self._due)
        self.worst_cpu_s = max(self.worst_cpu_s, cpu - self._cpu)
        self._cpu = cpu
        self._due = now + self._period
        self._handle = self._loop.call_at(self._due, self._tick)

    def reset(self) -> None:
        self.worst_s = self.worst_cpu_s = 0.0

    def stop(self) -> None:
        self._handle.cancel()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _measure(repeats: int, work: Path) -> dict[str, Any]:
    import uvicorn

    from portcullis.config.loader import load_deployment
    from portcullis.gateway import build_gateway
    from portcullis.identity.dev_issuer import issue_token

    root = work / "deployment"
    shutil.copytree(REPO / "src" / "portcullis" / "demo" / "deployment", root)
    port = _free_port()
    environ = {**os.environ, "PORTCULLIS_STATE_DIR": str(work / "state")}
    deployment = load_deployment(root)
    gateway = build_gateway(deployment, port=port, environ=environ, admin_port=_free_port())
    config = uvicorn.Config(gateway.app, host="127.0.0.1", port=port, log_level="error", access_log=False,
                            lifespan="on", http=gateway.http_protocol(), ws="none", proxy_headers=False,
                            server_header=False, date_header=False)
    server = uvicorn.Server(config)
    gc.freeze()  # as `portcullis serve` does before it starts serving
    serving = asyncio.create_task(server.serve())
    loop = asyncio.get_running_loop()
    while not server.started:
        await asyncio.sleep(0.05)
    for _ in range(600):  # the demo services connect in the background
        if all(handle.ready.is_set() for handle in gateway.upstreams.handles()):
            break
        await asyncio.sleep(0.05)
    token = issue_token(work / "state", audience=gateway.resource, user="alice", agent="billing-bot", client=None,
                        scopes=("mcp:tools",))
    limits = deployment.gateway.limits
    names = list(cases(token, limits.max_json_values, limits.max_header_bytes))
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.worst_case", "--client", str(port), "--token", token, cwd=REPO,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert client.stdin is not None and client.stdout is not None
    probe = LagProbe(loop)
    results: dict[str, Any] = {}
    try:
        await asyncio.sleep(0.5)
        probe.reset()
        await asyncio.sleep(1.0)
        results["idle loop (1 s, no request)"] = {"status": None, "worst_ms": probe.worst_s * 1e3,
                                                  "median_ms": probe.worst_s * 1e3,
                                                  "worst_cpu_ms": probe.worst_cpu_s * 1e3,
                                                  "median_cpu_ms": probe.worst_cpu_s * 1e3}
        for index, name in enumerate(names):
            blocks, cpus, statuses = [], [], set()
            for _ in range(repeats):
                await asyncio.sleep(0.02)  # let the previous request's leftovers (frees, logs) settle
                probe.reset()
                client.stdin.write(f"{index}\n".encode())
                await client.stdin.drain()
                statuses.add(int(await client.stdout.readline()))
                await asyncio.sleep(0.005)  # the probe's next tick, after the response went out
                blocks.append(probe.worst_s * 1e3)
                cpus.append(probe.worst_cpu_s * 1e3)
            results[name] = {"status": sorted(statuses), "worst_ms": max(blocks),
                             "median_ms": statistics.median(blocks), "worst_cpu_ms": max(cpus),
                             "median_cpu_ms": statistics.median(cpus)}
            print(f"  {name:46s} {sorted(statuses)!s:7s} CPU worst {max(cpus):5.1f} median "
                  f"{statistics.median(cpus):5.1f} | wall worst {max(blocks):5.1f} median "
                  f"{statistics.median(blocks):5.1f} ms", flush=True)
    finally:
        probe.stop()
        client.stdin.close()
        await client.wait()
        server.should_exit = True
        await serving
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=20, help="requests per case (default 20)")
    parser.add_argument("--json", type=Path, help="write the figures as JSON here")
    parser.add_argument("--strict", action="store_true", help=f"exit 1 if any case blocks over {TARGET_MS} ms")
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client is not None:
        client_main(args.client, args.token)
        return 0
    import uvloop

    from portcullis import logs

    logs.configure("ERROR")
    print(f"worst-case single request: {args.repeats} requests per case; block = largest lateness of a 1 ms "
          "loop timer while the request is handled", flush=True)
    with tempfile.TemporaryDirectory(prefix="portcullis-worst-") as work:
        started = time.monotonic()
        results = uvloop.run(_measure(args.repeats, Path(work)))
    worst = max((r["worst_cpu_ms"], name) for name, r in results.items())
    wall = max((r["worst_ms"], name) for name, r in results.items())
    print(f"largest block (loop CPU between two ticks): {worst[0]:.1f} ms ({worst[1]}); target {TARGET_MS:.0f} ms: "
          f"{'PASS' if worst[0] <= TARGET_MS else 'FAIL'}; largest wall lateness {wall[0]:.1f} ms ({wall[1]}) "
          f"({time.monotonic() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"target_ms": TARGET_MS, "cases": results}, indent=2))
    return 1 if args.strict and worst[0] > TARGET_MS else 0


if __name__ == "__main__":
    sys.exit(main())
