"""The admin APIs' shared plumbing (portcullis.transport.admin_json): a failing dependency is a JSON 500."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, MutableMapping
from typing import Any

import pytest

from portcullis.identity.principal import Principal
from portcullis.transport.pins_api import PinsApi


async def _operator(headers: Mapping[str, str], scope: Mapping[str, Any]) -> Principal:
    return Principal.from_claims({"client_id": "cli", "user_id": "ops", "roles": ["ops"], "auth_method": "bearer",
                                  "issuer": "dev"})


class _BrokenCatalog:
    def pin_report(self) -> Any:
        raise RuntimeError("catalog state /secret/path corrupt")


async def test_an_unexpected_failure_is_a_fixed_json_500_with_no_store(caplog: pytest.LogCaptureFixture) -> None:
    """The handler's dependency raises: the caller gets ``internal error`` (no detail), the operator the traceback."""
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    api = PinsApi(_BrokenCatalog(), _operator, ["role:ops"])  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="portcullis.admin"):
        await api({"type": "http", "method": "GET", "path": "/pins", "headers": []}, receive, send)
    assert sent[0]["status"] == 500
    assert (b"cache-control", b"no-store") in sent[0]["headers"]
    assert json.loads(sent[1]["body"]) == {"error": "internal error"}
    assert b"secret" not in sent[1]["body"] and "RuntimeError" in caplog.text
