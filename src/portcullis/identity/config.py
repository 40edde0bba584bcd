"""Identity configuration: who may call the gateway, and how callers become principals.

Lives under ``identity:`` in ``gateway.yaml``. Failing closed is the default: a gateway with no
issuer, no certificate rule and no development issuer refuses to start, and the two switches
that weaken authentication are named ``allow_insecure_…`` and warn at every start and use.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from portcullis.identity.certs import CertMappingRule
from portcullis.identity.issuers import IssuerConfig

_CLAIM = r"^[A-Za-z0-9_.:/-]{1,128}$"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ClaimMap(_Model):
    """Which token claim supplies each principal field. Values never come from anywhere else."""

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
        description="Principal attribute name -> claim name.")


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
        return self
