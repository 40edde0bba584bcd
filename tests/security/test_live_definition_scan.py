"""The tool-poisoning scanner on every definition change in the running gateway.

A real stdio service (both protocol eras) changes its own definition while the gateway runs. A poisoned
change: the tool leaves tools/list, calls answer "Unknown tool", and the scanner's findings are on the
admin API (``GET /pins``), in ``pin --check --gateway`` and in the metrics — escaped everywhere. A benign
change with a new hash is quarantined as before, with no findings.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml

from tests.e2e.harness import GatewayProcess, run_cli
from tests.security.test_rug_pull import ERAS, UNKNOWN, deployment, outcome


def _gateway(tmp_path: Path, era: str) -> GatewayProcess:
    root = deployment(tmp_path / "deployment", ERAS[era], tmp_path / "rug.log")
    config = yaml.safe_load((root / "gateway.yaml").read_text())
    config["admin"] = {"operators": ["user:ops-alice"]}
    (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return GatewayProcess(root)


def _change(gateway: GatewayProcess, kind: str) -> tuple[str, str, set[str]]:
    async def run() -> tuple[str, str, set[str]]:
        async with gateway.client() as client:
            assert await outcome(client, "echo") == "hi"
            assert await outcome(client, "mutate", {"kind": kind}) == f"mutated {kind}"
            echo, other = await outcome(client, "echo"), await outcome(client, "other")
            names = {t.name for t in (await client.list_tools()).tools}
            return echo, other, names

    return asyncio.run(run())


def _echo_row(gateway: GatewayProcess) -> tuple[dict[str, Any], bytes]:
    response = httpx2.get(f"{gateway.admin_base}/pins",
                          headers={"Authorization": f"Bearer {gateway.token(user='ops-alice')}"}, timeout=30)
    assert response.status_code == 200
    (row,) = [row for row in response.json()["tools"] if row["tool"] == "rug.echo"]
    return row, response.content


@pytest.mark.parametrize("era", list(ERAS))
def test_a_poisoned_change_is_withdrawn_and_its_findings_are_on_the_admin_api(tmp_path: Path, era: str) -> None:
    with _gateway(tmp_path, era) as gateway:
        echo, other, names = _change(gateway, "description")
        row, _ = _echo_row(gateway)
        check = run_cli("pin", "--check", "--gateway", gateway.admin_base, "--token", gateway.token(user="ops-alice"))
        metrics = httpx2.get(f"{gateway.admin_base}/metrics", timeout=30).text
    assert (echo, other) == (UNKNOWN, "other") and "rug.echo" not in names and "rug.other" in names
    assert row["state"] == "quarantined"
    assert "poisoning.secret_file" in {f["rule"] for f in row["findings"]}
    assert check.returncode == 1 and "poisoning.secret_file" in check.stderr, check.stdout + check.stderr
    assert 'portcullis_definition_findings_total{rule="poisoning.secret_file"}' in metrics


def test_hidden_characters_in_a_changed_definition_are_escaped_on_every_view(tmp_path: Path) -> None:
    """Bidi override and tag characters: shown as \\u{XXXX} (the tag text decoded), never raw, in the admin
    API's body, the CLI's output and the gateway's log."""
    with _gateway(tmp_path, "2025 push") as gateway:
        echo, _, names = _change(gateway, "hidden")
        row, body = _echo_row(gateway)
        check = run_cli("pin", "--check", "--gateway", gateway.admin_base, "--token", gateway.token(user="ops-alice"))
        deadline = time.monotonic() + 30  # the gateway's stdout reaches its log file in blocks
        while "poisoning.invisible_unicode" not in gateway.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        log = gateway.log()
    assert "tool definition has scanner findings" in log and "poisoning.invisible_unicode" in log
    assert echo == UNKNOWN and "rug.echo" not in names
    rules = {f["rule"] for f in row["findings"]}
    assert "poisoning.invisible_unicode" in rules, row
    shown = check.stdout + check.stderr + body.decode("utf-8") + log
    assert "\u202e" not in shown and not any(0xE0000 <= ord(ch) <= 0xE007F for ch in shown)
    assert "202E" in body.decode() and "202E" in check.stderr


@pytest.mark.parametrize("era", list(ERAS))
def test_a_benign_change_is_still_quarantined_with_no_findings(tmp_path: Path, era: str) -> None:
    with _gateway(tmp_path, era) as gateway:
        echo, other, names = _change(gateway, "schema")
        row, _ = _echo_row(gateway)
    assert (echo, other) == (UNKNOWN, "other") and "rug.echo" not in names
    assert row["state"] == "quarantined" and row["findings"] == []
