"""Serve refuses => lint refuses: a table of broken deployments, each refused by building the gateway
(``build_gateway``, or loading, which serve does first) AND reported as an error by ``portcullis lint``."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from portcullis.cli.main import demo_deployment
from portcullis.config.loader import lint_deployment, load_deployment
from portcullis.errors import ConfigError
from portcullis.gateway import build_gateway

SRC = Path(__file__).resolve().parents[2] / "src" / "portcullis"


def _gateway(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        path = root / "gateway.yaml"
        config = yaml.safe_load(path.read_text())
        change(config)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
    return edit


def _no_identity(config: dict[str, Any]) -> None:
    config.pop("identity", None)
    config.pop("console", None)  # its dev login needs the development issuer: a schema error of its own


def _wrong_audience(config: dict[str, Any]) -> None:
    config["identity"]["issuers"] = [{"name": "corp", "issuer": "https://idp.example.com",
                                      "jwks_url": "https://idp.example.com/jwks", "algorithms": ["RS256"],
                                      "audience": "https://elsewhere.example.com/mcp"}]


def _workers(config: dict[str, Any]) -> None:
    config["listen"] = {**config.get("listen", {}), "workers": 2}


def _bad_rego(root: Path) -> None:
    (root / "policy" / "broken.rego").write_text("package portcullis.broken\n\nallow if {\n")


BROKEN: dict[str, tuple[Callable[[Path], None], str]] = {
    "no identity": (_gateway(_no_identity), "serve.refuses"),
    "issuer audience is not the resource": (_gateway(_wrong_audience), "serve.refuses"),
    "workers without shared state": (_gateway(_workers), "schema"),
    "rego that does not compile": (_bad_rego, "rego.compile"),
}


def _demo(tmp_path: Path) -> Path:
    return Path(shutil.copytree(demo_deployment(), tmp_path / "demo"))


def _build(root: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    environ = {"PORTCULLIS_STATE_DIR": str(state)}
    build_gateway(load_deployment(root, environ), environ=environ, port=0, admin_port=0)


def test_the_demo_builds_and_lints_clean(tmp_path: Path) -> None:
    """The control row: the unbroken demo builds, and lint has nothing to say."""
    root = _demo(tmp_path)
    _build(root, tmp_path)
    assert lint_deployment(root) == []


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_what_serve_refuses_lint_refuses(tmp_path: Path, case: str) -> None:
    """Each broken deployment: building the gateway raises ConfigError, and lint reports an error under the rule."""
    change, rule = BROKEN[case]
    root = _demo(tmp_path)
    change(root)
    with pytest.raises(ConfigError):
        _build(root, tmp_path)
    assert rule in {p.rule for p in lint_deployment(root) if p.severity == "error"}


KNOWN_BUILD_REFUSALS = {  # module -> how it is covered: a BROKEN row, a lint check, or why it cannot be static
    "gateway.py": "identity / audience rows (serve.refuses); keys_ref and session keys resolve secrets at start",
    "storage/build.py": "opening the stores: the database and state directory of the machine that serves",
    "policy/wiring.py": "policy versions store: opened at start",
    "policy/engine.py": "Rego row (rego.compile)",
    "observability/tracing.py": "otlp package: serve.environment warning",
    "audit/siem/config.py": "exporter secrets and files, resolved at start",
    "audit/witness/client.py": "witness keys and secrets, resolved at start",
    "audit/keys.py": "the audit signing key in the state directory",
    "upstream/stdio_spawn.py": "bubblewrap on the serving machine",
    "upstream/sdk_client.py": "stdio command on PATH: serve.environment warning",
}


def test_every_build_time_refusal_is_accounted_for() -> None:
    """A new module that raises ConfigError while the gateway is built needs a row above (and a lint check)."""
    raising = set()
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith(("config/", "cli/")) or rel in ("errors.py",):
            continue
        if re.search(r"\bConfigError\(", path.read_text(encoding="utf-8")):
            raising.add(rel)
    assert raising == set(KNOWN_BUILD_REFUSALS)


def test_what_depends_on_the_serving_machine_is_a_warning(tmp_path: Path) -> None:
    """A stdio command this machine lacks: serve here would fail to start it; lint warns (CI may not be the host)."""
    root = _demo(tmp_path)

    def add_service(config: dict[str, Any]) -> None:
        config["services"]["ghost"] = {"transport": "stdio", "command": "portcullis-no-such-command-\x1b[31m"}
    _gateway(add_service)(root)
    found = [p for p in lint_deployment(root) if p.rule == "serve.environment"]
    assert [(p.path.name, p.severity) for p in found] == [("gateway.yaml", "warning")]
    assert found[0].line is not None and "services.ghost.command" in found[0].message
