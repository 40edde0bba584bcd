"""The configuration examples of docs/secrets.md are valid gateway.yaml and pass the secret checks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from portcullis.config.model import GatewayConfig
from portcullis.config.secret_lint import secret_problems

DOC = Path(__file__).resolve().parents[2] / "docs" / "secrets.md"
BLOCKS = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_docs_yaml_example_is_a_valid_gateway_section(block: str) -> None:
    """Each YAML example validates as part of a gateway.yaml, with a vault section for its vault references."""
    example = yaml.safe_load(block)
    vault = {"vault": {"address": "https://vault.internal:8200",
                       "auth": {"method": "token", "token_ref": "secret://env/VAULT_GATEWAY_TOKEN"}}}
    base = {"version": 1, "secrets": vault, "services": {"s": {"transport": "http", "url": "https://s.internal/mcp"}}}
    config = GatewayConfig.model_validate({**base, **example})
    assert list(secret_problems(config)) == []


def test_docs_show_every_example_block() -> None:
    """The page has its two configuration examples (the test above would pass vacuously without them)."""
    assert len(BLOCKS) == 2
