"""Toxic flow and the ``logs`` sink through a real gateway process, the real output filter and real
stdio services (tests/e2e/flow_service.py), over both protocol eras.

Toxic flow (docs/content-security.md, "Toxic flow"): a result that delivered a secret in clear (an
``allow`` rule let a JWT through, so the filter's report says ``exposed``) taints the session and its
next egress call is denied; a result with an injection hit — plain, split across two text blocks, in
``structuredContent``, base64-encoded — taints it too and the egress call is held for approval. The same
secret redacted (not exposed), another session (``sid``) and another user stay clean.

Logs: a service serving a Confidential tool (no ``logs`` sink by default) writes a canary argument to
its stderr; the gateway's log holds only a value-free record of that line. The same service
configured Internal has the line relayed (escaped, redacted) as before.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from mcp import MCPError

from tests.e2e import flow_service
from tests.e2e.harness import REPO, GatewayProcess, manifest_from_live, run_cli, write_deployment

TOOLS = {t["name"]: {**t} for t in flow_service.TOOLS}
SERVICES = ("flow", "redacting", "vault", "open")
ALLOW_JWT = {"rules": [{"id": "tests.session-token", "kinds": ["jwt"], "action": "allow"}]}
MODES = ["legacy", "2026-07-28"]
EGRESS_DENIED, HELD = -31020, -31010


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("flow") / "deployment"
    gateway = {"version": 1, "identity": {"allow_insecure_dev_issuer": True},
               "services": {name: {"transport": "stdio", "command": sys.executable,
                                   "args": ["-m", "tests.e2e.flow_service"], "cwd": str(REPO)} for name in SERVICES},
               "governance": {"toxic_flow": {"enabled": True, "on_sensitive": "deny",
                                             "on_injection": "require_approval"}}}
    manifests = [
        manifest_from_live("flow", TOOLS["read"], content=ALLOW_JWT),  # the secret reaches the caller in clear
        manifest_from_live("flow", TOOLS["send"], egress=True),
        manifest_from_live("redacting", TOOLS["read"]),  # the default: a secret is redacted
        manifest_from_live("redacting", TOOLS["send"], egress=True),
        manifest_from_live("vault", TOOLS["note"], classification={"input": "Confidential", "output": "Confidential"}),
        manifest_from_live("open", TOOLS["note"]),  # Internal: its values may reach logs
    ]
    write_deployment(root, gateway, manifests)
    done = run_cli("pin", str(root))
    assert done.returncode == 0, done.stdout + done.stderr
    with GatewayProcess(root) as process:
        yield process


def _session(gateway: GatewayProcess, *, user: str = "alice", sid: str | None = None) -> str:
    """A token of its own session (a fresh ``sid`` unless given): the toxic-flow state is per session."""
    return gateway.token(user=user, sid=sid or uuid.uuid4().hex)


async def _send(gateway: GatewayProcess, token: str, mode: str, service: str = "flow") -> int | None:
    """Call the egress tool; None when it ran, else the error code."""
    async with gateway.client(mode=mode, token=token) as client:
        try:
            result = await client.call_tool(f"{service}.send", {"to": "partner@example.com", "body": "hello"})
        except MCPError as exc:
            return exc.code
    assert not result.is_error, result
    return None


async def _read(gateway: GatewayProcess, token: str, mode: str, kind: str, service: str = "flow") -> str:
    async with gateway.client(mode=mode, token=token) as client:
        result = await client.call_tool(f"{service}.read", {"kind": kind})
    return json.dumps(result.model_dump(mode="json", by_alias=True))


@pytest.mark.parametrize("mode", MODES)
async def test_a_secret_delivered_in_clear_taints_the_session_and_its_egress_call_is_denied(
        gateway: GatewayProcess, mode: str) -> None:
    """An allow rule lets the JWT through (exposed): send is denied in that session, on a new
    connection too; another sid and another user are not tainted."""
    token, sid = _session(gateway), None
    assert await _send(gateway, token, mode) is None  # clean before
    answer = await _read(gateway, token, mode, "secret")
    assert flow_service.JWT in answer  # reached the caller in clear
    async with gateway.client(mode=mode, token=token) as client:  # a new connection is the same session
        with pytest.raises(MCPError) as caught:
            await client.call_tool("flow.send", {"to": "partner@example.com", "body": "exfil"})
    assert caught.value.code == EGRESS_DENIED
    assert caught.value.error.data["rule_id"] == "content.toxic_flow"
    assert await _send(gateway, token, mode, "redacting") == EGRESS_DENIED  # every egress tool of the session
    assert await _send(gateway, _session(gateway), mode) is None  # another session of the same user
    assert await _send(gateway, _session(gateway, user="bob", sid=sid), mode) is None  # another user


@pytest.mark.parametrize("mode", MODES)
async def test_a_redacted_secret_does_not_taint(gateway: GatewayProcess, mode: str) -> None:
    """The same JWT under the default rule is redacted: it never reached the model, no taint."""
    token = _session(gateway)
    answer = await _read(gateway, token, mode, "secret", service="redacting")
    assert flow_service.JWT not in answer and "[REDACTED:jwt" in answer
    assert await _send(gateway, token, mode, "redacting") is None
    assert await _send(gateway, token, mode) is None


INJECTED = ["injection", "split-blocks", "structured", "base64"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", INJECTED)
async def test_an_injection_hit_holds_the_sessions_egress_call_for_approval(gateway: GatewayProcess,
                                                                            kind: str, mode: str) -> None:
    """Each way of carrying the phrase is caught by the real filter; the egress call is held (-31010)
    and never forwarded; a clean result in another session leaves its egress call alone."""
    token = _session(gateway)
    await _read(gateway, token, mode, kind)
    assert await _send(gateway, token, mode) == HELD
    clean = _session(gateway)
    await _read(gateway, clean, mode, "clean")
    assert await _send(gateway, clean, mode) is None


def _log_records(gateway: GatewayProcess) -> list[dict[str, Any]]:
    records = []
    for line in gateway.log().splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            records.append(value)
    return records


def _stderr_records(gateway: GatewayProcess, service: str, count: int) -> list[dict[str, Any]]:
    """Wait (bounded, not timed) until ``count`` stderr records of ``service`` are in the log."""
    for _ in range(300):
        found = [r for r in _log_records(gateway) if r.get("service") == service
                 and r.get("message", r.get("event")) == "stdio service stderr"]
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no stderr record of {service}: {gateway.log()[-2000:]}")


CANARIES = [("plain", "CANARY-{n}"), ("secret-looking", "password=CANARY-{n}"),
            ("escape", "CANARY-{n}\x1b[2J"), ("json", '{{"level":"INFO","x":"CANARY-{n}"}}')]


@pytest.mark.parametrize(("name", "template"), CANARIES, ids=[row[0] for row in CANARIES])
async def test_values_of_a_class_without_the_logs_sink_never_reach_the_log(gateway: GatewayProcess,
                                                                           name: str, template: str) -> None:
    """The Confidential service echoes the canary argument to stderr and in its result: the log has a
    value-free record of the line and no canary anywhere; the caller gets the result."""
    canary = template.format(n=uuid.uuid4().hex)
    before = len(_stderr_records(gateway, "vault", 0))
    async with gateway.client(token=_session(gateway)) as client:
        result = await client.call_tool("vault.note", {"text": canary})
    assert not result.is_error
    records = _stderr_records(gateway, "vault", before + 1)
    assert records[-1]["values"] == "withheld" and "line" not in records[-1] and records[-1]["line_hmac"]
    marker = canary.split("CANARY-")[1][:32]
    assert marker not in gateway.log()


async def test_values_of_a_class_with_the_logs_sink_are_relayed(gateway: GatewayProcess) -> None:
    """The control: the Internal service's stderr line is relayed with its text, so the test above
    would see a canary that reached the log."""
    canary = f"CANARY-{uuid.uuid4().hex}"
    before = len(_stderr_records(gateway, "open", 0))
    async with gateway.client(token=_session(gateway)) as client:
        result = await client.call_tool("open.note", {"text": canary})
    assert not result.is_error
    records = _stderr_records(gateway, "open", before + 1)
    assert canary in records[-1]["line"] and "values" not in records[-1]
