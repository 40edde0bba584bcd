"""``secret://vault/<mount>/<path>#field``: a field of a Vault/OpenBao KV v2 secret, over plain HTTP calls.

Four endpoints, no client library (docs/decisions.md): ``POST auth/<mount>/login`` (AppRole),
``GET auth/token/lookup-self`` (a given token's lease), ``POST auth/token/renew-self`` and
``GET <mount>/data/<path>``. The token is renewed once ``renew_at_fraction`` of its lease has passed;
when renewal is refused, or comes back shorter than the lease before it (the token's max TTL is
near), an AppRole gateway logs in again. Neither the token, the AppRole credentials nor any secret is
logged or put in a reason; the server's response bodies are never quoted.

The client is synchronous: values are read at start (before the loop) and by the store's refresh,
which runs it in a worker thread. A lock keeps the token consistent between the two.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2

from portcullis.config.secret_providers.base import SecretUnavailable, pick_field
from portcullis.config.secret_providers.config import VaultAppRoleAuth, VaultConfig
from portcullis.config.secrets import SecretRef
from portcullis.identity.bounded_http import is_loopback_host

log = logging.getLogger("portcullis.secrets.vault")
_MAX_BODY = 1 << 20


class VaultProvider:
    def __init__(self, config: VaultConfig, read_local: Callable[[str], str], *, base_dir: Path = Path("."),
                 transport: httpx2.BaseTransport | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        """``read_local`` resolves the env/file references of the auth credentials."""
        host = urllib.parse.urlsplit(config.address).hostname or ""
        if config.address.startswith("http://") and not is_loopback_host(host):
            if not config.allow_insecure_http:
                raise ValueError("secrets.vault.address: http:// to a host that is not loopback needs "
                                 "allow_insecure_http")
            log.warning("secrets.vault.allow_insecure_http: the Vault token and secrets cross the network in clear")
        verify: ssl.SSLContext | bool = True
        if config.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(base_dir / config.ca_file))
        headers = {} if config.namespace is None else {"X-Vault-Namespace": config.namespace}
        self._http = httpx2.Client(base_url=config.address.rstrip("/") + "/v1/", headers=headers, verify=verify,
                                   timeout=config.timeout_s, trust_env=False, follow_redirects=False,
                                   transport=transport)
        self._config, self._read_local, self._clock = config, read_local, clock
        self._lock = threading.RLock()
        self._token: str | None = None
        self._lease_s: float = 0.0  # 0: the token does not expire
        self._renewable = False
        self._since = 0.0

    # -- the token ---------------------------------------------------------------------------------

    def login(self) -> None:
        """Obtain a token (AppRole) or learn the given token's lease (token auth)."""
        with self._lock:
            auth = self._config.auth
            try:
                if isinstance(auth, VaultAppRoleAuth):
                    body = {"role_id": self._read_local(auth.role_id_ref),
                            "secret_id": self._read_local(auth.secret_id_ref)}
                    answer = self._call("POST", f"auth/{auth.mount}/login", None, body, what="AppRole login")["auth"]
                    token, lease, renewable = answer["client_token"], answer["lease_duration"], answer["renewable"]
                else:
                    token = _header_token(self._read_local(auth.token_ref))
                    data = self._call("GET", "auth/token/lookup-self", token, None, what="token lookup")["data"]
                    lease, renewable = data.get("ttl") or 0, bool(data.get("renewable"))
            except (KeyError, TypeError, AttributeError):
                raise SecretUnavailable("Vault's login answer is not understood") from None
            if not isinstance(token, str) or not isinstance(lease, int | float):
                raise SecretUnavailable("Vault's login answer is not understood")
            self._token = _header_token(token)
            self._lease_s, self._since = float(lease), self._clock()
            self._renewable = renewable is True
            log.info("vault token obtained", extra={"fields": {"method": auth.method, "lease_s": lease}})

    def renew_due_in(self) -> float | None:
        """Seconds until the token should be renewed (or replaced); None if it never needs to be."""
        with self._lock:
            approle = isinstance(self._config.auth, VaultAppRoleAuth)
            if self._token is None or self._lease_s <= 0 or not (self._renewable or approle):
                return None
            fraction = self._config.renew_at_fraction if self._renewable else 0.8  # not renewable: a new login
            return max(0.0, self._since + self._lease_s * fraction - self._clock())

    def maintain(self) -> None:
        """Renew the token if due; log in again (AppRole) when renewal is refused or the max TTL is near."""
        with self._lock:
            due = self.renew_due_in()
            if due is None or due > 0:
                return
            approle = isinstance(self._config.auth, VaultAppRoleAuth)
            lease: float | None = None
            if self._renewable:
                try:
                    answer = self._call("POST", "auth/token/renew-self", self._token, {}, what="token renewal")
                    lease = float(answer["auth"]["lease_duration"])
                except (SecretUnavailable, KeyError, TypeError, ValueError) as exc:
                    log.warning("vault token renewal refused", extra={"fields": {"why": getattr(exc, "why", "")}})
            if lease is not None and (lease >= self._lease_s or not approle):
                self._lease_s, self._since = lease, self._clock()
                return
            if approle:
                self.login()
            else:  # nothing more to try: stop trying (the values read so far stay in use)
                self._renewable = False
                log.error("vault token cannot be renewed; it expires and vault secrets will no longer refresh")

    # -- reading -------------------------------------------------------------------------------------

    def read(self, ref: SecretRef) -> str:
        mount, _, path = ref.path.partition("/")
        url = f"{urllib.parse.quote(mount, safe='')}/data/{urllib.parse.quote(path, safe='/')}"
        with self._lock:
            if self._token is None:
                self.login()
            try:
                answer = self._call("GET", url, self._token, None, what="read")
            except SecretUnavailable as exc:
                if exc.why != _DENIED or not isinstance(self._config.auth, VaultAppRoleAuth):
                    raise
                log.info("vault read denied; logging in again", extra={"fields": {"ref": str(ref)}})
                self.login()  # a token that expired under us: one fresh login, then the answer stands
                answer = self._call("GET", url, self._token, None, what="read")
        data = answer.get("data")
        return pick_field(data.get("data") if isinstance(data, dict) else None, ref.field)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, url: str, token: str | None, body: dict[str, Any] | None, *,
              what: str) -> dict[str, Any]:
        headers = {} if token is None else {"X-Vault-Token": token}
        try:
            with self._http.stream(method, url, headers=headers, json=body) as response:
                status, content = response.status_code, bytearray()
                for chunk in response.iter_bytes():
                    content += chunk
                    if len(content) > _MAX_BODY:  # bounded: an answer this large is not one we asked for
                        break
        except (httpx2.HTTPError, ValueError) as exc:  # ValueError: a header or body httpx cannot encode
            raise SecretUnavailable(f"Vault {what} failed: {type(exc).__name__}") from None
        if status == 403:
            raise SecretUnavailable(_DENIED)
        if status == 404:
            raise SecretUnavailable("no such secret at Vault" if what == "read" else f"Vault {what}: not found")
        if status != 200 or len(content) > _MAX_BODY:
            raise SecretUnavailable(f"Vault {what} answered HTTP {status}" if status != 200
                                    else f"Vault {what}: the answer is too large")
        try:
            answer = json.loads(content)
        except ValueError:
            raise SecretUnavailable(f"Vault {what}: the answer is not JSON") from None
        if not isinstance(answer, dict):
            raise SecretUnavailable(f"Vault {what}: the answer is not understood")
        return answer


_DENIED = "permission denied by Vault (policy, or the token is no longer valid)"


def _header_token(token: str) -> str:
    """``token`` if it can be sent as a header value as is; the reason never quotes it."""
    if not token or not all(33 <= ord(c) <= 126 for c in token):
        raise SecretUnavailable("the Vault token is not a printable header value")
    return token
