"""The gateway's own state inside a deployment directory is never read as configuration, and
emergency revocation needs nothing but the revocation list's location."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from portcullis.cli.main import app
from portcullis.config.loader import lint_deployment, load_deployment
from portcullis.config.state_paths import StatePaths
from portcullis.errors import ConfigError

PEM = "-----BEGIN " + "PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI\n-----END " + "PRIVATE KEY-----\n"
MANIFEST = {"name": "echo", "service": "svc", "owner": "t@example.com", "description": "Echo.", "risk": "low",
            "classification": {"input": "Public", "output": "Public"},
            "input_schema": {"type": "object"}, "pin": "sha256:" + "ab" * 32}


def deployment(root: Path, **gateway: object) -> Path:
    config = {"version": 1, "identity": {"allow_insecure_dev_issuer": True},
              "services": {"svc": {"transport": "http", "url": "http://127.0.0.1:9/mcp"}}, **gateway}
    (root / "tools" / "svc").mkdir(parents=True)
    (root / "gateway.yaml").write_text(yaml.safe_dump(config))
    (root / "tools" / "svc" / "echo.yml").write_text(yaml.safe_dump(MANIFEST))
    return root


def plant_state(state: Path) -> None:
    """What a gateway leaves in its state directory: keys (PEM), SQLite stores and their companions."""
    state.mkdir(parents=True, exist_ok=True)
    (state / "dev_issuer_key.pem").write_text(PEM)
    (state / "audit_signing_key.pem").write_text(PEM)
    for name in ("audit.sqlite3", "audit.sqlite3-wal", "revocations.db", "counters.sqlite3-shm"):
        (state / name).write_bytes(PEM.encode() + b"\0binary")
    (state / "stray.yml").write_text("{not: [valid yaml")


# Each row: gateway.yaml fields, environment, where the gateway's state goes (relative to the root).
PLACEMENTS = [
    pytest.param({"state_dir": "{root}/state"}, {}, "state", id="absolute state_dir"),
    pytest.param({"state_dir": "{root}/./state/../state/"}, {}, "state", id="state_dir not normalised"),
    pytest.param({"state_dir": "{root}/tools/svc/state"}, {}, "tools/svc/state", id="state_dir under tools"),
    pytest.param({"state_dir": "{root}/policy/.cache/s"}, {}, "policy/.cache/s", id="state_dir under a dot dir"),
    pytest.param({"state_dir": "{root}/a/b/c/d"}, {}, "a/b/c/d", id="state_dir nested deep"),
    pytest.param({}, {"PORTCULLIS_STATE_DIR": "{root}/state"}, "state", id="PORTCULLIS_STATE_DIR"),
    pytest.param({"state_dir": "state"}, {}, "state", id="relative state_dir, served from the deployment"),
    pytest.param({"state_dir": "{root}/state"}, {"PORTCULLIS_STATE_DIR": "/elsewhere"}, "state",
                 id="state_dir wins over the environment"),
]


@pytest.mark.parametrize(("fields", "env", "where"), PLACEMENTS)
def test_a_deployment_with_its_state_inside_loads_after_the_gateway_wrote_keys(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fields: dict[str, str], env: dict[str, str],
        where: str) -> None:
    """Keys, stores and stray files in the state directory are never read: no secret, YAML or manifest findings."""
    root = tmp_path / "deployment"
    root.mkdir()
    monkeypatch.chdir(root)
    deployment(root, **{k: v.format(root=root) for k, v in fields.items()})
    environ = {k: v.format(root=root) for k, v in env.items()}
    plant_state(root / where)
    loaded = load_deployment(root, environ)
    assert [m.exposed_name for m in loaded.manifests] == ["svc.echo"]
    problems = lint_deployment(root, environ)
    assert not [p for p in problems if p.severity == "error"], problems
    assert all(where not in str(p.path) for p in problems)
    assert any("state_dir is inside the deployment directory" in p.message for p in problems)


@pytest.mark.parametrize("field", ["audit", "approvals"])
def test_stores_placed_inside_the_deployment_are_not_read_with_their_sqlite_companions(
        tmp_path: Path, field: str) -> None:
    """``audit.path`` / ``approvals.path`` inside the deployment: the file, -wal, -shm and -journal are skipped."""
    root = deployment(tmp_path / "d", state_dir=str(tmp_path / "outside"), **{field: {"path": "data/store.db"}})
    (root / "data").mkdir()
    for suffix in ("", "-wal", "-shm", "-journal"):
        (root / "data" / f"store.db{suffix}").write_text(PEM)
    os.chdir(root)
    try:
        load_deployment(root, {})
    finally:
        os.chdir(tmp_path)


def test_revocation_file_inside_the_deployment_is_not_read(tmp_path: Path) -> None:
    """``identity.revocation_file`` inside the deployment is state, not configuration."""
    root = deployment(tmp_path / "d", state_dir=str(tmp_path / "s"),
                      identity={"allow_insecure_dev_issuer": True, "revocation_file": str(tmp_path / "d/rev.db")})
    (root / "rev.db").write_text(PEM)
    load_deployment(root, {})


# Files that look like state but are not: a secret in them is still found.
LOOKALIKES = [
    pytest.param("state-old/key.pem", id="sibling with the state dir's name as a prefix"),
    pytest.param("statefile.yml", id="file with the state dir's name as a prefix"),
    pytest.param("policy/key.pem", id="ordinary config file"),
    pytest.param("tools/svc/echo.yml.bak", id="file beside a manifest"),
]


@pytest.mark.parametrize("planted", LOOKALIKES)
def test_secrets_outside_the_state_directory_are_still_refused(tmp_path: Path, planted: str) -> None:
    """Only the state directory itself is skipped; a literal secret anywhere else still fails the load."""
    root = deployment(tmp_path / "d", state_dir=str(tmp_path / "d" / "state"))
    plant_state(root / "state")
    (root / planted).parent.mkdir(parents=True, exist_ok=True)
    (root / planted).write_text(PEM)
    with pytest.raises(ConfigError) as caught:
        load_deployment(root, {})
    assert [p.path.relative_to(root).as_posix() for p in caught.value.problems] == [planted]


def test_a_manifest_inside_the_state_directory_is_never_loaded(tmp_path: Path) -> None:
    """A tool manifest dropped into the state directory does not become configuration."""
    root = deployment(tmp_path / "d", state_dir=str(tmp_path / "d" / "tools" / "svc2"))
    (root / "tools" / "svc2").mkdir()
    (root / "tools" / "svc2" / "extra.yml").write_text(yaml.safe_dump({**MANIFEST, "name": "extra"}))
    assert [m.exposed_name for m in load_deployment(root, {}).manifests] == ["svc.echo"]


def test_state_directory_equal_to_the_deployment_is_an_error(tmp_path: Path) -> None:
    """The deployment directory itself cannot be the state directory: refused before any key is written."""
    root = deployment(tmp_path / "d", state_dir=str(tmp_path / "d"))
    with pytest.raises(ConfigError) as caught:
        load_deployment(root, {})
    assert ["state_dir is the deployment directory itself" in p.message for p in caught.value.problems] == [True]


def test_state_directory_above_the_deployment_skips_nothing(tmp_path: Path) -> None:
    """A state directory that contains the deployment does not hide the deployment's own files."""
    root = deployment(tmp_path / "d", state_dir=str(tmp_path))
    assert len(load_deployment(root, {}).manifests) == 1
    (root / "policy").mkdir()
    (root / "policy" / "k.pem").write_text(PEM)
    with pytest.raises(ConfigError):
        load_deployment(root, {})


@pytest.mark.parametrize("raw", [None, "text", [], {"state_dir": 7}, {"identity": "x"},
                                 {"identity": {"revocation_file": ["a"]}}, {"audit": {"path": None}}])
def test_state_paths_treat_malformed_fields_as_unset(raw: object) -> None:
    """A broken gateway.yaml never stops the state paths being worked out: bad values count as unset."""
    paths = StatePaths.from_raw(raw, {"PORTCULLIS_STATE_DIR": "/var/lib/p"})
    assert paths.state_dir == Path("/var/lib/p")
    assert paths.revocations == Path("/var/lib/p/revocations.db")


# ----------------------------------------------------------------------------- emergency revocation

BROKEN = {
    "manifest with a literal secret": lambda root: (root / "tools/svc/leak.yml").write_text(PEM),
    "schema error in gateway.yaml": lambda root: (root / "gateway.yaml").write_text(
        (root / "gateway.yaml").read_text() + "unknown_key: 1\nlisten: {port: not-a-number}\n"),
    "unknown service in a manifest": lambda root: (root / "tools/svc/echo.yml").write_text(
        yaml.safe_dump({**MANIFEST, "service": "gone"})),
    "services removed": lambda root: (root / "gateway.yaml").write_text(
        yaml.safe_dump({"state_dir": str(root / "state"), "version": 9})),
    "manifests unreadable": lambda root: (root / "tools/svc/echo.yml").chmod(0),
}


def revoked(path: Path) -> set[tuple[str, str]]:
    with sqlite3.connect(path) as db:
        return set(db.execute("SELECT kind, value FROM revocations").fetchall())


@pytest.mark.parametrize("breakage", list(BROKEN))
def test_token_revoke_with_config_works_when_the_deployment_does_not_load(tmp_path: Path, breakage: str) -> None:
    """Only the revocation list's location is read from --config, so a broken deployment still revokes."""
    root = deployment(tmp_path / "d", state_dir=str(tmp_path / "d" / "state"))
    (root / "state").mkdir()
    BROKEN[breakage](root)
    result = CliRunner().invoke(app, ["token", "revoke", "--config", str(root), "--agent", "rogue-bot"])
    assert result.exit_code == 0, result.output
    assert revoked(root / "state" / "revocations.db") == {("agent", "rogue-bot")}


def test_token_revoke_follows_the_configured_revocation_file(tmp_path: Path) -> None:
    """``identity.revocation_file`` is where the gateway reads, so it is where revoke writes."""
    root = deployment(tmp_path / "d", state_dir=str(tmp_path / "s"),
                      identity={"allow_insecure_dev_issuer": True, "revocation_file": str(tmp_path / "rev.db")})
    result = CliRunner().invoke(app, ["token", "revoke", "--config", str(root), "--client", "c1"])
    assert result.exit_code == 0, result.output
    assert revoked(tmp_path / "rev.db") == {("client", "c1")}


@pytest.mark.parametrize("how", ["--state-dir", "--revocation-file"])
def test_token_revoke_needs_no_deployment_at_all(tmp_path: Path, how: str) -> None:
    """--state-dir or --revocation-file name the list directly: no gateway.yaml is read."""
    target = tmp_path if how == "--state-dir" else tmp_path / "revocations.db"
    result = CliRunner().invoke(app, ["token", "revoke", how, str(target), "--jti", "j-1"])
    assert result.exit_code == 0, result.output
    assert revoked(tmp_path / "revocations.db") == {("jti", "j-1")}


@pytest.mark.parametrize("text", [None, "{unclosed: [", "a: 1\na: 2\n"])
def test_token_revoke_refuses_to_guess_when_gateway_yaml_is_unreadable(tmp_path: Path, text: str | None) -> None:
    """No readable gateway.yaml: exit 2 naming --state-dir / --revocation-file, and nothing is written anywhere."""
    root = tmp_path / "d"
    root.mkdir()
    if text is not None:
        (root / "gateway.yaml").write_text(text)
    result = CliRunner().invoke(app, ["token", "revoke", "--config", str(root), "--agent", "a"],
                                env={"PORTCULLIS_STATE_DIR": str(tmp_path / "fallback")})
    assert result.exit_code == 2
    assert "--state-dir" in result.output
    assert not (tmp_path / "fallback").exists()
