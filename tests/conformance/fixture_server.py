"""Conformance fixture upstream: the tools, resources and prompts the MCP conformance suite calls.

Written from the scenario descriptions shipped in ``@modelcontextprotocol/conformance`` 0.1.16 and
0.2.0-alpha.12 (``server`` scenarios): each fixture has the name, arguments and output those
scenarios expect. Portcullis forwards only tools in this release, so the tools matter most; the
resources, prompts, completion, logging and subscription handlers exist so the fixture itself
can be checked against the suite directly (``test_fixture_direct.py``).

Run it as an HTTP upstream::

    python tests/conformance/fixture_server.py --port 3001      # http://127.0.0.1:3001/mcp

or import :func:`build_server` to use it in memory (``mcp.Client(build_server())``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import struct
import warnings
import wave
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import mcp.types as types
from mcp import MCPError
from mcp.server import MCPServer
from mcp.server.mcpserver import Context, UserMessage
from mcp.server.mcpserver.tools import Tool
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.shared.exceptions import MCPDeprecationWarning
from pydantic import Field

SERVER_NAME = "portcullis-conformance-fixture"
MISSING_REQUIRED_CLIENT_CAPABILITY = -32021

# --------------------------------------------------------------------------- test media


def _png_1x1_red() -> bytes:
    """A valid 1x1 RGB PNG with one red pixel, built from its chunks."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit, truecolour
    pixels = zlib.compress(b"\x00\xff\x00\x00")  # filter byte 0, then R G B
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def _wav_silence() -> bytes:
    """A valid, tiny mono 8 kHz 16-bit WAV: 8 samples of silence."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x00" * 8)
    return buffer.getvalue()


PNG_BYTES = _png_1x1_red()
PNG_B64 = base64.b64encode(PNG_BYTES).decode("ascii")
WAV_B64 = base64.b64encode(_wav_silence()).decode("ascii")

# Every fixture tool is harmless: it reads nothing and changes nothing outside this process.
_SAFE = types.ToolAnnotations(readOnlyHint=True, destructiveHint=False, idempotentHint=True,
                              openWorldHint=False)
# Tools that ask the caller for something (sampling, elicitation, roots) are not idempotent.
_INTERACTIVE = types.ToolAnnotations(readOnlyHint=True, destructiveHint=False, idempotentHint=False,
                                     openWorldHint=False)

JSON_SCHEMA_2020_12 = "https://json-schema.org/draft/2020-12/schema"
# The suite's own example (0.2.0-alpha.12, a superset of 0.1.16's): $schema, $defs with an $anchor,
# $ref, composition (allOf/anyOf), conditionals (if/then/else), additionalProperties (SEP-1613/2106).
JSON_SCHEMA_2020_12_INPUT: dict[str, Any] = {
    "$schema": JSON_SCHEMA_2020_12,
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


def _text(text: str, *, is_error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=is_error)


@contextmanager
def _deprecated_ok() -> Iterator[None]:
    """Logging, sampling and roots are deprecated in 2026-07-28 but are what 2025-era scenarios test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        yield


def _elicit(message: str, properties: dict[str, Any], required: list[str]) -> types.ElicitRequest:
    return types.ElicitRequest(
        params=types.ElicitRequestFormParams(
            message=message,
            requested_schema={"type": "object", "properties": properties, "required": required},
        )
    )


def _sample(text: str, max_tokens: int) -> types.CreateMessageRequest:
    return types.CreateMessageRequest(
        params=types.CreateMessageRequestParams(
            messages=[types.SamplingMessage(role="user", content=types.TextContent(type="text", text=text))],
            max_tokens=max_tokens,
        )
    )


def _accepted(ctx: Context, key: str) -> dict[str, Any] | None:
    """The accepted content of elicitation ``key`` from this round's ``inputResponses``, if any."""
    response = (ctx.input_responses or {}).get(key)
    if isinstance(response, types.ElicitResult) and response.action == "accept":
        return dict(response.content or {})
    return None


def _sampled_text(ctx: Context, key: str) -> str | None:
    response = (ctx.input_responses or {}).get(key)
    if isinstance(response, types.CreateMessageResult | types.CreateMessageResultWithTools):
        content = response.content
        if isinstance(content, types.TextContent):
            return content.text
        return str(content)
    return None


def _roots(ctx: Context, key: str) -> list[types.Root] | None:
    response = (ctx.input_responses or {}).get(key)
    return list(response.roots) if isinstance(response, types.ListRootsResult) else None


# --------------------------------------------------------------------------- event store (SEP-1699)


class InMemoryEventStore(EventStore):
    """Keeps every SSE event so a client can resume a stream with ``Last-Event-ID``."""

    def __init__(self) -> None:
        self._events: list[tuple[str, str, types.JSONRPCMessage | None]] = []

    async def store_event(self, stream_id: str, message: types.JSONRPCMessage | None) -> str:
        event_id = str(len(self._events) + 1)
        self._events.append((stream_id, event_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        stream = next((sid for sid, eid, _ in self._events if eid == last_event_id), None)
        if stream is None:
            return None
        for sid, eid, message in self._events:
            if sid == stream and int(eid) > int(last_event_id) and message is not None:
                await send_callback(EventMessage(message, eid))
        return stream


# --------------------------------------------------------------------------- the server


def build_server() -> MCPServer:
    """A fresh fixture server. Pure: registers handlers, opens nothing."""

    def json_schema_2020_12_tool(
        name: str | None = None,
        address: dict[str, Any] | None = None,
        contactMethod: str | None = None,
        phone: str | None = None,
        email: str | None = None,
    ) -> types.CallToolResult:
        """Tool with JSON Schema 2020-12 features"""
        contact = phone if contactMethod == "phone" else email
        return _text(f"name={name!r} address={json.dumps(address, sort_keys=True)} contact={contact!r}")

    # The suite checks that $schema, $defs and additionalProperties survive tools/list, so the
    # advertised schema is written out rather than derived from the signature.
    json_tool = Tool.from_function(json_schema_2020_12_tool, annotations=_SAFE, structured_output=False)
    json_tool.parameters = JSON_SCHEMA_2020_12_INPUT

    server = MCPServer(
        SERVER_NAME,
        version="1.0.0",
        instructions="Fixture upstream for the MCP conformance suite. Every tool is harmless.",
        tools=[json_tool],
    )
    tool = server.tool
    watched_resources: set[str] = set()

    # ---------------------------------------------------------------- content types

    @tool(annotations=_SAFE, structured_output=False)
    def test_simple_text() -> types.CallToolResult:
        """Returns one text content block."""
        return _text("This is a simple text response for testing.")

    @tool(annotations=_SAFE, structured_output=False)
    def test_image_content() -> types.CallToolResult:
        """Returns one image content block (a 1x1 red PNG)."""
        return types.CallToolResult(content=[types.ImageContent(type="image", data=PNG_B64, mime_type="image/png")])

    @tool(annotations=_SAFE, structured_output=False)
    def test_audio_content() -> types.CallToolResult:
        """Returns one audio content block (a tiny WAV of silence)."""
        return types.CallToolResult(content=[types.AudioContent(type="audio", data=WAV_B64, mime_type="audio/wav")])

    @tool(annotations=_SAFE, structured_output=False)
    def test_embedded_resource() -> types.CallToolResult:
        """Returns one embedded text resource."""
        return types.CallToolResult(
            content=[
                types.EmbeddedResource(
                    type="resource",
                    resource=types.TextResourceContents(
                        uri="test://embedded-resource",
                        mime_type="text/plain",
                        text="This is an embedded resource content.",
                    ),
                )
            ]
        )

    @tool(annotations=_SAFE, structured_output=False)
    def test_multiple_content_types() -> types.CallToolResult:
        """Returns text, image and embedded-resource content together."""
        return types.CallToolResult(
            content=[
                types.TextContent(type="text", text="Multiple content types test:"),
                types.ImageContent(type="image", data=PNG_B64, mime_type="image/png"),
                types.EmbeddedResource(
                    type="resource",
                    resource=types.TextResourceContents(
                        uri="test://mixed-content-resource",
                        mime_type="application/json",
                        text=json.dumps({"test": "data", "value": 123}),
                    ),
                ),
            ]
        )

    # ---------------------------------------------------------------- behaviour

    @tool(annotations=_SAFE, structured_output=False)
    async def test_tool_with_logging(ctx: Context) -> types.CallToolResult:
        """Sends three info log notifications, about 50 ms apart, while it runs."""
        with _deprecated_ok():
            await ctx.info("Tool execution started")
            await asyncio.sleep(0.05)
            await ctx.info("Tool processing data")
            await asyncio.sleep(0.05)
            await ctx.info("Tool execution completed")
        return _text("Tool with logging executed successfully")

    @tool(annotations=_SAFE, structured_output=False)
    async def test_logging_tool(ctx: Context) -> types.CallToolResult:
        """Tries to log; a 2026-07-28 request without a log level must receive no log notification."""
        with _deprecated_ok():
            await ctx.info("test_logging_tool ran")
        return _text("Logging tool executed")

    @tool(annotations=_SAFE, structured_output=False)
    async def test_tool_with_progress(ctx: Context) -> types.CallToolResult:
        """Reports progress 0/100, 50/100 and 100/100, about 50 ms apart, when asked for progress."""
        await ctx.report_progress(0, 100, "Completed step 0 of 100")
        await asyncio.sleep(0.05)
        await ctx.report_progress(50, 100, "Completed step 50 of 100")
        await asyncio.sleep(0.05)
        await ctx.report_progress(100, 100, "Completed step 100 of 100")
        return _text("Tool with progress executed successfully")

    @tool(annotations=_SAFE, structured_output=False)
    def test_error_handling() -> types.CallToolResult:
        """Always fails, as a tool execution error (isError: true)."""
        return _text("This tool intentionally returns an error for testing", is_error=True)

    @tool(annotations=_SAFE, structured_output=False)
    async def test_reconnection(ctx: Context) -> types.CallToolResult:
        """Closes its SSE stream mid-call so the client resumes it with Last-Event-ID (SEP-1699)."""
        with _deprecated_ok():
            await ctx.info("Before disconnect")
        await ctx.close_sse_stream()
        await asyncio.sleep(0.2)
        with _deprecated_ok():
            await ctx.info("After reconnect")
        return _text("Reconnection test completed")

    # ---------------------------------------------------------------- push-style sampling / elicitation

    @tool(annotations=_INTERACTIVE, structured_output=False)
    async def test_sampling(prompt: str, ctx: Context) -> types.CallToolResult:
        """Asks the client's LLM (sampling/createMessage) to answer the prompt."""
        try:
            with _deprecated_ok():
                result = await ctx.session.create_message(
                    [types.SamplingMessage(role="user", content=types.TextContent(type="text", text=prompt))],
                    max_tokens=100,
                    related_request_id=ctx.request_context.request_id,
                )
        except Exception as exc:  # no sampling capability / no back-channel
            return _text(f"Sampling failed: {exc}", is_error=True)
        content = result.content
        answer = content.text if isinstance(content, types.TextContent) else str(content)
        return _text(f"LLM response: {answer}")

    async def _push_elicit(ctx: Context, message: str, schema: dict[str, Any]) -> types.ElicitResult:
        return await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_context.request_id)

    @tool(annotations=_INTERACTIVE, structured_output=False)
    async def test_elicitation(message: str, ctx: Context) -> types.CallToolResult:
        """Asks the user (elicitation/create) for a username and an email address."""
        schema = {
            "type": "object",
            "properties": {
                "username": {"type": "string", "description": "User's response"},
                "email": {"type": "string", "description": "User's email address"},
            },
            "required": ["username", "email"],
        }
        try:
            result = await _push_elicit(ctx, message, schema)
        except Exception as exc:
            return _text(f"Elicitation failed: {exc}", is_error=True)
        return _text(f"User response: action={result.action}, content={json.dumps(result.content or {})}")

    @tool(annotations=_INTERACTIVE, structured_output=False)
    async def test_elicitation_sep1034_defaults(ctx: Context) -> types.CallToolResult:
        """Elicits a form whose fields all carry default values (SEP-1034)."""
        schema = {
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "User name", "default": "John Doe"},
                "age": {"type": "integer", "description": "User age", "default": 30},
                "score": {"type": "number", "description": "User score", "default": 95.5},
                "status": {
                    "type": "string",
                    "description": "User status",
                    "enum": ["active", "inactive", "pending"],
                    "default": "active",
                },
                "verified": {"type": "boolean", "description": "Verification status", "default": True},
            },
            "required": [],
        }
        try:
            result = await _push_elicit(ctx, "Please review your details", schema)
        except Exception as exc:
            return _text(f"Elicitation failed: {exc}", is_error=True)
        return _text(
            f"Elicitation completed: action={result.action}, content={json.dumps(result.content or {})}"
        )

    @tool(annotations=_INTERACTIVE, structured_output=False)
    async def test_elicitation_sep1330_enums(ctx: Context) -> types.CallToolResult:
        """Elicits a form with every enum schema variant (SEP-1330)."""
        schema = {
            "type": "object",
            "properties": {
                "untitledSingle": {
                    "type": "string",
                    "description": "Pick one (untitled)",
                    "enum": ["option1", "option2", "option3"],
                },
                "titledSingle": {
                    "type": "string",
                    "description": "Pick one (titled)",
                    "oneOf": [
                        {"const": "value1", "title": "First value"},
                        {"const": "value2", "title": "Second value"},
                        {"const": "value3", "title": "Third value"},
                    ],
                },
                "legacyEnum": {
                    "type": "string",
                    "description": "Pick one (legacy enumNames)",
                    "enum": ["opt1", "opt2", "opt3"],
                    "enumNames": ["Option one", "Option two", "Option three"],
                },
                "untitledMulti": {
                    "type": "array",
                    "description": "Pick several (untitled)",
                    "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
                },
                "titledMulti": {
                    "type": "array",
                    "description": "Pick several (titled)",
                    "items": {
                        "anyOf": [
                            {"const": "value1", "title": "First value"},
                            {"const": "value2", "title": "Second value"},
                            {"const": "value3", "title": "Third value"},
                        ]
                    },
                },
            },
            "required": [],
        }
        try:
            result = await _push_elicit(ctx, "Please choose", schema)
        except Exception as exc:
            return _text(f"Elicitation failed: {exc}", is_error=True)
        return _text(
            f"Elicitation completed: action={result.action}, content={json.dumps(result.content or {})}"
        )

    # ---------------------------------------------------------------- headers (SEP-2243)

    @tool(annotations=_SAFE, structured_output=False)
    def test_x_mcp_header(
        region: Annotated[
            str, Field(description="Region; mirrored in the Mcp-Param-Region header.",
                       json_schema_extra={"x-mcp-header": "Region"})
        ],
    ) -> types.CallToolResult:
        """Echoes a string argument that clients must also send as the Mcp-Param-Region header."""
        return _text(f"region={region}")

    # ---------------------------------------------------------------- MRTR (SEP-2322, 2026-07-28)

    @tool(annotations=_INTERACTIVE, structured_output=False)
    def test_input_required_result_elicitation(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
        """Asks for the caller's name through an InputRequiredResult, then greets them."""
        answer = _accepted(ctx, "user_name")
        if answer is None or not isinstance(answer.get("name"), str):
            return types.InputRequiredResult(
                input_requests={
                    "user_name": _elicit("What is your name?", {"name": {"type": "string"}}, ["name"])
                }
            )
        return _text(f"Hello, {answer['name']}!")

    @tool(annotations=_INTERACTIVE, structured_output=False)
    def test_input_required_result_sampling(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
        """Asks the client's LLM a question through an InputRequiredResult, then returns the answer."""
        answer = _sampled_text(ctx, "capital_question")
        if answer is None:
            return types.InputRequiredResult(
                input_requests={"capital_question": _sample("What is the capital of France?", 100)}
            )
        return _text(f"LLM response: {answer}")

    @tool(annotations=_INTERACTIVE, structured_output=False)
    def test_input_required_result_list_roots(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
        """Asks for the client's roots through an InputRequiredResult, then lists them."""
        roots = _roots(ctx, "client_roots")
        if roots is None:
            return types.InputRequiredResult(input_requests={"client_roots": types.ListRootsRequest()})
        return _text("Roots: " + ", ".join(str(root.uri) for root in roots))

    @tool(annotations=_INTERACTIVE, structured_output=False)
    def test_input_required_result_request_state(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
        """Round-trips requestState: the second round completes only with the state it was given."""
        if ctx.request_state == "awaiting-confirmation" and _accepted(ctx, "confirm") is not None:
            return _text("state-ok: requestState round-tripped and verified")
        return types.InputRequiredResult(
            input_requests={"confirm": _elicit("Please confirm", {"ok": {"type": "boolean"}}, ["ok"])},
            request_state="awaiting-confirmation",
        )

    @tool(annotations=_INTERACTIVE, structured_output=False)
    def test_input_required_result_multiple_inputs(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
        """Asks for an elicitation, a sampling answer and the roots at once."""
        name = _accepted(ctx, "user_name")
        greeting = _sampled_text(ctx, "greeting")
        roots = _roots(ctx, "client_roots")
        if ctx.request_state == "awaiting-three" and name is not None and greeting is not None and roots is not None:
            return _text(f"name={name.get('name')}, greeting={greeting}, roots={len(roots)}")
        return types.InputRequiredResult(
            input_requests={
                "user_name": _elicit("What is your name?", {"name": {"type": "string"}}, ["name"]),
                "greeting": _sample("Generate a greeting", 50),
                "client_roots": types.ListRootsRequest(),
            },
            request_state="awaiting-three",
        )

    @tool(annotations=_INTERACTIVE, structured_output=False)
    def test_input_required_result_multi_round(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
        """Two rounds of questions; requestState carries the first answer into the second round."""
        state = ctx.request_state or ""
        if state.startswith("round-2:"):
            color = _accepted(ctx, "step2")
            if color is not None:
                return _text(f"name={state.removeprefix('round-2:')}, color={color.get('color')}")
        elif state == "round-1":
            name = _accepted(ctx, "step1")
            if name is not None:
                return types.InputRequiredResult(
                    input_requests={
                        "step2": _elicit(
                            "Step 2: What is your favorite color?", {"color": {"type": "string"}}, ["color"]
                        )
                    },
                    request_state=f"round-2:{name.get('name')}",
                )
        return types.InputRequiredResult(
            input_requests={
                "step1": _elicit("Step 1: What is your name?", {"name": {"type": "string"}}, ["name"])
            },
            request_state="round-1",
        )

    @tool(annotations=_INTERACTIVE, structured_output=False)
    def test_input_required_result_tampered_state(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
        """Issues an integrity-protected requestState; a tampered one is rejected by the SDK's seal."""
        if ctx.request_state == "untampered" and _accepted(ctx, "confirm") is not None:
            return _text("state verified")
        return types.InputRequiredResult(
            input_requests={"confirm": _elicit("Please confirm", {"ok": {"type": "boolean"}}, ["ok"])},
            request_state="untampered",
        )

    @tool(annotations=_INTERACTIVE, structured_output=False)
    def test_input_required_result_capabilities(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
        """Asks only for the kinds of input the client declared it can give."""
        if ctx.input_responses:
            return _text("received: " + ", ".join(sorted(ctx.input_responses)))
        caps = ctx.client_capabilities or types.ClientCapabilities()
        requests: dict[str, types.ElicitRequest | types.CreateMessageRequest | types.ListRootsRequest] = {}
        if caps.sampling is not None:
            requests["question"] = _sample("What is 2 + 2?", 20)
        if caps.elicitation is not None:
            requests["user_name"] = _elicit("What is your name?", {"name": {"type": "string"}}, ["name"])
        if caps.roots is not None:
            requests["client_roots"] = types.ListRootsRequest()
        if not requests:
            return _text("the client declared no capability to ask for input with")
        return types.InputRequiredResult(input_requests=requests)

    @tool(annotations=_INTERACTIVE, structured_output=False)
    def test_streaming_elicitation(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
        """Asks for input the 2026-07-28 way: in the result, never as a request on the stream."""
        answer = _accepted(ctx, "answer")
        if answer is None:
            return types.InputRequiredResult(
                input_requests={"answer": _elicit("Anything to add?", {"text": {"type": "string"}}, ["text"])}
            )
        return _text(f"answer={answer.get('text')}")

    # ---------------------------------------------------------------- stateless diagnostics (SEP-2575)

    @tool(annotations=_SAFE, structured_output=False)
    def test_missing_capability(ctx: Context) -> types.CallToolResult:
        """Needs the client's sampling capability; rejects the call with -32021 when it was not declared."""
        caps = ctx.client_capabilities
        if caps is None or caps.sampling is None:
            raise MCPError(
                MISSING_REQUIRED_CLIENT_CAPABILITY,
                "Client did not declare the sampling capability this tool requires",
                data={"requiredCapabilities": {"sampling": {}}},
            )
        return _text("sampling capability declared")

    @tool(annotations=_SAFE, structured_output=False)
    async def test_trigger_tool_change(ctx: Context) -> types.CallToolResult:
        """Announces a tools list change to subscriptions/listen streams."""
        await ctx.notify_tools_changed()
        return _text("tools list change announced")

    @tool(annotations=_SAFE, structured_output=False)
    async def test_trigger_prompt_change(ctx: Context) -> types.CallToolResult:
        """Announces a prompts list change to subscriptions/listen streams."""
        await ctx.notify_prompts_changed()
        return _text("prompts list change announced")

    # ---------------------------------------------------------------- resources

    @server.resource("test://static-text", name="static-text", description="A static text resource",
                     mime_type="text/plain")
    def static_text() -> str:
        return "This is the content of the static text resource."

    @server.resource("test://static-binary", name="static-binary", description="A static PNG image",
                     mime_type="image/png")
    def static_binary() -> bytes:
        return PNG_BYTES

    @server.resource("test://template/{id}/data", name="template-data",
                     description="Data for one id, from a resource template", mime_type="application/json")
    def template_data(id: str) -> str:
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})

    @server.resource("test://watched-resource", name="watched-resource",
                     description="A resource clients may subscribe to", mime_type="text/plain")
    def watched_resource() -> str:
        return "Watched resource content"

    # ---------------------------------------------------------------- prompts

    @server.prompt(description="A simple prompt without arguments")
    def test_simple_prompt() -> list[UserMessage]:
        return [UserMessage("This is a simple prompt for testing.")]

    @server.prompt(description="A prompt with two required arguments")
    def test_prompt_with_arguments(
        arg1: Annotated[str, Field(description="First test argument")],
        arg2: Annotated[str, Field(description="Second test argument")],
    ) -> list[UserMessage]:
        return [UserMessage(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'")]

    @server.prompt(description="A prompt that embeds a resource")
    def test_prompt_with_embedded_resource(
        resourceUri: Annotated[str, Field(description="URI of the resource to embed")],
    ) -> list[UserMessage]:
        return [
            UserMessage(
                types.EmbeddedResource(
                    type="resource",
                    resource=types.TextResourceContents(
                        uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."
                    ),
                )
            ),
            UserMessage("Please process the embedded resource above."),
        ]

    @server.prompt(description="A prompt with image content")
    def test_prompt_with_image() -> list[UserMessage]:
        return [
            UserMessage(types.ImageContent(type="image", data=PNG_B64, mime_type="image/png")),
            UserMessage("Please analyze the image above."),
        ]

    @server.prompt(description="A prompt that first asks the user for context (2026-07-28 MRTR)")
    def test_input_required_result_prompt(ctx: Context) -> list[UserMessage] | types.InputRequiredResult:
        answer = _accepted(ctx, "user_context")
        if answer is None:
            return types.InputRequiredResult(
                input_requests={
                    "user_context": _elicit(
                        "What context should the prompt use?", {"context": {"type": "string"}}, ["context"]
                    )
                }
            )
        return [UserMessage(f"Use this context: {answer.get('context')}")]

    # ---------------------------------------------------------------- completion, logging, subscriptions

    @server.completion()
    async def complete(
        ref: types.PromptReference | types.ResourceTemplateReference,
        argument: types.CompletionArgument,
        context: types.CompletionContext | None,
    ) -> types.Completion:
        return types.Completion(values=[], total=0, has_more=False)

    async def set_level(ctx: Any, params: types.SetLevelRequestParams) -> types.EmptyResult:
        return types.EmptyResult()

    async def subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
        watched_resources.add(str(params.uri))
        return types.EmptyResult()

    async def unsubscribe(ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        watched_resources.discard(str(params.uri))
        return types.EmptyResult()

    # MCPServer has no public hook for these three 2025-era methods; the low-level server does.
    lowlevel = server._lowlevel_server
    lowlevel.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)
    lowlevel.add_request_handler("resources/subscribe", types.SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, unsubscribe)

    return server


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    parser.add_argument("--log-level", default="warning", help="uvicorn log level")
    args = parser.parse_args(argv)
    server = build_server()
    # retry_interval: the SSE priming event tells clients to resume after 100 ms (SEP-1699).
    app = server.streamable_http_app(event_store=InMemoryEventStore(), retry_interval=100, host="127.0.0.1")
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
