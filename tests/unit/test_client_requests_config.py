"""``services.<name>.client_requests`` in configuration: deny by default, and one decision for ``serve`` and
``lint`` (both load ``gateway.yaml`` through the same model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from portcullis.config.loader import lint_deployment, load_deployment
from portcullis.errors import ConfigError


def _write(root: Path, client_requests: Any) -> Path:
    root.mkdir()
    service: dict[str, Any] = {"transport": "http", "url": "http://127.0.0.1:1/mcp"}
    if client_requests is not None:
        service["client_requests"] = client_requests
    gateway = {"version": 1, "identity": {"allow_insecure_dev_issuer": True}, "services": {"s": service}}
    (root / "gateway.yaml").write_text(yaml.safe_dump(gateway))
    return root


def test_client_requests_deny_every_kind_by_default(tmp_path: Path) -> None:
    """A service without a client_requests block relays no kind."""
    deployment = load_deployment(_write(tmp_path / "dep", None), environ={})
    allowed = deployment.gateway.services["s"].client_requests
    assert (allowed.sampling, allowed.elicitation_form, allowed.elicitation_url, allowed.roots) == (False,) * 4


def test_client_requests_allow_each_kind_named(tmp_path: Path) -> None:
    """Each kind set true is allowed, the others stay denied."""
    deployment = load_deployment(_write(tmp_path / "dep", {"elicitation_form": True, "roots": True}), environ={})
    allowed = deployment.gateway.services["s"].client_requests
    assert (allowed.sampling, allowed.elicitation_form, allowed.elicitation_url, allowed.roots) == \
        (False, True, False, True)


@pytest.mark.parametrize("block", [{"sampling": "yes"}, {"sampling": 1}, {"elicitation": True}, ["sampling"]],
                         ids=["string", "integer", "unknown-key", "list"])
def test_serve_and_lint_refuse_the_same_client_requests(tmp_path: Path, block: Any) -> None:
    """A value that is not a boolean, or an unknown kind, is refused by serve and lint alike."""
    root = _write(tmp_path / "dep", block)
    with pytest.raises(ConfigError):
        load_deployment(root, environ={})
    assert any("client_requests" in p.message for p in lint_deployment(root, environ={}) if p.severity == "error")
