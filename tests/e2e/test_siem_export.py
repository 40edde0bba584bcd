"""SIEM export end to end: a real gateway streams its audit records to a JSON lines file and syslog/UDP."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import orjson
import yaml
from typer.testing import CliRunner

from portcullis.audit.record import record_from_json, record_hash_ok
from portcullis.cli.main import app
from tests.e2e.harness import GatewayProcess, copy_demo


def test_audit_records_reach_the_jsonl_file_and_a_syslog_receiver(tmp_path: Path) -> None:
    """Each durable record is exported once to both sinks; the exported records still hash-verify."""
    import anyio

    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    root = copy_demo(tmp_path / "deployment")
    (root / "exports").mkdir()
    config = yaml.safe_load((root / "gateway.yaml").read_text())
    config["audit"] = {"siem": {"exporters": [
        {"type": "jsonl", "path": "exports/audit.jsonl", "fsync": False},
        {"type": "syslog", "protocol": "udp", "host": "127.0.0.1", "port": receiver.getsockname()[1]},
    ]}}
    (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    try:
        with GatewayProcess(root) as gateway:
            async def calls() -> None:
                async with gateway.client() as client:
                    await client.call_tool("billing.get_invoice", {"invoice_id": "INV-1001"})
                    await client.call_tool("billing.get_invoice", {"invoice_id": "INV-1002"})

            anyio.run(calls)
            # two calls: decision + outcome each, checkpoints in between; a spawn and a service_identity record
            # per stdio service before
            datagrams: list[bytes] = []
            while len([d for d in datagrams if b'"kind":"checkpoint"' not in d and b'"kind":"spawn"' not in d
                       and b'"kind":"service_identity"' not in d]) < 4:
                datagrams.append(receiver.recv(65535))
            path = root / "exports" / "audit.jsonl"
            for _ in range(50):
                if path.exists() and len(path.read_bytes().splitlines()) >= 10:
                    break
                time.sleep(0.1)
    finally:
        receiver.close()
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    exported = [record_from_json(line) for line in lines if line["kind"] != "checkpoint"]
    assert [r.kind for r in exported if r.kind not in ("spawn", "service_identity")] == [
        "decision", "outcome", "decision", "outcome"]
    assert [r.kind for r in exported].count("spawn") == 3  # the demo's three stdio services, each confined
    assert [r.kind for r in exported].count("service_identity") == 3  # and each one's session established
    assert all(record_hash_ok(r) for r in exported)
    # every record exactly once, in chain order: the writer exports each durable batch in sequence, so even the
    # records written concurrently (the services' spawn and identity records) reach the file as they are chained
    assert [r.index for r in exported] == list(range(10))
    # and each checkpoint line follows every record it covers (later records may precede it too)
    for position, line in enumerate(lines):
        if line["kind"] == "checkpoint":
            before = [r["index"] for r in lines[:position] if r["kind"] != "checkpoint"]
            assert before[:line["index"] + 1] == list(range(line["index"] + 1))
    # every checkpoint went out too, the last (clean stop) covering the last record; the store verifies against them
    checkpoints = [line for line in lines if line["kind"] == "checkpoint"]
    assert checkpoints and checkpoints[-1]["index"] == 9
    result = CliRunner().invoke(app, ["audit", "verify", "--state-dir", str(gateway.state_dir), "--public-key",
                                      str(gateway.state_dir / "audit-signing.pub.pem"), "--anchors", str(path)])
    assert result.exit_code == 0, result.output
    assert "anchors:" in result.output and "the latest covers records 0..9" in result.output
    for datagram in datagrams:
        assert datagram.startswith(b"<134>1 "), datagram[:16]  # local0.info, RFC 5424 version 1
        assert b"portcullis" in datagram and b"\xef\xbb\xbf{" in datagram  # BOM + JSON body (RFC 5424)
