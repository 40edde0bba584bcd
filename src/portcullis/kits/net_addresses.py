"""May an outbound connection go to this IP address? A pure decision, shared by the HTTP kit and
the sandboxed stdio services' egress proxy.

:func:`classify` answers ``None`` (allowed) or one :class:`Refusal` from a closed set. The rules,
in the order they apply:

1. **Scoped addresses** (``fe80::1%eth0``): refused as ``link_local`` — a zone only means
   something on one link.
2. **Embedded IPv4.** An IPv4-mapped address ``::ffff:a.b.c.d`` *is* the IPv4 host (a dual-stack
   socket connects to it), and the well-known NAT64 prefix ``64:ff9b::/96`` is translated to it
   by the network's NAT64 gateway: both are decided as the embedded IPv4 address (the operator's
   lists are matched against both forms). Every other IPv6 form that carries an IPv4 address is
   refused whole, whatever it embeds: IPv4-compatible ``::a.b.c.d`` and SIIT ``::ffff:0:a.b.c.d``
   (inside ``::/8``, ``reserved``), 6to4 ``2002::/16`` and Teredo ``2001::/32``
   (``ipv4_transition``: deprecated tunnels whose far end a local relay or tunnel interface
   picks from the embedded address), local-use NAT64 ``64:ff9b:1::/48`` (``private``).
3. **Never reachable, whatever the operator allows**: cloud metadata endpoints (``metadata``),
   the unspecified / this-network addresses (``unspecified``: connecting to ``0.0.0.0`` reaches
   the local host), multicast and the IPv4 broadcast address (``multicast``).
4. **The operator's deny list** (``denied``): refuses any address inside it, even public ones.
5. **The operator's allow list**: an exception list that lets a deliberately named internal
   address through (rule 6 is skipped). It never overrides rules 1-4.
6. **Special-purpose ranges** (IANA registries, RFC 6890 and successors): loopback, private,
   link-local, shared address space (CGNAT ``100.64.0.0/10``), unique local ``fc00::/7``,
   deprecated site-local, and everything reserved, documentation, benchmarking or not global
   unicast (``reserved``). An IPv6 address outside ``2000::/3`` is ``reserved``.

The tables are written out here rather than taken from ``ipaddress``'s ``is_private`` and
``is_global``, whose answers changed between Python patch releases.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: the widest network an allow-list entry may name (``0.0.0.0/0`` would switch the check off)
MIN_ALLOW_PREFIX = {4: 8, 6: 32}


class Refusal(StrEnum):
    """Why an address is refused (the closed set; the value is the stable wire name)."""

    LOOPBACK = "loopback"
    PRIVATE = "private"
    LINK_LOCAL = "link_local"
    SHARED_ADDRESS = "shared_address"  # RFC 6598 carrier-grade NAT, 100.64.0.0/10
    METADATA = "metadata"
    UNIQUE_LOCAL = "unique_local"
    MULTICAST = "multicast"
    UNSPECIFIED = "unspecified"
    RESERVED = "reserved"
    IPV4_TRANSITION = "ipv4_transition"
    DENIED = "denied"


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


# Rule 3: never reachable. Metadata services by provider (all documented by the provider):
# AWS IMDS, GCP, Azure, OpenStack, Oracle, DigitalOcean, Hetzner: 169.254.169.254; AWS ECS task
# metadata 169.254.170.2; AWS DNS / time sync 169.254.169.253 / .123; AWS IPv6 fd00:ec2::254 /
# ::253 / ::123; Alibaba 100.100.100.200; Tencent 169.254.0.23; Oracle (legacy) 192.0.0.192;
# Azure WireServer 168.63.129.16 (a public address that answers only inside Azure).
METADATA = _nets("169.254.169.254/32", "169.254.170.2/32", "169.254.169.253/32", "169.254.169.123/32",
                 "169.254.0.23/32", "100.100.100.200/32", "192.0.0.192/32", "168.63.129.16/32",
                 "fd00:ec2::254/128", "fd00:ec2::253/128", "fd00:ec2::123/128")
_NEVER: tuple[tuple[tuple[IPNetwork, ...], Refusal], ...] = (
    (METADATA, Refusal.METADATA),
    (_nets("0.0.0.0/8", "::/128"), Refusal.UNSPECIFIED),
    (_nets("224.0.0.0/4", "255.255.255.255/32", "ff00::/8"), Refusal.MULTICAST),
)

# Rule 6, IPv4 (the first match wins; an address in none of them is allowed).
_SPECIAL_V4: tuple[tuple[tuple[IPNetwork, ...], Refusal], ...] = (
    (_nets("127.0.0.0/8"), Refusal.LOOPBACK),
    (_nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"), Refusal.PRIVATE),
    (_nets("169.254.0.0/16"), Refusal.LINK_LOCAL),
    (_nets("100.64.0.0/10"), Refusal.SHARED_ADDRESS),
    # IETF protocol assignments (DS-Lite, NAT64 discovery, ...), documentation TEST-NET-1/2/3,
    # benchmarking, the deprecated 6to4 relay anycast, and the old class E (240/4)
    (_nets("192.0.0.0/24", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "198.18.0.0/15",
           "192.88.99.0/24", "240.0.0.0/4"), Refusal.RESERVED),
)

# Rule 6, IPv6. ``::/8`` holds loopback, IPv4-compatible and SIIT forms (the mapped form is decided
# by rule 2 before this table); ``2001::/23`` is the IETF protocol assignments block.
_SPECIAL_V6: tuple[tuple[tuple[IPNetwork, ...], Refusal], ...] = (
    (_nets("::1/128"), Refusal.LOOPBACK),
    (_nets("2002::/16", "2001::/32"), Refusal.IPV4_TRANSITION),
    (_nets("64:ff9b:1::/48", "fec0::/10"), Refusal.PRIVATE),
    (_nets("fe80::/10"), Refusal.LINK_LOCAL),
    (_nets("fc00::/7"), Refusal.UNIQUE_LOCAL),
    # IPv4-compatible / SIIT, discard-only, IETF protocol assignments, documentation (old and
    # RFC 9637), SRv6 SIDs
    (_nets("::/8", "100::/64", "2001::/23", "2001:db8::/32", "3fff::/20", "5f00::/16"), Refusal.RESERVED),
)
_GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """The operator's lists: ``allow`` names exceptions to rule 6, ``deny`` refuses more (rule 4)."""

    allow: tuple[IPNetwork, ...] = ()
    deny: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, *, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> AddressPolicy:
        """Build from CIDR strings; raises ``ValueError`` (fixed message) for a malformed or too
        wide entry. Host bits must be zero (``10.0.0.1/8`` is a typo, not a network)."""
        return cls(tuple(_cidr(text, allow=True) for text in allow), tuple(_cidr(text, allow=False) for text in deny))


def _cidr(text: str, *, allow: bool) -> IPNetwork:
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError:
        raise ValueError("address list entry is not a CIDR network") from None
    if allow and network.prefixlen < MIN_ALLOW_PREFIX[network.version]:
        raise ValueError("allow-list entry is too wide")
    return network


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped or well-known NAT64 IPv6 address stands for (rule 2)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def classify(address: IPAddress, policy: AddressPolicy | None = None) -> Refusal | None:
    """``None`` if a connection may go to ``address``, else why not (rules 1-6 above)."""
    policy = policy or _NO_LISTS
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        return Refusal.LINK_LOCAL
    inner = embedded_ipv4(address)
    forms: tuple[IPAddress, ...] = (address,) if inner is None else (address, inner)
    target = forms[-1]  # the host the connection reaches
    for networks, reason in _NEVER:
        if _within(target, networks):
            return reason
    if any(_within(form, policy.deny) for form in forms):
        return Refusal.DENIED
    if any(_within(form, policy.allow) for form in forms):
        return None
    return _special(target)


def _special(address: IPAddress) -> Refusal | None:
    table = _SPECIAL_V4 if address.version == 4 else _SPECIAL_V6
    for networks, reason in table:
        if _within(address, networks):
            return reason
    if address.version == 6 and address not in _GLOBAL_UNICAST_V6:
        return Refusal.RESERVED
    return None


def _within(address: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    return any(address.version == network.version and address in network for network in networks)


_NO_LISTS = AddressPolicy()
