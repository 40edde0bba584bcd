"""The two SQL dialects forensic queries are written in (``query.py``): SQLite and PostgreSQL.

Both stores keep a record as seven columns with ``fields`` the record's canonical JSON as text
(``record.canonical_bytes``: orjson, sorted keys, compact, UTF-8; only control characters, ``"`` and
``\\`` are escaped). A dialect gives the pieces that differ: the parameter marker (``?``/``%s``), the
row source with its parsed JSON ``j``, and a JSON-string equality and list membership at a fixed path.

* Both compare a JSON string *as stored* (its canonical encoding: SQLite's ``->`` and PostgreSQL's
  ``json_extract_path`` on ``json`` return a value's JSON text)
  against the filter value encoded the same way and bound: nothing is unescaped, so a value holding NUL
  (``\\u0000`` in the text) is neither cut short (SQLite's ``json_extract`` stops at NUL, so ``"a"`` once
  matched ``"a\\x00b"``) nor refused. A non-string at the path never equals an encoded string.
* SQLite (3.38+ for ``->``): JSON1 on ``j``, which is ``'{}'`` for a row whose ``fields`` is not valid
  JSON, so one tampered row cannot abort a query.
* PostgreSQL (``json``, not ``jsonb``, which keeps the text as stored; each operator re-parses it, so a
  condition extracts its path once): its JSON functions refuse a
  document holding ``\\u0000`` anywhere, so an unescaped ``\\u0000`` is rewritten to ``\\ufffe`` on both
  sides before parsing (the same SQL expression; canonical JSON never contains the escape ``\\ufffe``, it
  writes U+FFFE as a raw character, so nothing collides). A row whose ``fields`` is not JSON (only
  tampering writes one) fails a filtered query closed (:class:`AuditUnavailable`): PostgreSQL 15 has no
  ``IS JSON`` to skip it. Its text cannot hold NUL, so a request id holding one matches no row.
* Paths are constant keys from code (checked here); values are always bound parameters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from portcullis.audit.record import canonical_bytes

_KEY = re.compile(r"^[a-z_]{1,32}$")
_ROW = "idx, ts, request_id, kind, fields, prev_hash, hash"
# an unescaped \u0000 (not the tail of an escaped backslash) -> \ufffe; same text in SQL and for values
_NUL_ESCAPE = r"(?<!\\)((?:\\\\)*)\\u0000"
_NO_NUL = r"\1\\ufffe"


def _keys(path: Sequence[str]) -> Sequence[str]:
    if not path or not all(_KEY.match(key) for key in path):
        raise ValueError("a JSON path is constant keys")
    return path


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one database spells the forensic queries (module docstring)."""

    name: str
    param: str
    rows: str  # every audit_record column, plus j: the parsed fields
    numeric_ts: str  # a condition true when ts is a number

    def text_at(self, path: Sequence[str]) -> str:
        """Condition: the JSON string at ``path``, as stored, equals the next bound value (:meth:`value`)."""
        if self.name == "sqlite":
            return f"(j -> '{_sqlite_path(path)}') = ?"
        return f"({_pg_at(path)})::text = {_PG_VALUE}"

    def member_of(self, path: Sequence[str]) -> str:
        """Condition: the JSON list at ``path`` holds a string equal to the next bound value."""
        if self.name == "sqlite":
            at = _sqlite_path(path)
            return (f"(json_type(j, '{at}') = 'array' AND EXISTS (SELECT 1 FROM json_each(j, '{at}') AS e "  # noqa: S608
                    "WHERE e.type = 'text' AND (j -> e.fullkey) = ?))")
        # the list is extracted once (OFFSET 0 keeps the planner from copying the expression into the CASE):
        # each json operator re-parses the document
        return (f"EXISTS (SELECT 1 FROM (SELECT {_pg_at(path)} AS x OFFSET 0) AS a, "  # noqa: S608
                "json_array_elements(CASE WHEN json_typeof(a.x) = 'array' THEN a.x ELSE '[]'::json END) AS e(v) "
                f"WHERE e.v::text = {_PG_VALUE})")

    def can_bind(self, text: str) -> bool:
        """Whether ``text`` can be bound as a column's text (PostgreSQL text cannot hold NUL)."""
        return self.name == "sqlite" or "\x00" not in text

    def value(self, text: str) -> object:
        """A filter string as both dialects bind it: its canonical JSON encoding (how records store it)."""
        return canonical_bytes(text).decode("utf-8")


def _sqlite_path(path: Sequence[str]) -> str:
    return "$." + ".".join(_keys(path))


def _pg_at(path: Sequence[str]) -> str:
    return "json_extract_path(j, " + ", ".join(f"'{key}'" for key in _keys(path)) + ")"  # one parse of j


_PG_VALUE = f"regexp_replace(%s, '{_NUL_ESCAPE}', '{_NO_NUL}', 'g')"

SQLITE = Dialect("sqlite", "?",
                 f"SELECT {_ROW}, CASE WHEN json_valid(fields) THEN fields ELSE '{{}}' END AS j "  # noqa: S608
                 "FROM audit_record",
                 "typeof(ts) IN ('real', 'integer')")
POSTGRES = Dialect("postgresql", "%s",
                   f"SELECT {_ROW}, (CASE WHEN strpos(fields, '\\u0000') > 0 "  # noqa: S608 - the regex only when needed
                   f"THEN regexp_replace(fields, '{_NUL_ESCAPE}', '{_NO_NUL}', 'g') ELSE fields END)::json AS j "
                   "FROM audit_record",
                   "TRUE")
