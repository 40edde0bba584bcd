"""Hot policy reload under load: paced calls through a gateway while its policy flips every few seconds.

The gateway serves a copy of the demo deployment. Version A is the demo; version B takes the
billing-bot agent out of ``billing.get_invoice``'s allowed callers (a policy change) and removes the
``files.list_dir`` manifest (a tool removed; A adds it back), dropping the fixtures that expect the
old answers. ``CLIENTS`` keep-alive clients send 2026-07-28 ``tools/call`` requests, alternately to
both tools, at ``rate`` calls/s in total for ``seconds``; every ``every`` seconds version A or B is pushed through
``POST /policy/reload`` (what ``portcullis policy apply`` does). Reported: calls, failed calls (a
denial is an answer, not a failure), latency p50/p99, the push time, the time from a push's start
(and from its answer) until probe calls to both tools see the new effect, and how many decision
records name each version (and whether any names none or two).

    .venv/bin/python -m bench.policy_reload [rate] [seconds] [every]
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2
import yaml
from tests.e2e.harness import GatewayProcess, copy_demo

from portcullis.policy.policy_set import collect

CLIENTS = 8
TOOL = "billing.get_invoice"
ADDED = "files.list_dir"
ARGUMENTS = {TOOL: {"invoice_id": "INV-1001"}, ADDED: {"path": "."}}
GET_INVOICE = "tools/billing/get_invoice.yml"
DENIALS = ("Unknown tool", "Permission denied")


def _body(i: int, tool: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": i, "method": "tools/call",
            "params": {"name": tool, "arguments": ARGUMENTS[tool],
                       "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                 "io.modelcontextprotocol/clientCapabilities": {}}}}


async def _call(http: httpx2.AsyncClient, url: str, headers: dict[str, str], i: int, tool: str = TOOL) -> str:
    response = await http.post(url, json=_body(i, tool), headers={**headers, "Mcp-Name": tool})
    try:
        answer = response.json()  # a refusal is a JSON-RPC error, on a 4xx status
    except ValueError:
        return f"http {response.status_code}"
    if "error" in answer:
        return "denied" if answer["error"].get("message") in DENIALS else f"error {answer['error'].get('message')}"
    return "error result" if answer.get("result", {}).get("isError") else "allowed"


async def run(rate: float, seconds: float, every: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = copy_demo(Path(tmp) / "deployment")
        config = yaml.safe_load((root / "gateway.yaml").read_text())
        config["admin"] = {"operators": ["issuer:dev/user:ops"]}
        config.setdefault("limits", {})["max_connections_per_client"] = 64
        (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        a = collect(root)
        b = {k: v for k, v in a.items() if not k.startswith("policy/fixtures/")}
        b[GET_INVOICE] = a[GET_INVOICE].replace('"issuer:dev/agent:billing-bot", ', "")
        del b["tools/files/list_dir.yml"]
        with GatewayProcess(root) as gateway:
            headers = {"Authorization": f"Bearer {gateway.token()}", "Content-Type": "application/json",
                       "Accept": "application/json", "MCP-Protocol-Version": "2026-07-28",
                       "Mcp-Method": "tools/call", "Mcp-Name": TOOL}
            ops = {"Authorization": f"Bearer {gateway.token(user='ops', agent=None)}"}
            outcomes: dict[str, int] = {}
            latencies: list[float] = []
            pushes: list[float] = []
            effective: list[float] = []
            after_answer: list[float] = []
            engines: dict[str, str] = {}
            deadline = time.monotonic() + seconds
            async with httpx2.AsyncClient(timeout=30, limits=httpx2.Limits(max_connections=CLIENTS + 2)) as http:
                for name, files in (("a", a), ("b", b), ("a", a)):
                    pushed = await http.post(gateway.admin_base + "/policy/reload", headers=ops, timeout=120,
                                             json={"files": files, "message": f"warm {name}"})
                    engines[name] = pushed.json()["engine_version"]

                async def client(offset: int) -> None:
                    interval = CLIENTS / rate
                    at = time.monotonic() + offset * interval / CLIENTS
                    i = 0
                    while at < deadline:
                        await asyncio.sleep(max(0.0, at - time.monotonic()))
                        started = time.perf_counter()
                        try:
                            outcome = await _call(http, gateway.url, headers, i, TOOL if i % 2 else ADDED)
                        except httpx2.HTTPError as exc:
                            outcome = type(exc).__name__
                        latencies.append(time.perf_counter() - started)
                        outcomes[outcome] = outcomes.get(outcome, 0) + 1
                        at += interval
                        i += 1

                async def flipper() -> None:
                    turn = 0
                    while time.monotonic() + every < deadline:
                        await asyncio.sleep(every)
                        name = "b" if turn % 2 == 0 else "a"
                        started = time.perf_counter()
                        pushed = await http.post(gateway.admin_base + "/policy/reload", headers=ops, timeout=120,
                                                 json={"files": b if name == "b" else a, "message": f"flip {turn}"})
                        answered = time.perf_counter()
                        pushes.append(answered - started)
                        assert pushed.status_code == 200, pushed.text
                        want = "denied" if name == "b" else "allowed"
                        give_up = time.monotonic() + 10
                        while (seen := await _call(http, gateway.url, headers, -1)) != want or (
                                await _call(http, gateway.url, headers, -2, ADDED)) != want:
                            if time.monotonic() > give_up:
                                raise RuntimeError(f"push {turn} not effective within 10 s: {seen}")
                            await asyncio.sleep(0.01)
                        effective.append(time.perf_counter() - started)
                        after_answer.append(time.perf_counter() - answered)
                        turn += 1

                await asyncio.gather(flipper(), *(client(k) for k in range(CLIENTS)))
            with sqlite3.connect(gateway.state_dir / "audit.sqlite3") as db:
                rows = db.execute("SELECT fields FROM audit_record WHERE kind = 'decision'").fetchall()
    named: dict[str, int] = {}
    for (fields,) in rows:
        found = set(re.findall(r'"policy_version": ?"(pv-[^"]+)"', fields))
        key = next(iter(found)) if len(found) == 1 else f"{len(found)} versions"
        named[key] = named.get(key, 0) + 1
    latencies.sort()
    calls = len(latencies)
    return {"rate": rate, "seconds": seconds, "reload_every_s": every, "calls": calls,
            "achieved_rate": round(calls / seconds, 1),
            "failed": sum(n for k, n in outcomes.items() if k not in ("allowed", "denied")), "outcomes": outcomes,
            "p50_ms": round(1000 * latencies[calls // 2], 1), "p99_ms": round(1000 * latencies[int(calls * 0.99)], 1),
            "reloads": len(pushes), "push_p50_ms": round(1000 * statistics.median(pushes), 1),
            "push_max_ms": round(1000 * max(pushes), 1), "effective_max_ms": round(1000 * max(effective), 1),
            "effective_p50_ms": round(1000 * statistics.median(effective), 1),
            "after_answer_max_ms": round(1000 * max(after_answer), 1),
            "decisions_by_version": {("A" if k == engines["a"] else "B" if k == engines["b"] else k): n
                                     for k, n in named.items()}}


def main() -> None:
    args = [float(x) for x in sys.argv[1:4]]
    rate, seconds, every = (args + [200.0, 60.0, 2.0][len(args):])[:3]
    print(json.dumps(asyncio.run(run(rate, seconds, every)), indent=2))


if __name__ == "__main__":
    main()
