"""Tracing: W3C trace context continued safely, spans per stage with parent links, nothing sensitive."""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import ValidationError

from portcullis.errors import ConfigError
from portcullis.observability import ObservabilityConfig, Tracing, TracingConfig, parse_trace_context

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
TRACEPARENT_RE = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-0[0-3]")
SECRET = "4111-1111-1111-1111"

HOSTILE_TRACEPARENTS = {
    "too long": f"00-{TRACE_ID}-{PARENT_ID}-01-" + "a" * 600,
    "too long future version": f"01-{TRACE_ID}-{PARENT_ID}-01-" + "a" * 500,
    "version ff": f"ff-{TRACE_ID}-{PARENT_ID}-01",
    "all-zero trace id": f"00-{'0' * 32}-{PARENT_ID}-01",
    "all-zero parent id": f"00-{TRACE_ID}-{'0' * 16}-01",
    "non-hex trace id": f"00-{TRACE_ID[:-1]}g-{PARENT_ID}-01",
    "uppercase hex": f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",
    "short trace id": f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01",
    "missing flags": f"00-{TRACE_ID}-{PARENT_ID}",
    "version 00 with extra field": f"00-{TRACE_ID}-{PARENT_ID}-01-extra",
    "future version, bad separator": f"01-{TRACE_ID}-{PARENT_ID}-01x",
    "unicode digits": f"00-{chr(0x0664) * 32}-{PARENT_ID}-01",  # ARABIC-INDIC DIGIT FOUR: int() would take it
    "fullwidth hex": f"00-{chr(0xFF41) * 32}-{PARENT_ID}-01",  # FULLWIDTH LATIN SMALL LETTER A
    "unicode in flags": f"00-{TRACE_ID}-{PARENT_ID}-0{chr(0x0661)}",
    "newline injection": f"00-{TRACE_ID}-{PARENT_ID}-01\r\nx-admin: 1",
    "trailing newline": f"00-{TRACE_ID}-{PARENT_ID}-01\n",
    "nul byte": f"00-{TRACE_ID}-{PARENT_ID}-01\x00",
    "empty": "",
    "only dashes": "---",
    "sql": "00-' OR 1=1 --",
}
VALID_TRACEPARENTS = {
    "sampled": TRACEPARENT,
    "not sampled": f"00-{TRACE_ID}-{PARENT_ID}-00",
    "random flag": f"00-{TRACE_ID}-{PARENT_ID}-03",
    "surrounding blanks": f" \t{TRACEPARENT}\t ",
    "future version with fields": f"01-{TRACE_ID}-{PARENT_ID}-01-what-ever",
}


@pytest.fixture
def tracing() -> Iterator[Tracing]:
    tracing = Tracing.with_exporter(InMemorySpanExporter(), "portcullis-test")
    yield tracing
    tracing.shutdown()


def finished(tracing: Tracing) -> list[ReadableSpan]:
    exporter = tracing.exporter
    assert isinstance(exporter, InMemorySpanExporter)
    return list(exporter.get_finished_spans())


def run_call(tracing: Tracing, traceparent: str | None = TRACEPARENT, tracestate: str | None = None,
             stages: tuple[str, ...] = ("route", "authorize", "audit", "forward")) -> dict[str, str]:
    """A call through named stages, as the pipeline runs it; returns the upstream headers."""
    call = tracing.start_call(traceparent, tracestate, request_id="req-1", protocol_version="2025-11-25")
    headers: dict[str, str] = {}
    for name in stages:
        with tracing.stage(name, call) as span:
            if name == "forward":
                tracing.inject(headers, span)
    call.set_tool("billing.refund")
    call.set_decision("allow")
    call.end("ok")
    return headers


def test_continuing_a_traceparent_keeps_the_trace_id(tracing: Tracing) -> None:
    """The server span joins the caller's trace as a child of the caller's span."""
    call = tracing.start_call(TRACEPARENT, request_id="req-1")
    call.end("ok")
    (span,) = finished(tracing)
    assert call.trace_id_hex == TRACE_ID
    assert span.context is not None and f"{span.context.trace_id:032x}" == TRACE_ID
    assert span.parent is not None and span.parent.is_remote and f"{span.parent.span_id:016x}" == PARENT_ID
    assert call.span_id_hex == f"{span.context.span_id:016x}"
    assert span.kind is SpanKind.SERVER


@pytest.mark.parametrize("value", HOSTILE_TRACEPARENTS.values(), ids=HOSTILE_TRACEPARENTS.keys())
def test_hostile_traceparent_starts_a_new_root_trace_silently(
        tracing: Tracing, value: str, caplog: pytest.LogCaptureFixture) -> None:
    """A malformed traceparent is ignored without a log line: the call gets a fresh root trace."""
    with caplog.at_level(logging.DEBUG):
        call = tracing.start_call(value, "congo=t61rcWkgMzE")
        call.end("ok")
    (span,) = finished(tracing)
    assert span.parent is None
    assert call.trace_id_hex is not None and call.trace_id_hex != TRACE_ID
    assert re.fullmatch(r"[0-9a-f]{32}", call.trace_id_hex)
    assert not span.context.trace_state  # type: ignore[union-attr]
    assert caplog.records == []


@pytest.mark.parametrize("value", [*HOSTILE_TRACEPARENTS.values(), *VALID_TRACEPARENTS.values()],
                         ids=[*HOSTILE_TRACEPARENTS.keys(), *VALID_TRACEPARENTS.keys()])
def test_parser_is_never_looser_than_the_opentelemetry_propagator(value: str) -> None:
    """Whatever we accept, OpenTelemetry's own W3C propagator accepts too, with the same ids."""
    ours = parse_trace_context(value)
    if ours is None:
        return
    theirs = trace.get_current_span(TraceContextTextMapPropagator().extract({"traceparent": value}))
    context = theirs.get_span_context()
    assert context.is_valid
    assert (context.trace_id, context.span_id, context.trace_flags.sampled) == (
        ours.trace_id, ours.span_id, ours.trace_flags.sampled)


@pytest.mark.parametrize("value", VALID_TRACEPARENTS.values(), ids=VALID_TRACEPARENTS.keys())
def test_valid_traceparents_are_continued(value: str) -> None:
    """Every well-formed traceparent, future versions included, yields the caller's ids."""
    context = parse_trace_context(value)
    assert context is not None
    assert (f"{context.trace_id:032x}", f"{context.span_id:016x}") == (TRACE_ID, PARENT_ID)


@pytest.mark.parametrize("tracestate", [
    "Rojo=1",                                      # uppercase key
    "rojo=1,rojo=2",                               # duplicate key
    "rojo",                                        # no value
    "rojo=a,b=c=d",                                # '=' in a value
    ",".join(f"k{i}=v" for i in range(33)),        # more than 32 members
    "rojo=" + "x" * 600,                           # too long
    "rojo=\u00e9t\u00e9",                          # non-ASCII value
    "rojo=1\r\nx-admin: 1",                        # header injection
])
def test_hostile_tracestate_is_dropped_but_the_traceparent_kept(
        tracing: Tracing, tracestate: str, caplog: pytest.LogCaptureFixture) -> None:
    """A malformed tracestate is dropped on its own, silently; the trace is still continued."""
    with caplog.at_level(logging.DEBUG):
        headers = run_call(tracing, TRACEPARENT, tracestate)
    assert "tracestate" not in headers
    assert TRACEPARENT_RE.fullmatch(headers["traceparent"])[1] == TRACE_ID  # type: ignore[index]
    assert caplog.records == []


def test_valid_tracestate_is_passed_on_to_upstreams(tracing: Tracing) -> None:
    """A well-formed tracestate reaches the upstream unchanged, as W3C asks of intermediaries."""
    headers = run_call(tracing, TRACEPARENT, "rojo=00f067aa0ba902b7, congo=t61rcWkgMzE")
    assert headers["tracestate"] == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"


def test_inject_produces_a_traceparent_with_the_current_span_id(tracing: Tracing) -> None:
    """The upstream's traceparent names the forward stage span as its parent, in the caller's trace."""
    headers = run_call(tracing)
    match = TRACEPARENT_RE.fullmatch(headers["traceparent"])
    assert match is not None
    forward = next(s for s in finished(tracing) if s.name == "forward")
    assert match[1] == TRACE_ID
    assert match[2] == f"{forward.context.span_id:016x}"  # type: ignore[union-attr]
    assert headers["traceparent"].endswith("-01")


def test_memory_exporter_sees_the_server_span_and_stage_spans_with_parent_links(tracing: Tracing) -> None:
    """Each stage span is a child of the server span, in the same trace; the server span is named for the tool."""
    run_call(tracing)
    spans = {s.name: s for s in finished(tracing)}
    assert set(spans) == {"tools/call billing.refund", "route", "authorize", "audit", "forward"}
    server = spans.pop("tools/call billing.refund")
    assert server.context is not None
    for stage in spans.values():
        assert stage.parent is not None and stage.parent.span_id == server.context.span_id
        assert stage.context is not None and stage.context.trace_id == server.context.trace_id
        assert stage.kind is SpanKind.INTERNAL
    assert dict(server.attributes or {}) == {
        "mcp.method.name": "tools/call", "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "billing.refund",
        "mcp.protocol.version": "2025-11-25", "portcullis.request_id": "req-1", "portcullis.decision": "allow",
        "portcullis.outcome": "ok"}


def test_nested_stage_spans_follow_their_given_parent(tracing: Tracing) -> None:
    """A stage span can itself be the parent (the upstream call under forward, for instance)."""
    call = tracing.start_call(None)
    with tracing.stage("forward", call) as forward, tracing.stage("upstream", forward):
        pass
    call.end("ok")
    spans = {s.name: s for s in finished(tracing)}
    assert spans["upstream"].parent.span_id == spans["forward"].context.span_id  # type: ignore[union-attr]


def test_no_argument_values_or_error_messages_reach_span_attributes(tracing: Tracing) -> None:
    """A failing stage records only its error class; the message (which may echo arguments) goes nowhere."""
    call = tracing.start_call(TRACEPARENT, request_id="req-1")
    with pytest.raises(ValueError), tracing.stage("validate", call):
        raise ValueError(f"card_number {SECRET} is not allowed")
    call.end("error", error_type="-32602")
    spans = finished(tracing)
    for span in spans:
        text = repr((span.name, dict(span.attributes or {}), span.events, span.status.description))
        assert SECRET not in text
        assert not span.events
    validate = next(s for s in spans if s.name == "validate")
    assert dict(validate.attributes or {}) == {"error.type": "ValueError"}
    assert validate.status.status_code is StatusCode.ERROR
    server = next(s for s in spans if s.name == "tools/call")
    assert server.status.status_code is StatusCode.ERROR
    assert (server.attributes or {})["error.type"] == "-32602"


def test_a_call_without_error_type_is_not_marked_failed(tracing: Tracing) -> None:
    """Span status stays unset for a successful call."""
    run_call(tracing)
    assert all(s.status.status_code is StatusCode.UNSET for s in finished(tracing))


def test_unsampled_call_has_ids_but_records_no_spans() -> None:
    """With ratio 0 a new trace still has ids for the audit record, but stages cost no spans and none are exported."""
    tracing = Tracing.with_exporter(InMemorySpanExporter(), "t", sample_ratio=0.0)
    call = tracing.start_call(None)
    with tracing.stage("authorize", call) as span:
        assert span is call
    headers: dict[str, str] = {}
    tracing.inject(headers, call)
    call.end("ok")
    assert call.sampled is False
    assert call.trace_id_hex is not None and call.span_id_hex is not None
    prefix, flags = headers["traceparent"].rsplit("-", 1)
    assert prefix == f"00-{call.trace_id_hex}-{call.span_id_hex}"
    assert int(flags, 16) & 0x01 == 0  # not sampled (0x02, "random trace id", may be set)
    assert finished(tracing) == []


def test_the_callers_sampled_flag_is_followed() -> None:
    """Parent-based sampling: a sampled caller is traced at ratio 0, an unsampled one is not at ratio 1."""
    never = Tracing.with_exporter(InMemorySpanExporter(), "t", sample_ratio=0.0)
    always = Tracing.with_exporter(InMemorySpanExporter(), "t", sample_ratio=1.0)
    assert never.start_call(TRACEPARENT).sampled is True
    assert always.start_call(f"00-{TRACE_ID}-{PARENT_ID}-00").sampled is False


def test_disabled_tracing_passes_the_incoming_context_through() -> None:
    """Exporter none: no spans of our own, but upstreams continue the caller's trace from the caller's span."""
    tracing = Tracing.disabled()
    call = tracing.start_call(TRACEPARENT, "rojo=1")
    with tracing.stage("forward", call) as span:
        headers: dict[str, str] = {}
        tracing.inject(headers, span)
    call.end("ok")
    assert tracing.enabled is False
    assert (call.trace_id_hex, call.span_id_hex) == (TRACE_ID, None)
    assert headers == {"traceparent": TRACEPARENT, "tracestate": "rojo=1"}
    assert tracing.traceparent_for(call) == TRACEPARENT


def test_disabled_tracing_without_traceparent_shares_one_noop_handle() -> None:
    """Exporter none and no incoming context: the same handle every call, no ids, nothing to inject."""
    tracing = Tracing.disabled()
    first, second = tracing.start_call(None), tracing.start_call(HOSTILE_TRACEPARENTS["version ff"])
    assert first is second
    headers: dict[str, str] = {}
    tracing.inject(headers, first)
    assert headers == {}
    assert (first.trace_id_hex, first.span_id_hex, tracing.traceparent_for(first)) == (None, None, None)


def test_the_global_tracer_provider_is_never_touched(tracing: Tracing) -> None:
    """Spans go to the gateway's own provider; the process-wide one stays the default proxy."""
    before = trace.get_tracer_provider()
    run_call(tracing)
    assert trace.get_tracer_provider() is before
    assert not isinstance(before, TracerProvider)


def test_an_ambient_span_never_becomes_the_parent(tracing: Tracing) -> None:
    """A span current in the context (another library's) does not adopt the gateway's call."""
    other = TracerProvider().get_tracer("other")
    with other.start_as_current_span("ambient"):
        call = tracing.start_call(None)
        call.end("ok")
    (span,) = finished(tracing)
    assert span.parent is None


def test_two_tracings_keep_their_spans_apart() -> None:
    """Two gateways in one process export to their own exporters only."""
    first = Tracing.with_exporter(InMemorySpanExporter(), "a")
    second = Tracing.with_exporter(InMemorySpanExporter(), "b")
    run_call(first)
    assert len(finished(first)) == 5
    assert finished(second) == []


def test_from_config_builds_each_local_exporter(caplog: pytest.LogCaptureFixture,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """none is disabled; console writes spans to stderr (stdout may be an MCP stream); memory warns."""
    assert Tracing.from_config(TracingConfig(), "gw").enabled is False
    console = Tracing.from_config(TracingConfig(exporter="console"), "gw")
    run_call(console, stages=())
    console.shutdown()
    out = capsys.readouterr()
    assert out.out == "" and "tools/call billing.refund" in out.err
    with caplog.at_level(logging.WARNING, logger="portcullis.tracing"):
        memory = Tracing.from_config(TracingConfig(exporter="memory", sample_ratio=0.5), "gw")
    assert isinstance(memory.exporter, InMemorySpanExporter)
    assert "for tests only" in caplog.text


def otlp_installed() -> bool:
    try:
        importlib.import_module("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    except ImportError:
        return False
    return True


@pytest.mark.skipif(otlp_installed(), reason="the optional OTLP exporter is installed")
def test_otlp_without_its_package_is_a_config_error() -> None:
    """Choosing otlp without opentelemetry-exporter-otlp-proto-http fails at start, naming the package."""
    config = TracingConfig(exporter="otlp", otlp_endpoint="http://collector:4318/v1/traces")
    with pytest.raises(ConfigError, match="opentelemetry-exporter-otlp-proto-http"):
        Tracing.from_config(config, "gw")


@pytest.mark.parametrize("fields", [
    {"exporter": "otlp"},
    {"exporter": "console", "otlp_endpoint": "http://collector:4318/v1/traces"},
    {"exporter": "otlp", "otlp_endpoint": "collector:4318"},
    {"exporter": "jaeger"},
    {"sample_ratio": 1.5},
    {"sample_ratio": -0.1},
    {"sampling": 0.5},
])
def test_tracing_config_rejects_inconsistent_or_unknown_settings(fields: dict[str, object]) -> None:
    """otlp needs an http(s) endpoint and only otlp may have one; ratios are 0..1; unknown keys are errors."""
    with pytest.raises(ValidationError):
        TracingConfig.model_validate(fields)


def test_observability_config_defaults_to_metrics_on_and_tracing_off() -> None:
    """An empty observability section means metrics on, tracing off, and the model is frozen."""
    config = ObservabilityConfig.model_validate({})
    assert (config.metrics.enabled, config.tracing.exporter, config.tracing.sample_ratio) == (True, "none", 1.0)
    with pytest.raises(ValidationError):
        config.tracing = TracingConfig()  # type: ignore[misc]
    for model in (ObservabilityConfig, TracingConfig):
        assert all(field.description for field in model.model_fields.values())
