"""Subscriptions and list changes end to end: the official SDK client in both modes (a 2025-11-25 session
with its GET stream, and 2026-07-28 ``subscriptions/listen``) through a gateway process, to an SDK service
over stdio (the SDK connector) and over Streamable HTTP (the raw relay) that updates a resource and
changes its lists; plus the raw HTTP refusals of the GET stream."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import pytest
from mcp import MCPError, types
from mcp.client.subscriptions import ResourcesListChanged, ResourceUpdated

from tests.e2e import test_surface_e2e as _surface
from tests.e2e.harness import GatewayProcess
from tests.e2e.test_surface_e2e import NOTES, writer

# resources/subscribe is the 2025-era method under test: the SDK warns that 2026-07-28 removed it
pytestmark = [pytest.mark.timeout(180),
              pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")]
surface_gateway = _surface.surface_gateway  # the surface tests' fixture: a fresh gateway for this module


@pytest.fixture(scope="module")
def gateway(surface_gateway: GatewayProcess) -> Iterator[GatewayProcess]:
    """A gateway in front of the surface service over stdio, then over HTTP."""
    yield surface_gateway


class Inbox:
    """What the SDK client's message handler received (server notifications)."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handler(self, message: Any) -> None:
        if isinstance(message, types.ServerNotification | types.ResourceUpdatedNotification
                      | types.ResourceListChangedNotification):
            self.messages.append(message)

    async def wait_for(self, kind: type, timeout: float = 15) -> Any:
        with anyio.fail_after(timeout):
            while True:
                for message in self.messages:
                    inner = getattr(message, "root", message)
                    if isinstance(inner, kind):
                        return inner
                await anyio.sleep(0.05)


async def test_legacy_session_subscribe_update_unsubscribe(gateway: GatewayProcess) -> None:
    inbox = Inbox()
    async with gateway.client(mode="legacy", token=writer(gateway), message_handler=inbox.handler) as client:
        await client.subscribe_resource(NOTES)
        await anyio.sleep(0.5)  # the upstream subscription and the client's GET stream are open
        await client.call_tool("surf.touch", {"uri": "notes://team"})
        updated = await inbox.wait_for(types.ResourceUpdatedNotification)
        assert str(updated.params.uri) == NOTES  # the caller-facing URI
        assert updated.params.meta is None  # nothing of the upstream's _meta
        with pytest.raises(MCPError) as caught:
            await client.subscribe_resource("surf+notes://nothing")
        assert (caught.value.code, caught.value.error.message) == (-32602, "Resource not found")
        await client.unsubscribe_resource(NOTES)
        with pytest.raises(MCPError):
            await client.unsubscribe_resource(NOTES)  # never (any more) subscribed: refused like unknown
    assert "subscription" in gateway.log()


async def test_modern_listen_update(gateway: GatewayProcess) -> None:
    async with gateway.client(mode="2026-07-28", token=writer(gateway)) as client, \
            client.listen(resources_list_changed=True, resource_subscriptions=[NOTES]) as subscription:
        assert subscription.honored.resource_subscriptions == [NOTES]
        assert subscription.honored.resources_list_changed is True

        async def touch() -> None:
            await anyio.sleep(0.5)
            async with gateway.client(mode="2026-07-28", token=writer(gateway)) as other:
                await other.call_tool("surf.touch", {"uri": "notes://team"})

        async with anyio.create_task_group() as tg:
            tg.start_soon(touch)
            with anyio.fail_after(15):
                async for event in subscription:
                    assert event == ResourceUpdated(uri=NOTES)
                    break


async def test_modern_listen_refuses_unreadable(gateway: GatewayProcess) -> None:
    reader_token = gateway.token(roles=["reader"])  # may read the notes, not the writers' pages
    async with gateway.client(mode="2026-07-28", token=reader_token) as client:
        with pytest.raises(MCPError) as caught:
            async with client.listen(resource_subscriptions=["surf+notes://pages/1"]):
                pass
        assert caught.value.error.message == "Resource not found"


def _legacy_session(gateway: GatewayProcess, token: str) -> str:
    answer = httpx2.post(gateway.url, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                         json={"jsonrpc": "2.0", "id": 1, "method": "initialize",
                               "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                                          "clientInfo": {"name": "t", "version": "1"}}})
    assert answer.status_code == 200
    return answer.headers["mcp-session-id"]


def test_get_stream_refusals(gateway: GatewayProcess) -> None:
    token = writer(gateway)
    session = _legacy_session(gateway, token)
    sse = {"Accept": "text/event-stream"}
    other = gateway.token(user="mallory", agent=None)
    refused = httpx2.get(gateway.url, headers={**sse, "Authorization": f"Bearer {other}", "mcp-session-id": session})
    assert refused.status_code == 404  # another principal's session: unknown to them
    assert httpx2.get(gateway.url, headers={**sse, "Authorization": f"Bearer {token}"}).status_code == 400
    modern = httpx2.get(gateway.url, headers={**sse, "Authorization": f"Bearer {token}",
                                              "MCP-Protocol-Version": "2026-07-28"})
    assert modern.status_code == 405
    assert httpx2.get(gateway.url, headers={"Accept": "application/json", "Authorization": f"Bearer {token}",
                                            "mcp-session-id": session}).status_code == 406
    assert httpx2.get(gateway.url, headers={**sse, "mcp-session-id": session}).status_code == 401
    with httpx2.Client(timeout=10) as http, http.stream(
            "GET", gateway.url, headers={**sse, "Authorization": f"Bearer {token}", "mcp-session-id": session}) as one:
        assert one.status_code == 200 and one.headers["content-type"].startswith("text/event-stream")
        second = httpx2.get(gateway.url, headers={**sse, "Authorization": f"Bearer {token}",
                                                  "mcp-session-id": session})
        assert second.status_code == 409  # one stream per session


async def test_list_change_reaches_subscribed_callers(gateway: GatewayProcess) -> None:
    """Last (it changes the service for good): the service announces a resource list change whose new
    definition fails its pin; callers of both eras are told the gateway's view changed, and it is never
    listed."""
    inbox = Inbox()
    async with gateway.client(mode="legacy", token=writer(gateway), message_handler=inbox.handler) as legacy, \
            gateway.client(mode="2026-07-28", token=writer(gateway)) as modern, \
            modern.listen(resources_list_changed=True) as subscription:
        await anyio.sleep(0.5)  # the legacy client's GET stream is open
        await legacy.call_tool("surf.mutate", {"kind": "resource"})
        with anyio.fail_after(15):
            async for event in subscription:
                assert event == ResourcesListChanged()
                break
        await inbox.wait_for(types.ResourceListChangedNotification)
        deadline = time.monotonic() + 5
        while (await legacy.list_resources()).resources:
            assert time.monotonic() < deadline
            await anyio.sleep(0.1)
        assert (await modern.list_resources()).resources == []
