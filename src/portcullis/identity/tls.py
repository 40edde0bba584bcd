"""TLS termination at the gateway, with optional client certificates (mTLS).

Contract of this layer:

1. :func:`build_server_context` turns a :class:`TlsConfig` into a hardened server
   ``ssl.SSLContext``. Client certificates are verified *only* against ``client_ca_file`` (never
   the system store) and a failed verification aborts the handshake, so no unverified
   certificate ever reaches the application.
2. uvicorn (0.54) does not fill the ASGI TLS extension, so :class:`TlsHttpToolsProtocol` and
   :class:`TlsH11Protocol` do: once the handshake is complete (``connection_made``) they read the
   peer certificate from the transport's ``ssl_object`` and wrap the connection's ASGI app so that
   every request scope carries ``scope["extensions"]["tls"]`` in the format of the ASGI TLS
   extension (``client_cert_chain`` is PEM strings, leaf first; ``tls_version`` and
   ``cipher_suite`` are the IANA integers).
3. :func:`uvicorn_kwargs` returns what to pass to ``uvicorn.run`` / ``uvicorn.Config``.
4. :func:`peer_certificate` reads the verified client certificate back out of a scope. Mapping it
   to an identity is :mod:`portcullis.identity.certs`.

Example::

    uvicorn.run(app, host="127.0.0.1", port=8443, loop="uvloop", **uvicorn_kwargs(tls))
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Callable, Mapping
from typing import Any, Literal

from cryptography import x509
from pydantic import BaseModel, ConfigDict, Field, model_validator
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

ClientAuth = Literal["none", "optional", "required"]

# TLS 1.2 suites: ECDHE (forward secrecy) with AEAD only. TLS 1.3 suites are OpenSSL's, all AEAD.
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
_MIN_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
_VERIFY_MODES = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
_WIRE_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


class TlsConfig(BaseModel):
    """TLS for the gateway's listener, and whether clients must present a certificate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cert_file: str = Field(min_length=1, description="PEM server certificate, leaf first, then intermediates.")
    key_file: str = Field(min_length=1, description="PEM private key of cert_file (unencrypted).")
    client_ca_file: str | None = Field(
        None,
        min_length=1,
        description="PEM bundle of the CAs trusted to issue client certificates; required unless client_auth is "
        "'none'. The system trust store is never used for clients.",
    )
    client_auth: ClientAuth = Field(
        "none",
        description="'required': a handshake without a valid client certificate fails. 'optional': a client may "
        "present none, but one that is presented must verify. 'none': no certificate is asked for.",
    )
    min_version: Literal["TLSv1.2", "TLSv1.3"] = Field("TLSv1.2", description="Lowest TLS version accepted.")

    @model_validator(mode="after")
    def _ca_matches_client_auth(self) -> TlsConfig:
        if self.client_auth != "none" and self.client_ca_file is None:
            raise ValueError(f"client_auth '{self.client_auth}' needs client_ca_file")
        if self.client_auth == "none" and self.client_ca_file is not None:
            raise ValueError("client_ca_file is set but client_auth is 'none'; set client_auth or drop the file")
        return self


def build_server_context(cfg: TlsConfig) -> ssl.SSLContext:
    """A server context for ``cfg``; raises ``OSError`` / ``ssl.SSLError`` on unreadable or bad files."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # not create_default_context: it would trust the system CAs
    ctx.minimum_version = _MIN_VERSIONS[cfg.min_version]
    ctx.options |= (
        ssl.OP_NO_COMPRESSION  # CRIME
        | ssl.OP_NO_RENEGOTIATION  # the identity read at handshake time can never change under a connection
        | ssl.OP_CIPHER_SERVER_PREFERENCE
        | ssl.OP_SINGLE_ECDH_USE
        | ssl.OP_NO_TICKET  # no TLS 1.2 ticket resumption: ...
    )
    ctx.num_tickets = 0  # ... nor TLS 1.3: every connection re-verifies the client certificate (expiry, CA)
    ctx.set_ciphers(_TLS12_CIPHERS)
    ctx.set_alpn_protocols(["http/1.1"])  # the protocols below speak HTTP/1.1 only
    ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    if cfg.client_ca_file is not None:
        ctx.load_verify_locations(cafile=cfg.client_ca_file)
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.verify_mode = _VERIFY_MODES[cfg.client_auth]
    return ctx


# --------------------------------------------------------------------------- ASGI TLS extension


@functools.cache
def _cipher_ids() -> dict[str, int]:
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.set_ciphers("ALL:@SECLEVEL=0")
    return {c["name"]: c["id"] & 0xFFFF for c in probe.get_ciphers()}  # OpenSSL ids are 0x0300XXXX


def tls_extension(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> dict[str, Any]:
    """The ASGI TLS extension dict for a completed handshake."""
    der = ssl_object.getpeercert(binary_form=True) if ssl_object.context.verify_mode != ssl.CERT_NONE else None
    cipher = ssl_object.cipher()
    return {
        "server_cert": None,  # optional in the spec; not needed for client identity
        # Python 3.11 exposes only the peer's leaf, not the chain it sent; the leaf is what identity needs.
        "client_cert_chain": (ssl.DER_cert_to_PEM_cert(der),) if der else (),
        "client_cert_name": x509.load_der_x509_certificate(der).subject.rfc4514_string() if der else None,
        "client_cert_error": None,  # a certificate that failed verification never completes a handshake
        "tls_version": _WIRE_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": _cipher_ids().get(cipher[0]) if cipher else None,
    }


ASGIApp = Callable[..., Any]


def _with_tls(app: ASGIApp, extension: dict[str, Any]) -> ASGIApp:
    async def tls_app(scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "http":  # websocket scopes are built by uvicorn's ws protocols, not here
            scope = {**scope, "extensions": {**(scope.get("extensions") or {}), "tls": dict(extension)}}
        return await app(scope, receive, send)

    return tls_app


def _attach(protocol: HttpToolsProtocol | H11Protocol, transport: asyncio.Transport) -> None:
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is not None:  # the extension must be absent on plain-text connections
        protocol.app = _with_tls(protocol.app, tls_extension(ssl_object))


class TlsHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus ``scope["extensions"]["tls"]`` on every request."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        _attach(self, transport)


class TlsH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus ``scope["extensions"]["tls"]`` on every request."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        _attach(self, transport)


_PROTOCOLS: dict[str, type[asyncio.Protocol]] = {"httptools": TlsHttpToolsProtocol, "h11": TlsH11Protocol}


class _ContextFactory:
    """uvicorn's ``ssl_context_factory``; a class rather than a lambda so a Config stays picklable."""

    def __init__(self, cfg: TlsConfig) -> None:
        self.cfg = cfg

    def __call__(self, _config: object, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return build_server_context(self.cfg)


def uvicorn_kwargs(cfg: TlsConfig, *, http: Literal["httptools", "h11"] = "httptools") -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config`` that serve ``cfg`` with the TLS extension.

    They replace any ``http=`` and ``ssl_*`` arguments. The context is built once here so that bad
    files fail now, not when the server starts.
    """
    build_server_context(cfg)
    return {"http": _PROTOCOLS[http], "ssl_context_factory": _ContextFactory(cfg)}


def peer_certificate(scope: Mapping[str, Any]) -> str | None:
    """The verified client certificate (PEM) of this request's connection, or None."""
    tls = (scope.get("extensions") or {}).get("tls")
    chain = tls.get("client_cert_chain") if isinstance(tls, dict) else None
    return next(iter(chain or ()), None)
