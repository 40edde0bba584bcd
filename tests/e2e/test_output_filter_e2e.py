"""Canaries planted by hostile upstreams never reach the client, the audit store, the SIEM file or the log.

A real gateway process in front of two hostile services (``tests/security/canary_service.py``): one
over stdio, one over HTTP (a 2026-07-28 upstream). Each call asks the service to plant one canary of
one kind (cloud keys, VCS and chat tokens, payment keys, JWTs, private-key blocks, connection
strings, card numbers, SSNs, e-mails, phones, IBANs) in one channel (text, ``structuredContent``
value and key, embedded resource text and textual blob, an ``isError`` result, a content item's
``_meta`` and annotations), plain, base64, URL-encoded or hex, or split across two text blocks.
Callers of both protocol eras (a 2025-11-25 session and 2026-07-28) get the filtered result with
the policy's marker and never the value; the audit store, the JSONL SIEM export and the gateway log
hold none of them either.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.e2e.audit_load import STORE_FILE
from tests.e2e.harness import (
    REPO,
    GatewayProcess,
    cli_in_process,
    free_port,
    manifest_from_live,
    stop_child,
    wait_port,
    write_deployment,
)
from tests.security.canaries import CANARIES, CHANNELS, ENCODINGS, SPLITS, leaked
from tests.security.hostile_http import ECHO_TOOL

pytestmark = pytest.mark.timeout(900)
SPECS = [f"{channel}:{encoding}:{kind}" for kind in CANARIES for channel in CHANNELS for encoding in ENCODINGS
         if channel != "structured_key" or encoding == "plain"] + [
    f"{split}:plain:{kind}" for kind in CANARIES for split in SPLITS]


def build(root: Path, http_port: int) -> Path:
    gateway = {
        "version": 1,
        "identity": {"allow_insecure_dev_issuer": True},
        "audit": {"siem": {"exporters": [{"type": "jsonl", "path": "exports/audit.jsonl", "fsync": False}]}},
        "services": {
            "canary": {"transport": "stdio", "command": sys.executable,
                       "args": ["-m", "tests.security.canary_service", "stdio"], "cwd": str(REPO), "timeout_s": 20},
            "canaryh": {"transport": "http", "url": f"http://127.0.0.1:{http_port}/mcp", "timeout_s": 20},
        },
    }
    write_deployment(root, gateway, [manifest_from_live("canary", ECHO_TOOL),
                                     manifest_from_live("canaryh", ECHO_TOOL)])
    (root / "exports").mkdir()
    code, output = cli_in_process("pin", str(root))
    assert code == 0, output
    return root


def _seen(result: Any) -> str:
    """What the client received, with textual blobs decoded (a canary must not hide there either)."""
    dumped = result.model_dump(by_alias=True, mode="json")
    text = json.dumps(dumped)
    for item in dumped.get("content") or []:
        blob = (item.get("resource") or {}).get("blob")
        if blob:
            text += base64.b64decode(blob).decode("utf-8", "replace")
    return text


def test_no_canary_reaches_the_client_the_audit_store_the_siem_file_or_the_log(tmp_path: Path) -> None:
    http_port = free_port()
    service = subprocess.Popen([sys.executable, "-m", "tests.security.canary_service", "http", "--port",
                                str(http_port)], cwd=REPO)
    try:
        wait_port(http_port)
        root = build(tmp_path / "deployment", http_port)
        failures: list[str] = []
        markers = 0

        async def calls(gateway: GatewayProcess) -> None:
            nonlocal markers
            for mode in ("legacy", "2026-07-28"):
                async with gateway.client(mode=mode) as client:
                    for tool in ("canary.echo", "canaryh.echo"):
                        for spec in SPECS:
                            result = await client.call_tool(tool, {"who": spec})
                            seen = _seen(result)
                            if leaked(seen):
                                failures.append(f"{mode} {tool} {spec}: {leaked(seen)}")
                            # the SDK's client model has no place for unknown annotation fields
                            markers += "[REDACTED:" in seen or spec.startswith("annotations:")

        with GatewayProcess(root) as gateway:
            anyio.run(calls, gateway)
            log = gateway.log()
    finally:
        stop_child(service)
    assert failures == []
    assert markers == 2 * 2 * len(SPECS)  # every answer carries the marker in place of its canary
    store = b"".join(p.read_bytes() for p in gateway.state_dir.glob(STORE_FILE + "*"))
    siem = (root / "exports" / "audit.jsonl").read_bytes()
    assert b'"content"' in siem and b'"sensitive":true' in siem  # the outcome records carry the report
    for name, blob in (("audit store", store.decode("latin-1")), ("SIEM file", siem.decode()), ("log", log)):
        assert leaked(blob) == [], name
