"""`portcullis incident report` through the real CLI over a real, checkpointed SQLite audit store."""

from __future__ import annotations

import json
import re
import shlex
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from portcullis.audit.keys import PUBLIC_KEY_FILE, AuditKeys
from portcullis.cli.main import app
from tests.unit.test_audit_query import T0, build_store

runner = CliRunner()
SINCE = str(T0)


@pytest.fixture
async def state(tmp_path: Path) -> Path:
    """A state directory as the gateway leaves it: audit keys and the checkpointed scenario store."""
    root = tmp_path / "state"
    keys = AuditKeys.load_or_create(root)
    await build_store(root / "audit.sqlite3", keys.signing_key)
    return root


def incident(state: Path, *args: str) -> Any:
    result = runner.invoke(app, ["incident", "report", "--store", str(state / "audit.sqlite3"),
                                 "--public-key", str(state / PUBLIC_KEY_FILE), *args], env={"COLUMNS": "200"})
    assert "Traceback" not in result.output
    return result


def sql(state: Path, statement: str, *params: object) -> None:
    conn = sqlite3.connect(state / "audit.sqlite3", isolation_level=None)
    conn.execute(statement, params)
    conn.close()


def test_the_report_states_the_range_read_and_that_it_verifies(state: Path) -> None:
    """Markdown by default: verified, records 0 to 10, the hashes of both ends, exit 0."""
    result = incident(state, "--since", SINCE)
    assert result.exit_code == 0, result.output
    assert "**verification: verified**" in result.output
    assert "range read: records 0 to 10" in result.output
    assert "signed checkpoints in the range (segment ends): 0, 4, 8, 10" in result.output


def test_json_format_with_filters_is_plain_json(state: Path) -> None:
    """--format json parses; --agent and --tenant combine with AND."""
    result = incident(state, "--since", SINCE, "--agent", "support-bot", "--tenant", "globex", "--format", "json")
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.output)
    assert [e["request_id"] for e in parsed["timeline"]] == ["req-3", "req-5", "req-7"]
    assert parsed["blast_radius"]["tenants"] == ["globex"] and parsed["chain"]["status"] == "verified"
    assert parsed["chain"]["first_index"] == 0 and parsed["chain"]["last_index"] == 10
    none = incident(state, "--since", SINCE, "--agent", "support-bot", "--tenant", "acme", "--format", "json")
    assert json.loads(none.output)["timeline"] == []


def test_a_record_edited_inside_the_range_makes_the_report_fail(state: Path) -> None:
    """Tampering with a copy of the store: the report says FAILED at the edited index and exits 1."""
    sql(state, "UPDATE audit_record SET fields = replace(fields, 'refund-limit', 'no-limit') WHERE idx = 2")
    result = incident(state, "--since", SINCE, "--format", "json")
    assert result.exit_code == 1
    chain = json.loads(result.output)["chain"]
    assert (chain["status"], chain["first_bad_index"], chain["ok"]) == ("FAILED", 2, False)
    markdown = incident(state, "--since", SINCE)
    assert markdown.exit_code == 1 and "**verification: FAILED** at index 2" in markdown.output


def test_a_record_edited_after_the_range_is_reported_beside_a_verified_range(state: Path) -> None:
    """A break later in the chain does not change what the range says; the report names it."""
    sql(state, "UPDATE audit_record SET fields = replace(fields, 'tool_error', 'ok') WHERE idx = 10")
    result = incident(state, "--since", SINCE, "--until", str(T0 + 6))
    assert result.exit_code == 0, result.output
    assert "range read: records 0 to 5" in result.output and "verification: verified" in result.output
    assert "the chain fails after this range, at index 10" in result.output
    assert "signed through: the whole range (checkpoint at index 8)" in result.output
    assert incident(state, "--since", SINCE).exit_code == 1


# (what the attacker does, the window as record indexes (record i has ts T0 + i + 1), the failing index)
TAMPERING = [
    ("DELETE FROM audit_record WHERE idx = 3", (0, 10), 3),  # a record removed from the middle
    ("UPDATE audit_record SET ts = ts + 0.5 WHERE idx = 4", (0, 10), 4),  # an edited time
    ("UPDATE audit_record SET kind = 'outcome' WHERE idx = 2", (0, 10), 2),  # an edited kind
    ("UPDATE audit_record SET hash = prev_hash WHERE idx = 6", (0, 10), 6),  # a replaced hash: the next link breaks
    ("DELETE FROM audit_record WHERE idx = 1", (3, 6), 1),  # before the range: it no longer links to genesis
    ("DELETE FROM audit_record WHERE idx IN (6, 7)", (3, 6), 6),  # the window's end removed, later records kept
    ("DELETE FROM audit_record WHERE idx >= 9", (0, 10), 9),  # the tail truncated beneath a signed checkpoint
]


@pytest.mark.parametrize(("statement", "window", "bad"), TAMPERING)
def test_tampering_inside_before_or_at_the_end_of_the_range_fails_it(state: Path, statement: str,
                                                                     window: tuple[int, int], bad: int) -> None:
    """Each way of changing the evidence a range rests on: FAILED at the first broken index, exit 1."""
    sql(state, statement)
    args = ["--since", str(T0 + window[0] + 1), "--until", str(T0 + window[1] + 1), "--format", "json"]
    result = incident(state, *args)
    assert result.exit_code == 1, result.output
    chain = json.loads(result.output)["chain"]
    assert (chain["status"], chain["first_bad_index"]) == ("FAILED", bad), chain


def test_a_range_no_signed_checkpoint_covers_is_unsigned_and_exits_1(state: Path) -> None:
    """With every checkpoint deleted the chain is only self-consistent: not evidence."""
    sql(state, "DELETE FROM audit_checkpoint")
    result = incident(state, "--since", SINCE)
    assert result.exit_code == 1 and "verification: unsigned" in result.output


def test_an_empty_window_is_an_empty_verified_report(state: Path) -> None:
    """A window with no records says so and exits 0."""
    result = incident(state, "--since", str(T0 + 1000))
    assert result.exit_code == 0 and "no records in the window" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--since", "yesterday"], "expected ISO 8601"),
    (["--since", "2h", "--until", "7d"], "until is before since"),
    (["--since", "24h", "--format", "xml"], "expected markdown or json"),
    (["--since", "24h", "--agent", ""], "must not be empty"),
    (["--since", "24h", "--request-id", ""], "must not be empty"),
    (["--since", "nan"], "expected ISO 8601"),
    (["--since", "2027-13-01"], "expected ISO 8601"),
    ([], "Missing option '--since'"),
])
def test_bad_input_is_a_precise_error_with_exit_2(state: Path, args: list[str], message: str) -> None:
    """Malformed times, formats and empty filters exit 2 with a message naming the problem."""
    result = incident(state, *args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_relative_since_and_a_missing_store_are_handled(state: Path, tmp_path: Path) -> None:
    """7d reaches the scenario (written ahead of now); a missing store is exit 1, no traceback."""
    assert incident(state, "--since", "7d", "--format", "json").exit_code == 0
    missing = runner.invoke(app, ["incident", "report", "--since", "2h", "--store", str(tmp_path / "none.sqlite3"),
                                  "--public-key", str(state / PUBLIC_KEY_FILE)])
    assert missing.exit_code == 1 and "cannot read the audit store" in missing.output
    assert "Traceback" not in missing.output


def test_config_finds_the_store_and_key_through_gateway_yaml(state: Path, tmp_path: Path) -> None:
    """--config DIR: the state directory (store and public key) comes from gateway.yaml, as the gateway reads it."""
    deployment = tmp_path / "deployment"
    assert runner.invoke(app, ["init", str(deployment)]).exit_code == 0
    config = deployment / "gateway.yaml"
    config.write_text(config.read_text() + f"state_dir: {state}\n")
    result = runner.invoke(app, ["incident", "report", "--since", SINCE, "--config", str(deployment),
                                 "--request-id", "req-2", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert [e["request_id"] for e in json.loads(result.output)["timeline"]] == ["req-2"]


DOCS = Path(__file__).parents[2] / "docs" / "forensics.md"


def test_every_example_in_the_docs_runs(state: Path) -> None:
    """Each `portcullis incident report` example in docs/forensics.md runs against a real store and succeeds."""
    text = DOCS.read_text().replace("\\\n", " ")
    commands = re.findall(r"^(portcullis incident report .+?)$", text, re.MULTILINE)
    assert len(commands) >= 3
    for command in commands:
        line = (command.replace("--config /etc/portcullis", "").replace("> incident.md", "")
                .replace("9b1c6f0e4d2a4c7e8f3b5a6d7e8f9a0b", "req-6"))
        result = runner.invoke(app, shlex.split(line)[1:], env={"PORTCULLIS_STATE_DIR": str(state)})
        assert result.exit_code == 0, (command, result.output)
        assert "Traceback" not in result.output
