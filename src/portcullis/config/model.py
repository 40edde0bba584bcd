"""Typed configuration: ``gateway.yaml`` and the per-tool manifests.

Every model is frozen and forbids unknown keys, so a typo is an error rather than a silently
ignored setting. Units are in field names (``timeout_s``, ``max_body_bytes``). The JSON Schemas
published under ``schemas/`` are generated from these models (``portcullis schema``) and a test
keeps them in step.
"""

from __future__ import annotations

import re
import ssl
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator
from pydantic_core import PydanticCustomError

from portcullis.audit.siem.config import SiemExportConfig
from portcullis.audit.witness.client import WitnessConfig
from portcullis.config.console import ConsoleConfig, console_problem
from portcullis.config.content import ContentConfig, ToolContent
from portcullis.config.secret_providers.config import SecretsConfig
from portcullis.config.secrets import SECRET_REF_PATTERN
from portcullis.config.stdio_sandbox import StdioSandbox
from portcullis.governance.sinks import DEFAULT_SINKS, cache_refusal
from portcullis.governance.sinks import Sink as Sink  # re-exported: the sink vocabulary lives there
from portcullis.identity.config import IdentityConfig, UpstreamTokenConfig
from portcullis.identity.tls import TlsConfig
from portcullis.monitoring.config import AlertsConfig
from portcullis.observability.config import ObservabilityConfig
from portcullis.policy.limits import LimitRule, check_unique_ids
from portcullis.policy.model import ToolPolicy, check_caller_pattern
from portcullis.storage.config import StorageConfig
from portcullis.storage.workers import MAX_WORKERS, SharedState, workers_problem

_SERVICE_NAME = r"^[a-z][a-z0-9_-]{0,62}$"
_TOOL_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
PIN_PATTERN = r"^sha256:[0-9a-f]{64}$"
# What `portcullis import` writes where a person must decide (owner, risk, classification); refused
# by the manifest model itself, so `lint` and `serve` refuse an unreviewed manifest alike.
REVIEW_PLACEHOLDER = "REVIEW-ME"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


class Classification(StrEnum):
    """Data classification of a tool's inputs or outputs, least to most sensitive."""

    PUBLIC = "Public"
    INTERNAL = "Internal"
    CONFIDENTIAL = "Confidential"
    RESTRICTED = "Restricted"


class Risk(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


# --------------------------------------------------------------------------- gateway.yaml


class ListenConfig(_Model):
    """Where the gateway listens and which Host / Origin values it accepts."""

    host: str = Field("127.0.0.1", description="Bind address. Loopback by default.")
    port: int = Field(8080, ge=0, le=65535, description="TCP port (0 picks a free one).")
    allowed_hosts: tuple[str, ...] = Field(
        ("127.0.0.1:*", "localhost:*", "[::1]:*"),
        min_length=1,
        description="Accepted Host header values; a ':*' suffix matches any port. Others get 421.",
    )
    allowed_origins: tuple[str, ...] = Field(
        ("http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"),
        description="Accepted Origin header values (':*' = any port). A present, foreign Origin gets 403.",
    )
    tls: TlsConfig | None = Field(None, description="Terminate TLS (and optionally require client certificates).")
    workers: int = Field(1, ge=1, le=MAX_WORKERS, description="Gateway processes serving this listener (and the "
                         "admin one) on one host, under a supervisor; ``portcullis serve --workers`` overrides it. "
                         "More than one needs storage.postgresql, storage.redis and sessions.key_ref "
                         "(docs/cluster.md).")


class LimitsConfig(_Model):
    """Bounds on what a client may send and how long a call may take."""

    max_body_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576, description="Largest request body.")
    max_json_depth: int = Field(64, ge=4, le=512, description="Deepest JSON nesting accepted.")
    max_json_values: int = Field(
        20_000, ge=100, le=10_000_000,
        description="Most JSON values (objects, arrays, keys, strings, numbers, literals) in one request body, "
        "counted before parsing; bounds the event-loop time one request can take (-32700 past it).")
    max_header_count: int = Field(100, ge=16, le=1000, description="Most header lines in one request (431 past it).")
    max_header_bytes: int = Field(
        16_384, ge=1024, le=1_048_576,
        description="Most bytes of request target plus header names and values in one request (431 past it).")
    header_timeout_s: float = Field(
        10.0, gt=0, le=300,
        description="Time a client has to send a whole request head, from connecting or from the previous "
        "response (408 and close past it: slow-header clients cannot hold connections).")
    body_timeout_s: float = Field(
        30.0, gt=0, le=3600,
        description="Time a client has to send a whole request body once its head is in (408 and close past it).")
    max_connections_per_client: int = Field(
        64, ge=1, le=65_536,
        description="Most open connections from one client address (IPv6: one /64) per listener; more get 503 "
        "and are closed. Behind a proxy every client shares the proxy's address: size this for it.")
    call_timeout_s: float = Field(30.0, gt=0, le=3600, description="Default per-call upstream timeout.")


class SessionsConfig(_Model):
    """2025-era MCP sessions, sealed into the session id so any replica can serve them."""

    key_ref: str | None = Field(
        None,
        description="secret:// reference to one or more base64 32-byte keys (comma separated, first "
        "seals). Unset: a random per-process key, so sessions do not survive a restart or span replicas.",
    )
    ttl_s: int = Field(86_400, ge=60, le=30 * 86_400, description="Lifetime of a session id.")


class ClientRequestsConfig(_Model):
    """Which server-to-client requests of a service the gateway relays to the caller of the call that
    triggered them (an upstream's 2026-07-28 ``input_required`` result, or a 2025-era push request).
    Deny by default: a kind not set here is refused (-31040) and recorded (docs/mcp-surface.md)."""

    sampling: StrictBool = Field(False, description="Relay sampling/createMessage: the service may ask the "
                                 "caller's LLM to generate text (messages, systemPrompt, maxTokens only).")
    elicitation_form: StrictBool = Field(False, description="Relay elicitation/create in form mode: the service "
                                         "may ask the caller's user to fill a flat form of primitive fields.")
    elicitation_url: StrictBool = Field(False, description="Relay elicitation/create in URL mode: the service may "
                                        "send the caller's user to a URL (https, or http to loopback only).")
    roots: StrictBool = Field(False, description="Relay roots/list: the service may learn the caller's roots "
                              "(file system locations the client exposes).")


class _ServiceBase(_Model):
    tool_prefix: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]{0,64}$",
        description="Prefix of exposed tool names; default '<service>.'. Exposed names must be unique.",
    )
    resource_prefix: str | None = Field(
        None,
        pattern=r"^([a-z][a-z0-9.-]{0,62}\+)?$",
        description="Put before this service's resource URIs and URI templates; default '<service>+' (so "
        "'docs://a' of service 'files' is 'files+docs://a'). '' exposes them as they are (allowed only when no "
        "other service exposes resources). Prefixes must not be prefixes of one another.",
    )
    timeout_s: float | None = Field(None, gt=0, le=3600, description="Per-call timeout for this service.")
    connect_timeout_s: float = Field(10.0, gt=0, le=600, description="Time allowed to (re)connect.")
    health_interval_s: float = Field(5.0, ge=0.05, le=300, description="Seconds between health checks.")
    refresh_s: float = Field(30.0, ge=0.1, le=86_400, description="Seconds between re-listings (pin re-check).")
    max_result_bytes: int = Field(
        4 * 1_048_576, ge=1024, le=256 * 1_048_576,
        description="Largest answer read from this service: the HTTP body (JSON or SSE) or the stdio line. "
        "Reading stops when it is passed; the call fails with -31005, the HTTP connection is closed and a "
        "stdio child is restarted (its stream can no longer be trusted).")
    max_result_depth: int = Field(
        64, ge=4, le=128,
        description="Deepest JSON nesting accepted in an answer's result; deeper fails the call with -31005.")
    protocol: Literal["auto", "legacy"] = Field(
        "auto", description="'auto': the 2026-07-28 revision when the service speaks it (over HTTP through the "
        "gateway's raw relay), else the 2025-era handshake through the SDK client. 'legacy': always the 2025-era "
        "handshake (one session), e.g. for a service whose tools push sampling, elicitation or roots requests "
        "mid-call, which only a session can carry (docs/mcp-surface.md).")
    client_requests: ClientRequestsConfig = Field(
        ClientRequestsConfig(),
        description="Server-to-client requests (sampling, elicitation, roots) relayed to callers: deny by default.")


class StderrBounds(_Model):
    """Bounds on what a stdio child's stderr may put into the gateway's log (docs/upstreams.md)."""

    max_line_bytes: int = Field(2048, ge=64, le=65_536, description="Longest stderr line relayed; a longer "
                                "one is cut and marked ``truncated``, the rest of it skipped.")
    lines_per_s: float = Field(20.0, gt=0, le=10_000, description="Lines relayed per second on average; "
                               "lines past it are read, dropped and counted.")
    burst: int = Field(200, ge=1, le=100_000, description="Lines relayed at once before the rate applies.")


class StdioService(_ServiceBase):
    """A service the gateway spawns as a child process and speaks to over stdin/stdout."""

    transport: Literal["stdio"]
    command: str | None = Field(None, min_length=1, description="Executable (absolute path or on PATH).")
    module: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$",
        description="Python module run with the gateway's own interpreter (instead of command).",
    )
    args: tuple[str, ...] = ()
    env_passthrough: tuple[Annotated[str, Field(pattern=_ENV_NAME)], ...] = Field(
        (), description="Names of gateway environment variables copied to the child. Nothing else is."
    )
    env: dict[Annotated[str, Field(pattern=_ENV_NAME)], str] = Field(
        default_factory=dict, description="Explicit environment values for the child; a secret:// reference is "
        "resolved at each spawn (docs/secrets.md)."
    )
    cwd: str | None = None
    stderr: StderrBounds = Field(StderrBounds(), description="Bounds on the child's stderr relayed into the "
                                 "gateway's log: line length and rate.")
    sandbox: StdioSandbox = Field(StdioSandbox(), description="How the child is confined: on by default (a "
                                  "restricted file view, no network, resource limits; docs/sandbox.md).")

    @model_validator(mode="after")
    def _one_launcher(self) -> StdioService:
        if (self.command is None) == (self.module is None):
            raise ValueError("give exactly one of 'command' or 'module'")
        return self


class UpstreamTls(_Model):
    """TLS towards one upstream: which CA to trust, and the gateway's client certificate (mTLS)."""

    ca_file: str | None = Field(None, description="CA bundle that signs the service's certificate "
                                "(default: the system trust store).")
    cert_file: str | None = Field(None, description="The gateway's client certificate, for mTLS.")
    key_file: str | None = Field(None, description="Its private key.")

    @model_validator(mode="after")
    def _pair(self) -> UpstreamTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give both cert_file and key_file, or neither")
        return self


class HttpService(_ServiceBase):
    """A service reached over Streamable HTTP."""

    transport: Literal["http"]
    url: str = Field(pattern=r"^https?://", description="The service's MCP endpoint URL.")
    tls: UpstreamTls | None = Field(None, description="CA and client certificate for an https:// service.")

    def ssl_context(self) -> ssl.SSLContext | bool:
        """What the HTTP client verifies with: the configured CA and client certificate, else defaults."""
        if self.tls is None:
            return True
        ctx = ssl.create_default_context(cafile=self.tls.ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.tls.cert_file and self.tls.key_file:
            ctx.load_cert_chain(self.tls.cert_file, self.tls.key_file)
        return ctx


ServiceConfig = Annotated[StdioService | HttpService, Field(discriminator="transport")]


class RegoEvaluationConfig(_Model):
    """How the gateway evaluates Rego modules: in worker processes, each evaluation stopped at a CPU
    budget, so that a slow module never delays other callers. An evaluation that is stopped, finds
    no idle worker in time or fails otherwise is a deny (``policy_error``)."""

    budget_ms: float = Field(20.0, gt=0, le=10_000, description="CPU time one evaluation may use; the "
                             "worker is terminated when it is used up (typical evaluations take 0.2-0.4 ms).")
    workers: int = Field(2, ge=1, le=64, description="Worker processes: how many evaluations can run at "
                         "once (decision-cache hits need none).")
    memory_mb: int = Field(512, ge=32, le=65_536, description="Address space a worker may add to what it "
                           "started with; an evaluation that needs more fails (and is denied).")
    max_wait_ms: float = Field(1000.0, gt=0, le=60_000, description="How long an evaluation waits for an "
                               "idle worker before the call is denied.")


class AuthorizationConfig(_Model):
    """How calls are authorized beyond each manifest's ``policy:`` section."""

    environment: str = Field(
        "production", pattern=r"^[a-z][a-z0-9_-]{0,31}$",
        description="This gateway's environment (``production``, ``staging``, ``sandbox``, …): what a "
        "policy's ``environments`` list and Rego's ``input.environment`` see.")
    rego_dir: str | None = Field(
        "policy", description="Directory of ``*.rego`` modules, relative to the deployment directory. "
        "Every module is compiled once at start; a missing directory means no Rego rules.")
    limits: tuple[LimitRule, ...] = Field(
        (), description="Session-aware limits: counts and running totals per principal over a window. Counted "
        "in ``counters.sqlite3`` in the state directory, so they survive restarts; an add counts for the window "
        "and at most 1/64 of it longer (never shorter).")
    rego_evaluation: RegoEvaluationConfig = RegoEvaluationConfig()

    @field_validator("limits")
    @classmethod
    def _unique_limit_ids(cls, value: tuple[LimitRule, ...]) -> tuple[LimitRule, ...]:
        check_unique_ids(value)
        return value


class AttemptsConfig(_Model):
    """``attempt`` records: requests refused before the pipeline, aggregated (docs/audit.md)."""

    window_s: float = Field(
        10.0, gt=0, le=3600, description="The first refusal of a key (source, reason, status, method, tool, "
        "principal or token hash) is written at once; its repeats within this many seconds are written as one "
        "record with a count when the window closes (and at clean stop).")
    max_keys: int = Field(
        10_000, ge=1, le=1_000_000, description="Keys tracked at once; beyond this, new keys are counted in one "
        "overflow key per reason (source ``*``).")


class AuditConfig(_Model):
    """The tamper-evident audit trail (always on: there is no switch to turn it off)."""

    path: str | None = Field(
        None, description="SQLite file of the audit chain. Default: ``audit.sqlite3`` in the state directory.")
    durability: Literal["process", "power"] = Field(
        "process", description="``process``: a record is committed to the write-ahead log before the call "
        "goes on and survives the gateway being killed (kill -9), not a power cut; ~60 µs per record. "
        "``power``: every group commit is fsync'ed (survives a power cut) at ~0.3-0.7 ms per commit.")
    checkpoint_every_records: int = Field(
        1000, ge=1, le=1_000_000, description="Sign a checkpoint after this many new records, and …")
    checkpoint_every_s: float = Field(
        1.0, gt=0, le=86_400, description="… at most this many seconds after any durable record (the tail "
        "window: how long a record is protected only by its hash links), and at clean stop. Each checkpoint also "
        "goes to every SIEM exporter as a C2SP signed note (docs/audit.md).")
    retention_days: float | None = Field(
        None, ge=1, le=36500, description="Delete records older than this, whole checkpointed segments at a "
        "time from the start of the chain, after a retention record saying so is signed into the chain; "
        "checkpoints are kept and ``portcullis audit verify`` verifies the rest from the retained checkpoint. "
        "null: keep every record.")
    siem: SiemExportConfig | None = Field(
        None, description="Export every durable record to SIEMs (JSON lines files, syslog, HTTPS webhook) "
        "through a bounded retry queue that never blocks a call and counts what it drops.")
    attempts: AttemptsConfig = Field(
        AttemptsConfig(), description="How refused requests (no or a bad credential, a refused Host, Origin or "
        "body, protocol-level refusals) are aggregated into ``attempt`` records.")
    witness: WitnessConfig | None = Field(
        None, description="POST every checkpoint (a C2SP signed note) to a witness (``portcullis audit witness``) "
        "that refuses a rolled-back or forked chain; off the request path, bounded, retried, counted.")


class AdminConfig(_Model):
    """A second listener for operators: ``/metrics``, ``/livez``, ``/readyz``, ``/version``. Loopback by default."""

    host: str = Field("127.0.0.1", description="Bind address of the admin listener.")
    port: int | None = Field(
        9464, ge=0, le=65535, description="Port of the admin listener (0 picks a free one; null turns it off).")
    allowed_hosts: tuple[str, ...] = Field(
        ("127.0.0.1:*", "localhost:*", "[::1]:*"),
        min_length=1,
        description="Accepted Host header values on the admin listener; a ':*' suffix matches any port. Others "
        "get 421 (DNS-rebinding protection, as on the front door). Add the name Prometheus scrapes by.",
    )
    allowed_origins: tuple[str, ...] = Field(
        ("http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"),
        description="Accepted Origin header values on the admin listener (':*' = any port). A present, foreign "
        "Origin gets 403.",
    )
    operators: tuple[str, ...] = Field(
        (), description="Caller patterns (``role:platform``, ``client:ci-pipeline``) allowed to read the "
        "authenticated operator endpoints (``GET /pins``: each tool's pin against the definition the running "
        "gateway sees, for ``portcullis pin --check --gateway``; the policy versions API ``/policy…``: history, "
        "apply, reload, rollback, docs/policy-versions.md). Empty: nobody.")

    responders: tuple[str, ...] = Field(
        (), description="Caller patterns (``role:oncall``, ``user:alice``) allowed to list, set and lift kill "
        "switches through the admin API (``/kill-switches``, docs/kill-switches.md). Empty: nobody (the "
        "``portcullis kill`` command on the gateway host still works).")

    @field_validator("operators", "responders")
    @classmethod
    def _operators(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            check_caller_pattern(pattern)
        return value


class ApproverRule(_Model):
    """Who may approve calls of which tools."""

    tools: tuple[Annotated[str, Field(pattern=r"^(\*|[a-z0-9][a-z0-9_.-]*\*?)$", max_length=200)], ...] = Field(
        ("*",), min_length=1, description="Exposed tool names, or prefixes ending in '*' ('billing.*'); '*' is all.")
    approvers: tuple[Annotated[str, Field(
        pattern=r"^(issuer:(\*|[a-z][a-z0-9_-]{0,62})/)?(user|role|scope|tenant|client|app):[^\s*]+\*?$",
        max_length=300)], ...] = Field(
        min_length=1, description="Caller patterns of the people who may approve, scoped to the issuer that "
        "must assert them when more than one identity source is configured (issuer:corp/role:finance-approver, "
        "issuer:corp/user:alice). An approver must be a person: the issuer's person signal, a user, no agent.")

    @field_validator("approvers")
    @classmethod
    def _patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            check_caller_pattern(pattern)
        return value
    risk: tuple[Literal["low", "medium", "high"], ...] | None = Field(
        None, min_length=1, description="Only for tools of these manifest risk levels (default: any).")

    def covers(self, tool: str, tool_risk: str) -> bool:
        """Whether this rule's ``tools`` and ``risk`` take in ``tool`` (an exposed name) of that risk level."""
        if self.risk is not None and tool_risk not in self.risk:
            return False
        return any(p == "*" or (p.endswith("*") and tool.startswith(p[:-1])) or p == tool for p in self.tools)


class RiskAmount(_Model):
    pointer: str = Field("/amount", pattern=r"^(/([^~/]|~[01])*)+$", description="Argument holding the amount.")
    points_per_unit: float = Field(0.05, ge=0, le=1000, description="Points per unit of the amount.")
    max_points: float = Field(40, ge=0, le=1000, description="Cap on the amount's points.")


class RiskRate(_Model):
    window_s: float = Field(3600, gt=0, le=7 * 86400, description="Window of the same requester's calls to "
                            "the same tool that count as a rate signal.")
    points_per_call: float = Field(2, ge=0, le=1000, description="Points per earlier call in the window.")
    max_points: float = Field(20, ge=0, le=1000, description="Cap on the rate's points.")


class RiskThresholds(_Model):
    one_approver: float = Field(40, ge=0, description="From this score a call needs one approver.")
    two_approvers: float = Field(70, ge=0, description="From this score it needs two distinct approvers.")
    deny: float = Field(100, ge=0, description="From this score it is denied outright.")

    @model_validator(mode="after")
    def _ordered(self) -> RiskThresholds:
        if not self.one_approver <= self.two_approvers <= self.deny:
            raise ValueError("risk thresholds must satisfy one_approver <= two_approvers <= deny")
        return self


class RiskConfig(_Model):
    """A risk score per call: the sum of its parts, mapped by thresholds to allow, one approver,
    two approvers or deny. It can only make a call stricter than the policy's decision."""

    tool_risk: dict[Literal["low", "medium", "high"], float] = Field(
        {"low": 0, "medium": 10, "high": 30}, description="Points for the manifest's risk level.")
    classification: dict[Classification, float] = Field(
        {Classification.PUBLIC: 0, Classification.INTERNAL: 5, Classification.CONFIDENTIAL: 15,
         Classification.RESTRICTED: 30},
        description="Points for the most sensitive of the tool's input and output classification (data scope).")
    environment: dict[str, float] = Field(
        {"production": 20, "staging": 5, "sandbox": 0}, description="Points for the gateway's environment.")
    amount: RiskAmount | None = Field(RiskAmount(), description="Points for the amount argument (null: none).")
    rate: RiskRate | None = Field(RiskRate(), description="Points for the requester's recent calls (null: none).")
    thresholds: RiskThresholds = Field(RiskThresholds(), description="Score thresholds.")


class ApprovalNotifyConfig(_Model):
    """A chat-style incoming webhook told of every new approval request, with signed, expiring
    approve and deny links (following a link shows the request; voting still needs the approver's
    own bearer token)."""

    webhook_url: str = Field(pattern=r"^https?://[^\s#]+$", max_length=2048, description="Incoming-webhook URL "
                             "(https://; http:// only with allow_insecure_http).")
    secret_ref: str = Field(pattern=SECRET_REF_PATTERN, description="secret:// reference to the HMAC "
                            "key that signs each POST (X-Portcullis-Signature), at least 16 bytes.")
    link_base: str = Field(pattern=r"^https?://[^\s#?]+$", max_length=1024, description="Base URL of this "
                           "gateway's admin listener as approvers reach it; links are <link_base>/approvals/<id>/"
                           "approve?exp=…&sig=….")
    allow_insecure_http: bool = Field(False, description="Permit an http:// webhook URL (tests, local chat).")
    timeout_s: float = Field(10.0, gt=0, le=120, description="Timeout of each POST.")


class ApprovalsConfig(_Model):
    """Human approval of calls that the policy answers with require_approval."""

    path: str | None = Field(None, description="SQLite file of pending and past approvals. Default: "
                             "``approvals.sqlite3`` in the state directory.")
    ttl_s: float = Field(900.0, ge=10, le=7 * 86400, description="How long an approval request stays open "
                         "(and an approval stays usable). Expiry means deny.")
    approvers: tuple[ApproverRule, ...] = Field(
        (), description="Who may approve which tools. Empty: nobody can approve, so every call that needs "
        "approval is, in effect, denied (the gateway warns at start).")
    recent_similar: int = Field(5, ge=0, le=50, description="How many of the same requester's recent "
                                "requests for the same tool an approver is shown.")
    max_open_per_requester: int = Field(
        20, ge=1, le=10000, description="How many pending (undecided, unexpired) approval requests one requester "
        "identity (issuer, client, user, agent, tenant) may have open at once, over all tools and arguments. One "
        "more is refused (-31020, rule_id approvals/max_open_per_requester) until one is decided or expires.")
    retention_days: float | None = Field(
        90.0, ge=1, le=36500, description="Denied, expired and executed approvals created longer ago than this "
        "are deleted from the approval store (pending and approved-unused ones never are; the audit trail keeps "
        "every step). null: keep them forever.")
    notify: ApprovalNotifyConfig | None = Field(None, description="Tell approvers through a chat webhook.")
    risk: RiskConfig | None = Field(None, description="Risk scoring of every allowed or approval-bound call "
                                    "(null: off, the policy alone decides).")


class ResponseCacheConfig(_Model):
    """The optional per-tool response cache (a tool opts in with ``cache`` in its manifest)."""

    enabled: bool = Field(True, description="false: no tool is answered from the cache, whatever its manifest "
                          "says. Nothing is cached unless a tool's manifest declares ``cache``.")
    max_entries: int = Field(10_000, ge=1, le=10_000_000, description="Most results held; the least recently "
                             "used goes first.")
    max_bytes: int = Field(64 * 1024 * 1024, ge=1024, le=1 << 36, description="Most bytes of encoded results "
                           "held (keys included); the least recently used goes first. A result larger than an "
                           "eighth of this is never stored.")
    classifications: tuple[Classification, ...] = Field(
        (Classification.PUBLIC, Classification.INTERNAL),
        description="Output classifications whose results may be cached. Restricted is never allowed.")

    @field_validator("classifications")
    @classmethod
    def _never_restricted(cls, value: tuple[Classification, ...]) -> tuple[Classification, ...]:
        if Classification.RESTRICTED in value:
            raise ValueError("Restricted results are never cached")
        return value


def _default_sinks() -> dict[Classification, tuple[Sink, ...]]:
    return {Classification(level): sinks for level, sinks in DEFAULT_SINKS.items()}


class ToxicFlowConfig(_Model):
    """The toxic-flow session rule: after a result that carried sensitive data or an injection hit,
    calls of egress-capable tools by the same session are refused or held for approval for a while."""

    enabled: StrictBool = Field(True, description="Apply the rule (on by default).")
    on_sensitive: Literal["deny", "require_approval"] = Field(
        "deny", description="What an egress call gets after a result with a secret or PII in it.")
    on_injection: Literal["deny", "require_approval"] = Field(
        "require_approval", description="What an egress call gets after a result with an injection hit.")
    window_s: float = Field(
        900.0, gt=0, le=7 * 86400, description="How long a session stays tainted after the last such result "
        "(a later one starts the window again); at most 1/64 of it longer, never shorter (state-store windows).")


class GovernanceConfig(_Model):
    """Data governance: the toxic-flow rule and the sinks each data class may reach (docs/content-security.md)."""

    toxic_flow: ToxicFlowConfig = ToxicFlowConfig()
    sinks: dict[Classification, tuple[Sink, ...]] = Field(
        default_factory=_default_sinks, description="The sinks data of each class may reach; a class left out "
        "reaches none. Default: Public and Internal everywhere; Confidential not in logs; Restricted only to "
        "the caller (inside the gateway's environment) and approval views, with keyed hashes in the audit trail.")

    @field_validator("sinks")
    @classmethod
    def _siem_needs_audit(cls, value: dict[Classification, tuple[Sink, ...]]) -> dict[Classification, tuple[Sink, ...]]:
        for level, sinks in value.items():
            if Sink.SIEM in sinks and Sink.AUDIT not in sinks:
                raise ValueError(f"sinks[{level}]: siem needs audit (the SIEM export carries the audit records)")
        return value


class GatewayConfig(_Model):
    """The whole of ``gateway.yaml``."""

    version: Literal[1] = 1
    listen: ListenConfig = ListenConfig()
    limits: LimitsConfig = LimitsConfig()
    sessions: SessionsConfig = SessionsConfig()
    identity: IdentityConfig | None = Field(
        None, description="How callers authenticate. A gateway without it refuses to start (no anonymous default).")
    upstream_tokens: UpstreamTokenConfig = UpstreamTokenConfig()
    state_dir: str | None = Field(
        None, description="Directory for local state (development issuer key, revocations). Default: "
        "$PORTCULLIS_STATE_DIR or ./.portcullis. Never read as configuration, even inside the deployment "
        "directory (a warning: keep it out of version control); it must not be the deployment directory itself.")
    authorization: AuthorizationConfig = AuthorizationConfig()
    audit: AuditConfig = AuditConfig()
    admin: AdminConfig = AdminConfig()
    approvals: ApprovalsConfig = ApprovalsConfig()
    response_cache: ResponseCacheConfig = ResponseCacheConfig()
    observability: ObservabilityConfig = ObservabilityConfig()
    alerts: AlertsConfig = Field(AlertsConfig(), description="Runtime monitoring and anomaly alerts "
                                 "(docs/alerts.md).")
    content: ContentConfig = Field(ContentConfig(), description="The output filter: secrets, PII, hidden "
                                   "characters, links and injection in every tool result.")
    governance: GovernanceConfig = GovernanceConfig()
    storage: StorageConfig = Field(StorageConfig(), description="Where shared state lives: the embedded default "
                                   "(SQLite, in process) or PostgreSQL and Redis for many processes and replicas "
                                   "(docs/cluster.md).")
    secrets: SecretsConfig = Field(SecretsConfig(), description="Secret providers beyond env and file: sealed "
                                   "files and Vault/OpenBao, refreshed while running (docs/secrets.md).")
    console: ConsoleConfig = Field(ConsoleConfig(), description="The web console for approvers and responders at "
                                   "/console on the admin listener (docs/console.md). Off by default.")
    services: dict[Annotated[str, Field(pattern=_SERVICE_NAME)], ServiceConfig] = Field(
        description="Upstream MCP services by name.", min_length=1
    )

    @model_validator(mode="after")
    def _workers_share_state(self) -> GatewayConfig:
        problem = workers_problem(self.listen.workers, shared_state(self))
        if problem is not None:
            raise PydanticCustomError("workers_need_shared_state", problem)
        console = console_problem(self.console, self.identity, self.admin.port)
        if console is not None:
            raise PydanticCustomError("console_misconfigured", console)
        return self


def shared_state(config: GatewayConfig) -> SharedState:
    """Which shared-state settings ``config`` has (for :func:`~portcullis.storage.workers.workers_problem`)."""
    return SharedState(postgresql=config.storage.postgresql is not None, redis=config.storage.redis is not None,
                       session_key=config.sessions.key_ref is not None)


# --------------------------------------------------------------------------- tool manifests


class ToolClassification(_Model):
    input: Classification = Field(description="Most sensitive class of data a caller sends.")
    output: Classification = Field(description="Most sensitive class of data the tool returns.")


class ToolAnnotations(_Model):
    """MCP tool annotations as the manifest declares them (hints to clients, never trust inputs)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    title: str | None = None
    readOnlyHint: bool | None = None
    destructiveHint: bool | None = None
    idempotentHint: bool | None = None
    openWorldHint: bool | None = None


class ToolCache(_Model):
    """A tool's opt-in to the response cache (read-only tools only, never Restricted output)."""

    ttl_s: float = Field(ge=1, le=86400, description="How long a stored result may answer the same call.")


class ToolManifest(_Model):
    """One ``tools/<domain>/<tool>.yml``: the source of truth for what the gateway exposes."""

    name: str = Field(pattern=_TOOL_NAME, description="The tool's name at its service.")
    service: str = Field(pattern=_SERVICE_NAME, description="The service (in gateway.yaml) that runs it.")
    owner: str = Field(min_length=3, description="Accountable owner: a team or person's address.")
    description: str = Field(min_length=1, max_length=4096)
    risk: Risk
    classification: ToolClassification
    annotations: ToolAnnotations = ToolAnnotations()
    input_schema: dict[str, Any] = Field(description="JSON Schema (2020-12) for the arguments.")
    output_schema: dict[str, Any] | None = Field(None, description="JSON Schema of structured output.")
    pin: str | None = Field(
        None,
        pattern=PIN_PATTERN,
        description="sha256 of the upstream's live definition; a mismatch quarantines the tool.",
    )
    findings_accepted: str | None = Field(
        None,
        pattern=PIN_PATTERN,
        description="The pin whose tool-poisoning findings a person reviewed and accepted (`portcullis pin "
        "--accept-findings`, which writes who and when in a comment). A live definition with findings is "
        "served only while this equals `pin`.")
    policy: ToolPolicy | None = Field(
        None, description="Who may call this tool and with which arguments. A tool without a policy is "
        "denied to every caller (default deny).")
    sensitive_arguments: tuple[Annotated[str, Field(pattern=r"^(/([^~/]|~[01])*)+$", max_length=512)], ...] = Field(
        (), description="RFC 6901 pointers of arguments written to the audit trail only as keyed hashes "
        "(HMAC with the audit key), never in clear.")
    cache: ToolCache | None = Field(
        None, description="Answer the same call (same principal, tenant, arguments, definition and policy "
        "version) from the gateway's response cache for ``ttl_s``. Only for a tool declared "
        "``annotations.readOnlyHint: true`` whose output is not Restricted.")

    @model_validator(mode="after")
    def _cache_allowed(self) -> ToolManifest:
        if self.cache is not None:
            reason = cache_refusal(self.annotations.readOnlyHint, str(self.classification.output))
            if reason is not None:
                raise ValueError(f"cache: {reason}")
        return self

    @field_validator("owner", "risk", "classification", mode="before")
    @classmethod
    def _reviewed(cls, value: Any) -> Any:
        values = value.values() if isinstance(value, dict) else (value,)
        if any(item == REVIEW_PLACEHOLDER for item in values):
            raise ValueError(f"{REVIEW_PLACEHOLDER} left by `portcullis import`: a person must review this "
                             "manifest and fill this in")
        return value
    content: ToolContent | None = Field(None, description="Output-filter rules for this tool, tried before the "
                                        "gateway's content defaults.")
    egress: StrictBool | None = Field(
        None, description="The tool can send data out of the deployment (mail, web requests, uploads, posts): the "
        "toxic-flow rule applies to it. Unset: the MCP ``openWorldHint`` annotation decides, and a tool without "
        "that either is egress-capable (the MCP default). ``portcullis lint`` warns when only the hint decides.")
    output_tenant_pointer: Annotated[str, Field(pattern=r"^(/([^~/]|~[01])*)+$", max_length=512)] | None = Field(
        None, description="RFC 6901 pointer into ``structuredContent`` of the tenant the result belongs to; a result "
        "whose tenant there is not the caller's own, or is missing, is withheld.")
    retention_class: str | None = Field(
        None, pattern=r"^[a-z][a-z0-9_-]{0,31}$", description="A label for how long this tool's records are kept "
        "downstream (``short``, ``legal_hold``, …), written into its decision records; the audit chain itself "
        "keeps records for ``audit.retention_days`` (docs/content-security.md).")

    @field_validator("input_schema")
    @classmethod
    def _object_root(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type") != "object":
            raise ValueError("input_schema must have type 'object' at its root")
        return value


def exposed_name(service: str, prefix: str | None, tool: str) -> str:
    """The name a client sees: ``<prefix><tool>``, the prefix defaulting to ``<service>.``."""
    return f"{service}." + tool if prefix is None else prefix + tool


TOOL_NAME_RE = re.compile(_TOOL_NAME)


# --------------------------------------------------------------------------- resource and prompt manifests

# RFC 6570 level 1 only: literal text and simple ``{name}`` expressions (a value never holds '/', '?' or '#')
_URI_TEMPLATE = r"^[^{}\s]*(\{[A-Za-z0-9_]{1,64}\}[^{}\s]*)*$"
_URI = r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s{}]*$"


class _SurfaceManifest(_Model):
    """What resource and prompt manifests share with tool manifests: ownership, classes, pin, policy."""

    service: str = Field(pattern=_SERVICE_NAME, description="The service (in gateway.yaml) that serves it.")
    owner: str = Field(min_length=3, description="Accountable owner: a team or person's address.")
    description: str = Field(min_length=1, max_length=4096)
    risk: Risk | None = Field(None, description="low, medium or high, as for a tool (input.tool.risk in Rego); "
                              "`portcullis lint` requires it.")
    classification: ToolClassification
    pin: str | None = Field(
        None, pattern=PIN_PATTERN,
        description="sha256 of the upstream's live definition; a mismatch quarantines it.")
    policy: ToolPolicy | None = Field(
        None, description="Who may read it (the same rules as a tool's policy). Without a policy it is "
        "denied to every caller (default deny).")
    content: ToolContent | None = Field(None, description="Output-filter rules, tried before the gateway's "
                                        "content defaults.")
    retention_class: str | None = Field(None, pattern=r"^[a-z][a-z0-9_-]{0,31}$",
                                        description="A label for how long its records are kept downstream.")

    @field_validator("owner", "risk", "classification", mode="before")
    @classmethod
    def _reviewed(cls, value: Any) -> Any:
        values = value.values() if isinstance(value, dict) else (value,)
        if any(item == REVIEW_PLACEHOLDER for item in values):
            raise ValueError(f"{REVIEW_PLACEHOLDER}: a person must review this manifest and fill this in")
        return value


class ResourceManifest(_SurfaceManifest):
    """One ``resources/<domain>/<name>.yml``: a resource (``uri``) or a resource template (``uri_template``)."""

    name: str = Field(pattern=_TOOL_NAME, description="The resource's (or template's) name at its service.")
    uri: str | None = Field(None, pattern=_URI, max_length=2048, description="The resource's URI at its service.")
    uri_template: str | None = Field(
        None, pattern=_URI_TEMPLATE, max_length=2048,
        description="The template's URI template at its service (RFC 6570 level 1: simple {name} expressions "
        "only; a value matches one or more characters other than '/', '?', '#').")
    mime_type: str | None = Field(None, max_length=256, pattern=r"^[!-~]+$", description="The MIME type listed.")

    @model_validator(mode="after")
    def _one_address(self) -> ResourceManifest:
        if (self.uri is None) == (self.uri_template is None):
            raise ValueError("give exactly one of 'uri' or 'uri_template'")
        if self.uri_template is not None and not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", self.uri_template):
            raise ValueError("uri_template must start with a URI scheme")
        return self


class PromptArgumentSpec(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
    description: str | None = Field(None, max_length=1024)
    required: StrictBool = False


class PromptManifest(_SurfaceManifest):
    """One ``prompts/<domain>/<name>.yml``: a prompt its service offers."""

    name: str = Field(pattern=_TOOL_NAME, description="The prompt's name at its service.")
    arguments: tuple[PromptArgumentSpec, ...] = Field((), max_length=64, description="The prompt's arguments.")


def resource_prefix(service: str, prefix: str | None) -> str:
    """What is put before an upstream resource URI: ``<service>+`` by default (see docs/mcp-surface.md)."""
    return f"{service}+" if prefix is None else prefix
