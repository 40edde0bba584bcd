"""Trusted token issuers: the ``identity.issuers`` list of ``gateway.yaml``.

One :class:`IssuerConfig` per authorization server whose access tokens the gateway accepts.
Everything that decides whether a token is trusted comes from here, never from the token:
the exact ``iss`` string (compared as-is, so ``https://as.example`` and ``https://as.example/``
are different issuers — pitfall P9), where the keys live, which asymmetric algorithms are pinned,
and the audience (the gateway's canonical resource URI, RFC 8707).

``none`` and the HMAC algorithms cannot be configured at all: the gateway is a resource server
and only ever holds public keys. The claims that every access token must carry (RFC 9068:
``exp``, ``iat``, ``iss``, ``aud``, ``sub``) can be added to but not removed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Algorithm = Literal["ES256", "ES384", "RS256", "PS256", "EdDSA"]

MANDATORY_CLAIMS: tuple[str, ...] = ("exp", "iat", "iss", "aud", "sub")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


def normalise_typ(value: str) -> str:
    """RFC 7515 §4.1.9: media types compare case-insensitively, ``application/`` may be omitted."""
    value = value.lower()
    return value[len("application/"):] if value.startswith("application/") else value


class PersonSignal(_Model):
    """How a token of this issuer says "a person holds me": a claim with a given value.

    Positive only: without the signal a token is not a person's, whatever else it lacks (a
    missing ``agent_id`` proves nothing). A token that names an agent is never a person's.
    """

    claim: str = Field(pattern=r"^[A-Za-z0-9_.:/-]{1,128}$", description="The claim that carries the signal "
                       "(for example 'principal_type', 'idtyp', 'groups').")
    equals: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[^\s]+$",
                               description="The value that signals a person: the claim equals it, or is a list "
                               "that contains it. Unset: any non-empty value of the claim does (for example "
                               "a claim only user tokens carry).")


class IssuerConfig(_Model):
    """One trusted authorization server and how to verify its access tokens."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$", description="Short name used in logs, metrics and the "
                      "'issuer:<name>/' scope of caller patterns. 'dev', 'mtls' and 'anonymous' are reserved.")
    issuer: str = Field(
        min_length=1,
        max_length=2048,
        pattern=r"^[^\s\x00-\x1f\x7f]+$",
        description="The exact 'iss' string the AS writes, compared byte for byte (mind trailing slashes).",
    )
    jwks_url: str | None = Field(None, pattern=r"^https?://\S+$", description="URL of the AS's JWK Set.")
    jwks_file: str | None = Field(None, min_length=1, description="Path of a local JWK Set file.")
    discovery_url: str | None = Field(
        None,
        pattern=r"^https?://\S+$",
        description="URL of the AS's OpenID configuration; its 'issuer' must equal 'issuer' exactly.",
    )
    algorithms: tuple[Algorithm, ...] = Field(
        min_length=1, description="Pinned signature algorithms. 'none' and HS* are not accepted."
    )
    audience: str = Field(
        min_length=1,
        pattern=r"^\S+$",
        description="The gateway's canonical resource URI; tokens must name it in 'aud'.",
    )
    leeway_s: int = Field(30, ge=0, le=300, description="Clock skew allowed on exp / nbf / iat.")
    required_claims: tuple[str, ...] = Field(
        MANDATORY_CLAIMS, description="Claims every token must carry; must include exp, iat, iss, aud, sub."
    )
    jwks_min_refresh_s: float = Field(
        30.0, ge=1, le=3600, description="Floor between two key set fetches (unknown kids cannot force more)."
    )
    jwks_max_age_s: float = Field(
        3600.0, ge=60, le=7 * 86_400, description="Keys not re-fetched successfully for this long are dropped."
    )
    allowed_typ: tuple[str, ...] = Field(
        ("at+jwt", "JWT"), min_length=1, description="Accepted 'typ' header values when the header has one."
    )
    max_token_bytes: int = Field(8192, ge=512, le=65_536, description="Longest token accepted.")
    person: PersonSignal | None = Field(
        None, description="The positive signal that a token is a person's (only people approve). Unset: no "
        "token of this issuer is a person's.")

    @field_validator("required_claims")
    @classmethod
    def _mandatory_claims_kept(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        missing = [claim for claim in MANDATORY_CLAIMS if claim not in value]
        if missing:
            raise ValueError(f"required_claims must include {', '.join(missing)}")
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> IssuerConfig:
        sources = [s for s in (self.jwks_url, self.jwks_file, self.discovery_url) if s is not None]
        if len(sources) != 1:
            raise ValueError("give exactly one of 'jwks_url', 'jwks_file' or 'discovery_url'")
        if self.jwks_max_age_s <= self.jwks_min_refresh_s:
            raise ValueError("jwks_max_age_s must be longer than jwks_min_refresh_s")
        return self

    @property
    def allowed_typ_normalised(self) -> frozenset[str]:
        return frozenset(normalise_typ(t) for t in self.allowed_typ)
