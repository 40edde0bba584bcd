"""The ``logs`` sink (docs/content-security.md, "Classes and sinks"): values of a tool whose input or
output class may not reach operator logs never appear in a log line — through the in-process gateway
(every real stage in its declared order), with canaries in the arguments, the result, a tool error
and an upstream crash, captured at the logging layer and through the gateway's JSON formatter.

The gateway's own call log lines are value-free by construction (fixed fields, fixed details); these
tables keep it so, and check that a tool whose class lacks ``logs`` also loses the error ``detail``
and a crash's message and traceback. Upstream stderr, the one place a service can put its own text
into the log, is covered by tests/security/test_stdio_stderr.py and tests/e2e/test_governance_flow_e2e.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from portcullis.governance.sinks import mark_values_withheld, values_withheld
from portcullis.logs import JsonFormatter
from portcullis.transport.jsonrpc import Message
from portcullis.transport.protocol import Request
from tests.security.harness import BOT, MODERN, in_process_gateway

READ = "billing.get_invoice"  # Confidential in and out in the harness: no ``logs`` by default
CANARY = "CANARY-9d2e71-logs"
POLICIES = {"get_invoice": {"allowed_callers": ["agent:billing-bot"]}}
ALLOW_LOGS = {"sinks": {"Public": ["caller", "logs"], "Internal": ["caller", "logs"],
                        "Confidential": ["caller", "audit", "siem", "logs"], "Restricted": ["caller"]}}


async def _echo(arguments: Mapping[str, Any]) -> dict[str, Any]:
    note = str(arguments.get("invoice_id"))
    return {"content": [{"type": "text", "text": f"invoice {note}"}], "structuredContent": {"note": note},
            "_meta": {"echo": note}, "isError": note.endswith("error")}


async def _crash(arguments: Mapping[str, Any]) -> dict[str, Any]:
    raise RuntimeError(f"upstream library failed on {arguments.get('invoice_id')}")


def _formatted(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(JsonFormatter().format(r) for r in caplog.records)


def _access(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.fields for r in caplog.records if r.name == "portcullis.access"]  # type: ignore[attr-defined]


ROWS = [  # (name, invoice_id argument)
    ("plain", CANARY), ("in-tool-error", f"{CANARY}-error"), ("json-looking", f'{{"x":"{CANARY}"}}'),
    ("control-chars", f"{CANARY}\n\x1b[31m"), ("long", CANARY + "x" * 5000),
]


@pytest.mark.parametrize("governance", [None, ALLOW_LOGS], ids=["no-logs-sink", "logs-allowed"])
@pytest.mark.parametrize(("name", "argument"), ROWS, ids=[row[0] for row in ROWS])
async def test_argument_and_result_values_never_reach_a_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                                 name: str, argument: str,
                                                                 governance: Any) -> None:
    """The canary is in the arguments and echoed in text, structuredContent and _meta: no log record
    holds it, either way; without ``logs`` the access line says its values are withheld."""
    caplog.set_level(logging.DEBUG, logger="portcullis")
    async with in_process_gateway(tmp_path, policies=POLICIES, handlers={"get_invoice": _echo},
                                  governance=governance) as gw:
        answer = await gw.call(READ, {"invoice_id": argument})
    assert answer.result is not None and CANARY in str(answer.result)  # the caller got it
    assert CANARY not in _formatted(caplog)
    [line] = _access(caplog)
    assert line["tool"] == READ and line["outcome"] in ("ok", "tool_error")
    assert (line.get("values") == "withheld") is (governance is None)


@pytest.mark.parametrize("governance", [None, ALLOW_LOGS], ids=["no-logs-sink", "logs-allowed"])
async def test_a_crash_is_logged_without_its_message_for_a_tool_without_the_logs_sink(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, governance: Any) -> None:
    """An exception out of a call carries the argument in its message: for a tool whose class lacks
    ``logs`` the exception is marked so that the transport logs its type only; the access line's
    ``detail`` is dropped. With ``logs`` allowed the exception is not marked and the detail is kept."""
    caplog.set_level(logging.DEBUG, logger="portcullis")
    async with in_process_gateway(tmp_path, policies=POLICIES, handlers={"get_invoice": _crash},
                                  governance=governance) as gw:
        request = Request(message=Message("request", "tools/call", {
            "name": READ, "arguments": {"invoice_id": CANARY},
            "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                      "io.modelcontextprotocol/clientCapabilities": {}}}, 1, True),
            protocol_version=MODERN, modern=True, headers={}, principal=BOT)
        with pytest.raises(Exception) as caught:
            await gw.dispatcher.dispatch(request)
    assert CANARY in str(caught.value)  # the hazard is real
    assert values_withheld(caught.value) is (governance is None)
    assert CANARY not in _formatted(caplog)
    [line] = _access(caplog)
    assert line["outcome"] == "crash"
    if governance is None:
        assert line["detail"] is None and line["values"] == "withheld"
    else:
        assert line["detail"] == "RuntimeError" and "values" not in line


@pytest.mark.parametrize("marked", [True, False], ids=["marked", "unmarked"])
async def test_the_transport_logs_a_marked_crash_by_type_only(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                              marked: bool) -> None:
    """The one place that logs an unexpected exception with its traceback (the HTTP transport) logs a
    marked one by its type name: no message, no traceback. An unmarked one keeps its traceback."""
    from tests.unit.test_audit_attempts import BASE, build_app, call

    class Crashing:
        async def dispatch(self, req: Any) -> Any:
            exc = RuntimeError(f"failed on {CANARY}")
            if marked:
                mark_values_withheld(exc)
            raise exc

    caplog.set_level(logging.DEBUG, logger="portcullis")
    app = build_app(tmp_path, None, max_body=10_000)
    app._dispatcher = Crashing()  # type: ignore[assignment]
    app._authenticator._anonymous = True  # type: ignore[attr-defined]
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "t", "arguments": {}, "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                                                "io.modelcontextprotocol/clientCapabilities": {}}}}).encode()
    headers = {**BASE, "Mcp-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "t"}
    assert await call(app, headers, body) == 500
    [crash] = [r for r in caplog.records if r.getMessage() == "unexpected error while handling a request"]
    if marked:
        assert CANARY not in _formatted(caplog) and crash.exc_info is None
        assert crash.fields == {"error": "RuntimeError", "values": "withheld"}  # type: ignore[attr-defined]
    else:
        assert CANARY in _formatted(caplog)  # the traceback carries the message: the hazard is real
