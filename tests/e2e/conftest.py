"""Fixtures for end-to-end tests through a real gateway process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.harness import GatewayProcess, copy_demo


@pytest.fixture(scope="module")
def demo_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """The bundled demo deployment served by a gateway process with its three demo services."""
    root = copy_demo(tmp_path_factory.mktemp("demo") / "deployment")
    with GatewayProcess(root) as gateway:
        yield gateway

