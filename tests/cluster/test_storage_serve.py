"""``portcullis storage migrate|status`` and ``serve`` against the real PostgreSQL: a replica refuses a schema
it does not know (behind or ahead) and an unreachable database, with a clear error and no stack trace, and
serves once the program has migrated the schema."""

from __future__ import annotations

import time
from pathlib import Path

import httpx2
import psycopg
import pytest
import yaml
from typer.testing import CliRunner

from portcullis.cli.main import app
from portcullis.storage.build import pg_components
from tests.cluster.replicas import keep_services
from tests.e2e.harness import GatewayProcess, copy_demo

pytestmark = pytest.mark.xdist_group("cluster/test_storage_serve.py")
URL_ENV = "PORTCULLIS_TEST_STORAGE_URL"


def cluster_deployment(root: Path) -> Path:
    keep_services(copy_demo(root), "billing")  # the one service called: a gateway start spawns each service
    config = yaml.safe_load((root / "gateway.yaml").read_text())
    config["storage"] = {"postgresql": {"url_ref": f"secret://env/{URL_ENV}", "connect_timeout_s": 3}}
    (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def run(*args: str, url: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={URL_ENV: url})
    return result.exit_code, result.output


def test_migrate_then_status(tmp_path: Path, pg_url: str) -> None:
    root = cluster_deployment(tmp_path / "deployment")
    code, output = run("storage", "status", "-c", str(root), url=pg_url)
    assert code == 1 and "approvals: database 0, program 1 (behind" in output
    code, output = run("storage", "migrate", "-c", str(root), url=pg_url)
    assert code == 0, output
    assert {line.split(":")[0] for line in output.splitlines()} == {c.name for c in pg_components()}
    assert "kill: 0 -> 1" in output
    code, output = run("storage", "migrate", "-c", str(root), url=pg_url)
    assert code == 0 and "every component is current" in output
    code, output = run("storage", "status", "-c", str(root), url=pg_url)
    assert code == 0 and output.count("(current)") == len(pg_components())
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE portcullis_schema SET version = 7 WHERE component = 'policy'")
    code, output = run("storage", "status", "-c", str(root), url=pg_url)
    assert code == 1 and "policy: database 7, program 1 (ahead" in output
    code, output = run("storage", "migrate", "-c", str(root), url=pg_url)
    assert code == 1 and "never downgrade" in output


def test_the_cli_refuses_an_embedded_deployment_and_an_unreachable_database(tmp_path: Path) -> None:
    code, output = run("storage", "status", "-c", str(copy_demo(tmp_path / "embedded")), url="")
    assert code == 2 and "no storage.postgresql" in output
    root = cluster_deployment(tmp_path / "deployment")
    code, output = run("storage", "migrate", "-c", str(root), url="postgresql://ops:hunter2@127.0.0.1:1/x")
    assert code == 2 and "PostgreSQL unavailable" in output and "hunter2" not in output
    assert "Traceback" not in output


def _refused(root: Path, *urls: str) -> list[str]:
    """The log of ``serve`` over each URL (started together), each of which must exit with status 2."""
    gateways: list[GatewayProcess] = []
    try:
        for url in urls:
            gateways.append(GatewayProcess(root, env={URL_ENV: url}))
        for gateway in gateways:
            assert gateway.proc.wait(timeout=120) == 2
        return [gateway.log() for gateway in gateways]
    finally:
        for gateway in gateways:
            gateway.stop()


def test_serve_refuses_an_unmigrated_or_newer_schema_and_an_unreachable_database(tmp_path: Path,
                                                                                 pg_url: str) -> None:
    root = cluster_deployment(tmp_path / "deployment")
    log, unreachable = _refused(root, pg_url, "postgresql://ops:hunter2@127.0.0.1:1/x?sslmode=disable")
    assert "storage.postgresql: approvals: schema version 0, this program needs 1 (run `portcullis storage " \
           "migrate`)" in log and "Traceback" not in log
    assert "storage.postgresql: PostgreSQL unavailable: postgresql://ops@127.0.0.1:1/x: cannot connect" in unreachable
    assert "hunter2" not in unreachable and "Traceback" not in unreachable
    assert run("storage", "migrate", "-c", str(root), url=pg_url)[0] == 0
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE portcullis_schema SET version = version + 1 WHERE component = 'kill'")
    [log] = _refused(root, pg_url)
    assert "kill: schema version 2 is newer than this program knows (1)" in log


def test_a_replica_over_the_migrated_schema_serves_and_applies_a_switch_stored_elsewhere(tmp_path: Path,
                                                                                         pg_url: str) -> None:
    root = cluster_deployment(tmp_path / "deployment")
    assert run("storage", "migrate", "-c", str(root), url=pg_url)[0] == 0
    with GatewayProcess(root, env={URL_ENV: pg_url}) as gateway:  # a replica over the migrated schema serves
        ready = httpx2.get(f"http://127.0.0.1:{gateway.admin_port}/readyz", timeout=10).json()
        assert ready["kill_switches"] == "ok"
        assert "result" in _call(gateway, gateway.token())
        with psycopg.connect(pg_url, autocommit=True) as conn:  # as another replica (or the CLI) would
            conn.execute("INSERT INTO kill_switches (id, kind, target, reason, actor, set_at) "
                         "VALUES ('ks_000000000000000000000001', 'agent', 'billing-bot', 'r', 'cli:x', 1)")
        deadline = time.monotonic() + 20  # generous: the poll is 0.5 s
        while "result" in (answer := _call(gateway, gateway.token())) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert answer["error"]["code"] == -31050, answer  # type: ignore[index]


def _call(gateway: GatewayProcess, token: str) -> dict[str, object]:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "billing.get_invoice", "arguments": {"invoice_id": "INV-1001"},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientCapabilities": {}}}}
    answer = httpx2.post(gateway.url, json=body, timeout=30, headers={
        "Authorization": f"Bearer {token}", "Accept": "application/json", "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call", "Mcp-Name": "billing.get_invoice"})
    result: dict[str, object] = answer.json()
    return result


def test_kill_and_token_revoke_write_to_postgresql_in_cluster_mode(tmp_path: Path, pg_url: str) -> None:
    from portcullis.identity.pg_revocation import PostgresRevocations
    from portcullis.identity.revocation import Revoked
    from portcullis.kill.pg_store import PostgresKillSwitchStore
    from tests.cluster.pg import database

    root = cluster_deployment(tmp_path / "deployment")
    assert run("storage", "migrate", "-c", str(root), url=pg_url)[0] == 0
    code, output = run("kill", "set", "agent", "billing-bot", "--reason", "looping", "-c", str(root), url=pg_url)
    assert code == 0, output
    code, output = run("token", "revoke", "--agent", "evil-bot", "-c", str(root), url=pg_url)
    assert code == 0 and "revoked agent evil-bot in postgresql://" in output, output
    db = database(pg_url)
    try:
        assert [s.target for s in PostgresKillSwitchStore(db).active(time.time())] == ["billing-bot"]
        revocations = PostgresRevocations(db)
        revocations.load()
        with pytest.raises(Revoked):
            revocations.check(jti=None, client_id=None, agent_id="evil-bot")
    finally:
        db.close()
    assert not (tmp_path / "deployment" / ".portcullis").exists()
