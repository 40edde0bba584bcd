"""Policy versions: the store seam (SQLite and the in-memory double), set names, content ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from portcullis.policy import policy_set
from portcullis.policy.reloader import clean_text
from portcullis.policy.versions import MemoryPolicyVersionStore, PolicyVersion, SqlitePolicyVersionStore


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    return MemoryPolicyVersionStore() if request.param == "memory" else SqlitePolicyVersionStore(tmp_path / "v.db")


def _version(vid: str, pv: str, at: float, author: str = "ops") -> PolicyVersion:
    return PolicyVersion(vid, pv, at, author, "why", {"tools/a/b.yml": vid})


def test_versions_are_immutable_and_found_by_either_id(store: Any) -> None:
    first = store.put(_version("ps-1", "pv-a", 1.0, "alice"))
    again = store.put(_version("ps-1", "pv-a", 2.0, "mallory"))  # same content id: the first copy stays
    assert again == first and again.author == "alice"
    store.put(_version("ps-2", "pv-a", 3.0))  # same engine version, other files (say a description)
    assert store.get("ps-1").author == "alice"
    assert store.get("pv-a").id == "ps-2"  # a decision record's pv-: the newest set with it
    assert store.get("ps-404") is None and store.get("") is None


def test_history_is_newest_first_and_active_skips_refusals(store: Any) -> None:
    assert store.active() is None
    store.record(1.0, "applied", "ps-1", "ops", "start")
    store.record(2.0, "applied", "ps-2", "ops", "new")
    store.record(3.0, "refused", "ps-3", "ops", "bad", "Rego does not compile")
    assert store.active() == "ps-2"
    store.record(4.0, "rolled_back", "ps-1", "ops", "undo")
    assert store.active() == "ps-1"
    events = store.history(10)
    assert [e.action for e in events] == ["rolled_back", "refused", "applied", "applied"]
    assert events[1].reason == "Rego does not compile"
    assert [e.seq for e in events] == sorted((e.seq for e in events), reverse=True)
    assert len(store.history(2)) == 2


def test_sqlite_store_survives_a_reopen_and_is_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    first = SqlitePolicyVersionStore(path)
    first.put(_version("ps-1", "pv-a", 1.0))
    first.record(1.0, "applied", "ps-1", "ops", "start")
    first.close()
    again = SqlitePolicyVersionStore(path)
    assert again.active() == "ps-1" and again.get("ps-1") is not None
    assert path.stat().st_mode & 0o077 == 0


def test_a_read_decisions_surface_engine_version_finds_its_set(store: Any) -> None:
    store.put(PolicyVersion("ps-1", "pv-tools", 1.0, "ops", "why", {"resources/a/b.yml": "x"}, "pv-surface"))
    assert store.get("pv-surface").id == "ps-1" and store.get("pv-tools").surface_engine_version == "pv-surface"
    assert store.get("ps-1").summary()["surface_engine_version"] == "pv-surface"


OLD_SCHEMA = """
CREATE TABLE policy_version (id TEXT PRIMARY KEY, engine_version TEXT NOT NULL, created_at REAL NOT NULL,
                             author TEXT NOT NULL, message TEXT NOT NULL, files TEXT NOT NULL);
CREATE TABLE policy_event (seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, action TEXT NOT NULL,
                           version TEXT NOT NULL, author TEXT NOT NULL, message TEXT NOT NULL, reason TEXT NOT NULL);
INSERT INTO policy_version VALUES ('ps-old', 'pv-old', 1.0, 'alice', 'before', '{"tools/a/b.yml": "x"}');
INSERT INTO policy_event (at, action, version, author, message, reason) VALUES (1.0, 'applied', 'ps-old', 'a', '', '');
"""


def test_a_store_from_before_the_surface_engine_version_is_read_and_filled_in(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
    store = SqlitePolicyVersionStore(path)
    old = store.get("ps-old")
    assert old is not None and (old.engine_version, old.surface_engine_version, old.author) == ("pv-old", "", "alice")
    assert store.get("pv-old") == old and store.get("") is None and store.active() == "ps-old"
    again = store.put(PolicyVersion("ps-old", "pv-old", 9.0, "mallory", "re-applied", {"x/y.yml": "z"}, "pv-s"))
    assert (again.author, again.files, again.surface_engine_version) == ("alice", old.files, "pv-s")  # files kept
    assert store.get("pv-s") == again
    store.close()
    assert SqlitePolicyVersionStore(path).get("pv-s") == again  # the migration is kept


def test_an_unusable_store_file_is_refused(tmp_path: Path) -> None:
    from portcullis.policy.versions import VersionStoreUnavailable

    with pytest.raises(VersionStoreUnavailable, match=r"^policy version store unavailable$"):
        SqlitePolicyVersionStore(tmp_path / "missing" / "v.db")


def test_content_id_is_order_independent_and_content_sensitive() -> None:
    a = policy_set.content_id({"tools/x/a.yml": "1", "policy/p.rego": "2"})
    assert a == policy_set.content_id({"policy/p.rego": "2", "tools/x/a.yml": "1"})
    assert a != policy_set.content_id({"tools/x/a.yml": "1", "policy/p.rego": "3"})
    assert a.startswith("ps-") and len(a) == 3 + 64


# A pushed set's names become paths in the gateway's scratch directory: every escape must be refused.
HOSTILE_NAMES = [
    "../gateway.yaml", "tools/../../etc/passwd.yml", "/etc/passwd.yml", "tools//a.yml", "tools/./a.yml",
    "gateway.yaml", "tools/a.py", "tools/.hidden/a.yml", "tools/a/.a.yml", "secrets/a.yml", "tools",
    "tools\\..\\a.yml", "tools/a\x00.yml", "tools/é.yml", "tools/a b.yml", "tools/" + "a" * 200 + ".yml",
    "policy/fixtures/../../../x.rego", "",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_file_names_are_refused(name: str) -> None:
    with pytest.raises(policy_set.SetRefused) as refused:
        policy_set.check_names({name: "x"})
    assert refused.value.reason == policy_set.FILES
    assert refused.value.problems == ["a file name is not a policy file under tools, resources, prompts, policy"]


@pytest.mark.parametrize("files", [{"tools/a/b.yml": 1}, {"tools/a/b.yml": None}, ["tools/a/b.yml"],
                                   {f"tools/a/{i}.yml": "" for i in range(policy_set.MAX_FILES + 1)},
                                   {"tools/a/b.yml": "x" * (policy_set.MAX_TOTAL_BYTES + 1)}])
def test_malformed_or_oversized_sets_are_refused(files: Any) -> None:
    with pytest.raises(policy_set.SetRefused):
        policy_set.check_names(files)


@pytest.mark.parametrize("name", ["tools/billing/get_invoice.yml", "policy/demo.rego", "policy/fixtures/a.yaml",
                                  "resources/files/readme.yml", "prompts/files/summary.yaml"])
def test_policy_file_names_pass(name: str) -> None:
    policy_set.check_names({name: "x"})


def test_a_custom_rego_dir_is_a_policy_directory() -> None:
    policy_set.check_names({"rules/a.rego": "x"}, "rules")
    with pytest.raises(policy_set.SetRefused):
        policy_set.check_names({"rules/a.rego": "x"}, "policy")


def test_collect_reads_policy_files_only(tmp_path: Path) -> None:
    (tmp_path / "tools" / "a").mkdir(parents=True)
    (tmp_path / "tools" / "a" / "t.yml").write_text("name: t\n")
    (tmp_path / "tools" / "a" / "notes.txt").write_text("no")
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "p.rego").write_text("package p\n")
    (tmp_path / "gateway.yaml").write_text("version: 1\n")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "x.yml").write_text("not policy")
    (tmp_path / "tools" / "a" / "link.yml").symlink_to(tmp_path / "gateway.yaml")
    assert policy_set.collect(tmp_path) == {"tools/a/t.yml": "name: t\n", "policy/p.rego": "package p\n"}


@pytest.mark.parametrize(("text", "expected"), [("ok", "ok"), ("a\nb\x1b[31mc", "ab[31mc"), (None, ""),
                                                (42, ""), ("x" * 900, "x" * 500), ("\u202eevil", "evil")])
def test_authors_and_messages_are_cleaned(text: object, expected: str) -> None:
    assert clean_text(text) == expected
