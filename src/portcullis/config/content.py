"""Configuration of the output filter: the gateway-wide ``content:`` section of ``gateway.yaml`` and the
per-tool ``content:`` override in a tool manifest (see docs/content-security.md, "Output filtering")."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from portcullis.content.links import normalise_hosts
from portcullis.policy.model import check_caller_pattern

FindingAction = Literal["redact", "mask", "hash", "block", "allow"]
SecretAction = Literal["redact", "hash", "block"]  # a secret is never let through, nor shown in part
_KIND = r"^(\*|secret|pii|[a-z][a-z0-9_]{1,63})$"
_RULE_ID = r"^[a-z0-9][a-z0-9_.-]{0,127}$"
_HOST = r"^(\*\.)?[^\s/@:?#\\]{1,253}$"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


class ContentSecrets(_Model):
    """Secret detection (the project's own rule set: cloud keys, VCS and chat tokens, payment keys, JWTs,
    private keys, connection strings, …)."""

    enabled: bool = Field(True, description="Detect secrets in output.")
    action: SecretAction = Field("redact", description="What a detected secret becomes (rule output.secrets).")


class ContentPii(_Model):
    """PII detection; the action depends on the tool's declared output classification."""

    kinds: tuple[Literal["card", "ssn", "email", "phone", "iban"], ...] = Field(
        ("card", "ssn", "email", "phone", "iban"), description="PII kinds detected (empty: none).")
    phone_region: str = Field("US", pattern=r"^[A-Z]{2}$", description="Region for phone numbers without a "
                              "country code.")
    actions: dict[Literal["Public", "Internal", "Confidential", "Restricted"], FindingAction] = Field(
        {"Public": "allow", "Internal": "redact", "Confidential": "redact", "Restricted": "redact"},
        description="Action on PII (rule output.pii) by the tool's output classification; a class not named "
        "here redacts.")


class ContentLinks(_Model):
    enabled: bool = Field(True, description="Neutralise Markdown/HTML links and images that carry data to a "
                          "host off the allow-list (rule output.links).")
    allow_hosts: tuple[Annotated[str, Field(pattern=_HOST)], ...] = Field(
        (), description="Hosts links may point to with data: an exact host, or *.example.com (subdomains).")

    @field_validator("allow_hosts")
    @classmethod
    def _hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        normalise_hosts(value)  # raises ValueError on a name IDNA cannot encode
        return value


class ContentBudget(_Model):
    cpu_ms: float = Field(500.0, gt=0, le=60_000, description="CPU time one filter run may use; past it the "
                          "result is withheld (fail closed).")
    max_findings: int = Field(10_000, ge=1, le=1_000_000, description="More findings than this withholds the "
                              "result.")
    decode_depth: int = Field(2, ge=0, le=4, description="Nested encodings (base64, hex, URL-encoding) decoded.")
    min_encoded_run: int = Field(12, ge=8, le=64, description="Shortest encoded run decoded and scanned (12: the "
                                 "base64 of an SSN is 16 characters with its padding).")


class ContentConfig(_Model):
    """The output filter, applied to every result a tool returns before anything else holds it."""

    enabled: bool = Field(True, description="Filter tool output (off: results pass unfiltered; not advised).")
    secrets: ContentSecrets = ContentSecrets()
    pii: ContentPii = ContentPii()
    hidden_characters: Literal["report", "strip", "escape"] = Field(
        "strip", description="Invisible and control characters (tag characters, bidi overrides, zero-width, "
        "terminal escapes) in output: left and reported, removed, or shown escaped.")
    injection: Literal["wrap", "flag", "block", "off"] = Field(
        "wrap", description="A result with an injection hit: wrapped in the untrusted-data envelope, only "
        "flagged, or withheld.")
    links: ContentLinks = ContentLinks()
    budget: ContentBudget = ContentBudget()


class ContentRule(_Model):
    """One per-tool rule: for findings of ``kinds`` (and callers matching ``callers``), do ``action``."""

    id: str = Field(pattern=_RULE_ID, description="Rule id, shown in markers and recorded.")
    kinds: tuple[Annotated[str, Field(pattern=_KIND)], ...] = Field(
        min_length=1, description="Finding kinds (card_number, email, aws_access_key_id, …), a category "
        "(secret, pii) or *.")
    action: FindingAction
    callers: tuple[str, ...] = Field((), description="Caller patterns (as in allowed_callers); empty: any caller.")

    @field_validator("callers")
    @classmethod
    def _callers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            check_caller_pattern(pattern)
        return value


class ToolContent(_Model):
    """Per-tool output-filter settings; rules are tried in order before the gateway's defaults."""

    rules: tuple[ContentRule, ...] = Field((), description="First matching rule wins.")
    injection: Literal["wrap", "flag", "block"] | None = Field(None, description="Overrides content.injection.")

    @field_validator("rules")
    @classmethod
    def _unique(cls, value: tuple[ContentRule, ...]) -> tuple[ContentRule, ...]:
        ids = [rule.id for rule in value]
        if len(ids) != len(set(ids)):
            raise ValueError("content rule ids must be unique")
        for rule in value:
            if "secret" in rule.kinds and rule.action in ("allow", "mask"):
                raise ValueError(f"rule {rule.id}: secrets may not be allowed or masked")
        return value
