"""Forensics in cluster mode, end to end: the same records written through the PostgreSQL audit store and
through the SQLite one give the same answers to `audit search`, `audit timeline`, `incident report` and
`policy diff` (run with ``-c`` on a deployment whose gateway.yaml sets ``storage.postgresql``)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from typer.testing import CliRunner

from portcullis.audit import AuditWriter, SqliteAuditStore
from portcullis.audit.checkpoint import Checkpointer, CheckpointPolicy
from portcullis.audit.pg_store import open_postgres_audit
from portcullis.cli.main import app
from portcullis.policy.pg_versions import PostgresPolicyVersionStore
from portcullis.policy.versions import PolicyVersion
from portcullis.storage.build import pg_components
from portcullis.storage.config import PostgresConfig
from portcullis.storage.migrations import migrate
from portcullis.storage.postgres import Database
from tests.unit.test_policy_replay import Rig, entries

runner = CliRunner()
CONFIG = PostgresConfig(url_ref="secret://env/PORTCULLIS_TEST_UNUSED", pool_size=2, connect_timeout_s=3)
KEY = Ed25519PrivateKey.generate()
ENV_VAR = "PORTCULLIS_TEST_FORENSICS_PG"


class Cluster:
    """The rig's records in SQLite (``--store``) and in PostgreSQL (``-c pg``), with one signing key."""

    def __init__(self, root: Path, url: str) -> None:
        self.rig = Rig(root)
        self.url = url
        self.key_file = root / "audit-signing.pub.pem"
        self.key_file.write_bytes(KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
        self.now = time.time()
        self.pg_dep = Path(shutil.copytree(self.rig.dep, root / "pg-deployment"))
        gateway = self.pg_dep / "gateway.yaml"
        gateway.write_text(gateway.read_text() + f"\nstate_dir: {root / 'pg-state'}\nstorage:\n  postgresql:\n"
                           f"    url_ref: secret://env/{ENV_VAR}\n")
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn, pg_components())
        db = Database(url, CONFIG).open()
        try:
            versions = PostgresPolicyVersionStore(db)
            for files in (self.rig.a, self.rig.b):
                from portcullis.policy import policy_set

                engine = self.rig.engine_a if files is self.rig.a else self.rig.engine_b
                versions.put(PolicyVersion(policy_set.content_id(files), engine.version, 1.0, "ops", "test", files))
        finally:
            db.close()

    async def write(self, store: Any) -> None:
        stamps = iter([self.now - 3 * 86400, *[self.now - 60 + i for i in range(40)]])
        checks = iter(self.now + i for i in range(100))
        checkpointer = Checkpointer(store, KEY, clock=lambda: next(checks),
                                    policy=CheckpointPolicy(every_records=4, every_s=1e9))
        async with AuditWriter(store, clock=lambda: next(stamps), max_delay_s=0, checkpointer=checkpointer) as w:
            for request_id, fields in entries(self.rig):
                await w.record("decision", request_id, fields)

    async def write_both(self) -> None:
        self.rig.store.unlink(missing_ok=True)
        async with await SqliteAuditStore.open(self.rig.store) as store:
            await self.write(store)
        async with await open_postgres_audit(CONFIG, url=self.url) as store:
            await self.write(store)

    def run(self, backend: str, *args: str) -> Any:
        where = (["--config", str(self.pg_dep)] if backend == "pg"
                 else ["--config", str(self.rig.dep), "--store", str(self.rig.store)])
        if args[:2] == ("policy", "diff"):
            where += ["--state-dir", str(self.rig.state)] if backend == "sqlite" else []
        return runner.invoke(app, [*args, *where], env={ENV_VAR: self.url, "COLUMNS": "300"})


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str) -> Cluster:
    made = Cluster(tmp_path, pg_url)
    anyio.run(made.write_both)
    return made


def _same(cluster: Cluster, *args: str, code: int = 0) -> str:
    sqlite, pg = cluster.run("sqlite", *args), cluster.run("pg", *args)
    assert sqlite.exit_code == code, sqlite.output
    assert pg.exit_code == code, pg.output
    assert pg.output == sqlite.output
    return pg.output


def test_search_timeline_incident_and_replay_read_postgresql_as_they_read_sqlite(cluster: Cluster) -> None:
    since = str(cluster.now - 3600)
    found = _same(cluster, "audit", "search", "--json")
    assert len(found.splitlines()) == 11
    assert [json.loads(line)["request_id"] for line in _same(
        cluster, "audit", "search", "--json", "--principal", "agent_id=refund-bot").splitlines()] == ["req-stranger"]
    _same(cluster, "audit", "search", "--tool", "billing.get_invoice")  # the table too
    groups = _same(cluster, "audit", "timeline", "--agent", "billing-bot", "--since", since, "--json")
    assert len(groups.splitlines()) == 8
    _same(cluster, "audit", "timeline", "--request-id", "req-80")
    report = json.loads(_same(cluster, "incident", "report", "--since", since, "--format", "json",
                              "--public-key", str(cluster.key_file)))
    assert report["chain"]["status"] == "verified", report["chain"]
    _same(cluster, "incident", "report", "--since", since, "--agent", "billing-bot",
          "--public-key", str(cluster.key_file))
    rig = cluster.rig
    replay = json.loads(_same(cluster, "policy", "diff", "--from", rig.id_a, "--to", rig.id_b, "--window", "1h",
                              "--format", "json"))
    assert [r["request_id"] for r in replay["rows"]] == ["req-80", "req-stranger"]


def test_an_unreachable_database_is_a_clear_error_without_the_url(cluster: Cluster) -> None:
    cluster.url = "postgresql://forensics:s3cret-pw@127.0.0.1:1/test"  # nothing listens on port 1
    gateway = cluster.pg_dep / "gateway.yaml"  # refused at once; do not wait out the default connect timeout
    gateway.write_text(gateway.read_text() + "    connect_timeout_s: 1\n")
    for args in (["audit", "search"], ["audit", "timeline", "--agent", "x"],
                 ["incident", "report", "--since", "1h", "--public-key", str(cluster.key_file)],
                 ["policy", "diff", "--from", cluster.rig.id_a, "--to", cluster.rig.id_b]):
        result = cluster.run("pg", *args)
        assert result.exit_code == 1, (args, result.output)
        assert "s3cret" not in result.output and "forensics@" not in result.output and "Traceback" not in result.output
        if args[0] == "policy":  # the stored versions are read first, from the same database
            assert "the policy version store cannot be read" in result.output, result.output
        else:
            assert "cannot read the audit store: audit store (PostgreSQL) open failed" in result.output, result.output
