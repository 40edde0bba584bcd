"""Every kill-switch kind end to end, in one gateway start, with the official SDK client: the admin API
sets a switch (only a responder may), the next call is refused with -31050 and audited as a decision
naming the switch, ``tools/list`` hides a disabled tool, a disabled service's resources are refused too,
lifting restores the call; the CLI's change (another process) applies within the poll."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import orjson
import pytest
import yaml
from mcp import MCPError

from portcullis.kill.model import KINDS
from portcullis.kill.store import FILE_NAME, SqliteKillSwitchStore
from tests.e2e.harness import GatewayProcess, copy_demo

CONTAINED = -31050
CALLER = {"user": "alice", "agent": "billing-bot", "client": "web-app", "tenant": "acme", "source_app": "chat-ui",
          "roles": ["analyst", "employee"], "employment_type": "full_time"}
TARGETS = {"tool": "files.list_dir", "service": "files", "tenant": "acme", "agent": "billing-bot",
           "client": "web-app", "user": "alice", "source_app": "chat-ui"}
SECRET_REASON = "incident-4711: suspected exfiltration via list_dir"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = copy_demo(tmp_path_factory.mktemp("kill") / "deployment")
    config = yaml.safe_load((root / "gateway.yaml").read_text())
    config["admin"] = {**config.get("admin", {}), "responders": ["role:oncall"]}
    (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with GatewayProcess(root) as gw:
        yield gw


def _admin(gw: GatewayProcess, method: str, path: str, token: str | None, body: Any = None,
           content_type: str = "application/json") -> httpx2.Response:
    headers = {"content-type": content_type}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return httpx2.request(method, gw.admin_base + path, headers=headers, timeout=30,
                          content=None if body is None else orjson.dumps(body))


def _records(gw: GatewayProcess) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{gw.state_dir / 'audit.sqlite3'}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT kind, fields FROM audit_record ORDER BY idx").fetchall()
    finally:
        conn.close()
    return [{"kind": k, "fields": orjson.loads(f)} for k, f in rows]


async def _call(gw: GatewayProcess) -> Any:
    async with gw.client(token=gw.token(**CALLER)) as client:  # type: ignore[arg-type]
        return await client.call_tool("files.list_dir", {"path": "."})


async def _refused(gw: GatewayProcess) -> MCPError | None:
    """The call's error, or None when it succeeded."""
    async with gw.client(token=gw.token(**CALLER)) as client:  # type: ignore[arg-type]
        try:
            await client.call_tool("files.list_dir", {"path": "."})
        except MCPError as exc:
            return exc
    return None


def test_only_responders_reach_the_api(gateway: GatewayProcess) -> None:
    body = {"kind": "tool", "target": "files.list_dir", "reason": "x"}
    good = gateway.token(user="olivia", agent=None, roles=["oncall"])
    header, claims, signature = good.split(".")
    forged = ".".join([header, claims, signature[:-4] + ("AAAA" if not signature.endswith("AAAA") else "BBBB")])
    assert _admin(gateway, "POST", "/kill-switches", None, body).status_code == 401
    assert _admin(gateway, "POST", "/kill-switches", forged, body).status_code == 401
    assert _admin(gateway, "GET", "/kill-switches", forged).status_code == 401
    not_responder = gateway.token(**CALLER)
    assert _admin(gateway, "POST", "/kill-switches", not_responder, body).status_code == 403
    assert _admin(gateway, "GET", "/kill-switches", not_responder).status_code == 403
    # CSRF: a form post (no JSON content type) is refused before anything is read
    assert _admin(gateway, "POST", "/kill-switches", good, body, "text/plain").status_code == 415
    assert _admin(gateway, "POST", "/kill-switches", good, {**body, "kind": "planet"}).status_code == 400
    assert _admin(gateway, "POST", "/kill-switches", good, {**body, "actor": "someone-else"}).status_code == 400
    assert _admin(gateway, "POST", "/kill-switches", good, {**body, "reason": "x" * 5000}).status_code == 413
    assert _admin(gateway, "POST", "/kill-switches", good, {**body, "reason": "ok\nforged"}).status_code == 400
    assert _admin(gateway, "POST", "/kill-switches/ks_" + "0" * 24 + "/lift", good, {"reason": "x"}).status_code == 404
    listing = _admin(gateway, "GET", "/kill-switches", good)
    assert listing.status_code == 200 and listing.json()["active"] == []


async def test_every_kind_end_to_end(gateway: GatewayProcess) -> None:
    responder = gateway.token(user="olivia", agent=None, roles=["oncall"])
    baseline = await _call(gateway)
    assert not baseline.is_error
    async with gateway.client(token=gateway.token(**CALLER)) as client:  # type: ignore[arg-type]
        assert (await client.list_resources()).resources and (await client.list_prompts()).prompts
    for kind in KINDS:
        made = _admin(gateway, "POST", "/kill-switches", responder,
                      {"kind": kind, "target": TARGETS[kind], "reason": SECRET_REASON})
        assert made.status_code == 201, made.text
        switch_id = made.json()["id"]
        error = await _refused(gateway)  # effective on the very next call
        assert error is not None, kind
        assert (error.code, error.message) == (CONTAINED, "Contained by a kill switch"), kind
        assert error.data == {"switch_id": switch_id}
        assert SECRET_REASON not in str(error.message) + str(error.data)  # the reason stays with the operator
        async with gateway.client(token=gateway.token(**CALLER)) as client:  # type: ignore[arg-type]
            names = [t.name for t in (await client.list_tools()).tools]
            if kind == "tool":
                assert "files.list_dir" not in names and "files.read_file" in names
            elif kind == "service":
                assert not any(n.startswith("files.") for n in names) and "billing.get_invoice" in names
                with pytest.raises(MCPError) as read:
                    await client.read_resource("files+handbook://index")
                assert read.value.code == CONTAINED
                assert (await client.list_resources()).resources == []  # the demo's resources are all files'
                assert (await client.list_prompts()).prompts == []
            else:
                assert names == []  # a blocked caller (or tenant) sees no tools, resources or prompts
                assert (await client.list_resources()).resources == []
        lifted = _admin(gateway, "POST", f"/kill-switches/{switch_id}/lift", responder, {"reason": "contained"})
        assert lifted.status_code == 200 and lifted.json()["lifted_at"] is not None
        assert not (await _call(gateway)).is_error, kind  # works again at once
    records = _records(gateway)
    decisions = [r["fields"] for r in records if r["kind"] == "decision"
                 and r["fields"]["decision"]["reasons"] == ["kill_switch"]]
    assert len(decisions) == len(KINDS)
    assert all(d["decision"]["effect"] == "deny" and d["decision"]["rule_ids"][0].startswith("kill_switch/ks_")
               for d in decisions)
    changes = [r["fields"] for r in records if r["kind"] == "kill_switch"]
    assert [(c["event"], c["kind"]) for c in changes] == [(e, k) for k in KINDS for e in ("set", "lift")]
    assert all(c["actor"] == "dev:olivia" for c in changes)
    assert changes[0]["reason"] == SECRET_REASON
    ready = httpx2.get(gateway.admin_base + "/readyz", timeout=10).json()
    assert ready["kill_switches"] == "ok"


async def test_another_process_reaches_a_running_gateway_within_the_poll(gateway: GatewayProcess) -> None:
    """This test process writes the gateway's store file exactly as ``portcullis kill`` does (the command
    itself is tested in tests/unit/test_kill_cli.py): another process's change, picked up by the poll."""
    store = SqliteKillSwitchStore(gateway.state_dir / FILE_NAME)
    switch_id = store.set("agent", "Billing-Bot", "from the cli", "cli:oncall").id  # folded: blocks billing-bot
    deadline = time.monotonic() + 30  # generous: the poll is 0.5 s
    while (error := await _refused(gateway)) is None:
        assert time.monotonic() < deadline, "the CLI's switch never applied"
    assert error.code == CONTAINED
    store.lift(switch_id, "done", "cli:oncall")
    store.close()
    deadline = time.monotonic() + 30
    while await _refused(gateway) is not None:
        assert time.monotonic() < deadline, "the CLI's lift never applied"
    deadline = time.monotonic() + 30
    while not any(r["kind"] == "kill_switch" and r["fields"]["switch_id"] == switch_id
                  and r["fields"]["event"] == "lift" for r in _records(gateway)):
        assert time.monotonic() < deadline, "the CLI's change was never audited"
        time.sleep(0.1)
