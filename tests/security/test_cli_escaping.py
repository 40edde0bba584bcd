"""Every CLI view shows requester-controlled text, never obeys it.

A requester writes tool arguments, justifications, its own ids; an approver writes vote reasons;
an admin endpoint answers with all of them. Each row of the hostile table below is put in every
such field of ``portcullis approvals list`` / ``show`` / ``approve`` (answers from a stand-in
admin listener that does *not* make anything visible, so the CLI's own defence is what is
tested) and of ``portcullis audit search`` / ``timeline`` (records in a real audit store). The
output must hold no raw control, format (bidi, zero-width), separator or blank character, and
Rich markup must come out as the literal text it is.
"""

from __future__ import annotations

import http.server
import json
import threading
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from typer.testing import CliRunner

from portcullis.audit.store import SqliteAuditStore
from portcullis.audit.writer import AuditWriter
from portcullis.cli.main import app
from portcullis.cli.safe_text import terminal_safe

HOSTILE = [
    ("rich-bold", "[bold red]APPROVED BY SECURITY[/]"),
    ("rich-link", "[link=https://evil.example/approve]open the ticket[/link]"),
    ("rich-closing-tag", "x[/]y[/bold]"),
    ("rich-escaped-bracket", "\\[bold]not bold"),
    ("rich-emoji-code", ":warning: :cross_mark:"),
    ("ansi-colour", "\x1b[31mred\x1b[0m"),
    ("ansi-clear-screen", "\x1b[2J\x1b[Happroved"),
    ("ansi-cursor-up-overwrite", "pending\x1b[1A\x1b[2Kapproved"),
    ("osc-window-title", "\x1b]0;portcullis: approved\x07"),
    ("osc8-hyperlink", "\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\"),
    ("c1-csi", "\x9b31mred"),
    ("carriage-return-overwrite", "deny\rallow"),
    ("newline-fake-row", "bob\napr_00000000000000000000000000000000  billing.x  approved"),
    ("backspace", "deny\x08\x08\x08\x08allow"),
    ("bell-and-nul", "a\x07b\x00c"),
    ("bidi-rlo", "refund \u202e0001 DSU\u202c"),
    ("bidi-isolates", "\u2066amount\u2069 \u2067100\u2069"),
    ("bidi-marks", "user\u200f\u200ename"),
    ("zero-width-space", "al\u200bice"),
    ("zero-width-joiner", "bo\u200db"),
    ("bom-and-word-joiner", "\ufeffalice\u2060"),
    ("line-separator", "one\u2028two\u2029three"),
    ("hangul-filler-blank", "\u3164"),
    ("braille-blank", "a\u2800b"),
    ("variation-selector", "a\ufe0fb"),
    ("tag-characters", "ok\U000e0061\U000e0062"),
    ("no-break-space", "a\u00a0b"),
    ("ideographic-space", "a\u3000b"),
]
IDS = [row[0] for row in HOSTILE]
_UNSAFE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
_BLANKS = {0x3164, 0x2800, 0x115F, 0x1160, 0xFFA0, *range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)}
APPROVAL_ID = "apr_" + "a" * 32


def assert_terminal_safe(output: str, hostile: str) -> None:
    """No raw dangerous character (newlines between lines aside), and the value shown escaped, literally."""
    for ch in output:
        if ch == "\n":
            continue
        assert unicodedata.category(ch) not in _UNSAFE, f"raw {ch!r} in output"
        assert ord(ch) not in _BLANKS, f"raw blank {ch!r} in output"
        assert not (ch.isspace() and ch != " "), f"raw whitespace {ch!r} in output"
    assert "\x1b" not in output and "\x9b" not in output
    for tag in ("[bold red]", "[link=https://evil.example/approve]", "[/]", "[/bold]", "[/link]"):
        if tag in hostile:  # markup is text: its tags are there as written (Rich would have consumed them)
            assert tag in output, f"markup {tag!r} was consumed"
    if ":warning:" in hostile:  # emoji codes stay codes
        assert ":warning:" in output


class _Admin:
    """A stand-in admin listener whose answers carry ``value`` raw in every requester-written field."""

    def __init__(self, value: str) -> None:
        brief = {"id": APPROVAL_ID, "tool": value, "tool_risk": "high", "status": "pending", "requester": value,
                 "required": 1, "approvals": 0, "created_at": "2026-01-01T00:00:00Z",
                 "expires_at": "2026-01-01T01:00:00Z"}
        view = {**brief, "arguments": {"reason": value, value: 1}, "arguments_hash": "sha256:" + "0" * 64,
                "justification": value, "requester": {"user_id": value, "agent_id": value},
                "rule_ids": [value], "reasons": [value], "policy_version": "pv-1", "risk": None,
                "votes": [{"approver": {"user_id": value}, "verdict": "approve", "at": "2026-01-01T00:00:00Z",
                           "reason": value}],
                "recent_similar": [{**brief, "arguments": {"reason": value}, "arguments_hash": "sha256:1"}],
                "recent_calls": [{"effect": value, "arguments": {"reason": value}}]}
        answers = {"/approvals": {"approvals": [brief]}, f"/approvals/{APPROVAL_ID}": view}
        voted = {"id": APPROVAL_ID, "status": value, "approvals": 1, "required": 1}

        class Handler(http.server.BaseHTTPRequestHandler):
            def _send(self, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send(answers.get(self.path.split("?")[0], {"approvals": []}))  # any page, any status

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self._send(voted)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def runner() -> Iterator[CliRunner]:
    yield CliRunner(env={"COLUMNS": "400", "PORTCULLIS_TOKEN": "t"})


@pytest.mark.parametrize(("name", "value"), HOSTILE, ids=IDS)
@pytest.mark.parametrize("command", [["approvals", "list"], ["approvals", "show", APPROVAL_ID],
                                     ["approvals", "approve", APPROVAL_ID], ["approvals", "list", "--json"],
                                     ["approvals", "show", APPROVAL_ID, "--json"]],
                         ids=["list", "show", "approve", "list-json", "show-json"])
def test_approvals_views_show_hostile_text_and_never_obey_it(runner: CliRunner, command: list[str], name: str,
                                                            value: str) -> None:
    """Markup, escapes, bidi and invisible characters in any approval field are printed inert."""
    admin = _Admin(value)
    try:
        result = runner.invoke(app, [*command, "--admin-url", admin.url])
    finally:
        admin.close()
    assert result.exit_code == 0, result.output
    assert_terminal_safe(result.output, value)
    if "--json" not in command and command[1] != "approve":
        assert terminal_safe(value, None, double_backslashes=False) in result.output


@pytest.mark.parametrize(("name", "value"), HOSTILE, ids=IDS)
def test_audit_search_and_timeline_show_hostile_text_and_never_obey_it(tmp_path: Path, runner: CliRunner, name: str,
                                                                      value: str) -> None:
    """Caller-written tool names, principal ids and rule ids in audit records are printed inert."""
    path = tmp_path / "audit.sqlite3"

    async def write() -> None:
        async with await SqliteAuditStore.open(path) as store, AuditWriter(store, clock=lambda: 1.8e9,
                                                                           max_delay_s=0) as writer:
            await writer.record("decision", "req-1", {
                "tool": {"name": value}, "principal": {"agent_id": value, "user_id": value},
                "decision": {"effect": "deny", "reasons": [value], "rule_ids": [value], "policy_version": "pv"},
                "arguments": {"reason": value}})
            await writer.record("rejected", "req-2", {"tool": {"name": value}, "principal": {"agent_id": value},
                                                      "reason": "unknown_tool", "error_code": -32602})

    anyio.run(write)
    for command in (["audit", "search"], ["audit", "search", "--json"],
                    ["audit", "timeline", "--agent", value], ["audit", "timeline", "--request-id", "req-1", "--json"]):
        result = runner.invoke(app, [*command, "--store", str(path)])
        assert result.exit_code == 0, (command, result.output)
        assert_terminal_safe(result.output, value)
