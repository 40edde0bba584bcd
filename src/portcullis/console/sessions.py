"""Console sessions: server-side records named by a random 256-bit id the browser holds in a cookie.

- The session cookie ``__Host-portcullis_console`` (Secure, HttpOnly, SameSite=Strict, Path=/) holds
  the id; the store holds only its hash (:func:`~portcullis.console.store.key_of`).
- A session carries the principal (made at login by the same claim mapping as a bearer token), a
  CSRF synchronizer token, its creation and last-use times. It ends at logout, ``idle_timeout_s``
  after its last use, ``session_ttl_s`` after login, whichever is first.
- Before login the browser holds a separate pre-login id (cookie ``__Host-portcullis_console_login``,
  SameSite=Lax so it comes back on the provider's redirect); a started login (state, nonce, PKCE
  verifier) is bound to it and used once. Logging in always makes a NEW session id and deletes the
  pre-login record and any session the browser held (no session fixation).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from portcullis.console.store import ConsoleStore, key_of
from portcullis.identity.principal import Principal

SESSION_COOKIE = "__Host-portcullis_console"
LOGIN_COOKIE = "__Host-portcullis_console_login"
_TOUCH_EVERY_S = 15.0  # last-use time is written at most this often (idle timeouts are minutes)


def new_secret() -> str:
    """A fresh random 256-bit value, URL-safe."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Session:
    """One logged-in person, as the console pages see them."""

    principal: Principal
    csrf: str
    created_at: float
    seen_at: float
    dev: bool
    jti: str | None
    key: str  # the store key (the id's hash), never the id


@dataclass(frozen=True, slots=True)
class PreLogin:
    """A browser that has not logged in yet: its CSRF token for the login forms."""

    csrf: str
    key: str


class Sessions:
    """Sessions and pre-login records in a :class:`~portcullis.console.store.ConsoleStore`."""

    def __init__(self, store: ConsoleStore, *, ttl_s: float, idle_s: float, login_ttl_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self._ttl, self._idle, self.login_ttl_s, self._clock = store, ttl_s, idle_s, login_ttl_s, clock

    # ---------------------------------------------------------------- sessions

    async def create(self, principal: Principal, *, dev: bool, jti: str | None,
                     replacing: tuple[str | None, ...] = ()) -> tuple[str, Session]:
        """A new session (new id) for ``principal``; the pre-login and session ids in ``replacing`` end."""
        for old in replacing:
            if old:
                await self.store.delete(key_of("pre", old))
                await self.store.delete(key_of("session", old))
        session_id, now = new_secret(), self._clock()
        record = {"principal": principal.to_claims(), "csrf": new_secret(), "created": now, "seen": now,
                  "dev": dev, "jti": jti}
        key = key_of("session", session_id)
        await self.store.put(key, record, min(self._idle, self._ttl))
        return session_id, _session(record, key)

    async def load(self, session_id: str | None, *, touch: bool = True) -> Session | None:
        """The live session ``session_id`` names, or None (unknown, expired, malformed)."""
        if not session_id or len(session_id) > 128:
            return None
        key = key_of("session", session_id)
        record = await self.store.get(key)
        if record is None:
            return None
        try:
            session = _session(record, key)
        except (KeyError, TypeError, ValueError):
            await self.store.delete(key)
            return None
        now = self._clock()
        if now >= session.created_at + self._ttl or now >= session.seen_at + self._idle:
            await self.store.delete(key)
            return None
        if touch and now - session.seen_at >= _TOUCH_EVERY_S:
            record["seen"] = now
            await self.store.put(key, record, min(self._idle, session.created_at + self._ttl - now))
        return session

    async def end(self, session_id: str | None) -> None:
        if session_id:
            await self.store.delete(key_of("session", session_id))

    # ---------------------------------------------------------------- before login

    async def pre_login(self, pre_id: str | None) -> tuple[str, PreLogin]:
        """The browser's pre-login record (a new one, with a new id, when it has none that is live)."""
        if pre_id and len(pre_id) <= 128:
            key = key_of("pre", pre_id)
            record = await self.store.get(key)
            if record is not None and isinstance(record.get("csrf"), str):
                return pre_id, PreLogin(record["csrf"], key)
        pre_id = new_secret()
        key = key_of("pre", pre_id)
        csrf = new_secret()
        await self.store.put(key, {"csrf": csrf}, self.login_ttl_s)
        return pre_id, PreLogin(csrf, key)

    async def find_pre_login(self, pre_id: str | None) -> PreLogin | None:
        if not pre_id or len(pre_id) > 128:
            return None
        key = key_of("pre", pre_id)
        record = await self.store.get(key)
        if record is None or not isinstance(record.get("csrf"), str):
            return None
        return PreLogin(record["csrf"], key)

    async def start_flow(self, pre_id: str, state: str, flow: dict[str, Any]) -> None:
        """Remember a started OIDC login under (pre-login id, state), for :attr:`login_ttl_s`."""
        await self.store.put(key_of("flow", pre_id, state), flow, self.login_ttl_s)

    async def take_flow(self, pre_id: str | None, state: str | None) -> dict[str, Any] | None:
        """The started login for this browser and ``state``, once; None for any other browser or a replay."""
        if not pre_id or not state or len(pre_id) > 128 or len(state) > 128:
            return None
        return await self.store.take(key_of("flow", pre_id, state))


def _session(record: dict[str, Any], key: str) -> Session:
    principal = Principal.from_claims(record["principal"])
    created, seen, dev, jti, csrf = (record["created"], record["seen"], record["dev"], record.get("jti"),
                                     record["csrf"])
    if (not isinstance(created, int | float) or not isinstance(seen, int | float) or not isinstance(dev, bool)
            or not isinstance(csrf, str) or not (jti is None or isinstance(jti, str))):
        raise ValueError("malformed session record")
    return Session(principal, csrf, float(created), float(seen), dev, jti, key)
