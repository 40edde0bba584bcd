"""SQL kit: parameterised query templates and a read-only ad-hoc query tool (docs/kits.md, "SQL kit").

Two layers refuse a dangerous query: the parser layer (:mod:`.select_check`, sqlglot) and the
engine (:mod:`.sqlite_engine` authorizer, :mod:`.pg_engine` read-only role and timeout).
"""

from portcullis.kits.sql.engine import QueryLimits, QueryResult
from portcullis.kits.sql.errors import (
    ArgumentRefused,
    QueryRefused,
    SqlDeclarationError,
    SqlKitError,
    SqlLimitExceeded,
    SqlRefused,
    SqlUnavailable,
)
from portcullis.kits.sql.kit import SqlKit
from portcullis.kits.sql.params import Param
from portcullis.kits.sql.policy import DEFAULT_FUNCTIONS, ReadOnlyPolicy
from portcullis.kits.sql.templates import QueryTemplate, declare_template

__all__ = [
    "DEFAULT_FUNCTIONS",
    "ArgumentRefused",
    "Param",
    "QueryLimits",
    "QueryRefused",
    "QueryResult",
    "QueryTemplate",
    "ReadOnlyPolicy",
    "SqlDeclarationError",
    "SqlKit",
    "SqlKitError",
    "SqlLimitExceeded",
    "SqlRefused",
    "SqlUnavailable",
    "declare_template",
]
