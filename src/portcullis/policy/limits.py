"""Windowed limits: counts and running totals per principal and tool over a sliding window.

"billing-bot refunds at most 1,000 EUR per 24 h" and "at most 20 calls to hr.* per hour" are
:class:`LimitRule` values; :func:`check_limits` decides one call against them, keeping counters in
a :class:`~portcullis.state.interface.StateStore`. Contract, in the order :func:`check_limits`
follows it:

1. A rule applies when the method is one of its ``methods`` (``tools/call`` unless it says otherwise),
   the tool (or a read's limit name) matches one of its ``tools`` and every ``match`` argument equals
   the given value (same JSON type; a missing argument does not match).
2. Each applicable rule is checked; none short-circuits, so every failing rule is reported.
   A ``max_calls`` rule adds 1; a ``max_total`` rule adds the amount at ``amount_pointer``, which
   must be a finite, non-negative JSON number with at most 18 decimal places (else
   ``amount_missing`` / ``amount_invalid``). An amount above the rule's limit never fits.
3. Counters are keyed by rule id and the principal's ``per`` fields; a missing field keys as a
   fixed marker, so every caller without it shares one bucket (never unlimited).
4. Two phases: enforce-mode rules add to their counters one by one; if any refuses, or any
   enforce rule failed in step 2, the adds already made are removed, so a refused call consumes
   nothing. ``log_only`` rules are checked the same way and add only when the call is allowed;
   their failures go to ``shadow`` and never deny.
5. A store error (:class:`~portcullis.state.interface.StateUnavailable`) or any other exception is
   a deny with ``policy_error`` and rule id ``limits/policy_error`` (fail closed); adds made so far
   are removed if the store lets us. In a ``log_only`` rule the same goes to ``shadow`` instead.

When a call is counted: :func:`check_limits` reserves as it allows, so call it as the last check
before forwarding. A reservation is never given back afterwards — not when the upstream fails
nor when the task is cancelled — so errors make limits stricter, never looser.

Races. With the embedded stores (:class:`~portcullis.state.sqlite.SqliteStateStore`, the
default, and :class:`~portcullis.state.memory.InMemoryStateStore`) nothing awaits inside the store,
so the whole of :func:`check_limits` runs without another call interleaving on the event loop.
With a shared store (:class:`~portcullis.state.redis_store.RedisStateStore`) each ``window_add`` is
atomic (one Lua script) but the phases are not: another call may briefly see a reservation that is
about to be rolled back and be refused by it. Concurrent calls can be refused spuriously; they can
never together exceed a limit.
"""

from __future__ import annotations

import decimal
import hashlib
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal, NamedTuple
from urllib.parse import quote

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, model_validator

from portcullis.identity.principal import Principal
from portcullis.policy import decision as r
from portcullis.policy.model import Number, Pointer
from portcullis.policy.native import _MISSING, _number, _resolve
from portcullis.state.interface import MAX_AMOUNT, MAX_AMOUNT_SCALE, StateStore

__all__ = [
    "LIMIT_EXCEEDED",
    "LimitFailure",
    "LimitOutcome",
    "LimitRule",
    "check_limits",
    "check_unique_ids",
    "counter_key",
    "limit_rule_ids",
]

LIMIT_EXCEEDED = "limit_exceeded"
RULE_PREFIX = "limits/"
KEY_PREFIX = "limits/"
_POLICY_ERROR_ID = RULE_PREFIX + "policy_error"
MISSING_FIELD = "*"  # key marker for an absent principal field; real values never encode to it
_MAX_PLAIN_VALUE = 64  # encoded principal values longer than this are hashed
_TOOL_PATTERN = r"^(\*|[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\*?)$"
_SCALE = Decimal(1).scaleb(-MAX_AMOUNT_SCALE)
_WIDE = decimal.Context(prec=60)  # exact for every in-range amount and sum (the default 28 is not)

PerField = Literal["agent", "user", "client", "tenant", "session", "app", "issuer"]
_PER_ATTRIBUTE: dict[str, str] = {
    "agent": "agent_id", "user": "user_id", "client": "client_id",
    "tenant": "tenant", "session": "session_id", "app": "source_app", "issuer": "issuer_name",
}


def _number_only(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValueError("must be a number")
    return value


Seconds = Annotated[float, BeforeValidator(_number_only), Field(gt=0, le=366 * 86400, allow_inf_nan=False)]
MatchValue = str | StrictBool | StrictInt
LimitMethod = Literal["tools/call", "resources/read", "prompts/get"]


class LimitRule(BaseModel):
    """One windowed limit: at most ``max_calls`` calls, or at most ``max_total`` in amounts, per window."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$",
                    description="Stable rule id; decisions name it as ``limits/<id>`` and counters are keyed by it.")
    tools: tuple[Annotated[str, Field(pattern=_TOOL_PATTERN)], ...] = Field(
        min_length=1, description="Exposed tool names, or a prefix ending in ``*`` (``hr.*``; ``*`` is every "
        "tool). All matching tools share one counter.")
    per: tuple[PerField, ...] = Field(
        min_length=1, description="Principal fields that key the counter (``agent``, ``user``, ``client``, "
        "``tenant``, ``session``, ``app``, ``issuer``). Callers without a field share one counter for it. Ids "
        "are not scoped by issuer unless ``issuer`` is listed: the same agent id from two issuers shares a "
        "counter (stricter).")
    window_s: Seconds = Field(description="Length of the sliding window in seconds (at most 366 days).")
    max_calls: StrictInt | None = Field(None, ge=1, le=MAX_AMOUNT,
                                        description="At most this many calls per window.")
    max_total: Number | None = Field(None, gt=0, le=MAX_AMOUNT,
                                     description="At most this sum of amounts per window.")
    amount_pointer: Pointer | None = Field(
        None, description="RFC 6901 pointer to the amount argument; required with ``max_total`` only.")
    match: dict[Pointer, MatchValue] = Field(
        default_factory=dict, description="Only calls whose arguments equal all these values (same JSON type) "
        "are limited. A missing argument does not match, so make it required in the tool's policy.")
    mode: Literal["enforce", "log_only"] = Field(
        "enforce", description="``log_only`` reports would-be failures in ``shadow`` and never denies.")
    methods: tuple[LimitMethod, ...] = Field(
        ("tools/call",), min_length=1, description="The methods the rule counts: ``tools/call`` (the default), "
        "``resources/read``, ``prompts/get``. For a read, ``tools`` names the prompt as exposed "
        "(``files.summarize_file``) or the resource or template as ``<service>.<manifest name>`` "
        "(``files.handbook_page``); ``*`` with only read methods is a method-wide rule. A rule listing several "
        "methods counts them in one counter. ``max_total`` counts ``tools/call`` only.")

    @model_validator(mode="after")
    def _one_limit(self) -> LimitRule:
        if (self.max_calls is None) == (self.max_total is None):
            raise ValueError("set exactly one of max_calls and max_total")
        if (self.max_total is None) != (self.amount_pointer is None):
            raise ValueError("amount_pointer is required with max_total and meaningless with max_calls")
        if self.max_total is not None and self.max_total != self.max_total.quantize(_SCALE, context=_WIDE):
            raise ValueError(f"max_total has more than {MAX_AMOUNT_SCALE} decimal places")
        if len(set(self.per)) != len(self.per):
            raise ValueError("per lists a field twice")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError("methods lists a method twice")
        if self.max_total is not None and self.methods != ("tools/call",):
            raise ValueError("max_total counts amounts in tool arguments: its methods must be [tools/call]")
        return self

    @property
    def limit(self) -> Decimal:
        """The window's capacity: ``max_calls`` (each call adds 1) or ``max_total``."""
        return Decimal(self.max_calls) if self.max_calls is not None else Decimal(self.max_total or 0)

    @property
    def rule_id(self) -> str:
        """The id decisions carry: ``limits/<id>``."""
        return RULE_PREFIX + self.id


class LimitFailure(NamedTuple):
    """One failing limit: ``("deny", reason, "limits/<id>")``, the shape of a native policy failure."""

    effect: Literal["deny"]
    reason: str
    rule_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitOutcome:
    """What :func:`check_limits` decided.

    Fields:
        failures: enforce-mode failures; any one denies the call.
        shadow: ``log_only`` failures (the call is not denied for them).
        detail: operator-only text when the store or a rule broke; never send it to a client.
    """

    failures: tuple[LimitFailure, ...] = ()
    shadow: tuple[LimitFailure, ...] = ()
    detail: str = ""

    @property
    def allowed(self) -> bool:
        """True when no enforce-mode limit failed."""
        return not self.failures


def limit_rule_ids(rules: Sequence[LimitRule]) -> tuple[str, ...]:
    """Every rule id :func:`check_limits` can produce for ``rules`` (for coverage reports and lint)."""
    return (*(rule.rule_id for rule in rules), _POLICY_ERROR_ID)


def check_unique_ids(rules: Sequence[LimitRule]) -> None:
    """Raise :class:`ValueError` if two rules share an id (they would share counters)."""
    ids = [rule.id for rule in rules]
    duplicates = sorted({rule_id for rule_id in ids if ids.count(rule_id) > 1})
    if duplicates:
        raise ValueError(f"duplicate limit rule ids: {duplicates}")


# ----------------------------------------------------------------------------- evaluation


@dataclass(frozen=True, slots=True)
class _Plan:
    rule: LimitRule
    key: str
    amount: Decimal
    limit: Decimal


async def check_limits(rules: Sequence[LimitRule], store: StateStore, *, tool: str, principal: Principal,
                       arguments: Mapping[str, object], now: float, reserve: bool = True,
                       method: str = "tools/call") -> LimitOutcome:
    """Check and count one call of ``tool`` by ``principal``. Never raises (except on cancellation).

    ``reserve=False`` only checks (nothing is counted): for a call that waits for a human
    approval, which is counted when the approved call runs. ``method`` is ``tools/call``, or a read
    (``resources/read``, ``prompts/get``, with ``tool`` its limit name): only rules listing it apply."""
    added: list[tuple[str, str]] = []  # (key, entry_id) of reservations to undo if the call is refused
    try:
        check_unique_ids(rules)
        failures: list[LimitFailure] = []
        shadow: list[LimitFailure] = []
        plans: list[_Plan] = []
        # Step 1-2: which rules apply, and what each would add.
        for rule in rules:
            if not _applies(rule, tool, arguments, method):
                continue
            amount, reason = _amount(rule, arguments)
            if reason is not None:
                (failures if rule.mode == "enforce" else shadow).append(LimitFailure("deny", reason, rule.rule_id))
            else:
                plans.append(_Plan(rule, counter_key(rule, principal), amount, rule.limit))
        # Step 4: enforce rules reserve (once the call is refused, they only look), rolled back on refusal.
        for plan in (p for p in plans if p.rule.mode == "enforce"):
            if not await _fits(store, plan, now, reserve=reserve and not failures, added=added):
                failures.append(LimitFailure("deny", LIMIT_EXCEEDED, plan.rule.rule_id))
        if failures:
            await _undo(store, added)
        # Then log_only rules, which count only allowed calls and whose errors never deny.
        detail = ""
        for plan in (p for p in plans if p.rule.mode == "log_only"):
            try:
                fits = await _fits(store, plan, now, reserve=reserve and not failures, added=[])
            except Exception as exc:
                shadow.append(LimitFailure("deny", r.POLICY_ERROR, _POLICY_ERROR_ID))
                detail = _detail(exc)
            else:
                if not fits:
                    shadow.append(LimitFailure("deny", LIMIT_EXCEEDED, plan.rule.rule_id))
        return LimitOutcome(failures=tuple(failures), shadow=tuple(shadow), detail=detail)
    except Exception as exc:  # fail closed: an unavailable store or a broken rule must not become an allow
        try:
            await _undo(store, added)
        except Exception:  # noqa: S110 -- best effort; the reservations stay and only make limits stricter
            pass
        return LimitOutcome(failures=(LimitFailure("deny", r.POLICY_ERROR, _POLICY_ERROR_ID),), detail=_detail(exc))


async def session_totals(rules: Sequence[LimitRule], store: StateStore, *, tool: str, principal: Principal,
                         arguments: Mapping[str, object], now: float, method: str = "tools/call") -> dict[str, Any]:
    """The Rego input's ``session``: for each limit rule that applies to this call, the
    principal's running total in the rule's window *before* this call (calls, or the summed
    amount), as ``{"limits": {limit id: number}}``; ``{}`` when no rule applies. Raises
    :class:`~portcullis.state.interface.StateUnavailable` when the store cannot answer."""
    totals: dict[str, Any] = {}
    for rule in rules:
        if _applies(rule, tool, arguments, method):
            total = await store.window_total(counter_key(rule, principal), now=now)
            totals[rule.id] = int(total) if total == total.to_integral_value() else float(total)
    return {"limits": totals} if totals else {}


def _detail(exc: Exception) -> str:
    return f"{type(exc).__name__}: {getattr(exc, 'detail', '') or exc}"


async def _fits(store: StateStore, plan: _Plan, now: float, *, reserve: bool,
                added: list[tuple[str, str]]) -> bool:
    """Whether ``plan`` fits its window; with ``reserve``, add it (atomically) when it does."""
    if plan.amount > plan.limit:
        return False  # can never fit; and keeps out-of-range numbers away from the store
    if not reserve:
        return _WIDE.add(await store.window_total(plan.key, now=now), plan.amount) <= plan.limit
    result = await store.window_add(plan.key, plan.amount, window_s=plan.rule.window_s, limit=plan.limit, now=now)
    if result.accepted and result.entry_id is not None:
        added.append((plan.key, result.entry_id))
    return result.accepted


async def _undo(store: StateStore, added: list[tuple[str, str]]) -> None:
    while added:
        key, entry_id = added.pop()
        await store.window_remove(key, entry_id)


def _applies(rule: LimitRule, tool: str, arguments: Mapping[str, object], method: str = "tools/call") -> bool:
    if method not in rule.methods:
        return False
    if not any(tool.startswith(p[:-1]) if p.endswith("*") else tool == p for p in rule.tools):
        return False
    for pointer, expected in rule.match.items():
        value = _resolve(arguments, pointer)
        # type() equality so that True never matches 1 nor 1 matches True.
        if type(value) is not type(expected) or value != expected:
            return False
    return True


def _amount(rule: LimitRule, arguments: Mapping[str, object]) -> tuple[Decimal, str | None]:
    """What the call adds to ``rule``'s counter, or the reason it cannot be counted."""
    if rule.amount_pointer is None:
        return Decimal(1), None
    raw = _resolve(arguments, rule.amount_pointer)
    if raw is _MISSING:
        return Decimal(0), r.AMOUNT_MISSING
    amount = _number(raw)  # a finite Decimal from a JSON number; None for bools, strings, NaN, ...
    if amount is None or amount < 0:
        return Decimal(0), r.AMOUNT_INVALID
    if amount > MAX_AMOUNT:
        return amount, None  # a finite, huge amount: exceeds every limit (step 4 refuses it unseen)
    if amount != amount.quantize(_SCALE, context=_WIDE):
        return Decimal(0), r.AMOUNT_INVALID  # more decimal places than a store keeps exactly
    return amount, None


# ----------------------------------------------------------------------------- counter keys


def counter_key(rule: LimitRule, principal: Principal) -> str:
    """The store key of ``rule``'s counter for ``principal``: injective, at most ~600 characters.

    Injective up to Unicode NFC: ids that differ only in normalisation share a counter (stricter,
    on purpose).

    ``limits/<id>/<field>=<value>/…`` with each value NFC-normalised and percent-encoded (so no
    value contains ``/``, ``=`` or ``*``); an absent field is ``*``; an encoded value longer than
    64 characters becomes ``#`` and its SHA-256 (``#`` never appears in an encoded value).
    """
    parts = [KEY_PREFIX + rule.id]
    for name in rule.per:
        value = getattr(principal, _PER_ATTRIBUTE[name])
        parts.append(f"{name}={_encode(value)}")
    return "/".join(parts)


def _encode(value: str | None) -> str:
    if value is None:
        return MISSING_FIELD
    text = unicodedata.normalize("NFC", value)
    encoded = quote(text, safe="", errors="surrogatepass")
    if len(encoded) <= _MAX_PLAIN_VALUE:
        return encoded
    return "#" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
