"""Gateway overhead benchmark: ``tools/call`` direct to an echo upstream vs through Portcullis.

Run from the repository root::

    .venv/bin/python -m bench.run               # full run (about a minute on 2 cores)
    .venv/bin/python -m bench.run --quick       # short smoke run
    .venv/bin/python -m bench.run --json out.json

What it does, all on 127.0.0.1:

1. starts ``bench/echo_upstream.py`` (the SDK's ``MCPServer`` with one ``echo`` tool, uvicorn +
   httptools + uvloop) as a child process;
2. writes a temporary deployment (one ``http`` service ``echo``, one manifest whose input schema
   is the live one), pins it with ``portcullis pin`` and starts ``portcullis serve`` on it;
3. drives both targets with the *same* load generator, a pooled keep-alive
   ``httpx2.AsyncClient`` posting 2026-07-28 JSON-RPC ``tools/call`` requests, checking that
   every answer is a successful result carrying the text that was sent:

   * concurrency 1: N sequential calls → p50 / p99 latency and calls/s;
   * concurrency 16: 16 workers sharing a fixed number of calls → calls/s and p50 / p99;

   direct and gateway runs alternate within each round (the order flips every round) and the
   median over rounds is reported, to damp the noise of a shared 2-core machine;
4. one reference line with the official SDK client (``mcp.Client(url, cache=None).call_tool``)
   at concurrency 1, direct vs gateway;
5. prints the table, ``added p50 (ms) = gateway p50 - direct p50`` (c=1), ``throughput ratio =
   gateway/direct`` (c=16), and PASS/FAIL against the targets (≤ 1 ms added at p50, ≥ 60 % of
   direct throughput).

The exit status is 0 when every call succeeded, whatever the timings (``--strict`` also makes a
missed target exit 1); it is 2 when the benchmark itself failed. Every loop has a fixed count
and a time limit, and every child process is stopped in a ``finally``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import yaml

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
MODERN = "2026-07-28"
HOST = "127.0.0.1"
CONCURRENCY = 16
TARGET_ADDED_P50_MS = 1.0
TARGET_THROUGHPUT_RATIO = 0.60
TARGET_AUDIT_P50_MS = 0.2  # issue 5: the audit trail's per-call cost
REQUEST_TIMEOUT_S = 10.0
TEXT = "portcullis benchmark payload"


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    rounds: int
    warmup: int
    calls_c1: int
    calls_c16: int
    sdk_calls: int
    phase_timeout_s: float
    gateway_log_level: str

    @classmethod
    def full(cls) -> Settings:
        return cls(rounds=3, warmup=400, calls_c1=2000, calls_c16=4000, sdk_calls=500,
                   phase_timeout_s=300.0, gateway_log_level="info")

    @classmethod
    def quick(cls) -> Settings:
        return cls(rounds=1, warmup=40, calls_c1=100, calls_c16=320, sdk_calls=20,
                   phase_timeout_s=60.0, gateway_log_level="info")


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Child:
    """A child process whose output goes to a log file; stopped with SIGINT, then SIGKILL."""

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._out = open(self.log_path, "w")  # closed in stop()
        self.proc = subprocess.Popen(list(argv), stdout=self._out, stderr=subprocess.STDOUT, cwd=REPO,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def log_tail(self, chars: int = 4000) -> str:
        self._out.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._out.close()


def failure_lines(child: Child) -> list[str]:
    """Log lines of ``child`` that are warnings, errors or calls whose outcome was not ok."""
    lines = child.log_tail(10**9).splitlines()
    return [line for line in lines if ('"level": "warning"' in line or '"level": "error"' in line
                                       or "Traceback" in line or "Error" in line)
            and '"outcome": "ok"' not in line and "sessions.key_ref" not in line]


def wait_until(child: Child, probe: Callable[[], bool], what: str, timeout_s: float = 120.0) -> None:
    """Poll ``probe`` until true; generous by default: a start on a loaded machine is slow, never a result."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise RuntimeError(f"{child.name} exited early ({child.proc.returncode}):\n{child.log_tail()}")
        try:
            if probe():
                return
        except (httpx2.TransportError, ValueError, BenchError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready within {timeout_s}s:\n{child.log_tail()}")


def modern_headers(method: str, name: str | None = None) -> dict[str, str]:
    headers = {"MCP-Protocol-Version": MODERN, "Mcp-Method": method, "Content-Type": "application/json",
               "Accept": "application/json, text/event-stream"}
    if name is not None:
        headers["Mcp-Name"] = name
    return headers


def envelope(request_id: int, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method,
            "params": {**params, "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                                           "io.modelcontextprotocol/clientCapabilities": {}}}}


def decode_answer(response: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC answer in a JSON or an SSE body."""
    content_type = response.headers.get("content-type", "").split(";")[0].strip()
    if content_type == "text/event-stream":
        for line in response.text.splitlines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if isinstance(message, dict) and "method" not in message:
                    return message
        raise BenchError("SSE answer without a response message")
    return json.loads(response.content)


class BenchError(Exception):
    """The benchmark could not run or a call did not succeed."""


def live_tools(url: str) -> list[dict[str, Any]]:
    response = httpx2.post(url, json=envelope(1, "tools/list", {}), headers=modern_headers("tools/list"),
                           timeout=5)
    message = decode_answer(response)
    if response.status_code != 200 or "result" not in message:
        raise BenchError(f"tools/list failed: HTTP {response.status_code} {str(message)[:300]}")
    return list(message["result"]["tools"])


def gateway_has_identity() -> bool:
    """Whether this gateway version authenticates callers (an ``identity`` section in gateway.yaml)."""
    from portcullis.config.model import GatewayConfig

    return "identity" in GatewayConfig.model_fields


def gateway_has_policy() -> bool:
    """Whether this gateway version authorizes calls (a ``policy`` section in tool manifests)."""
    from portcullis.config.model import ToolManifest

    return "policy" in ToolManifest.model_fields


def auth_settings(workdir: Path, mode: str) -> dict[str, Any]:
    """gateway.yaml settings for inbound authentication (nothing for gateway versions without it).

    ``dev-token``: the development issuer is trusted and every gateway request carries a bearer
    token signed by it, so the figures include token verification (what a deployment pays, with a
    locally verified issuer). ``anonymous``: no credentials at all (note: the gateway then logs a
    warning line per request).
    """
    if not gateway_has_identity():
        return {}
    identity = {"allow_insecure_dev_issuer": True} if mode == "dev-token" else {"allow_insecure_anonymous": True}
    return {"identity": identity, "state_dir": str(workdir / "state")}


def issue_token(deployment: Path, port: int) -> str:
    """A development bearer token for the gateway on ``port`` (``portcullis token issue``)."""
    done = subprocess.run([sys.executable, "-m", "portcullis", "token", "issue", "--config", str(deployment),
                           "--port", str(port), "--user", "bench-user", "--agent", "bench-agent"],
                          capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines or lines[-1].count(".") != 2:
        raise BenchError(f"portcullis token issue failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return lines[-1]


def write_deployment(root: Path, upstream_url: str, tool: Mapping[str, Any], auth: str = "dev-token",
                     content: bool = True) -> Path:
    """gateway.yaml with one http service ``echo`` and tools/echo/echo.yml from the live tool
    (``content=False``: the output filter off, the "before" figure of its cost)."""
    gateway: dict[str, Any] = {"version": 1, "listen": {"host": HOST, "port": 0}, **auth_settings(root.parent, auth),
                               "services": {"echo": {"transport": "http", "url": upstream_url}}}
    if not content:
        gateway["content"] = {"enabled": False}
    manifest: dict[str, Any] = {
        "name": tool["name"], "service": "echo", "owner": "bench@example.com",
        "description": tool.get("description") or tool["name"], "risk": "low",
        "classification": {"input": "Internal", "output": "Internal"},
        "input_schema": tool["inputSchema"],
    }
    if tool.get("outputSchema"):
        manifest["output_schema"] = tool["outputSchema"]
    if gateway_has_policy():
        # the gateway denies by default: allow the bench caller (the policy decision is in the figures)
        manifest["policy"] = {"allowed_callers": ["agent:bench-agent", "client:anonymous"]}
        gateway["admin"] = {"port": 0}  # metrics on; main() passes a free port with --admin-port
    root.mkdir(parents=True, exist_ok=True)
    (root / "gateway.yaml").write_text(yaml.safe_dump(gateway, sort_keys=False))
    path = root / "tools" / "echo" / f"{tool['name']}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return root


SHADOW_REGO = """package portcullis.bench_shadow

import rego.v1

deny contains {"id": "never", "reason": "never"} if {
	input.arguments.text == "never sent by the bench"
}
"""


def seed_rego_shadow(deployment: Path, state: Path) -> str:
    """Store a shadow version with Rego of its own (the deployment plus one module reading the arguments,
    so evaluations miss the decision cache) and set it, as the gateway restores it at start."""
    from portcullis.policy import policy_set
    from portcullis.policy.versions import VERSIONS_FILE, PolicyVersion, SqlitePolicyVersionStore

    files = policy_set.collect(deployment)
    files["policy/bench_shadow.rego"] = SHADOW_REGO
    vid = policy_set.content_id(files)
    state.mkdir(parents=True, exist_ok=True)
    store = SqlitePolicyVersionStore(state / VERSIONS_FILE)
    try:
        store.put(PolicyVersion(vid, "pv-bench-shadow", time.time(), "bench", "Rego shadow", files))
        store.record(time.time(), "shadow_set", vid, "bench", "")
    finally:
        store.close()
    return vid


def pin(deployment: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "portcullis", "pin", str(deployment)], capture_output=True,
                          text=True, timeout=120, cwd=REPO, check=False)
    if done.returncode != 0 or "pinned" not in done.stdout:
        raise BenchError(f"portcullis pin failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


# --------------------------------------------------------------------------- load generation


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` (Linux /proc), or None where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class CpuMeter:
    """CPU seconds used by the load generator (this process) and the server processes over a phase."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self._pids = dict(pids)

    def snapshot(self) -> dict[str, float | None]:
        return {"client": time.process_time(), **{name: cpu_seconds(pid) for name, pid in self._pids.items()}}

    @staticmethod
    def per_call_ms(before: Mapping[str, float | None], after: Mapping[str, float | None],
                    calls: int) -> dict[str, float]:
        return {name: 1000 * (after[name] - start) / calls for name, start in before.items()  # type: ignore[operator]
                if start is not None and after.get(name) is not None}


@dataclass
class Run:
    """One measured phase against one target."""

    target: str
    concurrency: int
    calls: int
    wall_s: float
    latencies_ms: list[float] = field(repr=False)
    cpu_ms_per_call: dict[str, float] = field(default_factory=dict)

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.wall_s

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    def summary(self) -> dict[str, float]:
        return {"calls": self.calls, "wall_s": round(self.wall_s, 4), "calls_per_s": round(self.calls_per_s, 1),
                "p50_ms": round(self.pct(0.50), 4), "p99_ms": round(self.pct(0.99), 4),
                "mean_ms": round(statistics.fmean(self.latencies_ms), 4),
                **{f"cpu_ms_per_call_{name}": round(ms, 4) for name, ms in self.cpu_ms_per_call.items()}}


@dataclass(frozen=True)
class Target:
    label: str  # "direct" | "gateway"
    url: str
    tool: str
    headers: Mapping[str, str] = field(default_factory=dict)  # e.g. the gateway's Authorization
    metrics_url: str | None = None  # the gateway's admin /metrics: its own time per stage


#: ``--caller-accept``: what the load generator's calls to the gateway accept (the direct calls always send
#: what the SDK client sends: the echo service refuses a JSON-only Accept):
#: ``sse`` (default) ``Accept: application/json, text/event-stream``, as the SDK client sends;
#: ``json`` ``Accept: application/json`` only; ``sse-progress`` both and a ``_meta.progressToken``,
#: so the gateway runs the call as one that may stream (no notification comes: answered as JSON)
CALLER_ACCEPT = {"mode": "sse"}


class RawCaller:
    """The load generator: one pooled keep-alive httpx2 client, 2026-07-28 ``tools/call`` posts."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._headers = {**modern_headers("tools/call", target.tool), **target.headers}
        mode = CALLER_ACCEPT["mode"] if target.label == "gateway" else "sse"
        if mode == "json":
            self._headers["Accept"] = "application/json"
        self._progress = mode == "sse-progress"
        self._next_id = 0
        limits = httpx2.Limits(max_connections=CONCURRENCY * 2, max_keepalive_connections=CONCURRENCY * 2)
        self._http = httpx2.AsyncClient(limits=limits, timeout=REQUEST_TIMEOUT_S)

    async def __aenter__(self) -> RawCaller:
        await self._http.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.__aexit__(*exc)

    async def call(self) -> None:
        self._next_id += 1
        message = envelope(self._next_id, "tools/call", {"name": self.target.tool, "arguments": {"text": TEXT}})
        if self._progress:
            message["params"]["_meta"]["progressToken"] = self._next_id
        body = json.dumps(message)
        response = await self._http.post(self.target.url, content=body, headers=self._headers)
        message = decode_answer(response)
        result = message.get("result")
        if (response.status_code != 200 or not isinstance(result, dict) or result.get("isError")
                or result.get("content", [{}])[0].get("text") != TEXT):
            raise BenchError(f"{self.target.label}: unsuccessful answer HTTP {response.status_code}: "
                             f"{str(message)[:300]}")


async def measure(label: str, call: Callable[[], Awaitable[None]], *, calls: int, concurrency: int,
                  timeout_s: float) -> Run:
    """``calls`` calls spread over ``concurrency`` workers; every call timed on its own."""
    latencies: list[float] = []
    remaining = calls
    clock = time.perf_counter_ns

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = clock()
            await call()
            latencies.append((clock() - start) / 1e6)

    with anyio.fail_after(timeout_s):
        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker)
        wall = time.perf_counter() - start
    if len(latencies) != calls:
        raise BenchError(f"{label}: {len(latencies)} of {calls} calls completed")
    return Run(label, concurrency, calls, wall, latencies)


async def raw_round(targets: Sequence[Target], settings: Settings, round_no: int,
                    meter: CpuMeter, stages: dict[str, StageHist] | None = None) -> dict[str, dict[str, Run]]:
    """One round: c=1 for each target, then c=16 for each target; order flips each round."""
    order = list(targets) if round_no % 2 == 0 else list(reversed(targets))
    runs: dict[str, dict[str, Run]] = {t.label: {} for t in targets}
    for concurrency, calls in ((1, settings.calls_c1), (CONCURRENCY, settings.calls_c16)):
        for target in order:
            async with RawCaller(target) as caller:
                # warm-up: open the pool's connections and let both servers settle
                await measure(target.label, caller.call, calls=settings.warmup, concurrency=concurrency,
                              timeout_s=settings.phase_timeout_s)
                hist_before = await scrape_stages(target.metrics_url)
                before = meter.snapshot()
                run = await measure(target.label, caller.call, calls=calls, concurrency=concurrency,
                                    timeout_s=settings.phase_timeout_s)
                run.cpu_ms_per_call = CpuMeter.per_call_ms(before, meter.snapshot(), calls)
                if stages is not None and target.metrics_url is not None:
                    key = f"c{concurrency}"
                    delta = stage_delta(hist_before, await scrape_stages(target.metrics_url))
                    stages[key] = stage_add(stages.get(key, {}), delta)
                runs[target.label][f"c{concurrency}"] = run
    return runs


async def sdk_line(target: Target, settings: Settings) -> Run:
    """The official SDK client at concurrency 1 (reference only; it has its own client costs).

    ``mcp.Client(url, cache=None)``, given an httpx2 client so that the gateway's bearer token can
    be sent; the direct target gets the same construction without the header.
    """
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    with anyio.fail_after(settings.phase_timeout_s):
        async with httpx2.AsyncClient(headers=dict(target.headers), timeout=REQUEST_TIMEOUT_S) as http, \
                Client(streamable_http_client(target.url, http_client=http), cache=None) as client:
            async def call() -> None:
                result = await client.call_tool(target.tool, {"text": TEXT})
                if result.is_error or result.content[0].text != TEXT:
                    raise BenchError(f"{target.label}: SDK call failed: {str(result)[:300]}")

            await measure(target.label, call, calls=max(10, settings.warmup // 4), concurrency=1,
                          timeout_s=settings.phase_timeout_s)
            return await measure(target.label, call, calls=settings.sdk_calls, concurrency=1,
                                 timeout_s=settings.phase_timeout_s)


# --------------------------------------------------------------------------- reporting


def median_summary(runs: Sequence[Run]) -> dict[str, float]:
    """Per figure, the median over rounds (the middle round for 3 rounds)."""
    summaries = [r.summary() for r in runs]
    return {key: round(statistics.median(s[key] for s in summaries), 4) for key in summaries[0]
            if all(key in s for s in summaries)}


def report(results: dict[str, Any]) -> list[str]:
    med = results["median"]
    def cpu(s: Mapping[str, float], name: str) -> str:
        value = s.get(f"cpu_ms_per_call_{name}")
        return f"{value:>7.3f}" if value is not None else f"{'-':>7}"

    lines = [f"{'target':<11} {'conc':>4} {'calls':>6} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}"
             f"   CPU ms/call: {'client':>7} {'upstrm':>7} {'gateway':>7}"]
    for key in ("c1", "c16"):
        for label in ("direct", "gateway"):
            s = med[label][key]
            lines.append(f"{label:<11} {key[1:]:>4} {int(s['calls']):>6} {s['calls_per_s']:>9.1f} "
                         f"{s['p50_ms']:>8.3f} {s['p99_ms']:>8.3f} {s['mean_ms']:>8.3f}"
                         f"                {cpu(s, 'client')} {cpu(s, 'upstream')} {cpu(s, 'gateway')}")
    for label in ("direct", "gateway"):
        s = results["sdk"][label]
        lines.append(f"{'sdk-' + label:<11} {1:>4} {int(s['calls']):>6} {s['calls_per_s']:>9.1f} "
                     f"{s['p50_ms']:>8.3f} {s['p99_ms']:>8.3f} {s['mean_ms']:>8.3f}")
    r = results["ratios"]
    lines += [
        "",
        f"per-round c=1 p50 ms  direct {r['rounds_c1_p50_direct']}  gateway {r['rounds_c1_p50_gateway']}",
        f"per-round c=16 calls/s direct {r['rounds_c16_cps_direct']}  gateway {r['rounds_c16_cps_gateway']}",
        f"per-round added p50 ms {r['rounds_added_p50_ms']}  throughput ratio {r['rounds_throughput_ratio']}"
        f"  (median ratio {statistics.median(r['rounds_throughput_ratio']):.3f})",
        "",
        f"added p50 (ms) = gateway p50 - direct p50 at c=1: {r['added_p50_ms']:.3f}"
        f"  (target <= {TARGET_ADDED_P50_MS:.3f})  {'PASS' if r['added_p50_pass'] else 'FAIL'}",
        f"added p99 (ms) = gateway p99 - direct p99 at c=1: {r['added_p99_ms']:.3f}  (no target)",
        f"throughput ratio = gateway/direct at c=16: {r['throughput_ratio']:.3f}"
        f"  (target >= {TARGET_THROUGHPUT_RATIO:.2f})  {'PASS' if r['throughput_pass'] else 'FAIL'}",
        f"sdk client added p50 (ms) at c=1: {r['sdk_added_p50_ms']:.3f}  (reference)",
    ]
    stages = results.get("stages") or {}
    if stages:
        lines += ["", "gateway's own time per stage, measured phases only (from its /metrics histograms):",
                  f"{'stage':<10} {'c=1 p50 us':>11} {'c=1 mean us':>12} {'c=16 p50 us':>12} {'c=16 mean us':>13}"]
        order = ("record", "route", "gate", "validate", "authorize", "risk", "limits", "approve", "audit", "forward")
        names = sorted({n for per in stages.values() for n in per},
                       key=lambda n: order.index(n) if n in order else len(order))
        for name in names:
            c1, c16 = stages.get("c1", {}).get(name, {}), stages.get("c16", {}).get(name, {})
            lines.append(f"{name:<10} {c1.get('p50_us', 0):>11.1f} {c1.get('mean_us', 0):>12.1f} "
                         f"{c16.get('p50_us', 0):>12.1f} {c16.get('mean_us', 0):>13.1f}")
        audit_c1 = stages.get("c1", {}).get("audit")
        if audit_c1:
            audit_ms = audit_c1["p50_us"] / 1e3
            lines.append(f"audit overhead p50 (ms) at c=1 = the audit stage's own time (decision + outcome "
                         f"records): {audit_ms:.3f}  (target <= {TARGET_AUDIT_P50_MS:.3f})  "
                         f"{'PASS' if audit_ms <= TARGET_AUDIT_P50_MS else 'FAIL'}")
    return lines


StageHist = dict[str, tuple[list[tuple[float, float]], float]]  # stage -> (cumulative buckets, sum)


def parse_stages(scrape: str) -> StageHist:
    """The gateway's ``portcullis_stage_seconds`` histogram from a /metrics scrape."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[str, list[tuple[float, float]]] = {}
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(scrape):
        if family.name != "portcullis_stage_seconds":
            continue
        for sample in family.samples:
            stage = sample.labels.get("stage", "?")
            if sample.name.endswith("_bucket"):
                buckets.setdefault(stage, []).append((float(sample.labels["le"]), sample.value))
            elif sample.name.endswith("_sum"):
                sums[stage] = sample.value
    return {stage: (sorted(pairs), sums.get(stage, 0.0)) for stage, pairs in buckets.items()}


def stage_delta(before: StageHist, after: StageHist) -> StageHist:
    """What was observed between two scrapes (histograms only grow)."""
    out: StageHist = {}
    for stage, (pairs, total) in after.items():
        old_pairs, old_total = before.get(stage, ([], 0.0))
        old = dict(old_pairs)
        out[stage] = ([(bound, count - old.get(bound, 0.0)) for bound, count in pairs], total - old_total)
    return out


def stage_add(a: StageHist, b: StageHist) -> StageHist:
    out: StageHist = dict(a)
    for stage, (pairs, total) in b.items():
        if stage in out:
            old = dict(out[stage][0])
            out[stage] = ([(bound, count + old.get(bound, 0.0)) for bound, count in pairs], out[stage][1] + total)
        else:
            out[stage] = (pairs, total)
    return out


def stage_times(hist: StageHist) -> dict[str, dict[str, float]]:
    """Per stage: calls, mean and p50 (interpolated within its histogram bucket), in µs."""
    out: dict[str, dict[str, float]] = {}
    for stage, (pairs, total) in hist.items():
        count = pairs[-1][1] if pairs else 0.0
        if not count:
            continue
        half, lower, below = count / 2, 0.0, 0.0
        p50 = pairs[-1][0]
        for bound, cumulative in pairs:
            if cumulative >= half:
                width = (bound - lower) if bound != float("inf") else 0.0
                p50 = lower + width * ((half - below) / max(cumulative - below, 1.0))
                break
            lower, below = bound, cumulative
        out[stage] = {"calls": count, "mean_us": round(total / count * 1e6, 1), "p50_us": round(p50 * 1e6, 1)}
    return out


async def scrape_stages(url: str | None) -> StageHist:
    if url is None:
        return {}
    async with httpx2.AsyncClient(timeout=10) as client:
        return parse_stages((await client.get(url)).text)


def machine() -> dict[str, Any]:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "platform": platform.platform()}


# --------------------------------------------------------------------------- main


async def benchmark(direct: Target, gateway: Target, settings: Settings, meter: CpuMeter) -> dict[str, Any]:
    rounds: list[dict[str, dict[str, Run]]] = []
    stages: dict[str, StageHist] = {}
    for round_no in range(settings.rounds):
        rounds.append(await raw_round((direct, gateway), settings, round_no, meter, stages))
        c1 = {t: rounds[-1][t]["c1"].pct(0.5) for t in ("direct", "gateway")}
        c16 = {t: rounds[-1][t]["c16"].calls_per_s for t in ("direct", "gateway")}
        print(f"round {round_no + 1}/{settings.rounds}: c=1 p50 direct {c1['direct']:.3f} ms, gateway "
              f"{c1['gateway']:.3f} ms; c=16 direct {c16['direct']:.0f}/s, gateway {c16['gateway']:.0f}/s",
              flush=True)
    sdk = {}
    for target in (direct, gateway):
        sdk[target.label] = (await sdk_line(target, settings)).summary()
    median = {label: {key: median_summary([r[label][key] for r in rounds]) for key in ("c1", "c16")}
              for label in ("direct", "gateway")}
    added_p50 = median["gateway"]["c1"]["p50_ms"] - median["direct"]["c1"]["p50_ms"]
    added_p99 = median["gateway"]["c1"]["p99_ms"] - median["direct"]["c1"]["p99_ms"]
    ratio = median["gateway"]["c16"]["calls_per_s"] / median["direct"]["c16"]["calls_per_s"]
    ratios = {
        "added_p50_ms": round(added_p50, 4), "added_p50_pass": added_p50 <= TARGET_ADDED_P50_MS,
        "added_p99_ms": round(added_p99, 4),
        "throughput_ratio": round(ratio, 4), "throughput_pass": ratio >= TARGET_THROUGHPUT_RATIO,
        "sdk_added_p50_ms": round(sdk["gateway"]["p50_ms"] - sdk["direct"]["p50_ms"], 4),
        "rounds_c1_p50_direct": [round(r["direct"]["c1"].pct(0.5), 3) for r in rounds],
        "rounds_c1_p50_gateway": [round(r["gateway"]["c1"].pct(0.5), 3) for r in rounds],
        "rounds_c16_cps_direct": [round(r["direct"]["c16"].calls_per_s) for r in rounds],
        "rounds_c16_cps_gateway": [round(r["gateway"]["c16"].calls_per_s) for r in rounds],
        "rounds_throughput_ratio": [round(r["gateway"]["c16"].calls_per_s / r["direct"]["c16"].calls_per_s, 3)
                                    for r in rounds],
        "rounds_added_p50_ms": [round(r["gateway"]["c1"].pct(0.5) - r["direct"]["c1"].pct(0.5), 3) for r in rounds],
    }
    return {
        "settings": asdict(settings),
        "targets": {"added_p50_ms_max": TARGET_ADDED_P50_MS, "throughput_ratio_min": TARGET_THROUGHPUT_RATIO},
        "machine": machine(),
        "rounds": [{label: {key: run.summary() for key, run in r[label].items()} for label in r} for r in rounds],
        "median": median, "sdk": sdk, "ratios": ratios,
        "stages": {key: stage_times(hist) for key, hist in stages.items()},
    }


def run_async(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    try:
        import uvloop  # noqa: F401 - the load generator runs on the same loop as both servers
        return anyio.run(fn, *args, backend="asyncio", backend_options={"use_uvloop": True})
    except ImportError:
        return anyio.run(fn, *args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Gateway overhead benchmark (see BENCHMARKS.md).")
    parser.add_argument("--quick", action="store_true", help="short smoke run (1 round, few calls)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the figures as JSON to PATH")
    parser.add_argument("--rounds", type=int, help="rounds of alternating direct/gateway runs")
    parser.add_argument("--calls-c1", type=int, help="sequential calls per c=1 run")
    parser.add_argument("--calls-c16", type=int, help="calls per c=16 run")
    parser.add_argument("--gateway-log-level", choices=("debug", "info", "warning", "error"),
                        help="the gateway's log level (default info: one access line per call)")
    parser.add_argument("--upstream-keep-alive-s", type=int, default=120,
                        help="the echo upstream's idle keep-alive timeout (default 120; uvicorn's own default, 5, "
                        "makes the gateway relay fail calls now and then: see BENCHMARKS.md)")
    parser.add_argument("--gateway-auth", choices=("dev-token", "anonymous"), default="dev-token",
                        help="how the load generator authenticates to the gateway (default: a development-issuer "
                        "bearer token, verified on every call)")
    parser.add_argument("--no-content-filter", action="store_true",
                        help="run the gateway with the output filter off (content.enabled: false)")
    parser.add_argument("--caller-accept", choices=("sse", "json", "sse-progress"), default="sse",
                        help="what the calls accept: both media types (default, as the SDK client), JSON only, "
                        "or both with a progress token (a call that may stream; none of its answers does)")
    parser.add_argument("--rego-shadow", action="store_true",
                        help="a shadow version with Rego of its own is set (its cost per call; dev-token auth)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary deployment and logs")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    settings = Settings.quick() if args.quick else Settings.full()
    overrides = {k: v for k, v in {"rounds": args.rounds, "calls_c1": args.calls_c1, "calls_c16": args.calls_c16,
                                   "gateway_log_level": args.gateway_log_level}.items() if v is not None}
    settings = Settings(**{**asdict(settings), **overrides})
    CALLER_ACCEPT["mode"] = args.caller_accept

    workdir = Path(tempfile.mkdtemp(prefix="portcullis-bench-"))
    children: list[Child] = []
    try:
        upstream_port, gateway_port = free_port(), free_port()
        upstream_url = f"http://{HOST}:{upstream_port}/mcp"
        upstream = Child("echo-upstream", [sys.executable, str(BENCH_DIR / "echo_upstream.py"),
                                           "--port", str(upstream_port), "--keep-alive-s",
                                           str(args.upstream_keep_alive_s)], workdir)
        children.append(upstream)
        wait_until(upstream, lambda: bool(live_tools(upstream_url)), "echo upstream")
        tool = next(t for t in live_tools(upstream_url) if t["name"] == "echo")

        deployment = write_deployment(workdir / "deployment", upstream_url, tool, args.gateway_auth,
                                      content=not args.no_content_filter)
        pin(deployment)
        if args.rego_shadow:
            seed_rego_shadow(deployment, workdir / "state")
        admin_port = free_port() if gateway_has_policy() else None
        admin_args = ["--admin-port", str(admin_port)] if admin_port is not None else []
        gateway = Child("gateway", [sys.executable, "-m", "portcullis", "serve", "--config", str(deployment),
                                    "--port", str(gateway_port), "--log-level", settings.gateway_log_level,
                                    *admin_args], workdir)
        children.append(gateway)
        base = f"http://{HOST}:{gateway_port}"
        wait_until(gateway, lambda: httpx2.get(f"{base}/healthz", timeout=1).status_code == 200, "gateway")
        if args.rego_shadow:
            wait_until(gateway, lambda: "shadow version restored" in gateway.log_tail(10**7), "Rego shadow")
            print("Rego shadow version set (its own worker)", flush=True)
        if "HttpRelayConnector" not in gateway.log_tail(100_000):
            print("note: the gateway did not report the raw HTTP relay for 'echo'", flush=True)

        info = machine()
        print(f"machine: {info['cpus']} CPUs, {info['cpu_model']}, Python {info['python']}", flush=True)
        print(f"settings: {asdict(settings)}", flush=True)
        auth = args.gateway_auth if gateway_has_identity() else "none (this gateway has no identity section)"
        gateway_headers = ({"Authorization": f"Bearer {issue_token(deployment, gateway_port)}"}
                           if auth == "dev-token" else {})
        print(f"upstream keep-alive: {args.upstream_keep_alive_s} s; gateway authentication: {auth}; "
              f"calls accept: {args.caller_accept}", flush=True)
        meter = CpuMeter({"upstream": upstream.proc.pid, "gateway": gateway.proc.pid})
        metrics_url = f"http://{HOST}:{admin_port}/metrics" if admin_port is not None else None
        results = run_async(benchmark, Target("direct", upstream_url, "echo"),
                            Target("gateway", f"{base}/mcp", "echo.echo", gateway_headers, metrics_url),
                            settings, meter)
        results["upstream"] = {"keep_alive_s": args.upstream_keep_alive_s}
        results["gateway_auth"] = auth
        flaps = gateway.log_tail(10**9).count("service health check failed")
        results["gateway_health_check_failures"] = flaps
        if flaps:
            print(f"note: the gateway's health check of 'echo' failed {flaps} time(s) during the run", flush=True)
    except Exception as exc:  # a failed call inside a task group arrives as an ExceptionGroup
        leaves = exc.exceptions if isinstance(exc, BaseExceptionGroup) else [exc]
        for leaf in leaves:
            print(f"benchmark failed: {type(leaf).__name__}: {leaf}", file=sys.stderr, flush=True)
        for child in children:
            print(f"--- {child.name}: warnings and failed calls (first 10)", file=sys.stderr)
            print("\n".join(failure_lines(child)[:10]), file=sys.stderr, flush=True)
        return 2
    finally:
        for child in reversed(children):
            child.stop()
        if args.keep:
            print(f"kept {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print("\n".join(report(results)))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    missed = not (results["ratios"]["added_p50_pass"] and results["ratios"]["throughput_pass"])
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
