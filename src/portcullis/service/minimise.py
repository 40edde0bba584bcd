"""Data-minimisation helpers for tool authors: return a field, an aggregate or a masked view, not a record.

::

    from portcullis.service.minimise import Metric, aggregate, declared_output, masked, project

    @app.tool()
    @declared_output("/id", "/status", "/customer/email")
    def get_order(order_id: str) -> dict[str, Any]:
        order = db.order(order_id)
        view = project(order, ["/id", "/status", "/customer/email"])
        view["customer"]["email"] = masked(view["customer"]["email"], "email")
        return view

- :func:`project` — a new record holding only the values at an allow-list of RFC 6901 JSON
  pointers (``~1`` is ``/``, ``~0`` is ``~``; keys are matched exactly, no Unicode normalisation).
- :func:`aggregate` — per-group counts, sums, means, minima and maxima, with groups of fewer than
  ``k`` rows suppressed (k-anonymity style: no answer describes fewer than ``k`` records).
- :func:`masked` — a masked view of one value: card ``****4242``, e-mail ``a***@example.com``, phone
  ``***67``, IBAN ``GB***1234``, SSN ``***-**-6789``; ``"auto"`` lets the content package's detectors
  pick the kind, and anything they do not recognise is masked whole.
- :func:`declared_output` — a decorator declaring a tool's output fields: a result holding any other
  field is refused (:class:`~mcp.server.mcpserver.exceptions.ToolError`), never returned.

Bad input is a :class:`MinimisationError` (a ``ValueError``) whose message names the problem and
never a value from the record.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel

MAX_POINTER_CHARS = 512
MAX_POINTER_TOKENS = 32
MAX_POINTERS = 256
MAX_GROUPS = 100_000

F = TypeVar("F", bound=Callable[..., Any])


class MinimisationError(ValueError):
    """A helper was given something it cannot minimise safely; the message holds no record value."""


# --------------------------------------------------------------------------- pointers


@functools.lru_cache(maxsize=1024)
def parse_pointer(pointer: str) -> tuple[str, ...]:
    """The reference tokens of an RFC 6901 pointer. The whole-document pointer ``""`` is refused:
    a minimising helper never hands back the whole record."""
    if not isinstance(pointer, str):
        raise MinimisationError("a pointer must be a string")
    if len(pointer) > MAX_POINTER_CHARS:
        raise MinimisationError(f"pointer longer than {MAX_POINTER_CHARS} characters")
    if not pointer.startswith("/"):
        raise MinimisationError("a pointer must start with '/' (the whole record is never a field)")
    tokens = pointer[1:].split("/")
    if len(tokens) > MAX_POINTER_TOKENS:
        raise MinimisationError(f"pointer deeper than {MAX_POINTER_TOKENS}")
    out = []
    for token in tokens:
        rest = token.replace("~0", "").replace("~1", "")
        if "~" in rest:
            raise MinimisationError("pointer has '~' not followed by 0 or 1")
        out.append(token.replace("~1", "/").replace("~0", "~"))
    return tuple(out)


def _index(token: str, length: int) -> int | None:
    if not token.isascii() or not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        return None
    index = int(token)
    return index if index < length else None


def _get(value: Any, tokens: tuple[str, ...]) -> tuple[bool, Any]:
    for token in tokens:
        if isinstance(value, Mapping):
            if token not in value:
                return False, None
            value = value[token]
        elif isinstance(value, list | tuple):
            index = _index(token, len(value))
            if index is None:
                return False, None
            value = value[index]
        else:
            return False, None
    return True, value


def _copy(value: Any, depth: int = 0) -> Any:
    """A JSON-shaped copy (no aliasing with the record), refusing values JSON does not have."""
    if depth > 64:
        raise MinimisationError("value nested deeper than 64")
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise MinimisationError("value holds NaN or an infinity")
        return value
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise MinimisationError("a mapping key is not a string")
        return {k: _copy(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy(v, depth + 1) for v in value]
    raise MinimisationError(f"value of type {type(value).__name__} is not JSON")


def project(record: Mapping[str, Any], fields: Sequence[str], *, missing: Literal["omit", "error"] = "omit"
            ) -> dict[str, Any]:
    """A new record holding only the values at ``fields`` (RFC 6901 pointers), in their places.

    Array steps are decimal indexes (no leading zeros, no ``-``); in the result an array holds the
    selected elements in index order. A pointer that finds nothing is left out (``missing="omit"``)
    or refused (``"error"``). Values are copied, so changing the view never changes the record.
    """
    if isinstance(fields, str):
        raise MinimisationError("fields must be a sequence of pointers, not one string")
    if len(fields) > MAX_POINTERS:
        raise MinimisationError(f"more than {MAX_POINTERS} fields")
    if not isinstance(record, Mapping):
        raise MinimisationError("record must be a mapping")
    picked: dict[tuple[str, ...], Any] = {}
    for pointer in fields:
        tokens = parse_pointer(pointer)
        found, value = _get(record, tokens)
        if not found:
            if missing == "error":
                raise MinimisationError("a declared field is missing from the record")
            continue
        picked[tokens] = value
    view: dict[str, Any] = _assemble(record, picked)
    return view


def _assemble(source: Any, picked: Mapping[tuple[str, ...], Any]) -> Any:
    """Rebuild the containers of ``source`` along the picked paths, holding only picked values."""
    if () in picked:
        return _copy(picked[()])
    children: dict[str, dict[tuple[str, ...], Any]] = {}
    for tokens, value in picked.items():
        children.setdefault(tokens[0], {})[tokens[1:]] = value
    if isinstance(source, Mapping):
        return {key: _assemble(source[key], sub) for key, sub in children.items()}
    ordered = sorted(children.items(), key=lambda item: int(item[0]))
    return [_assemble(source[int(key)], sub) for key, sub in ordered]


# --------------------------------------------------------------------------- aggregates

Op = Literal["count", "sum", "mean", "min", "max"]


@dataclass(frozen=True, slots=True)
class Metric:
    """One aggregate column: ``op`` over the number at ``pointer`` (``count`` needs none), named ``name``."""

    op: Op
    pointer: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if self.op not in ("count", "sum", "mean", "min", "max"):
            raise MinimisationError("metric op must be count, sum, mean, min or max")
        if (self.op == "count") != (self.pointer is None):
            raise MinimisationError("count takes no pointer; every other op needs one")
        if self.pointer is not None:
            parse_pointer(self.pointer)

    @property
    def label(self) -> str:
        if self.name is not None:
            return self.name
        return self.op if self.pointer is None else f"{self.op}:{self.pointer}"


@dataclass(frozen=True, slots=True)
class Aggregate:
    """The groups large enough to show (each: the ``by`` values, ``count`` and every metric) and how many
    groups were suppressed for having fewer than ``k`` rows."""

    groups: list[dict[str, Any]]
    suppressed_groups: int
    k: int


def _number(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float) or (
            isinstance(value, float) and not math.isfinite(value)):
        raise MinimisationError("a metric value is not a finite number")
    return value


def aggregate(rows: Iterable[Mapping[str, Any]], by: Sequence[str], metric: Metric | Sequence[Metric] = (),
              *, k: int = 5) -> Aggregate:
    """Group ``rows`` by the values at the ``by`` pointers and compute ``metric`` per group; groups of fewer
    than ``k`` rows are left out (only their number is reported). Every group has its row ``count``;
    ``metric`` adds columns (a named ``Metric("count", name=...)`` is allowed but redundant). Group
    values must be JSON scalars (a missing one groups as ``None``). A row whose metric value is missing
    is counted but adds no value.

    Note: suppression protects one answer. Two answers that differ by one record (a total with and without
    a filter) can still tell about it; keep such tools behind the gateway's rate limits and policy.
    """
    if isinstance(by, str):
        raise MinimisationError("by must be a sequence of pointers, not one string")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise MinimisationError("k must be a positive integer")
    metrics = (metric,) if isinstance(metric, Metric) else tuple(metric)
    paths = [parse_pointer(p) for p in by]
    keys = [p[-1] if p else "" for p in paths]
    labels = keys + ["count"] + [m.label for m in metrics]
    if len(set(labels)) != len(labels):
        raise MinimisationError("group and metric names collide; name the metrics")
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for row in rows:
        if not isinstance(row, Mapping):
            raise MinimisationError("every row must be a mapping")
        group = []
        for tokens in paths:
            _found, value = _get(row, tokens)
            if not (value is None or isinstance(value, str | int | float)):
                raise MinimisationError("a group value is not a JSON scalar")
            if isinstance(value, float) and not math.isfinite(value):
                raise MinimisationError("a group value is NaN or an infinity")
            group.append((type(value).__name__ if isinstance(value, bool) else "", value))
        state = groups.get(tuple(group))
        if state is None:
            if len(groups) >= MAX_GROUPS:
                raise MinimisationError(f"more than {MAX_GROUPS} groups")
            state = groups[tuple(group)] = [0] + [[] for _ in metrics]
        state[0] += 1
        for i, m in enumerate(metrics, 1):
            if m.pointer is not None:
                found, value = _get(row, parse_pointer(m.pointer))
                if found and value is not None:
                    state[i].append(_number(value))
    shown, suppressed = [], 0
    for group_key, state in groups.items():
        if state[0] < k:
            suppressed += 1
            continue
        out: dict[str, Any] = {name: value for name, (_tag, value) in zip(keys, group_key, strict=True)}
        out["count"] = state[0]
        for i, m in enumerate(metrics, 1):
            out[m.label] = _compute(m.op, state[0], state[i])
        shown.append(out)
    return Aggregate(shown, suppressed, k)


def _compute(op: Op, count: int, values: list[int | float]) -> int | float | None:
    if op == "count":
        return count
    if not values:
        return None
    if op == "sum":
        return sum(values) if all(isinstance(v, int) for v in values) else math.fsum(values)
    if op == "mean":
        return math.fsum(values) / len(values)
    return min(values) if op == "min" else max(values)


# --------------------------------------------------------------------------- masks

MaskKind = Literal["auto", "card", "email", "phone", "iban", "ssn", "full"]
FULL_MASK = "***"
_DETECTED = {"card_number": "card", "email": "email", "phone_number": "phone", "iban": "iban", "us_ssn": "ssn"}


def masked(value: str, kind: MaskKind = "auto") -> str:
    """A masked view of ``value``: what a person needs to recognise it, not the value itself.

    ``auto`` runs the content package's PII detectors over the value and masks by what they find
    covering it; anything they do not recognise, and any value a kind's mask cannot apply to (a
    "card" of three digits), is masked whole (``***``): never returned as it was.
    """
    if not isinstance(value, str):
        raise MinimisationError("only text can be masked")
    if kind == "auto":
        kind = detected_kind(value)
    text = value.strip()
    digits = [c for c in text if c.isascii() and c.isdigit()]
    if kind == "card" and 12 <= len(digits) <= 19:
        return "****" + "".join(digits[-4:])
    if kind == "phone" and 7 <= len(digits) <= 15:
        return "***" + "".join(digits[-2:])
    if kind == "ssn" and len(digits) == 9:
        return "***-**-" + "".join(digits[-4:])
    if kind == "iban":
        compact = "".join(text.split())
        if 15 <= len(compact) <= 34 and compact[:2].isascii() and compact[:2].isalpha():
            return compact[:2].upper() + "***" + compact[-4:]
    if kind == "email" and text.count("@") == 1:
        local, domain = text.split("@")
        if local and "." in domain and not any(c.isspace() for c in text):
            return local[0] + "***@" + domain
    if kind not in ("card", "phone", "ssn", "iban", "email", "full"):
        raise MinimisationError("unknown mask kind")
    return FULL_MASK


def detected_kind(value: str) -> MaskKind:
    """The mask kind the content detectors see in ``value`` (a finding covering all of it), else ``full``."""
    from portcullis.content.scan import DetectorSet  # the detectors load RE2: only when asked

    text = value.strip()
    result = _pii_detectors(DetectorSet).scan(text)
    if result.blocked:
        return "full"
    for finding in result.findings:
        if finding.start == 0 and finding.end == len(text) and finding.kind in _DETECTED:
            return _DETECTED[finding.kind]  # type: ignore[return-value]
    return "full"


@functools.cache
def _pii_detectors(detector_set: Any) -> Any:
    return detector_set.build(secrets=False, pii=("card", "ssn", "email", "phone", "iban"), decode=False)


# --------------------------------------------------------------------------- declared output


def declared_output(*fields: str) -> Callable[[F], F]:
    """Declare a tool's output fields (RFC 6901 pointers; each covers everything under it; a ``*`` step
    matches every element of an array, never a mapping key). A result
    (a mapping or a pydantic model) holding any field outside them is refused with a ``ToolError`` — the
    caller learns only that the tool broke its declaration, never the field. Keep the decorator next to
    the function (under ``@app.tool()``), so the tool's signature and schema stay the function's own."""
    declared = [parse_pointer(f) for f in fields]
    if not declared:
        raise MinimisationError("declare at least one output field")

    def check(result: Any) -> Any:
        if undeclared_fields(result, declared):
            raise ToolError("the tool's result holds a field it does not declare; nothing was returned")
        return result

    def decorate(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                return check(await fn(*args, **kwargs))
            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return check(fn(*args, **kwargs))
        return wrapper  # type: ignore[return-value]

    return decorate


def undeclared_fields(result: Any, declared: Sequence[tuple[str, ...]]) -> int:
    """How many leaves of ``result`` lie outside every ``declared`` path (0: the result keeps its word).
    A pydantic model is checked as its JSON form; a non-container result has no fields and is refused
    unless declared as a whole (which :func:`parse_pointer` never allows)."""
    if isinstance(result, BaseModel):
        result = result.model_dump(mode="json")
    if not isinstance(result, Mapping | list | tuple):
        return 1
    return _count_outside(result, list(declared), 0)


def _count_outside(value: Any, paths: list[tuple[str, ...]], depth: int) -> int:
    if any(not p for p in paths):  # a declared path ends here: everything below is declared
        return 0
    if depth > 64:
        return 1
    if isinstance(value, Mapping):
        items: Iterable[tuple[str, Any]] = ((str(k), v) for k, v in value.items())
        wildcard = False
    elif isinstance(value, list | tuple):
        items = ((str(i), v) for i, v in enumerate(value))
        wildcard = True
    else:
        return 1  # a leaf no declared path reaches
    outside = 0
    for key, child in items:
        below = [p[1:] for p in paths if p[0] == key or (wildcard and p[0] == "*")]
        outside += _count_outside(child, below, depth + 1) if below else 1
    return outside
