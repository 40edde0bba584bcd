"""The checkpoint witness end to end: a real gateway process POSTs every checkpoint to a real
``portcullis audit witness`` process; ``audit verify --anchors <witness URL>`` passes on the
untouched store and fails, naming the truncation, once the store's tail is cut; the witness
refuses the attacker's re-signed, shorter head (409)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx2
import yaml
from typer.testing import CliRunner

from portcullis.audit.keys import PUBLIC_KEY_FILE, AuditKeys
from portcullis.audit.note import sign_note
from portcullis.audit.record import Checkpoint
from portcullis.cli.main import app
from tests.e2e.harness import GatewayProcess, copy_demo, free_port, stop_child
from tests.security.test_audit_tail import rewrite, rows

runner = CliRunner()


class WitnessProcess:
    """``portcullis audit witness`` as a child process, ready when /checkpoints answers 200."""

    def __init__(self, key: Path, store: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._log = store.parent / f"witness-{self.port}.log"
        self._out = open(self._log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "portcullis", "audit", "witness", "--listen", f"127.0.0.1:{self.port}",
             "--key", str(key), "--store", str(store)], stdout=self._out, stderr=subprocess.STDOUT, env=os.environ)

    def log(self) -> str:
        return self._log.read_text(errors="replace")

    def __enter__(self) -> WitnessProcess:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"witness exited early:\n{self.log()}")
            try:
                if httpx2.get(f"{self.base}/checkpoints", timeout=1).status_code == 200:
                    return self
            except httpx2.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"witness not ready:\n{self.log()}")

    def stop(self) -> None:
        stop_child(self.proc)
        self._out.close()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def verify(state: Path, anchors: str) -> object:
    result = runner.invoke(app, ["audit", "verify", "--store", str(state / "audit.sqlite3"), "--public-key",
                                 str(state / PUBLIC_KEY_FILE), "--anchors", anchors, "--allow-insecure-http"],
                           env={"COLUMNS": "400"})
    assert "Traceback" not in result.output
    return result


def test_the_witness_keeps_every_checkpoint_and_catches_a_truncated_tail(tmp_path: Path) -> None:
    state = tmp_path / "state"
    AuditKeys.load_or_create(state)  # the key exists before the gateway starts: the witness is given its public half
    with WitnessProcess(state / PUBLIC_KEY_FILE, tmp_path / "witness") as witness:
        root = copy_demo(tmp_path / "deployment")
        config = yaml.safe_load((root / "gateway.yaml").read_text())
        config["audit"] = {"witness": {"url": f"{witness.base}/add-checkpoint", "allow_insecure_http": True,
                                       "retry_initial_s": 0.1, "retry_max_s": 1.0}}
        (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        with GatewayProcess(root, state_dir=state) as gateway:
            async def calls() -> None:
                async with gateway.client() as client:
                    for n in range(3):
                        await client.call_tool("billing.get_invoice", {"invoice_id": f"INV-100{n + 1}"})

            anyio.run(calls)
            deadline = time.monotonic() + 30  # a checkpoint at most 1 s after the last record, then its POST
            while "portcullis_export_sent_total{exporter=\"audit.witness\"}" not in (
                    metrics := httpx2.get(f"{gateway.admin_base}/metrics", timeout=5).text):
                assert time.monotonic() < deadline, metrics[-2000:]
                time.sleep(0.2)
        records = len(rows(state))  # the clean stop signed (and sent) a checkpoint of the last record
        notes = httpx2.get(f"{witness.base}/checkpoints", timeout=5).text
        sizes = [int(line) for line in notes.splitlines() if line.isdigit()]
        assert sizes and sizes == sorted(sizes) and sizes[-1] == records, (sizes, records, witness.log())
        anchors = f"{witness.base}/checkpoints"
        result = verify(state, anchors)
        assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
        assert f"the latest covers records 0..{records - 1}" in result.output  # type: ignore[attr-defined]

        # the tail cut and the new head re-signed with the key beside the store: only the witness knows better
        rewrite(state, records - 2, [], resign=True)
        result = verify(state, anchors)
        assert result.exit_code == 1 and "tail truncated: the store" in result.output  # type: ignore[attr-defined]
        head = rows(state)[-1]
        forged = sign_note(AuditKeys.load_or_create(state).signing_key, Checkpoint(head[0], head[6], 0.0, "", ""))
        refused = httpx2.post(f"{witness.base}/add-checkpoint", content=forged.encode(), timeout=5)
        assert refused.status_code == 409 and refused.text.startswith("rollback:"), refused.text
        assert httpx2.get(anchors, timeout=5).text == notes  # nothing the attacker sent was kept
    assert "Traceback" not in witness.log()
