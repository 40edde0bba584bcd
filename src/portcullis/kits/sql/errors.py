"""The SQL kit's errors, one branch of the project's error tree.

::

    PortcullisError
    └── SqlKitError
        ├── SqlDeclarationError   a template or policy declared wrong (the tool author's bug, at start-up)
        ├── SqlRefused            a query or an argument is not allowed
        │   ├── QueryRefused        the ad-hoc query failed the parser check or the engine refused it
        │   └── ArgumentRefused     a template argument is missing, unknown, mistyped or out of bounds
        ├── SqlLimitExceeded      the time/step budget or the result-size limit was reached
        └── SqlUnavailable        the database could not be opened, reached or failed: the call is refused

Every message is a fixed short string and ``reason`` a fixed code: nothing here ever echoes the
query, an argument, a path or a driver message (drivers quote the SQL back). The driver's own
exception type name may go to ``detail`` for the operator log.
"""

from __future__ import annotations

from portcullis.errors import PortcullisError


class SqlKitError(PortcullisError):
    """Base of the SQL kit's errors."""

    message = "SQL tool error"

    def __init__(self, reason: str, *, detail: str = "") -> None:
        self.reason = reason  # a fixed code such as "not_select"; never input text
        super().__init__(type(self).message, detail=detail)


class SqlDeclarationError(SqlKitError):
    message = "invalid SQL declaration"


class SqlRefused(SqlKitError):
    message = "query refused"


class QueryRefused(SqlRefused):
    message = "query refused"


class ArgumentRefused(SqlRefused):
    message = "argument refused"


class SqlLimitExceeded(SqlKitError):
    message = "query limit exceeded"


class SqlUnavailable(SqlKitError):
    message = "database unavailable"
