"""Builds the console from the configuration (the gateway calls :func:`build_console`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

from portcullis.config.console import ConsoleConfig
from portcullis.config.secret_store import secret_getter
from portcullis.console.app import ConsoleApp
from portcullis.console.login import LoginPages
from portcullis.console.oidc import OidcClient
from portcullis.console.pages import PAGES
from portcullis.console.services import ConsoleServices
from portcullis.console.sessions import Sessions
from portcullis.console.store import ConsoleStore, MemoryConsoleStore, RedisConsoleStore
from portcullis.identity.config import ClaimMap
from portcullis.identity.issuers import IssuerConfig
from portcullis.identity.jwks import JwksCache
from portcullis.storage.config import StorageConfig


def build_store(storage: StorageConfig, *, origin: Path) -> ConsoleStore:
    """In Redis when ``storage.redis`` is set (any replica serves any session), else in this process."""
    if storage.redis is None:
        return MemoryConsoleStore()
    from portcullis.storage.redis_build import redis_url

    cfg = storage.redis
    return RedisConsoleStore.from_url(redis_url(cfg, origin=origin), key_prefix=cfg.key_prefix,
                                      connect_timeout_s=cfg.connect_timeout_s, op_timeout_s=cfg.op_timeout_s)


def build_console(config: ConsoleConfig, services: ConsoleServices, *, store: ConsoleStore,
                  issuers: list[IssuerConfig], caches: Mapping[str, JwksCache], claim_map: ClaimMap,
                  origin: Path, clock: Callable[[], float] = time.time,
                  oidc: OidcClient | None = None) -> ConsoleApp:
    """The console app with its login pages and every page module of :data:`~portcullis.console.pages.PAGES`.

    ``oidc``: a ready client (tests); by default one is made from ``config.oidc`` with the identity issuer of
    the same ``issuer`` and that issuer's key cache."""
    if oidc is None and config.oidc is not None:
        issuer = next(i for i in issuers if i.issuer == config.oidc.issuer)  # console_problem checked it
        secret = (secret_getter(config.oidc.client_secret_ref, origin)  # read at each use: follows a rotation
                  if config.oidc.client_secret_ref else None)
        oidc = OidcClient(config.oidc, issuer, caches[issuer.name], claim_map, client_secret=secret, clock=clock)
    sessions = Sessions(store, ttl_s=config.session_ttl_s, idle_s=config.idle_timeout_s,
                        login_ttl_s=config.login_ttl_s, clock=clock)
    app = ConsoleApp(sessions, services, dev_login=config.dev_login)
    LoginPages(oidc, dev_login=config.dev_login, claim_map=claim_map).register(app)
    for register in PAGES:
        register(app)
    return app
