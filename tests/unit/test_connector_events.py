"""The connectors report resource/prompt list changes and resource updates to ``on_event`` (and tool-list
changes to ``on_tools_changed``, as before); nothing else of an upstream notification is passed on."""

from __future__ import annotations

from typing import Any

from mcp import types

from portcullis.config.model import HttpService
from portcullis.upstream.sdk_client import SdkConnector


def _connector(events: list[tuple[str, Any]], tools: list[int]) -> SdkConnector:
    cfg = HttpService.model_validate({"transport": "http", "url": "http://127.0.0.1:1/mcp"})
    return SdkConnector("svc", cfg, {}, on_tools_changed=lambda: tools.append(1),
                        on_event=lambda method, params: events.append((method, params)))


async def test_sdk_connector_reports_surface_events_with_the_uri_only() -> None:
    events: list[tuple[str, Any]] = []
    tools: list[int] = []
    connector = _connector(events, tools)
    updated = types.ResourceUpdatedNotification(params=types.ResourceUpdatedNotificationParams(
        uri="docs://terms", _meta={"io.modelcontextprotocol/serverInfo": {"name": "upstream"}}))
    for message in (types.ResourceListChangedNotification(), types.PromptListChangedNotification(), updated,
                    types.ToolListChangedNotification(),
                    types.LoggingMessageNotification(params=types.LoggingMessageNotificationParams(
                        level="info", data="x"))):
        await connector._on_message(message)
    assert events == [("notifications/resources/list_changed", {}), ("notifications/prompts/list_changed", {}),
                      ("notifications/resources/updated", {"uri": "docs://terms"})]
    assert tools == [1]
