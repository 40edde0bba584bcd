"""The process's secret store: every reference resolved at start, and kept fresh while the gateway runs.

* :meth:`SecretStore.prime` resolves every reference of a configuration at once; any failure stops the
  start (fail closed), each named by its reference only.
* :meth:`SecretStore.run` (a gateway background task) renews the Vault token when due and, every
  ``secrets.refresh_s``, reads every file, sealed and vault reference again off the event loop. A read
  that fails keeps the last good value (logged by reference); a changed value is logged by reference
  and told to the subscribers.
* Consumers that read a secret at each use take :meth:`SecretStore.current`, a getter of the latest
  value, and so follow a rotation without a restart (docs/secrets.md lists which do).

The gateway activates its store (:func:`activate`) so that :func:`~portcullis.config.secrets.resolve_secret`
anywhere in the process resolves ``secret://vault/…`` from it; ``env``, ``file`` and ``sealed``
references are read afresh by ``resolve_secret`` whether or not a store is active.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from portcullis.config.secret_providers import (
    EnvProvider,
    FileProvider,
    SealedProvider,
    SecretProvider,
    SecretUnavailable,
)
from portcullis.config.secret_providers.config import SecretsConfig
from portcullis.config.secret_providers.vault import VaultProvider
from portcullis.config.secrets import SecretRef, is_reference, parse_ref, parsed_ref, resolve_secret, unresolvable
from portcullis.errors import ConfigError, Problem

if TYPE_CHECKING:
    from portcullis.config.model import GatewayConfig

log = logging.getLogger("portcullis.secrets")
_RETRY_S = 2.0  # after a failed renewal or login, the next attempt
_WHERE = Path("<secret>")


class SecretStore:
    def __init__(self, config: SecretsConfig, *, origin: Path = _WHERE, base_dir: Path = Path("."),
                 vault_transport: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._config, self._origin, self._clock = config, origin, clock
        self.sealed = SealedProvider(config.sealed.key_env)
        self._providers: dict[str, SecretProvider] = {"env": EnvProvider(), "file": FileProvider(),
                                                      "sealed": self.sealed}
        self.vault: VaultProvider | None = None
        if config.vault is not None:
            try:
                self.vault = VaultProvider(config.vault, self._read_credential, base_dir=base_dir,
                                           transport=vault_transport, clock=clock)
            except (ValueError, OSError, ssl.SSLError) as exc:
                why = str(exc) if isinstance(exc, ValueError) else "secrets.vault.ca_file cannot be used"
                raise ConfigError([Problem(origin, None, why)]) from None
            self._providers["vault"] = self.vault
        self._values: dict[SecretRef, str] = {}
        self._listeners: list[Callable[[SecretRef], None]] = []

    def read(self, ref: SecretRef, origin: Path | None = None) -> str:
        """The value of ``ref``: a kept vault value, else read now; ConfigError naming ``ref`` if none."""
        if ref.provider == "vault" and ref in self._values:
            return self._values[ref]
        provider = self._providers.get(ref.provider)
        if provider is None:
            raise unresolvable(ref, origin or self._origin, "secrets.vault is not configured")
        try:
            value = provider.read(ref)
        except SecretUnavailable as exc:
            raise unresolvable(ref, origin or self._origin, exc.why) from None
        if ref.provider == "vault":
            self._values[ref] = value
        return value

    def prime(self, refs: Iterable[str]) -> None:
        """Resolve every one of ``refs`` now and keep them fresh; ConfigError listing every failure."""
        problems: list[Problem] = []
        for text in sorted(set(refs)):
            try:
                ref = parsed_ref(text, self._origin)
                self._values[ref] = self.read(ref)
            except ConfigError as exc:
                problems.extend(exc.problems)
        if problems:
            raise ConfigError(problems)

    def current(self, ref: str) -> Callable[[], str]:
        """A getter of the latest value of ``ref`` (resolved now if it was not yet)."""
        parsed = parsed_ref(ref, self._origin)
        if parsed not in self._values:
            self.prime([ref])
        return lambda: self._values[parsed]

    def subscribe(self, listener: Callable[[SecretRef], None]) -> None:
        """``listener(ref)`` after each change of a kept reference (the value is not passed)."""
        self._listeners.append(listener)

    def refresh(self) -> list[SecretRef]:
        """Read every kept reference again; the ones whose value changed."""
        changed = []
        for ref in list(self._values):
            if ref.provider == "env":  # the process's environment does not change under it
                continue
            try:
                value = self._providers[ref.provider].read(ref)
            except Exception as exc:  # any failure: the last value stays; the refresh goes on (never its text)
                why = exc.why if isinstance(exc, SecretUnavailable) else type(exc).__name__
                log.warning("secret refresh failed; the last value stays in use",
                            extra={"fields": {"ref": str(ref), "why": why}})
                continue
            if value != self._values[ref]:
                self._values[ref] = value
                changed.append(ref)
        return changed

    async def run(self) -> None:
        """Renew the Vault token when due and refresh every ``refresh_s``, until cancelled."""
        every = self._config.refresh_s
        next_refresh = self._clock() + every
        retry_at = 0.0
        try:
            while True:
                due = None if self.vault is None else self.vault.renew_due_in()
                wake = next_refresh if due is None else min(next_refresh, max(self._clock() + due, retry_at))
                await anyio.sleep(max(wake - self._clock(), 0.0))
                if self.vault is not None and self._clock() >= retry_at:
                    try:
                        await anyio.to_thread.run_sync(self.vault.maintain)
                    except Exception as exc:  # never ends the gateway: the values read so far stay in use
                        retry_at = self._clock() + _RETRY_S
                        why = exc.why if isinstance(exc, SecretUnavailable) else type(exc).__name__
                        log.warning("vault token could not be renewed or replaced", extra={"fields": {"why": why}})
                if self._clock() >= next_refresh:
                    next_refresh = self._clock() + every
                    for ref in await anyio.to_thread.run_sync(self.refresh):
                        log.info("secret rotated", extra={"fields": {"ref": str(ref)}})
                        for listener in self._listeners:
                            try:
                                listener(ref)
                            except Exception as exc:  # one subscriber's failure stops neither the others nor us
                                log.warning("secret rotation subscriber failed",
                                            extra={"fields": {"ref": str(ref), "error": type(exc).__name__}})
        finally:
            if self.vault is not None:
                self.vault.close()

    def _read_credential(self, ref: str) -> str:
        """A provider credential: an env or file reference (the config's pattern allows no other)."""
        parsed = parse_ref(ref)
        if parsed.provider not in ("env", "file"):
            raise SecretUnavailable("a provider credential must be an env or file reference")
        try:
            return self._providers[parsed.provider].read(parsed)
        except SecretUnavailable as exc:
            raise SecretUnavailable(f"its credential {ref} cannot be read: {exc.why}") from None


def references(value: Any) -> Iterator[str]:
    """Every ``secret://`` string in a configuration dump."""
    if isinstance(value, dict):
        for item in value.values():
            yield from references(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from references(item)
    elif isinstance(value, str) and is_reference(value):
        yield value


_active: SecretStore | None = None


def activate(store: SecretStore | None) -> None:
    """Make ``store`` the one :func:`read_secret` (and so ``resolve_secret``) answers vault references from."""
    global _active
    _active = store


def read_secret(ref: SecretRef, origin: Path) -> str:
    """``ref``'s value: vault from the active store; env, file and sealed read now."""
    store = _active
    if ref.provider == "vault":
        if store is None:
            raise unresolvable(ref, origin, "secrets.vault is not configured")
        return store.read(ref, origin)
    provider: SecretProvider
    if ref.provider == "env":
        provider = EnvProvider()
    elif ref.provider == "file":
        provider = FileProvider()
    else:
        provider = store.sealed if store is not None else SealedProvider()
    try:
        return provider.read(ref)
    except SecretUnavailable as exc:
        raise unresolvable(ref, origin, exc.why) from None


def secret_getter(ref: str, origin: Path) -> Callable[[], str]:
    """For a consumer that reads ``ref`` at each use: the active store's live getter, else the value now."""
    store = _active
    if store is not None:
        return store.current(ref)

    value = resolve_secret(ref, origin=origin)
    return lambda: value


def open_secret_store(config: GatewayConfig, root: Path) -> SecretStore:
    """The gateway's store: every reference in ``config`` resolved now (ConfigError otherwise), activated."""
    origin = root / "gateway.yaml"
    store = SecretStore(config.secrets, origin=origin, base_dir=root)
    store.prime(references(config.model_dump(mode="json", exclude={"secrets"})))  # not the providers' own
    activate(store)
    return store


def use_configured(config: SecretsConfig, root: Path) -> None:
    """For a command outside the gateway (``portcullis storage``, ``audit``, ``policy replay``): activate a
    store for ``config`` so that its vault references resolve, read once, with no background refresh."""
    activate(SecretStore(config, origin=root / "gateway.yaml", base_dir=root))
