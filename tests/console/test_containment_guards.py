"""The kill switch actions' one guard (confirm, set, lift): the role is checked first (403, nothing said about
the store), then the store's presence (503); nothing is changed either way."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.console.conftest import csrf_of, dev_login
from tests.console.ops import Ops, ops_console

ACTIONS = (("/console/containment/kill-switches/confirm", {"kind": "tool", "target": "t", "reason": "r"}),
           ("/console/containment/kill-switches", {"kind": "tool", "target": "t", "reason": "r", "confirm": "yes"}),
           (f"/console/containment/kill-switches/ks_{'0' * 24}/lift", {"reason": "r"}))


@pytest.fixture
async def ops(tmp_path: Path) -> AsyncIterator[Ops]:
    async for value in ops_console(tmp_path):
        yield value


@pytest.mark.parametrize(("roles_typed", "status"), [("oncall", 503), ("platform", 403), ("finance-approver", 403)])
async def test_without_the_kill_switch_store_only_a_responder_learns_it_is_missing(
        ops: Ops, roles_typed: str, status: int) -> None:
    """No store: a responder gets 503 'unavailable', anyone else the 403 role page, for every action."""
    await dev_login(ops.client, "pat", roles_typed)
    token = csrf_of((await ops.client.get("/console/approvals")).text)
    ops.console.services = dataclasses.replace(ops.console.services, kills=None)
    for path, data in ACTIONS:
        answer = await ops.client.post(path, data={"csrf_token": token, **data})
        assert answer.status_code == status, path
        assert ("kill switch store is unavailable" in answer.text) == (status == 503), path
    assert list(ops.kills.store.active(time.time())) == []
