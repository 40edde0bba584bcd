"""`portcullis audit` verify, search, timeline and export through the real CLI; the audit key files."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from typer.testing import CliRunner

from portcullis.audit import make_record, sign_checkpoint
from portcullis.audit.keys import HMAC_KEY_FILE, PUBLIC_KEY_FILE, SIGNING_KEY_FILE, AuditKeys
from portcullis.cli.audit_cmd import parse_time, terminal_safe
from portcullis.cli.main import app
from portcullis.errors import ConfigError
from tests.unit.test_audit_query import ALICE, SCENARIO, T0, build_store, decision, rejected

runner = CliRunner()
WIDE = {"COLUMNS": "400"}


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    result = runner.invoke(app, ["audit", *args], env={**WIDE, **(env or {})})
    assert "Traceback" not in result.output
    return result


@pytest.fixture
async def state(tmp_path: Path) -> Path:
    """A state directory as the gateway leaves it: audit keys and a checkpointed scenario store."""
    root = tmp_path / "state"
    keys = AuditKeys.load_or_create(root)
    await build_store(root / "audit.sqlite3", keys.signing_key)
    return root


def store_args(state: Path) -> list[str]:
    return ["--store", str(state / "audit.sqlite3"), "--public-key", str(state / PUBLIC_KEY_FILE)]


def sql(state: Path, *statements: str) -> None:
    conn = sqlite3.connect(state / "audit.sqlite3")
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def row(state: Path, index: int) -> tuple[Any, ...]:
    conn = sqlite3.connect(state / "audit.sqlite3")
    found = conn.execute("SELECT * FROM audit_record WHERE idx = ?", (index,)).fetchone()
    conn.close()
    return found


def replace_row(state: Path, record: Any) -> None:
    conn = sqlite3.connect(state / "audit.sqlite3")
    conn.execute("UPDATE audit_record SET ts = ?, request_id = ?, kind = ?, fields = ?, prev_hash = ?, hash = ? "
                 "WHERE idx = ?", (record.ts, record.request_id, record.kind, json.dumps(record.fields),
                                   record.prev_hash, record.hash, record.index))
    conn.commit()
    conn.close()


# --------------------------------------------------------------------------- verify


def test_verify_passes_an_intact_store_and_names_the_latest_checkpoint(state: Path) -> None:
    """An untouched store verifies: exit 0, the record count and the latest signed checkpoint."""
    result = invoke("verify", *store_args(state))
    assert result.exit_code == 0, result.output
    assert f"OK: {len(SCENARIO)} record(s) verified; latest signed checkpoint at index 10" in result.output


def test_verify_finds_the_store_and_key_in_the_state_directory_like_the_gateway(state: Path) -> None:
    """With no paths, verify uses $PORTCULLIS_STATE_DIR's store and public key, and says so."""
    result = invoke("verify", env={"PORTCULLIS_STATE_DIR": str(state)})
    assert result.exit_code == 0, result.output
    assert "OK: 11 record(s)" in result.output and "pass a copy kept elsewhere" in result.output
    assert invoke("verify", "--state-dir", str(state)).exit_code == 0


def test_verify_and_search_find_the_store_through_gateway_yaml(state: Path, tmp_path: Path) -> None:
    """With --config, the state directory and audit.path come from gateway.yaml, as the gateway reads them."""
    deployment = tmp_path / "deployment"
    assert runner.invoke(app, ["init", str(deployment)]).exit_code == 0
    config = deployment / "gateway.yaml"
    base = config.read_text()
    config.write_text(base + f"state_dir: {state}\n")
    assert invoke("verify", "--config", str(deployment)).exit_code == 0
    moved = tmp_path / "elsewhere.sqlite3"
    shutil.copy(state / "audit.sqlite3", moved)
    (state / "audit.sqlite3").unlink()
    config.write_text(base + f"state_dir: {state}\naudit:\n  path: {moved}\n")
    result = invoke("search", "--config", str(deployment), "--request-id", "req-2", "--json")
    assert result.exit_code == 0 and json.loads(result.output)["request_id"] == "req-2"
    assert invoke("verify", "--config", str(deployment)).exit_code == 0


def forge(state: Path, index: int, *, rechain: bool) -> None:
    """Replace record ``index`` with a well-formed forgery; with ``rechain``, recompute every later hash."""
    conn = sqlite3.connect(state / "audit.sqlite3")
    rows = conn.execute("SELECT * FROM audit_record WHERE idx >= ? ORDER BY idx", (index,)).fetchall()
    conn.close()
    prev = rows[0][5]
    for n, (idx, ts, request_id, kind, fields, _prev, _hash) in enumerate(rows):
        body = json.loads(fields)
        if n == 0:
            body = decision("billing.get_invoice", ALICE, "allow", ["billing-read"], invoice_id="INV-FORGED")
        record = make_record(idx, ts, request_id, kind, body, prev)
        replace_row(state, record)
        prev = record.hash
        if not rechain:
            return


@pytest.mark.parametrize(("tamper", "index", "says"), [
    ("edit", 5, "edited after it was written"),
    ("delete", 5, "deleted, or records were reordered"),
    ("swap", 5, "prev_hash does not link"),
    ("forge", 6, "one of the two was replaced"),
    ("forge-rechain", 8, "history up to this signed checkpoint was rewritten"),
    ("truncate", 9, "deleted from the end"),
    ("forged-checkpoint", 4, "not signed by this public key"),
    ("blob-hash", 3, "prev_hash does not link"),
    ("non-ascii-hash", 2, "record hash does not match"),
])
def test_verify_fails_at_the_first_tampered_index_and_says_what_happened(state: Path, tamper: str, index: int,
                                                                         says: str) -> None:
    """Each kind of tampering exits 1 naming the first broken index and what that break means."""
    if tamper == "edit":
        sql(state, "UPDATE audit_record SET fields = json_set(fields, '$.decision.effect', 'deny') WHERE idx = 5")
    elif tamper == "delete":
        sql(state, "DELETE FROM audit_record WHERE idx = 5")
    elif tamper == "swap":
        five, six = row(state, 5), row(state, 6)
        sql(state, "DELETE FROM audit_record WHERE idx IN (5, 6)")
        conn = sqlite3.connect(state / "audit.sqlite3")
        conn.executemany("INSERT INTO audit_record VALUES (?, ?, ?, ?, ?, ?, ?)", [(5, *six[1:]), (6, *five[1:])])
        conn.commit()
        conn.close()
    elif tamper == "forge":
        forge(state, 5, rechain=False)
    elif tamper == "forge-rechain":
        forge(state, 5, rechain=True)
    elif tamper == "truncate":
        sql(state, "DELETE FROM audit_record WHERE idx >= 9")
    elif tamper == "forged-checkpoint":
        fake = sign_checkpoint(Ed25519PrivateKey.generate(), 4, row(state, 4)[6], T0 + 50)
        sql(state, "DELETE FROM audit_checkpoint WHERE idx = 4")
        conn = sqlite3.connect(state / "audit.sqlite3")
        conn.execute("INSERT INTO audit_checkpoint VALUES (?, ?, ?, ?, ?)",
                     (fake.index, fake.hash, fake.ts, fake.key_id, fake.signature))
        conn.commit()
        conn.close()
    elif tamper == "blob-hash":
        sql(state, "UPDATE audit_record SET prev_hash = X'00ff' WHERE idx = 3")
    elif tamper == "non-ascii-hash":
        sql(state, "UPDATE audit_record SET hash = 'é' || substr(hash, 2) WHERE idx = 2")
    result = invoke("verify", *store_args(state))
    assert result.exit_code == 1, result.output
    assert f"FAILED at index {index}:" in result.output
    assert says in result.output


def test_verify_fails_a_store_whose_checkpoints_were_all_deleted(state: Path) -> None:
    """A chain that no checkpoint signs proves nothing: fail unless the unsafe flag is given, and then warn."""
    sql(state, "DELETE FROM audit_checkpoint")
    result = invoke("verify", *store_args(state))
    assert result.exit_code == 1 and "FAILED: no checkpoint signed by key" in result.output
    allowed = invoke("verify", *store_args(state), "--unsafe-allow-unsigned")
    assert allowed.exit_code == 0
    assert "OK (UNSIGNED)" in allowed.output and "warning: --unsafe-allow-unsigned" in allowed.output


def test_verify_with_the_wrong_public_key_fails(state: Path, tmp_path: Path) -> None:
    """Checkpoints signed by another key do not verify: the first checkpoint's index is reported."""
    other = AuditKeys.load_or_create(tmp_path / "other")
    result = invoke("verify", "--store", str(state / "audit.sqlite3"),
                    "--public-key", str(tmp_path / "other" / PUBLIC_KEY_FILE))
    assert result.exit_code == 1 and "FAILED at index 0" in result.output and other.key_id in result.output


def test_verify_notes_records_after_the_latest_checkpoint(state: Path) -> None:
    """Records appended after the last checkpoint verify by their links, and the report says so."""
    head = row(state, 10)
    record = make_record(11, T0 + 90, "req-9", "rejected", rejected("x", ALICE, "unknown_tool"), head[6])
    conn = sqlite3.connect(state / "audit.sqlite3")
    conn.execute("INSERT INTO audit_record VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (11, record.ts, record.request_id, record.kind, json.dumps(record.fields), record.prev_hash,
                  record.hash))
    conn.commit()
    conn.close()
    result = invoke("verify", *store_args(state))
    assert result.exit_code == 0 and "records 11..11 come after the latest checkpoint" in result.output


@pytest.mark.parametrize("problem", ["missing", "junk", "missing-key", "ec-key", "both", "missing-export"])
def test_verify_problems_are_clear_errors_without_tracebacks(state: Path, tmp_path: Path, problem: str) -> None:
    """A missing or corrupt store or key is exit 1 with a message; conflicting options are exit 2."""
    args = store_args(state)
    if problem == "missing":
        args = ["--store", str(tmp_path / "nope.sqlite3"), "--public-key", str(state / PUBLIC_KEY_FILE)]
    elif problem == "junk":
        (tmp_path / "junk.sqlite3").write_bytes(b"\x00garbage" * 500)
        args = ["--store", str(tmp_path / "junk.sqlite3"), "--public-key", str(state / PUBLIC_KEY_FILE)]
    elif problem == "missing-key":
        args = ["--store", str(state / "audit.sqlite3"), "--public-key", str(tmp_path / "nope.pem")]
    elif problem == "ec-key":
        pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
            Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        (tmp_path / "ec.pem").write_bytes(pem)
        args = ["--store", str(state / "audit.sqlite3"), "--public-key", str(tmp_path / "ec.pem")]
    elif problem == "both":
        args = [*store_args(state), "--export", str(tmp_path / "e.jsonl")]
    elif problem == "missing-export":
        args = ["--export", str(tmp_path / "nope.jsonl"), "--public-key", str(state / PUBLIC_KEY_FILE)]
    result = invoke("verify", *args)
    assert result.exit_code == (2 if problem == "both" else 1), result.output
    assert result.output.strip()
    if problem == "missing":
        assert "cannot read the audit store" in result.output and not (tmp_path / "nope.sqlite3").exists()


# --------------------------------------------------------------------------- export


def test_export_writes_a_private_file_that_verifies_and_refuses_to_overwrite(state: Path, tmp_path: Path) -> None:
    """export writes every record and checkpoint (mode 0600, sha256 shown); the export verifies offline."""
    out = tmp_path / "evidence.jsonl"
    result = invoke("export", "--store", str(state / "audit.sqlite3"), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "exported 11 record(s) and 4 checkpoint(s)" in result.output
    assert hashlib.sha256(out.read_bytes()).hexdigest() in result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    verified = invoke("verify", "--export", str(out), "--public-key", str(state / PUBLIC_KEY_FILE))
    assert verified.exit_code == 0 and "OK: 11 record(s) verified" in verified.output
    again = invoke("export", "--store", str(state / "audit.sqlite3"), "--out", str(out))
    assert again.exit_code == 2 and "--force" in again.output
    assert invoke("export", "--store", str(state / "audit.sqlite3"), "--out", str(out), "--force").exit_code == 0


@pytest.mark.parametrize(("change", "says"), [
    (lambda lines: lines[:3] + lines[4:], "FAILED at index 3"),
    (lambda lines: [*lines[:2], lines[2].replace("refund-limit", "refund-ok"), *lines[3:]], "FAILED at index 2"),
    (lambda lines: [*lines[:1], "{not json\n", *lines[2:]], "malformed export: line 2"),
    (lambda lines: [*lines[:3], re.sub(r'"hash":"[0-9a-f]', '"hash":"\u00e9', lines[3]), *lines[4:]],
     "FAILED at index 3: record hash does not match"),  # non-ASCII where a hash belongs: a verdict, not a crash
])
def test_verify_export_fails_a_tampered_or_malformed_file(state: Path, tmp_path: Path, change: Any,
                                                          says: str) -> None:
    """A deleted line, an edited line or a broken line in an export fails verification with exit 1."""
    out = tmp_path / "e.jsonl"
    assert invoke("export", "--store", str(state / "audit.sqlite3"), "--out", str(out)).exit_code == 0
    out.write_text("".join(change(out.read_text().splitlines(keepends=True))))
    result = invoke("verify", "--export", str(out), "--public-key", str(state / PUBLIC_KEY_FILE))
    assert result.exit_code == 1 and says in result.output


# --------------------------------------------------------------------------- search and timeline


def test_search_json_lines_parse_and_honour_the_filters(state: Path) -> None:
    """--json prints one parseable record per line; --principal, --decision and --limit filter."""
    result = invoke("search", "--store", str(state / "audit.sqlite3"), "--principal", "agent_id=billing-bot",
                    "--decision", "deny", "--json")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines()]
    assert [(r["index"], r["kind"]) for r in records] == [(4, "rejected"), (2, "decision")]
    assert records[1]["fields"]["decision"]["rule_ids"] == ["refund-limit"]
    limited = invoke("search", "--store", str(state / "audit.sqlite3"), "--limit", "2", "--json")
    assert [json.loads(line)["index"] for line in limited.output.splitlines()] == [10, 9]


def test_search_table_shows_the_columns_an_investigator_needs(state: Path) -> None:
    """The table has time in UTC, request, tool, principal, verdict and rule ids."""
    result = invoke("search", "--store", str(state / "audit.sqlite3"), "--tool", "billing.refund")
    assert result.exit_code == 0, result.output
    for text in ("2027-01-15T08:00:03.000Z", "req-2", "billing.refund", "agent=billing-bot user=alice", "deny",
                 "refund-limit"):
        assert text in result.output
    assert "req-1" not in result.output


def test_search_time_window_accepts_iso_dates(state: Path) -> None:
    """--since and --until take ISO 8601 times; without a zone they are UTC."""
    result = invoke("search", "--store", str(state / "audit.sqlite3"), "--since", "2027-01-15T08:00:04",
                    "--until", "2027-01-15T08:00:05.000+00:00", "--json")
    assert [json.loads(line)["index"] for line in result.output.splitlines()] == [4, 3]


def test_search_with_no_match_says_so(state: Path) -> None:
    """An empty result is a message and exit 0, not an empty table."""
    result = invoke("search", "--store", str(state / "audit.sqlite3"), "--tool", "nothing.here")
    assert result.exit_code == 0 and "no matching records" in result.output


@pytest.mark.parametrize("args", [
    ["--principal", "agent_id"],
    ["--principal", "password=x"],
    ["--principal", "agent_id=a", "--principal", "agent_id=b"],
    ["--decision", "permit"],
    ["--kind", "approvals"],
    ["--since", "yesterday"],
    ["--limit", "0"],
])
def test_search_usage_errors_exit_2(state: Path, args: list[str]) -> None:
    """Malformed filters are usage errors (exit 2) with no traceback."""
    result = invoke("search", "--store", str(state / "audit.sqlite3"), *args)
    assert result.exit_code == 2, result.output


def test_search_of_a_missing_store_is_exit_1_and_creates_nothing(tmp_path: Path) -> None:
    """A missing default store is a clear failure and no file or directory is created."""
    result = invoke("search", env={"PORTCULLIS_STATE_DIR": str(tmp_path / "nowhere")})
    assert result.exit_code == 1 and "no audit store" in result.output
    assert not (tmp_path / "nowhere").exists()


def test_timeline_of_a_request_and_of_an_agent(state: Path) -> None:
    """timeline groups each request's records; --json prints one request per line."""
    one = invoke("timeline", "--store", str(state / "audit.sqlite3"), "--request-id", "req-6", "--json")
    [group] = [json.loads(line) for line in one.output.splitlines()]
    assert group["request_id"] == "req-6" and [r["index"] for r in group["records"]] == [7, 9]
    agent = invoke("timeline", "--store", str(state / "audit.sqlite3"), "--agent", "support-bot")
    assert agent.exit_code == 0 and "3 request(s), oldest first" in agent.output
    assert agent.output.index("crm-pii") < agent.output.index("timeout (-31003)") < agent.output.index("crm-notes")


@pytest.mark.parametrize("args", [[], ["--request-id", "r", "--agent", "a"]])
def test_timeline_needs_exactly_one_of_request_and_agent(state: Path, args: list[str]) -> None:
    """timeline without a subject, or with two, is a usage error."""
    assert invoke("timeline", "--store", str(state / "audit.sqlite3"), *args).exit_code == 2


# --------------------------------------------------------------------------- terminal safety

HOSTILE = [
    ("\x1b[2J\x1b[31mred", "\\x1b[2J\\x1b[31mred"),  # ANSI: clear screen, colour
    ("admin\u202etxt.exe", "admin\\u202etxt.exe"),  # right-to-left override
    ("bill\u200bing", "bill\\u200bing"),  # zero-width space
    ("a\u2066b\u2069", "a\\u2066b\\u2069"),  # bidi isolates
    ("x\ufeffy", "x\\ufeffy"),  # byte-order mark
    ("line\nfeed\rcr", "line\\x0afeed\\x0dcr"),
    ("bell\x07", "bell\\x07"),
    ("c1\x9bcsi", "c1\\x9bcsi"),  # 8-bit CSI
    ("tag\U000e0041", "tag\\U000e0041"),  # tag characters smuggle invisible text
    ("fill\u3164er", "fill\\u3164er"),  # Hangul filler looks like nothing
    ("vs\ufe0f", "vs\\ufe0f"),
    ("sep\u2028x", "sep\\u2028x"),
    ("lone\ud800", "lone\\ud800"),
    ("back\\u202e", "back\\\\u202e"),  # a literal backslash cannot pose as our escape
    ("[bold red]markup[/]", "[bold red]markup[/]"),  # kept as is here; the table shows it literally
    ("plain-name.ok", "plain-name.ok"),
]


@pytest.mark.parametrize(("hostile", "shown"), HOSTILE)
def test_terminal_safe_renders_dangerous_characters_visibly(hostile: str, shown: str) -> None:
    """Controls, bidi, invisibles and surrogates become visible escapes; ordinary text is unchanged."""
    assert terminal_safe(hostile) == shown


def test_terminal_safe_cuts_long_values_visibly() -> None:
    """A very long value is cut with a count of what was dropped."""
    assert terminal_safe("a" * 250, 200) == "a" * 200 + "…(+50 chars)"


HOSTILE_TOOL = "[bold red]evil[/]\x1b[2J\u202eexe.\u200b"
HOSTILE_AGENT = "[link=https://evil.example]bot[/link]\x07\u2066"


@pytest.fixture
async def hostile_store(tmp_path: Path) -> Path:
    """A store holding one rejected call whose tool name, agent id and request id are terminal attacks."""
    path = tmp_path / "hostile.sqlite3"
    who = {**ALICE, "agent_id": HOSTILE_AGENT}
    await build_store(path, Ed25519PrivateKey.generate(),
                      [("rejected", "req-x\x1b[A", rejected(HOSTILE_TOOL, who, "unknown_tool"))])
    return path


def test_hostile_values_in_records_are_escaped_in_tables_and_json(hostile_store: Path) -> None:
    """Attacker-chosen tool names and principal ids cannot drive the terminal or inject Rich markup."""
    tool = HOSTILE_TOOL
    for command in (["search"], ["timeline", "--agent", HOSTILE_AGENT]):
        table = invoke(*command, "--store", str(hostile_store))
        assert table.exit_code == 0, table.output
        for raw in ("\x1b", "\u202e", "\u200b", "\x07", "\u2066"):
            assert raw not in table.output
        for escaped in ("[bold red]evil[/]\\x1b[2J\\u202eexe.\\u200b", "[link=https://evil.example]bot[/link]\\x07",
                        "req-x\\x1b[A"):
            assert escaped in table.output
        as_json = invoke(*command, "--store", str(hostile_store), "--json")
        assert as_json.output.isascii()  # every non-ASCII or control character is a JSON escape
        first = json.loads(as_json.output.splitlines()[0])
        record = first["records"][0] if "records" in first else first
        assert record["fields"]["tool"]["name"] == tool  # and the exact value survives for tools


def test_parse_time_accepts_ages_unix_seconds_and_iso() -> None:
    """Times are ISO 8601 (naive = UTC), UNIX seconds, or ages before now."""
    now = 1_800_000_000.0
    assert parse_time("2h", now=now, option="--since") == now - 7200
    assert parse_time("7d", now=now, option="--since") == now - 7 * 86400
    assert parse_time("1799999999.5", now=now, option="--since") == 1799999999.5
    assert parse_time("2027-01-15T08:00:00Z", now=now, option="--since") == 1_800_000_000.0
    assert parse_time("2027-01-15T08:00:00", now=now, option="--since") == 1_800_000_000.0
    assert parse_time("2027-01-15T09:00:00+01:00", now=now, option="--since") == 1_800_000_000.0


# --------------------------------------------------------------------------- key files


def test_audit_keys_are_created_once_with_private_modes_and_reloaded(tmp_path: Path) -> None:
    """load_or_create writes the three files (0600, 0644, 0600) and later loads the same keys."""
    first = AuditKeys.load_or_create(tmp_path / "s")
    modes = {name: stat.S_IMODE((tmp_path / "s" / name).stat().st_mode)
             for name in (SIGNING_KEY_FILE, PUBLIC_KEY_FILE, HMAC_KEY_FILE)}
    assert modes[SIGNING_KEY_FILE] == 0o600 and modes[HMAC_KEY_FILE] == 0o600
    assert modes[PUBLIC_KEY_FILE] & 0o022 == 0
    again = AuditKeys.load_or_create(tmp_path / "s")
    assert again.key_id == first.key_id and again.hmac_key == first.hmac_key and len(first.hmac_key) == 32
    assert sorted(os.listdir(tmp_path / "s")) == sorted(modes)  # no temporary files left behind
    assert "hmac_key" not in repr(first) and repr(first.hmac_key) not in repr(first)


def test_concurrent_creation_agrees_on_one_key(tmp_path: Path) -> None:
    """Several processes starting at once end up with one signing key and one HMAC key."""
    results: list[AuditKeys] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        results.append(AuditKeys.load_or_create(tmp_path / "s"))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({k.key_id for k in results}) == 1 and len({k.hmac_key for k in results}) == 1


@pytest.mark.parametrize(("name", "mode"), [(SIGNING_KEY_FILE, 0o644), (HMAC_KEY_FILE, 0o604),
                                            (HMAC_KEY_FILE, 0o640), (SIGNING_KEY_FILE, 0o660)])
def test_key_files_readable_by_others_are_refused(tmp_path: Path, name: str, mode: int) -> None:
    """A private key file that group or others can access fails closed, naming the file, not the key."""
    AuditKeys.load_or_create(tmp_path / "s")
    (tmp_path / "s" / name).chmod(mode)
    with pytest.raises(ConfigError, match="accessible by group or others") as info:
        AuditKeys.load_or_create(tmp_path / "s")
    assert name in str(info.value) and "PRIVATE KEY" not in str(info.value)


@pytest.mark.parametrize("damage", ["short-hmac", "not-pem", "rsa-shaped", "swapped-public", "directory"])
def test_damaged_key_files_fail_closed(tmp_path: Path, damage: str) -> None:
    """A wrong-size HMAC key, a non-PEM or non-Ed25519 signing key or a mismatched public key is refused."""
    root = tmp_path / "s"
    AuditKeys.load_or_create(root)
    if damage == "short-hmac":
        (root / HMAC_KEY_FILE).write_bytes(b"x" * 16)
    elif damage == "not-pem":
        (root / SIGNING_KEY_FILE).write_bytes(b"hello")
    elif damage == "rsa-shaped":
        (root / SIGNING_KEY_FILE).write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    elif damage == "swapped-public":
        other = AuditKeys.load_or_create(tmp_path / "other")
        shutil.copy(tmp_path / "other" / PUBLIC_KEY_FILE, root / PUBLIC_KEY_FILE)
        assert other.key_id
    else:
        (root / HMAC_KEY_FILE).unlink()
        (root / HMAC_KEY_FILE).mkdir(mode=0o700)
    with pytest.raises(ConfigError):
        AuditKeys.load_or_create(root)


def test_the_audit_command_group_is_registered() -> None:
    """`portcullis audit --help` lists the four commands."""
    result = runner.invoke(app, ["audit", "--help"], env=WIDE)
    assert result.exit_code == 0
    for command in ("verify", "search", "timeline", "export"):
        assert command in result.output


DOCS = Path(__file__).parents[2] / "docs" / "audit.md"


def test_every_command_in_the_docs_runs(state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each `$ portcullis audit …` example in docs/audit.md runs against a real store and succeeds."""
    monkeypatch.chdir(tmp_path)
    commands = re.findall(r"^\$ portcullis (audit .+)$", DOCS.read_text(), re.MULTILINE)
    assert len(commands) >= 8
    anchors = tmp_path / "anchors.jsonl"  # checkpoints kept elsewhere: here, an export of the store
    exported = runner.invoke(app, ["audit", "export", "--out", str(anchors), *store_args(state)[:2]], env=WIDE)
    assert exported.exit_code == 0, exported.output
    for command in commands:
        line = (command.replace("~/evidence/audit-signing.pub.pem", str(state / PUBLIC_KEY_FILE))
                .replace("/mnt/siem/audit.jsonl", str(anchors))
                .replace("/srv/portcullis/audit.sqlite3", str(state / "audit.sqlite3"))
                .replace("9b1c6f0e4d2a4c7e8f3b5a6d7e8f9a0b", "req-6"))
        result = runner.invoke(app, shlex.split(line), env={**WIDE, "PORTCULLIS_STATE_DIR": str(state)})
        assert result.exit_code == 0, (command, result.output)
        assert "Traceback" not in result.output

