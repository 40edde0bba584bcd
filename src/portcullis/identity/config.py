"""Identity configuration: who may call the gateway, and how callers become principals.

Lives under ``identity:`` in ``gateway.yaml``. Failing closed is the default: a gateway with no
issuer, no certificate rule and no development issuer refuses to start, and the two switches
that weaken authentication are named ``allow_insecure_…`` and warn at every start and use.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from portcullis.identity.certs import CertMappingRule
from portcullis.identity.issuers import IssuerConfig
from portcullis.identity.principal import BUILT_IN_SOURCES, MAX_ITEMS

_CLAIM = r"^[A-Za-z0-9_.:/-]{1,128}$"
_ATTRIBUTE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ClaimMap(_Model):
    """Which token claim supplies each principal field. Values never come from anywhere else.

    How each claim's value is checked and normalised (types, Unicode, sizes, duplicates) is fixed,
    not configurable: :mod:`portcullis.identity.claims` and docs/identity.md.
    """

    user_id: str | None = Field("sub", pattern=_CLAIM, description="Claim naming the human user.")
    agent_id: str | None = Field("agent_id", pattern=_CLAIM, description="Claim naming the agent.")
    client_id: tuple[str, ...] = Field(("client_id", "azp", "sub"), min_length=1,
                                       description="Claims tried in order for the OAuth client id.")
    session_id: str | None = Field("sid", pattern=_CLAIM)
    source_app: str | None = Field("source_app", pattern=_CLAIM)
    tenant: str | None = Field("tenant", pattern=_CLAIM)
    roles: str | None = Field("roles", pattern=_CLAIM, description="Claim holding a list (or space-separated "
                              "string) of roles.")
    attributes: dict[str, str] = Field(
        default_factory=lambda: {"department": "department", "employment_type": "employment_type",
                                 "region": "region"},
        description="Principal attribute name -> claim name (at most 32; names of A-Z a-z 0-9 _ . : -).")

    @field_validator("attributes")
    @classmethod
    def _attribute_names(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_ITEMS:
            raise ValueError(f"at most {MAX_ITEMS} attributes")
        for name, claim in value.items():
            if not _ATTRIBUTE.fullmatch(name) or not re.fullmatch(_CLAIM, claim):
                raise ValueError("attribute names are 1 to 64 of A-Z a-z 0-9 _ . : -, claim names 1 to 128 of "
                                 "A-Z a-z 0-9 _ . : / -")
        return value


class UpstreamTokenConfig(_Model):
    """The short-lived token the gateway mints for every upstream call (no token passthrough)."""

    ttl_s: int = Field(30, ge=1, le=60, description="Lifetime of each minted token.")
    algorithm: str = Field("EdDSA", pattern=r"^(EdDSA|ES256)$")
    keys_ref: str | None = Field(
        None, description="secret:// reference to a file of PEM private keys (first signs). Unset: a key "
        "generated at start, so services must re-read the JWKS after a restart.")
    rotate_every_s: float | None = Field(
        86_400, ge=1, description="Rotate the in-memory signing key this often (keys_ref unset); null: never.")
    prepublished_keys: int = Field(
        2, ge=1, le=16, description="Future keys published ahead of use, so services that read the JWKS once "
        "(stdio children, at spawn) survive that many rotations; after that they are restarted.")
    gateway_name: str = Field("gateway", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
                              description="Names the issuer: portcullis://<gateway_name>.")


class IdentityConfig(_Model):
    """Inbound authentication."""

    resource: str | None = Field(
        None, pattern=r"^https?://[^\s#]+$",
        description="The gateway's canonical resource URI, the audience tokens must carry. Default: "
        "http://<listen.host>:<listen.port>/mcp.")
    issuers: tuple[IssuerConfig, ...] = Field((), description="Trusted OAuth 2.1 / OIDC token issuers.")
    required_scopes: tuple[str, ...] = Field(("mcp:tools",), description="Scopes every MCP request needs.")
    claims: ClaimMap = ClaimMap()
    mtls: tuple[CertMappingRule, ...] = Field((), description="Client certificate -> client identity rules.")
    revocation_file: str | None = Field(
        None, description="SQLite file of revoked token ids, clients and agents. Default: <state dir>/revocations.db.")
    allow_insecure_dev_issuer: bool = Field(
        False, description="Trust the local development issuer (`portcullis token issue`). Warns at every start.")
    allow_insecure_anonymous: bool = Field(
        False, description="Accept requests without credentials as an anonymous principal. For protocol "
        "conformance runs only; warns at start and on every anonymous request.")

    @model_validator(mode="after")
    def _some_way_in(self) -> IdentityConfig:
        if not (self.issuers or self.mtls or self.allow_insecure_dev_issuer or self.allow_insecure_anonymous):
            raise ValueError("no way to authenticate: configure issuers or mtls rules")
        if len({i.name for i in self.issuers}) != len(self.issuers):
            raise ValueError("issuer names must be unique")
        reserved = sorted({i.name for i in self.issuers} & BUILT_IN_SOURCES)
        if reserved:
            raise ValueError(f"issuer name {reserved[0]!r} is reserved for a built-in identity source "
                             f"({', '.join(sorted(BUILT_IN_SOURCES))})")
        return self

    def sources(self) -> tuple[str, ...]:
        """The names of every identity source this configuration trusts, as ``issuer:`` scopes name them."""
        names = [i.name for i in self.issuers]
        names += ["dev"] * self.allow_insecure_dev_issuer + ["mtls"] * bool(self.mtls)
        return (*names, *["anonymous"] * self.allow_insecure_anonymous)
