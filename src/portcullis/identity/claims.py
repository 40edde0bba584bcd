"""Verified claims to a principal: the one, deterministic claim mapping.

The signature, issuer, audience and times of a token have been checked
(:mod:`~portcullis.identity.jwt_verify`); this module decides what its claims *say*. Each
principal field reads one claim (``identity.claims`` names it), and every claim it reads is either
taken as it is, normalised in a documented way, or the whole token is refused with
:class:`ClaimRejected` (the client sees ``401 invalid_token``; the operator log gets the short
reason ``bad_claim:<field>:<why>``, never the value). Nothing is dropped silently: a claim of the
wrong type does not fall back to another claim or to "absent".

===========================  ================================================================
a read claim that is …       becomes
===========================  ================================================================
absent                       the field is unset (``None``, ``()``)
``null``, number, bool,      refused (``type``); for ``roles``/``scope``/``scp`` also an object,
object, or a list where a    or a list with a non-string entry
string is expected
``""``                       refused (``empty``); a space-separated list string with no entries
                             is the empty list
longer than the limit        refused (``too_long``): 256 code points for ids, 128 for a role,
                             scope or attribute value
control, format (bidi,       refused (``unsafe``): C0/C1 controls, U+200B..U+200F, U+202A..U+202E,
zero-width), private-use,    U+2066..U+2069, U+FEFF, soft hyphen, non-ASCII spaces, line
unassigned, invisible        separators, Hangul fillers, variation selectors, …
leading/trailing space       refused (``space``); a role or scope never contains a space
letters of two scripts       refused (``mixed_script``): Latin with Cyrillic, Greek, Armenian,
that look alike              Cherokee or Coptic in one value (``p\u0430ypal``: Cyrillic ``\u0430``)
not in Unicode NFC           normalised to NFC
mixed case                   kept as sent: identifiers are case-sensitive. Allow patterns compare
                             exactly; deny patterns and revocations compare case-folded (NFKC +
                             casefold), so ``Admin`` cannot evade a deny naming ``admin``
more than 32 roles/scopes    refused (``too_many``), duplicates counted
duplicate roles/scopes       normalised: the first of each kept, order preserved
===========================  ================================================================

Roles are a JSON list of strings or one string of entries separated by spaces (U+0020 only);
scopes come from ``scope`` (RFC 9068: a space-separated string) or, when it is absent, ``scp``
(a list or such a string). The client id is the first of ``identity.claims.client_id`` that is
*present* (a malformed one is refused, not skipped), else ``sub``.

The credential: ``jti`` and ``txn`` (an OAuth Transaction Token's transaction id) are read as
identifiers by the same rules (a malformed one refuses the token) into ``Principal.credential``,
which the audit records name and nothing else uses (:func:`credential_from_claims`).

Person: a principal is a person only when its issuer's configured positive signal is there
(``identity.issuers[].person``: a claim equal to a value, or a list claim containing it), it
names a user, and it names no agent. A missing ``agent_id`` alone never makes a person.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from portcullis.identity.principal import MAX_ID_CHARS, MAX_ITEM_CHARS, MAX_ITEMS, Credential, Principal

if TYPE_CHECKING:
    from portcullis.identity.config import ClaimMap
    from portcullis.identity.issuers import PersonSignal

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Default-ignorable code points outside the categories above: invisible, so "admin" and
# "adm\u3164in" would look the same in every console and log.
_INVISIBLE = frozenset(chr(c) for c in (0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x3164, 0xFFA0,
                                        *range(0x180B, 0x1810), *range(0xFE00, 0xFE10),
                                        *range(0xE0100, 0xE01F0)))
# Scripts whose letters pass for Latin ones (UTS #39 would call a mix "mixed-script confusable").
_LOOKALIKE_SCRIPTS = frozenset({"LATIN", "CYRILLIC", "GREEK", "ARMENIAN", "CHEROKEE", "COPTIC"})
_MAX_LIST_STRING = MAX_ITEMS * (MAX_ITEM_CHARS + 1)


class ClaimRejected(ValueError):
    """A read claim is malformed: the token is refused. ``reason`` is for the operator log only."""

    def __init__(self, field: str, why: str) -> None:
        self.reason = f"bad_claim:{field}:{why}"
        super().__init__(self.reason)


# ----------------------------------------------------------------------------- one value


def identifier_problem(value: object, limit: int, *, spaces: bool = True) -> str | None:
    """Why ``value`` (already NFC) is not an acceptable identifier, or ``None`` if it is.

    ``spaces`` False: no U+0020 anywhere (roles, scopes). The reasons are the table's.
    """
    if not isinstance(value, str):
        return "type"
    if not value:
        return "empty"
    if len(value) > limit:
        return "too_long"
    if value.isascii():
        if not value.isprintable():
            return "unsafe"
    else:
        scripts: set[str] = set()
        for char in value:  # one pass: unsafe characters, and the scripts of the letters
            if char < "\x80":
                if not char.isprintable():
                    return "unsafe"
                if char.isalpha():
                    scripts.add("LATIN")
                continue
            category = unicodedata.category(char)
            if category in _UNSAFE_CATEGORIES or (category == "Zs" and char != " ") or char in _INVISIBLE:
                return "unsafe"
            if category[0] == "L" and (script := _script(char)) is not None:
                scripts.add(script)
        if len(scripts) > 1:
            return "mixed_script"
    if (value[0] == " " or value[-1] == " ") if spaces else " " in value:
        return "space"
    return None


@functools.lru_cache(maxsize=4096)
def _script(letter: str) -> str | None:
    """The look-alike script of a non-ASCII letter (``LATIN``, ``CYRILLIC``, …), else None."""
    words = unicodedata.name(letter, "").split(" ", 2)
    script = words[1] if words[0] in ("FULLWIDTH", "HALFWIDTH") and len(words) > 1 else words[0]
    return script if script in _LOOKALIKE_SCRIPTS else None


def fold(text: str) -> str:
    """What deny rules and revocations compare: NFKC + casefold (``Admin``, fullwidth ``\uff21DMIN`` → ``admin``)."""
    if text.isascii():
        return text.lower()
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def _nfc(value: str) -> str:
    return value if value.isascii() else unicodedata.normalize("NFC", value)


def _one(claims: Mapping[str, Any], claim: str, field: str, limit: int = MAX_ID_CHARS) -> str | None:
    """The claim as an identifier, ``None`` if absent; :class:`ClaimRejected` if malformed."""
    return _text(claims[claim], field, limit) if claim in claims else None


def _text(value: object, field: str, limit: int = MAX_ID_CHARS) -> str:
    """``value`` as an NFC identifier, or :class:`ClaimRejected`."""
    if isinstance(value, str):
        value = _nfc(value)
    problem = identifier_problem(value, limit)
    if problem is not None:
        raise ClaimRejected(field, problem)
    return str(value)


def _many(value: object, field: str) -> tuple[str, ...]:
    """A list of strings or a space-separated string, as checked, NFC, de-duplicated entries."""
    if isinstance(value, str):
        if len(value) > _MAX_LIST_STRING:
            raise ClaimRejected(field, "too_long")
        items: list[Any] = [part for part in value.split(" ") if part]
    elif isinstance(value, list):
        items = value
    else:
        raise ClaimRejected(field, "type")
    if len(items) > MAX_ITEMS:
        raise ClaimRejected(field, "too_many")
    out: dict[str, None] = {}
    for item in items:
        if isinstance(item, str):
            item = _nfc(item)
        problem = identifier_problem(item, MAX_ITEM_CHARS, spaces=False)
        if problem is not None:
            raise ClaimRejected(field, problem)
        out[item] = None
    return tuple(out)


# ----------------------------------------------------------------------------- the token


def scope_list(claims: Mapping[str, Any]) -> tuple[str, ...]:
    """The token's scopes: ``scope`` if present, else ``scp`` (see the module docstring)."""
    for name in ("scope", "scp"):
        if name in claims:
            return _many(claims[name], "scopes")
    return ()


def is_person(claims: Mapping[str, Any], signal: PersonSignal | None) -> bool:
    """Whether the issuer's positive signal is in ``claims`` (malformed: :class:`ClaimRejected`)."""
    if signal is None or signal.claim not in claims:
        return False
    value = claims[signal.claim]
    if isinstance(value, list):
        entries = _many(value, "person")
        return bool(entries) if signal.equals is None else signal.equals in entries
    text = _one(claims, signal.claim, "person", MAX_ITEM_CHARS)
    return signal.equals is None or text == signal.equals


def credential_from_claims(claims: Mapping[str, Any]) -> Credential | None:
    """The token's ``jti`` and OAuth Transaction Token ``txn`` (both optional; malformed: refused)."""
    jti, txn = _one(claims, "jti", "jti"), _one(claims, "txn", "txn")
    return None if jti is None and txn is None else Credential(jti=jti, txn=txn)


def principal_from_claims(claims: Mapping[str, Any], claim_map: ClaimMap, *, subject: str, issuer: str,
                          issuer_name: str, auth_method: str, person: PersonSignal | None = None,
                          scopes: tuple[str, ...] | None = None) -> Principal:
    """The principal ``claims`` describe, by the table in the module docstring.

    ``scopes`` when the verifier already read them (:func:`scope_list`); else they are read here.
    Raises :class:`ClaimRejected` for any malformed read claim.
    """

    def field(name: str) -> str | None:
        claim: str | None = getattr(claim_map, name)
        return None if claim is None else _one(claims, claim, name)

    present = next((name for name in claim_map.client_id if name in claims), None)  # the first present decides
    client_id = _text(claims[present] if present is not None else subject, "client_id")
    roles = _many(claims[claim_map.roles], "roles") if claim_map.roles and claim_map.roles in claims else ()
    attributes = {attr: value for attr, claim in claim_map.attributes.items()
                  if (value := _one(claims, claim, f"attributes.{attr}", MAX_ITEM_CHARS)) is not None}
    user_id, agent_id = field("user_id"), field("agent_id")
    signalled = is_person(claims, person)
    return Principal(client_id=client_id, user_id=user_id, agent_id=agent_id, session_id=field("session_id"),
                     source_app=field("source_app"), tenant=field("tenant"), roles=roles,
                     scopes=scope_list(claims) if scopes is None else scopes, attributes=attributes,
                     auth_method=auth_method, issuer=issuer, issuer_name=issuer_name,
                     person=signalled and user_id is not None and agent_id is None,
                     credential=credential_from_claims(claims))
