"""OpenTelemetry tracing for one gateway: a server span per call, a span per stage, and the W3C
trace context handed on to upstreams.

Contract:

1. Each gateway owns its :class:`~opentelemetry.sdk.trace.TracerProvider`; the process-wide one
   is never set, so two gateways (or a gateway and its host application) never interfere.
2. :meth:`Tracing.start_call` continues the caller's W3C ``traceparent``/``tracestate`` when they
   are well formed and otherwise starts a new trace, silently: the headers are hostile input, so
   they are parsed here, strictly and with bounded work, and nothing about them is logged.
3. Parentage is explicit (``tracing.stage(name, parent)``), never through the ambient context:
   nothing is attached to or read from context variables, so concurrent calls cannot cross.
4. Spans carry ids and fixed names only: method, tool name (the routed one), decision, outcome,
   error class, request id. Never arguments, results, error messages or principal attributes.
5. The cost follows the sampling decision. Tracing off (exporter ``none``): a call with no
   ``traceparent`` gets one shared no-op handle; a call with one only has it parsed and passed
   on (the gateway stays out of the trace but does not cut it). Not sampled: one non-recording
   server span, and stages get no spans at all.

Ids: ``trace_id_hex`` (32) and ``span_id_hex`` (16) are lowercase hex. With tracing on, both
exist for every call, sampled or not (the server span has ids either way; ``sampled`` says whether
it is exported). With tracing off, ``trace_id_hex`` is the caller's trace id if one came in,
``span_id_hex`` is ``None``. Trace ids are chosen by callers: use them to correlate, never to
decide anything.

Attribute names follow the OpenTelemetry GenAI conventions for MCP (``mcp.method.name``,
``gen_ai.tool.name``, ``gen_ai.operation.name``, ``mcp.protocol.version``, ``error.type``); the
span name is ``tools/call`` until the tool is routed, then ``tools/call <tool>``.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Final, assert_never

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from portcullis.errors import ConfigError, Problem
from portcullis.observability.config import TracingConfig

log = logging.getLogger("portcullis.tracing")

TOOLS_CALL: Final = "tools/call"
ATTR_METHOD: Final = "mcp.method.name"
ATTR_PROTOCOL_VERSION: Final = "mcp.protocol.version"
ATTR_OPERATION: Final = "gen_ai.operation.name"
ATTR_TOOL: Final = "gen_ai.tool.name"
ATTR_ERROR_TYPE: Final = "error.type"
ATTR_DECISION: Final = "portcullis.decision"
ATTR_OUTCOME: Final = "portcullis.outcome"
ATTR_REQUEST_ID: Final = "portcullis.request_id"

_MAX_ATTR_CHARS = 128
_MAX_HEADER_CHARS = 512  # traceparent (as OpenTelemetry's propagator) and tracestate alike
_MAX_TRACESTATE_MEMBERS = 32
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_TS_KEY = r"[a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13}"
_TS_VALUE = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_TS_MEMBER = re.compile(f"({_TS_KEY})=({_TS_VALUE})")
_KNOWN_FLAGS = 0x03  # sampled, random trace id (W3C Trace Context level 2); others are zeroed


def parse_trace_context(traceparent: str | None, tracestate: str | None = None) -> SpanContext | None:
    """The remote span context in a W3C ``traceparent`` (and ``tracestate``), or ``None`` if the
    header is absent or malformed. A malformed ``tracestate`` is dropped on its own."""
    # 1. bounded: nothing longer than 512 characters is looked at
    if not traceparent or len(traceparent) > _MAX_HEADER_CHARS:
        return None
    # 2. the four fields, lowercase hex; a later version may append fields, version 00 may not
    match = _TRACEPARENT.fullmatch(traceparent.strip(" \t"))
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    # 3. all-zero ids are invalid
    context = SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True,
                          trace_flags=TraceFlags(int(flags, 16) & _KNOWN_FLAGS),
                          trace_state=_parse_tracestate(tracestate))
    return context if context.is_valid else None


def _parse_tracestate(header: str | None) -> TraceState | None:
    # Checked here rather than by TraceState.from_header, which logs rejected members (hostile
    # input, at warning level, on every call). The same rules, so TraceState() accepts silently.
    if not header or len(header) > _MAX_HEADER_CHARS:
        return None
    pairs: dict[str, str] = {}
    for member in header.split(","):
        member = member.strip(" \t")
        if not member:
            continue
        match = _TS_MEMBER.fullmatch(member)
        if match is None or match[1] in pairs or len(pairs) == _MAX_TRACESTATE_MEMBERS:
            return None
        pairs[match[1]] = match[2]
    return TraceState(list(pairs.items())) if pairs else None


def _traceparent(context: SpanContext) -> str:
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags & _KNOWN_FLAGS:02x}"


class SpanHandle:
    """What a span hands to others: ids for audit records, a context for upstreams."""

    __slots__ = ("_context", "_recording", "_scope", "_span", "sampled", "span_id_hex", "trace_id_hex")

    def __init__(self, span: trace.Span | None, context: SpanContext | None, *, own: bool) -> None:
        self._span = span  # None: tracing is off
        self._recording = span is not None and span.is_recording()  # False: children get no spans
        self._context = context  # what upstreams continue from; None: nothing to propagate
        self._scope: Context | _Unchanged | None = None  # made on first use, then reused by every stage
        self.sampled = bool(context is not None and context.trace_flags.sampled)
        self.trace_id_hex = None if context is None else f"{context.trace_id:032x}"
        self.span_id_hex = f"{context.span_id:016x}" if own and context is not None else None


class CallSpan(SpanHandle):
    """The server span of one call. Setters only store; :meth:`end` writes them in one go."""

    __slots__ = ("_decision", "_tool")

    def __init__(self, span: trace.Span | None, context: SpanContext | None, *, own: bool) -> None:
        super().__init__(span, context, own=own)
        self._tool: str | None = None
        self._decision: str | None = None

    def set_tool(self, name: str) -> None:
        """The routed tool's served name (never the raw requested name: span names must stay few)."""
        if self._recording:  # the shared no-op handle keeps no per-call state
            self._tool = name[:_MAX_ATTR_CHARS]

    def set_decision(self, effect: str) -> None:
        """The policy effect: ``allow``, ``deny``, ``require_approval``."""
        if self._recording:
            self._decision = effect[:_MAX_ATTR_CHARS]

    def end(self, outcome: str | None = None, error_type: str | None = None) -> None:
        """Finish the span. ``error_type`` (the JSON-RPC error code as a string, or ``tool_error``,
        per the MCP conventions) marks it failed; never pass an error message."""
        span = self._span
        if span is None or not self._recording:
            return
        attributes: dict[str, str] = {}
        if self._tool is not None:
            span.update_name(f"{TOOLS_CALL} {self._tool}")
            attributes[ATTR_TOOL] = self._tool
        if self._decision is not None:
            attributes[ATTR_DECISION] = self._decision
        if outcome is not None:
            attributes[ATTR_OUTCOME] = outcome[:_MAX_ATTR_CHARS]
        if error_type is not None:
            attributes[ATTR_ERROR_TYPE] = error_type[:_MAX_ATTR_CHARS]
            span.set_status(Status(StatusCode.ERROR))
        if attributes:
            span.set_attributes(attributes)
        span.end()


class StageSpan(SpanHandle):
    """The span of one pipeline stage (a child of the call's server span)."""

    __slots__ = ()


_NOOP_CALL = CallSpan(None, None, own=False)


class Tracing:
    """Tracing for one gateway. Build with :meth:`from_config`, :meth:`disabled` or
    :meth:`with_exporter`; call :meth:`shutdown` when the gateway stops (flushes batched spans)."""

    def __init__(self, provider: TracerProvider | None, *, exporter: SpanExporter | None = None) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("portcullis") if provider is not None else None
        self.exporter = exporter  # the exporter behind the provider (tests read InMemorySpanExporter)

    @property
    def enabled(self) -> bool:
        """Whether the gateway records spans of its own."""
        return self._tracer is not None

    @classmethod
    def disabled(cls) -> Tracing:
        """No spans; a valid incoming trace context is still passed on to upstreams."""
        return cls(None)

    @classmethod
    def with_exporter(cls, exporter: SpanExporter, service_name: str, *, sample_ratio: float = 1.0,
                      batch: bool = False) -> Tracing:
        """Spans to ``exporter``, through a batching background thread (``batch``) or synchronously."""
        processor: SpanProcessor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
                                  resource=Resource.create({"service.name": service_name}))
        provider.add_span_processor(processor)
        return cls(provider, exporter=exporter)

    @classmethod
    def from_config(cls, config: TracingConfig, service_name: str) -> Tracing:
        """The tracing ``config`` asks for. Raises :class:`~portcullis.errors.ConfigError` for
        ``otlp`` when the optional exporter package is not installed."""
        ratio = config.sample_ratio
        match config.exporter:
            case "none":
                return cls.disabled()
            case "console":  # stderr: stdout may be an MCP stdio stream
                return cls.with_exporter(ConsoleSpanExporter(out=sys.stderr), service_name, sample_ratio=ratio)
            case "memory":
                log.warning("tracing exporter 'memory' keeps every span in process memory: for tests only")
                return cls.with_exporter(InMemorySpanExporter(), service_name, sample_ratio=ratio)
            case "otlp":
                try:
                    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                        OTLPSpanExporter,
                    )
                except ImportError:
                    raise ConfigError([Problem(Path("gateway.yaml"), None, (
                        "observability.tracing.exporter 'otlp' needs the package "
                        "opentelemetry-exporter-otlp-proto-http, which is not installed"))]) from None
                return cls.with_exporter(OTLPSpanExporter(endpoint=config.otlp_endpoint), service_name,
                                         sample_ratio=ratio, batch=True)
            case _:  # pragma: no cover - the Literal is closed
                assert_never(config.exporter)

    # ------------------------------------------------------------------ per call

    def start_call(self, traceparent: str | None, tracestate: str | None = None, *, request_id: str | None = None,
                   protocol_version: str | None = None, method: str = TOOLS_CALL) -> CallSpan:
        """Begin the server span of one call, continuing the caller's trace if its context is valid."""
        remote = parse_trace_context(traceparent, tracestate) if traceparent else None
        if self._tracer is None:
            return _NOOP_CALL if remote is None else CallSpan(None, remote, own=False)
        attributes = {ATTR_METHOD: method}
        if method == TOOLS_CALL:
            attributes[ATTR_OPERATION] = "execute_tool"
        if request_id is not None:
            attributes[ATTR_REQUEST_ID] = request_id[:_MAX_ATTR_CHARS]
        if protocol_version is not None:
            attributes[ATTR_PROTOCOL_VERSION] = protocol_version[:_MAX_ATTR_CHARS]
        # an explicit (empty) context for a root, so an ambient span can never become the parent
        parent = Context() if remote is None else trace.set_span_in_context(NonRecordingSpan(remote), Context())
        span = self._tracer.start_span(method, context=parent, kind=SpanKind.SERVER, attributes=attributes,
                                       record_exception=False, set_status_on_exception=False)
        return CallSpan(span, span.get_span_context(), own=True)

    def stage(self, name: str, parent: SpanHandle) -> AbstractContextManager[SpanHandle]:
        """``with tracing.stage("authorize", call) as span:`` — a child span of ``parent`` for the
        block. When ``parent`` records nothing, the block gets ``parent`` back and no span."""
        scope = parent._scope
        if scope is None:  # the first stage under this parent makes what the others reuse
            span = parent._span
            scope = parent._scope = (trace.set_span_in_context(span, Context())
                                     if span is not None and parent._recording else _Unchanged(parent))
        if isinstance(scope, _Unchanged):
            return scope
        tracer = self._tracer
        return _StageScope(tracer, name, scope) if tracer is not None else _Unchanged(parent)

    @staticmethod
    def traceparent_for(span: SpanHandle) -> str | None:
        """The ``traceparent`` an upstream continues from (``span`` becomes its parent), or ``None``."""
        return None if span._context is None else _traceparent(span._context)

    @staticmethod
    def inject(headers: MutableMapping[str, str], span: SpanHandle) -> None:
        """Add ``traceparent`` (and ``tracestate``, if any) for ``span`` to ``headers`` (HTTP headers,
        or an MCP ``params._meta`` mapping: the keys are the same, unprefixed)."""
        context = span._context
        if context is None:
            return
        headers["traceparent"] = _traceparent(context)
        if context.trace_state:
            headers["tracestate"] = context.trace_state.to_header()

    def shutdown(self) -> None:
        """Flush and stop the span processors (the gateway's lifespan end)."""
        if self._provider is not None:
            self._provider.shutdown()


class _StageScope:
    __slots__ = ("_context", "_name", "_span", "_tracer")

    def __init__(self, tracer: trace.Tracer, name: str, context: Context) -> None:
        self._tracer, self._name, self._context = tracer, name, context
        self._span: trace.Span | None = None

    def __enter__(self) -> StageSpan:
        span = self._span = self._tracer.start_span(self._name, context=self._context, record_exception=False,
                                                    set_status_on_exception=False)
        return StageSpan(span, span.get_span_context(), own=True)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        span = self._span
        if span is None:
            return
        if exc_type is not None:  # the class name only: messages can carry argument values
            span.set_attribute(ATTR_ERROR_TYPE, exc_type.__name__)
            span.set_status(Status(StatusCode.ERROR))
        span.end()


class _Unchanged:
    """A stage scope that records nothing and hands back the parent (tracing off, not sampled)."""

    __slots__ = ("_handle",)

    def __init__(self, handle: SpanHandle) -> None:
        self._handle = handle

    def __enter__(self) -> SpanHandle:
        return self._handle

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None
