"""The response cache in configuration: one decision for ``serve`` and ``lint`` (the manifest model
refuses ``cache`` on a tool that is not read-only or whose output is Restricted; both load through
it), and a warning when the gateway would never cache a tool that declares it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from portcullis.config.loader import lint_deployment, load_deployment
from portcullis.errors import ConfigError

GATEWAY = {"version": 1, "identity": {"allow_insecure_dev_issuer": True},
           "services": {"s": {"transport": "http", "url": "http://127.0.0.1:1/mcp"}}}


def _write(root: Path, manifest: dict[str, Any], gateway: dict[str, Any] | None = None) -> Path:
    root.mkdir()
    (root / "gateway.yaml").write_text(yaml.safe_dump(gateway or GATEWAY))
    tool = {"name": "lookup", "service": "s", "owner": "t@example.com", "description": "Look up.", "risk": "low",
            "classification": {"input": "Internal", "output": "Internal"}, "input_schema": {"type": "object"},
            "pin": "sha256:" + "a" * 64, "policy": {"allowed_callers": ["agent:bot"]}, **manifest}
    (root / "tools" / "s").mkdir(parents=True)
    (root / "tools" / "s" / "lookup.yml").write_text(yaml.safe_dump(tool))
    return root


REFUSED = [
    ("no annotations", {"cache": {"ttl_s": 60}}),
    ("readOnlyHint false", {"cache": {"ttl_s": 60}, "annotations": {"readOnlyHint": False}}),
    ("Restricted output", {"cache": {"ttl_s": 60}, "annotations": {"readOnlyHint": True},
                           "classification": {"input": "Internal", "output": "Restricted"}}),
    ("ttl zero", {"cache": {"ttl_s": 0}, "annotations": {"readOnlyHint": True}}),
    ("unknown cache key", {"cache": {"ttl_s": 5, "shared": True}, "annotations": {"readOnlyHint": True}}),
]


@pytest.mark.parametrize(("label", "manifest"), REFUSED, ids=[r[0] for r in REFUSED])
def test_serve_and_lint_refuse_the_same_manifest(tmp_path: Path, label: str, manifest: dict[str, Any]) -> None:
    root = _write(tmp_path / "dep", manifest)
    with pytest.raises(ConfigError):
        load_deployment(root, environ={})
    errors = [p for p in lint_deployment(root, environ={}) if p.severity == "error"]
    assert any("cache" in p.message for p in errors), label


def test_read_only_internal_tool_may_be_cached(tmp_path: Path) -> None:
    root = _write(tmp_path / "dep", {"cache": {"ttl_s": 60}, "annotations": {"readOnlyHint": True}})
    deployment = load_deployment(root, environ={})
    assert deployment.manifests[0].manifest.cache is not None
    assert not [p for p in lint_deployment(root, environ={}) if "cache" in p.message]


@pytest.mark.parametrize("response_cache", [{"enabled": False}, {"classifications": ["Public"]}])
def test_warning_when_the_gateway_never_caches_it(tmp_path: Path, response_cache: dict[str, Any]) -> None:
    root = _write(tmp_path / "dep", {"cache": {"ttl_s": 60}, "annotations": {"readOnlyHint": True}},
                  {**GATEWAY, "response_cache": response_cache})
    found = [p for p in lint_deployment(root, environ={}) if "cache" in p.message]
    assert [p.severity for p in found] == ["warning"]


def test_gateway_refuses_restricted_in_cache_classes(tmp_path: Path) -> None:
    root = _write(tmp_path / "dep", {}, {**GATEWAY, "response_cache": {"classifications": ["Restricted"]}})
    with pytest.raises(ConfigError):
        load_deployment(root, environ={})
