"""One HTTP/1.1 exchange over a connection the kit opens itself, to an address already checked.

The socket is made here and connected with ``loop.sock_connect`` to the exact address
:func:`~portcullis.kits.http_resolve.checked_addresses` returned — no host name reaches the
connect, so nothing resolves again. For ``https`` the connected socket is wrapped in TLS with the
URL's host as the server name (SNI and certificate check; verification is always on). The
response is read by the relay's strict reader (:mod:`portcullis.upstream.http11_response`): the
same framing rules, the same body limit (a declared length over it is refused before a body byte
is read). One request per connection (``Connection: close``): nothing is pooled, so no answer can
be left for another fetch.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from dataclasses import dataclass

from portcullis.kits.http_errors import HttpKitError, HttpKitReason
from portcullis.kits.net_addresses import IPAddress
from portcullis.upstream.http11_response import BodyTooLarge, ResponseError, ResponseReader

_READ_SIZE = 65536
MAX_HEAD_BYTES = 32768


@dataclass(frozen=True, slots=True)
class Exchanged:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    address: IPAddress  # the peer it came from


async def connect(address: IPAddress, port: int, timeout_s: float) -> socket.socket:
    """A TCP socket connected to exactly ``address``; raises ``connect_failed``."""
    family = socket.AF_INET6 if isinstance(address, ipaddress.IPv6Address) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    sockaddr: tuple[str, int] | tuple[str, int, int, int] = (
        (str(address), port, 0, 0) if family == socket.AF_INET6 else (str(address), port))
    try:
        async with asyncio.timeout(timeout_s):
            await asyncio.get_running_loop().sock_connect(sock, sockaddr)
    except (OSError, TimeoutError):
        sock.close()
        raise HttpKitError(HttpKitReason.CONNECT_FAILED) from None
    except BaseException:
        sock.close()
        raise
    return sock


async def exchange(addresses: tuple[IPAddress, ...], port: int, request: bytes, *, tls: ssl.SSLContext | None,
                   server_name: str, connect_timeout_s: float, max_body_bytes: int) -> Exchanged:
    """Send ``request`` to the first of ``addresses`` that accepts a connection; read one response."""
    failure = HttpKitError(HttpKitReason.CONNECT_FAILED)
    for address in addresses:
        try:
            sock = await connect(address, port, connect_timeout_s)
        except HttpKitError as exc:
            failure = exc
            continue
        return await _over(sock, address, request, tls=tls, server_name=server_name,
                           timeout_s=connect_timeout_s, max_body_bytes=max_body_bytes)
    raise failure


async def _over(sock: socket.socket, address: IPAddress, request: bytes, *, tls: ssl.SSLContext | None,
                server_name: str, timeout_s: float, max_body_bytes: int) -> Exchanged:
    try:
        reader, writer = await asyncio.open_connection(
            sock=sock, ssl=tls, server_hostname=server_name if tls is not None else None,
            ssl_handshake_timeout=timeout_s if tls is not None else None)
    except (ssl.SSLError, ssl.CertificateError):
        sock.close()
        raise HttpKitError(HttpKitReason.TLS_FAILED) from None
    except (OSError, TimeoutError):
        sock.close()
        raise HttpKitError(HttpKitReason.TLS_FAILED if tls is not None else HttpKitReason.CONNECT_FAILED) from None
    except BaseException:
        sock.close()
        raise
    try:
        writer.write(request)
        response = ResponseReader(max_body_bytes=max_body_bytes, max_head_bytes=MAX_HEAD_BYTES)
        while True:
            data = await reader.read(_READ_SIZE)
            if not data:
                if not response.feed_eof():
                    raise HttpKitError(HttpKitReason.RESPONSE_INVALID)
                break
            if response.feed(data):
                break
    except BodyTooLarge:
        raise HttpKitError(HttpKitReason.RESPONSE_TOO_LARGE) from None
    except ResponseError:
        raise HttpKitError(HttpKitReason.RESPONSE_INVALID) from None
    except (OSError, ssl.SSLError):
        raise HttpKitError(HttpKitReason.RESPONSE_INVALID) from None
    finally:
        writer.close()
    head = response.head
    if head is None:  # unreachable: done implies a head; kept so a bug fails closed
        raise HttpKitError(HttpKitReason.RESPONSE_INVALID)
    return Exchanged(head.status, head.headers, response.body, address)
