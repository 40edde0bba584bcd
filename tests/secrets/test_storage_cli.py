"""``portcullis storage status`` reaches a PostgreSQL whose URL is a vault reference (the real server)."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from portcullis.cli.main import app
from portcullis.config.secret_store import activate
from tests.cluster.conftest import pg_schema, pg_url  # noqa: F401 - fixtures used by name
from tests.secrets.conftest import Bao


def test_storage_status_resolves_a_vault_url(bao: Bao, pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    """The command opens a store for the secrets section: the vault URL resolves and the schema is read."""
    bao.put("storage/pg", {"url": pg_url})
    root = tmp_path / "deployment"
    root.mkdir()
    (root / "gateway.yaml").write_text(yaml.safe_dump({
        "version": 1,
        "secrets": {"vault": {"address": bao.address,
                              "auth": {"method": "token", "token_ref": "secret://env/PORTCULLIS_TEST_VAULT_TOKEN"}}},
        "storage": {"postgresql": {"url_ref": "secret://vault/secret/storage/pg#url", "connect_timeout_s": 5}}}))
    try:
        result = CliRunner().invoke(app, ["storage", "status", "-c", str(root)],
                                    env={"PORTCULLIS_TEST_VAULT_TOKEN": bao.root_token})
    finally:
        activate(None)
    assert result.exit_code == 1 and "(behind" in result.output, result.output
    assert pg_url not in result.output and bao.root_token not in result.output

