"""``portcullis kill set | lift | list`` in process (Typer's runner) on a real store file: what it
stores, and that every stored string reaches the terminal escaped."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from portcullis.cli.main import app
from portcullis.kill.store import FILE_NAME, SqliteKillSwitchStore

runner = CliRunner()


def test_set_list_lift(tmp_path: Path) -> None:
    made = runner.invoke(app, ["kill", "set", "tool", "billing.get_invoice", "--reason", "incident 9 [bold]x[/bold]",
                               "--state-dir", str(tmp_path)])
    assert made.exit_code == 0, made.output
    switch_id = made.output.split()[1].rstrip(":")
    listed = runner.invoke(app, ["kill", "list", "--state-dir", str(tmp_path), "--json"])
    (entry,) = json.loads(listed.output)
    assert (entry["id"], entry["kind"], entry["reason"]) == (switch_id, "tool", "incident 9 [bold]x[/bold]")
    assert entry["actor"].startswith("cli:")
    lifted = runner.invoke(app, ["kill", "lift", switch_id, "--reason", "done", "--state-dir", str(tmp_path)])
    assert lifted.exit_code == 0, lifted.output
    assert json.loads(runner.invoke(app, ["kill", "list", "--state-dir", str(tmp_path), "--json"]).output) == []
    again = runner.invoke(app, ["kill", "lift", switch_id, "--reason", "done", "--state-dir", str(tmp_path)])
    assert again.exit_code == 1


def test_hostile_input_is_refused_and_stored_text_is_escaped(tmp_path: Path) -> None:
    refused = runner.invoke(app, ["kill", "set", "agent", "bot", "--reason", "a\x1b[31mred", "--state-dir",
                                  str(tmp_path)])
    assert refused.exit_code == 2 and "\x1b" not in refused.output
    # a value written to the store by other means (an older or foreign writer) still reaches the terminal escaped
    store = SqliteKillSwitchStore(tmp_path / FILE_NAME)
    store.set("agent", "bot", "fine", "cli:x")
    store._run("UPDATE kill_switches SET reason = ?", ("\x1b]0;pwned\x07 \u202eevil",))
    store.close()
    table = runner.invoke(app, ["kill", "list", "--all", "--state-dir", str(tmp_path)])
    assert table.exit_code == 0 and "\x1b" not in table.output and "\u202e" not in table.output


def test_unknown_state_dir_is_refused(tmp_path: Path) -> None:
    done = runner.invoke(app, ["kill", "list", "--state-dir", str(tmp_path / "nope")])
    assert done.exit_code == 2
