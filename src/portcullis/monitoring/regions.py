"""The region a call came from, for the ``cross_region_spike`` rule (docs/alerts.md#regions).

Two signals, in this order:

1. the **source address** of the connection (the TCP peer the transport saw; the gateway never reads
   ``X-Forwarded-For``) inside one of the CIDRs of ``alerts.regions`` — the longest prefix wins;
2. else the principal **attribute** named by ``alerts.region_attribute`` (an attribute the issuer's claim
   map fills from a token claim): for a gateway behind a proxy, where every peer is the proxy.

Neither: the region is unknown — ``None`` (not counted), or ``"unknown"`` when
``alerts.count_unknown_region`` is on. The address wins over the attribute because the gateway observes
it; a claim is what the identity provider asserted when the token was minted, and a stolen token carries
its owner's claim everywhere.

The lookup is a few dict probes, not a scan of the CIDRs: per address family, the distinct prefix
lengths configured (longest first), each a dict from the masked network number to the region; the last
4,096 addresses' regions are remembered (cleared whole when full, so bounded whatever arrives). It runs
in the monitor's background task, never on the request path.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping, Sequence
from typing import Any

MAX_REGION_CHARS = 64
CACHE_SIZE = 4096  # addresses whose region is remembered (cleared whole when full)
_MAPPED = b"\x00" * 10 + b"\xff\xff"  # ::ffff:a.b.c.d
UNKNOWN = "unknown"


class RegionMap:
    """CIDRs → region names; :meth:`region` resolves an address (and a principal's attribute)."""

    __slots__ = ("_attribute", "_by_family", "_cache", "_unknown")

    def __init__(self, regions: Mapping[str, Sequence[str]], *, attribute: str | None = None,
                 count_unknown: bool = False) -> None:
        """``regions``: name → CIDRs. The same network under two names is a :class:`ValueError`."""
        tables: dict[int, dict[int, dict[int, str]]] = {4: {}, 6: {}}
        for name, cidrs in regions.items():
            for cidr in cidrs:
                net = ipaddress.ip_network(cidr, strict=False)
                by_prefix = tables[net.version].setdefault(net.prefixlen, {})
                bits = net.max_prefixlen - net.prefixlen
                number = int(net.network_address) >> bits
                if by_prefix.get(number, name) != name:
                    raise ValueError(f"network {net} is in two regions")
                by_prefix[number] = name
        # (shift, table) longest prefix first, per family
        self._by_family = {version: tuple((max_len - prefix, tables[version][prefix])
                                          for prefix in sorted(tables[version], reverse=True))
                           for version, max_len in ((4, 32), (6, 128))}
        self._attribute, self._unknown = attribute, UNKNOWN if count_unknown else None
        self._cache: dict[str, str | None] = {}  # address -> region (background task only)

    @property
    def configured(self) -> bool:
        """Whether any signal is configured (else the rule has nothing to count)."""
        return self._attribute is not None or any(self._by_family.values())

    def of_address(self, address: object) -> str | None:
        """The region whose CIDRs hold ``address`` (an IP literal; a zone id is ignored), else None."""
        if not isinstance(address, str):
            return None
        cache = self._cache
        if address in cache:
            return cache[address]
        if len(cache) >= CACHE_SIZE:  # bounded whatever addresses arrive: start over, O(1) amortised
            cache.clear()
        region = cache[address] = self._lookup(address)
        return region

    def _lookup(self, address: str) -> str | None:
        try:  # inet_pton: several times cheaper than ipaddress, and as strict
            if ":" in address:
                packed = socket.inet_pton(socket.AF_INET6, address.split("%", 1)[0])
                if packed[:12] == _MAPPED:
                    packed = packed[12:]
            else:
                packed = socket.inet_pton(socket.AF_INET, address)
        except (OSError, ValueError):
            return None
        number = int.from_bytes(packed, "big")
        for shift, table in self._by_family[4 if len(packed) == 4 else 6]:
            region = table.get(number >> shift)
            if region is not None:
                return region
        return None

    def region(self, address: object, principal: Any) -> str | None:
        """The call's region: the address's, else the principal attribute's, else unknown (see the module)."""
        region = self.of_address(address)
        if region is None and self._attribute is not None:
            value = principal.attributes.get(self._attribute)
            if isinstance(value, str) and value:
                region = value[:MAX_REGION_CHARS]
        return region if region is not None else self._unknown
