"""The README's examples stay true: its gateway.yaml validates against the configuration model."""

from __future__ import annotations

from pathlib import Path

import yaml

from portcullis.config.model import GatewayConfig

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_gateway_yaml_example_validates() -> None:
    """The 'Configuration in brief' example is a valid gateway.yaml."""
    text = README.read_text()
    block = text.split("## Configuration in brief")[1].split("```yaml\n")[1].split("```")[0]
    config = GatewayConfig.model_validate(yaml.safe_load(block))
    assert config.identity is not None and config.identity.issuers[0].name == "corp"
    assert config.listen.tls is not None and config.listen.tls.client_auth == "optional"


def test_readme_first_section_gives_the_two_commands() -> None:
    """The first section names exactly `make run` and `make test`."""
    first = README.read_text().split("## ")[1]
    assert "make run" in first and "make test" in first
