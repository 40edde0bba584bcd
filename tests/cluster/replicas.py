"""Several gateway processes on loopback over one deployment: replicas (one process per port) or one
``serve --workers N`` supervisor. Used by the cluster tests and bench/cluster.py.

The deployment's gateway.yaml points ``storage.postgresql.url_ref`` / ``storage.redis.url_ref`` at
environment variables holding the test's ``pg_url`` / ``redis_url`` (with the test's Redis key prefix),
seals 2025-era sessions with one shared key, and trusts the development issuer; every process shares
one state directory, for the development issuer key only (the shared state lives in the stores).
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from typer.testing import CliRunner

from portcullis.cli.main import app
from tests.e2e.harness import GatewayProcess, copy_demo

RESOURCE = "https://gateway.example/mcp"  # replicas behind one name share the token audience


@dataclass(frozen=True, slots=True)
class ClusterDeployment:
    """A deployment directory and the environment every gateway process of it needs."""

    root: Path
    state_dir: Path
    env: dict[str, str] = field(default_factory=dict)


def keep_services(root: Path, *services: str) -> Path:
    """Drop every demo service but ``services`` from the deployment at ``root`` (its tools, resources, prompts and
    golden policy fixtures too): each stdio service is a process every gateway starts, the slow part of a start
    on a loaded machine."""
    config = yaml.safe_load((root / "gateway.yaml").read_text())
    unknown = set(services) - set(config["services"])
    assert not unknown, f"not demo services: {sorted(unknown)}"
    config["services"] = {name: spec for name, spec in config["services"].items() if name in services}
    (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for kind in ("tools", "resources", "prompts"):
        for directory in (root / kind).glob("*"):
            if directory.name not in services:
                shutil.rmtree(directory)
    for fixtures in (root / "policy" / "fixtures").glob("*.yaml"):  # a reload checks them against the tools
        if fixtures.stem not in services:
            fixtures.unlink()
    return root


def cluster_deployment(root: Path, pg_url: str, redis_url: str, redis_prefix: str, *,
                       edit: dict[str, object] | None = None,
                       services: tuple[str, ...] | None = None) -> ClusterDeployment:
    """The demo deployment at ``root`` configured for cluster mode over the test's stores (only ``services``
    when given: :func:`keep_services`)."""
    copy_demo(root)
    if services is not None:
        keep_services(root, *services)
    config = yaml.safe_load((root / "gateway.yaml").read_text())
    config["sessions"] = {"key_ref": "secret://env/PORTCULLIS_TEST_SESSION_KEY"}
    config["identity"] = {"allow_insecure_dev_issuer": True, "resource": RESOURCE}
    config["storage"] = {"postgresql": {"url_ref": "secret://env/PORTCULLIS_TEST_PG_URL"},
                         "redis": {"url_ref": "secret://env/PORTCULLIS_TEST_REDIS_URL", "key_prefix": redis_prefix}}
    config.update(edit or {})
    (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    env = {"PORTCULLIS_TEST_SESSION_KEY": base64.b64encode(os.urandom(32)).decode(),
           "PORTCULLIS_TEST_PG_URL": pg_url, "PORTCULLIS_TEST_REDIS_URL": redis_url}
    # the program creates its schema: `portcullis storage migrate`, run in this process (a CLI process of its own
    # costs seconds of imports on a loaded machine; tests/cluster/test_storage_serve.py runs it as a command)
    migrated = CliRunner().invoke(app, ["storage", "migrate", "-c", str(root)], env=env)
    if migrated.exit_code != 0:
        raise RuntimeError(f"portcullis storage migrate failed:\n{migrated.output}")
    return ClusterDeployment(root, root.parent / "shared-state", env)


def start_replica(cluster: ClusterDeployment, index: int) -> GatewayProcess:
    """One replica: its own port and admin port, not yet waited for."""
    return GatewayProcess(cluster.root, env=cluster.env,
                          state_dir=cluster.state_dir, audience=RESOURCE)


def start_supervisor(cluster: ClusterDeployment, workers: int, *, extra_env: dict[str, str] | None = None
                     ) -> GatewayProcess:
    """``portcullis serve --workers N`` over the deployment, not yet waited for."""
    return GatewayProcess(cluster.root, env={**cluster.env, **(extra_env or {})},
                          state_dir=cluster.state_dir, audience=RESOURCE, args=("--workers", str(workers)))


@contextmanager
def replicas(cluster: ClusterDeployment, count: int) -> Iterator[list[GatewayProcess]]:
    """``count`` replicas, each ready, stopped afterwards (also when one fails to start)."""
    started: list[GatewayProcess] = []
    try:
        for index in range(count):
            started.append(start_replica(cluster, index))
        for gateway in started:
            gateway.wait_ready()
        yield started
    finally:
        for gateway in started:
            gateway.stop()
