"""The HTTP kit's one error: :class:`HttpKitError`, with a reason from a closed set.

Every message is a fixed string chosen by the reason: the URL, the host, the resolved addresses
and the peer's bytes never appear in it, so a tool can hand the message to its caller and a log
line can carry it as is. An address refusal also carries the address rule's reason
(:class:`~portcullis.kits.net_addresses.Refusal`, a closed set too).
"""

from __future__ import annotations

from enum import StrEnum

from portcullis.errors import PortcullisError
from portcullis.kits.net_addresses import Refusal


class HttpKitReason(StrEnum):
    """Why a fetch was refused or failed (the value is the stable wire name)."""

    URL_INVALID = "url_invalid"
    URL_NOT_ALLOWED = "url_not_allowed"
    HEADER_INVALID = "header_invalid"
    DNS_FAILED = "dns_failed"
    ADDRESS_REFUSED = "address_refused"
    CONNECT_FAILED = "connect_failed"
    TLS_FAILED = "tls_failed"
    TIMEOUT = "timeout"
    RESPONSE_INVALID = "response_invalid"
    RESPONSE_TOO_LARGE = "response_too_large"
    CONTENT_TYPE_REFUSED = "content_type_refused"
    CONTENT_ENCODING_REFUSED = "content_encoding_refused"
    REDIRECT_REFUSED = "redirect_refused"
    TOO_MANY_REDIRECTS = "too_many_redirects"


MESSAGES: dict[HttpKitReason, str] = {
    HttpKitReason.URL_INVALID: "the URL is not a valid http(s) URL without credentials",
    HttpKitReason.URL_NOT_ALLOWED: "the URL is not on the allow-list",
    HttpKitReason.HEADER_INVALID: "a request header name or value is not allowed",
    HttpKitReason.DNS_FAILED: "the host name could not be resolved",
    HttpKitReason.ADDRESS_REFUSED: "the host resolves to an address that is not allowed",
    HttpKitReason.CONNECT_FAILED: "the connection could not be made",
    HttpKitReason.TLS_FAILED: "the TLS handshake or certificate check failed",
    HttpKitReason.TIMEOUT: "the request took longer than allowed",
    HttpKitReason.RESPONSE_INVALID: "the response is not valid HTTP/1.1",
    HttpKitReason.RESPONSE_TOO_LARGE: "the response is larger than allowed",
    HttpKitReason.CONTENT_TYPE_REFUSED: "the response content type is not allowed",
    HttpKitReason.CONTENT_ENCODING_REFUSED: "the response content encoding is not allowed",
    HttpKitReason.REDIRECT_REFUSED: "the redirect is not allowed",
    HttpKitReason.TOO_MANY_REDIRECTS: "too many redirects",
}


class HttpKitError(PortcullisError):
    """A fetch the HTTP kit refused or could not complete; ``str()`` is the fixed message."""

    def __init__(self, reason: HttpKitReason, address_reason: Refusal | None = None) -> None:
        self.reason = reason
        self.address_reason = address_reason
        super().__init__(MESSAGES[reason])
