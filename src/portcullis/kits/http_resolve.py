"""Name resolution for the HTTP kit: one seam, one lookup per hop, every answer checked.

:class:`Resolver` is the seam: :class:`SystemResolver` asks the system once
(``loop.getaddrinfo``); :class:`StaticResolver` is the test double (fixed answers per host,
handed out in turn, so a test can play a rebinding DNS server that answers differently the second
time).

:func:`checked_addresses` decides on the *whole* answer: if any address is refused the fetch is
refused (``address_refused``), even when others would be allowed — an answer that mixes a public
and an internal address is the signature of a rebinding attack, and picking the allowed ones would
only make the attack depend on which address a retry reaches. The kit then connects only to these
checked addresses (:mod:`portcullis.kits.http_exchange`), so no second lookup can swap them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Mapping, Sequence
from typing import Protocol

from portcullis.kits.http_errors import HttpKitError, HttpKitReason
from portcullis.kits.net_addresses import AddressPolicy, IPAddress, classify

MAX_ADDRESSES = 64


class Resolver(Protocol):
    """Turns a host name into the addresses to connect to; raises :class:`HttpKitError` on failure."""

    async def resolve(self, host: str, port: int) -> Sequence[IPAddress]: ...


class SystemResolver:
    """The system's resolver (``/etc/hosts``, DNS), asked once per hop; no answer is cached."""

    async def resolve(self, host: str, port: int) -> Sequence[IPAddress]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError):
            raise HttpKitError(HttpKitReason.DNS_FAILED) from None
        addresses: list[IPAddress] = []
        for family, _, _, _, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(sockaddr[0], str):
                raise HttpKitError(HttpKitReason.DNS_FAILED)
            text = sockaddr[0]
            if family == socket.AF_INET6 and len(sockaddr) == 4 and sockaddr[3] and "%" not in text:
                text = f"{text}%{sockaddr[3]}"  # keep the zone: a scoped answer is refused, not unscoped
            try:
                addresses.append(ipaddress.ip_address(text))
            except ValueError:
                raise HttpKitError(HttpKitReason.DNS_FAILED) from None
        return addresses


class StaticResolver:
    """Test double: ``answers[host]`` is a list of answers, one per lookup; the last one repeats.

    ``lookups`` records each host asked, in order. An unknown host fails like a DNS miss.
    """

    def __init__(self, answers: Mapping[str, Sequence[Sequence[str]]]) -> None:
        self._answers = {host: [tuple(ipaddress.ip_address(a) for a in answer) for answer in seq]
                         for host, seq in answers.items()}
        self.lookups: list[str] = []

    async def resolve(self, host: str, port: int) -> Sequence[IPAddress]:
        count = self.lookups.count(host)
        self.lookups.append(host)
        answers = self._answers.get(host)
        if not answers:
            raise HttpKitError(HttpKitReason.DNS_FAILED)
        return answers[min(count, len(answers) - 1)]


def checked_addresses(addresses: Sequence[IPAddress], policy: AddressPolicy) -> tuple[IPAddress, ...]:
    """The addresses to connect to, in order, once *every* one of them passed the address rules.

    An IPv4-mapped answer is connected to as the IPv4 address it stands for (the form checked).
    Raises ``dns_failed`` for an empty or oversized answer, ``address_refused`` for any refusal.
    """
    if not addresses or len(addresses) > MAX_ADDRESSES:
        raise HttpKitError(HttpKitReason.DNS_FAILED)
    chosen: list[IPAddress] = []
    for address in addresses:
        refusal = classify(address, policy)
        if refusal is not None:
            raise HttpKitError(HttpKitReason.ADDRESS_REFUSED, refusal)
        mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        connect_to: IPAddress = mapped if mapped is not None else address
        if connect_to not in chosen:
            chosen.append(connect_to)
    return tuple(chosen)
