"""The audit trail's errors.

::

    GatewayCallError (portcullis.errors)
    └── AuditUnavailable      a record could not be made durable; the call must be denied
        └── ChainConflict     an append did not continue the stored head (a fork was refused)

``AuditUnavailable`` is a :class:`~portcullis.errors.GatewayCallError`, so the one wire mapper
already turns it into a short, fixed client message; the cause goes to ``detail`` (operator
log only) and never names field values.
"""

from __future__ import annotations

from portcullis.errors import GatewayCallError


class AuditUnavailable(GatewayCallError):
    """The audit trail could not durably record a call (fail closed: deny it)."""


class ChainConflict(AuditUnavailable):
    """An append's first ``prev_hash`` or index did not continue the stored head."""
