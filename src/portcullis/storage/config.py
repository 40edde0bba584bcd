"""The ``storage:`` section of ``gateway.yaml``: the embedded default, or PostgreSQL and Redis.

Without ``storage`` (or with both members null) the gateway keeps its embedded default: SQLite files in
the state directory and in-process state, no outside service. ``postgresql`` moves the durable stores
(audit, approvals, pins and quarantines, policy versions, kill switches, revocations, alert baselines) to
one PostgreSQL database; ``redis`` moves the counters (limits, session-aware counters) to Redis and carries
kill-switch, revocation and reload notices between replicas. Connection strings are secrets by reference
(``secret://env/…`` or ``secret://file/…``): a literal password in ``gateway.yaml`` is refused.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from portcullis.config.secrets import SECRET_REF_PATTERN

_REF = SECRET_REF_PATTERN


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PostgresConfig(_Model):
    """One PostgreSQL database shared by every replica."""

    url_ref: str = Field(pattern=_REF, description="secret:// reference to a ``postgresql://`` connection URL "
                         "(user, password, host, port, database; ``sslmode`` and the other libpq parameters "
                         "as query parameters).")
    pool_size: int = Field(10, ge=1, le=200, description="Connections per gateway process at most.")
    connect_timeout_s: float = Field(5, gt=0, le=60, description="A connection not made in this time fails "
                                     "the operation that needed it (fail closed).")
    statement_timeout_ms: int = Field(5000, ge=10, le=600_000, description="Server-side bound on every "
                                      "statement the gateway runs.")


class RedisConfig(_Model):
    """One Redis (or a compatible server) shared by every replica."""

    url_ref: str = Field(pattern=_REF, description="secret:// reference to a ``redis://`` or ``rediss://`` URL.")
    key_prefix: str = Field("portcullis:", pattern=r"^[A-Za-z0-9:_.-]{1,64}$",
                            description="Prefix of every key and channel the gateway uses (several deployments "
                            "may share one server).")
    connect_timeout_s: float = Field(2, gt=0, le=60, description="Connection timeout.")
    op_timeout_s: float = Field(0.5, gt=0, le=30, description="Bound on one command; past it the operation fails "
                                "(limits deny: fail closed).")


class StorageConfig(_Model):
    """Embedded default when both are null; see docs/cluster.md."""

    postgresql: PostgresConfig | None = Field(None, description="Durable shared state in PostgreSQL.")
    redis: RedisConfig | None = Field(None, description="Counters and cross-replica notices in Redis.")

    @property
    def embedded(self) -> bool:
        return self.postgresql is None and self.redis is None
