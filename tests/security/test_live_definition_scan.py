"""The tool-poisoning scanner on every definition change in the running gateway.

A real stdio service (both protocol eras) changes its own definition while the gateway runs. A poisoned
change: the tool leaves tools/list, calls answer "Unknown tool", and the scanner's findings are on the
admin API (``GET /pins``), in ``pin --check --gateway`` and in the metrics — escaped everywhere. A benign
change with a new hash is quarantined as before, with no findings.

Each row changes a fresh service of its own; the rows of one era share one gateway in front of them
(tests/security/test_rug_pull.py, ``Fleet``), so every view is read for the row's own service.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from tests.e2e.harness import run_cli_in_process
from tests.security.test_rug_pull import UNKNOWN, Fleets, Rig, era_groups

ADMIN = {"operators": ["user:ops-alice"]}
ERA_GROUPS = era_groups("security/test_live_definition_scan.py")


@pytest.fixture(scope="module")
def fleets(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleets]:
    with Fleets(request.session, tmp_path_factory, request.path) as started:
        yield started


@pytest.fixture
def scanned(fleets: Fleets, era: str) -> Rig:
    """A fresh service of ``era`` behind the era's gateway, whose admin API ops-alice may read."""
    return fleets.take(era, "scanned", ("scanned",), admin=ADMIN)


def _change(rig: Rig, kind: str) -> tuple[str, str, set[str]]:
    async def run() -> tuple[str, str, set[str]]:
        async with rig.gateway.client() as client:
            assert await rig.outcome(client, "echo") == "hi"
            assert await rig.outcome(client, "mutate", {"kind": kind}) == f"mutated {kind}"
            echo, other = await rig.outcome(client, "echo"), await rig.outcome(client, "other")
            names = {t.name for t in (await client.list_tools()).tools}
            return echo, other, names

    return asyncio.run(run())


def _echo_row(rig: Rig) -> tuple[dict[str, Any], bytes]:
    response = httpx2.get(f"{rig.gateway.admin_base}/pins",
                          headers={"Authorization": f"Bearer {rig.gateway.token(user='ops-alice')}"}, timeout=30)
    assert response.status_code == 200
    (row,) = [row for row in response.json()["tools"] if row["tool"] == f"{rig.service}.echo"]
    return row, response.content


def _check(rig: Rig) -> Any:
    """``pin --check --gateway`` for the row's own service."""
    return run_cli_in_process("pin", "--check", "--gateway", rig.gateway.admin_base, "--service", rig.service,
                          "--token", rig.gateway.token(user="ops-alice"))


def _findings_total(rig: Rig, rule: str) -> float:
    """``portcullis_definition_findings_total`` for ``rule`` (0 before the first finding): the gateway's, all
    its services together, so a row compares it before and after its own change."""
    metrics = httpx2.get(f"{rig.gateway.admin_base}/metrics", timeout=30).text
    found = re.search(r'^portcullis_definition_findings_total\{rule="' + re.escape(rule) + r'"\} (\S+)$', metrics,
                      re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize("era", ERA_GROUPS)
def test_a_poisoned_change_is_withdrawn_and_its_findings_are_on_the_admin_api(scanned: Rig, era: str) -> None:
    before = _findings_total(scanned, "poisoning.secret_file")
    echo, other, names = _change(scanned, "description")
    row, _ = _echo_row(scanned)
    check = _check(scanned)
    after = _findings_total(scanned, "poisoning.secret_file")
    assert (echo, other) == (UNKNOWN, "other")
    assert f"{scanned.service}.echo" not in names and f"{scanned.service}.other" in names
    assert row["state"] == "quarantined"
    assert "poisoning.secret_file" in {f["rule"] for f in row["findings"]}
    assert check.returncode == 1 and "poisoning.secret_file" in check.stderr, check.stdout + check.stderr
    assert after > before


@pytest.mark.parametrize("era", ERA_GROUPS[:1])
def test_hidden_characters_in_a_changed_definition_are_escaped_on_every_view(scanned: Rig, era: str) -> None:
    """Bidi override and tag characters: shown as \\u{XXXX} (the tag text decoded), never raw, in the admin
    API's body, the CLI's output and the gateway's log."""
    echo, _, names = _change(scanned, "hidden")
    row, body = _echo_row(scanned)
    check = _check(scanned)
    mark = f'"service":"{scanned.service}"'

    def ours(log: str) -> list[str]:  # the log lines about this row's tool with the scanner's finding
        return [line for line in log.splitlines() if mark in line and "poisoning.invisible_unicode" in line]

    deadline = time.monotonic() + 30  # the gateway's stdout reaches its log file in blocks
    while not ours(scanned.gateway.log()) and time.monotonic() < deadline:
        time.sleep(0.2)
    log = scanned.gateway.log()
    assert any("tool definition has scanner findings" in line for line in ours(log)), ours(log)
    assert echo == UNKNOWN and f"{scanned.service}.echo" not in names
    rules = {f["rule"] for f in row["findings"]}
    assert "poisoning.invisible_unicode" in rules, row
    shown = check.stdout + check.stderr + body.decode("utf-8") + log
    assert "\u202e" not in shown and not any(0xE0000 <= ord(ch) <= 0xE007F for ch in shown)
    assert "202E" in body.decode() and "202E" in check.stderr


@pytest.mark.parametrize("era", ERA_GROUPS)
def test_a_benign_change_is_still_quarantined_with_no_findings(scanned: Rig, era: str) -> None:
    echo, other, names = _change(scanned, "schema")
    row, _ = _echo_row(scanned)
    assert (echo, other) == (UNKNOWN, "other") and f"{scanned.service}.echo" not in names
    assert row["state"] == "quarantined" and row["findings"] == []
