"""The ``secrets:`` section of ``gateway.yaml``: the sealed provider's key and the Vault connection.

The credentials these providers need are themselves references, and only ``env`` or ``file`` ones:
no provider bootstraps from another.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from portcullis.config.secret_providers.sealed import DEFAULT_KEY_ENV
from portcullis.config.secrets import LOCAL_REF_PATTERN

_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SealedConfig(_Model):
    """``secret://sealed/…`` files (AES-256-GCM, docs/secrets.md)."""

    key_env: str = Field(DEFAULT_KEY_ENV, pattern=_ENV_NAME, description="Environment variable holding the "
                         "base64 32-byte key. No stdio service may be handed it (env_passthrough).")


class VaultTokenAuth(_Model):
    """A token given to the gateway (renewed while renewable; it cannot be replaced when it expires)."""

    method: Literal["token"]
    token_ref: str = Field(pattern=LOCAL_REF_PATTERN, description="secret://env/… or secret://file/… reference "
                           "to the token.")


class VaultAppRoleAuth(_Model):
    """AppRole login; the gateway logs in again when its token cannot be renewed any more."""

    method: Literal["approle"]
    role_id_ref: str = Field(pattern=LOCAL_REF_PATTERN, description="secret://env/… or secret://file/… "
                             "reference to the role id.")
    secret_id_ref: str = Field(pattern=LOCAL_REF_PATTERN, description="secret://env/… or secret://file/… "
                               "reference to the secret id.")
    mount: str = Field("approle", pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_./-]{0,127}$",
                       description="Mount path of the AppRole auth method.")


class VaultConfig(_Model):
    """A Vault or OpenBao server whose KV v2 engines ``secret://vault/<mount>/<path>#field`` read."""

    address: str = Field(pattern=r"^https?://[^\s/?#@]+/?$", max_length=512, description="Server address, "
                         "https:// (http:// only to a loopback host, or with allow_insecure_http).")
    namespace: str | None = Field(None, pattern=r"^[A-Za-z0-9_./-]{1,256}$", description="Vault Enterprise "
                                  "namespace (X-Vault-Namespace).")
    ca_file: str | None = Field(None, description="PEM file of CAs to trust, relative to the deployment "
                                "directory. Default: the system trust store.")
    auth: Annotated[VaultTokenAuth | VaultAppRoleAuth, Field(discriminator="method")]
    renew_at_fraction: float = Field(0.5, gt=0, lt=1, description="The token is renewed once this fraction of "
                                     "its lease has passed.")
    timeout_s: float = Field(5.0, gt=0, le=60, description="Timeout of each request to the server.")
    allow_insecure_http: bool = Field(False, description="Permit http:// to a host that is not loopback (the "
                                      "token and every secret cross the network in clear). Warns at start.")


class SecretsConfig(_Model):
    """Secret providers beyond ``env`` and ``file`` (docs/secrets.md)."""

    refresh_s: float = Field(60.0, ge=1, le=86_400, description="Every file, sealed and vault reference is "
                             "read again this often; consumers that read per use see a rotated value "
                             "without a restart.")
    sealed: SealedConfig = Field(SealedConfig(), description="The sealed-file provider.")
    vault: VaultConfig | None = Field(None, description="The Vault/OpenBao provider. Unset: secret://vault/ "
                                      "references are refused.")
