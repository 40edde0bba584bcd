"""The outbound address decision (portcullis.kits.net_addresses): every special range, every IPv6 form
that embeds IPv4, and the operator's allow and deny lists."""

from __future__ import annotations

import ipaddress

import pytest

from portcullis.kits.net_addresses import AddressPolicy, Refusal, classify, embedded_ipv4

R = Refusal

TABLE: list[tuple[str, Refusal | None]] = [
    # public unicast: allowed
    ("8.8.8.8", None),
    ("1.1.1.1", None),
    ("93.184.215.14", None),
    ("100.63.255.255", None),  # just below CGNAT
    ("100.128.0.0", None),  # just above CGNAT
    ("172.15.255.255", None),
    ("172.32.0.0", None),
    ("169.253.255.255", None),
    ("192.0.1.1", None),
    ("198.17.255.255", None),
    ("198.20.0.0", None),
    ("223.255.255.255", None),
    ("2606:4700:4700::1111", None),
    ("2a00:1450:4001:80b::200e", None),
    ("2001:4860:4860::8888", None),
    ("::ffff:8.8.8.8", None),  # mapped public IPv4
    ("64:ff9b::808:808", None),  # NAT64 of 8.8.8.8
    # loopback
    ("127.0.0.1", R.LOOPBACK),
    ("127.0.0.0", R.LOOPBACK),
    ("127.1.2.3", R.LOOPBACK),
    ("127.255.255.255", R.LOOPBACK),
    ("::1", R.LOOPBACK),
    ("::ffff:127.0.0.1", R.LOOPBACK),
    ("::ffff:7f00:1", R.LOOPBACK),
    ("0:0:0:0:0:ffff:127.0.0.1", R.LOOPBACK),
    ("64:ff9b::7f00:1", R.LOOPBACK),
    ("64:ff9b::127.0.0.1", R.LOOPBACK),
    # unspecified / this network
    ("0.0.0.0", R.UNSPECIFIED),
    ("0.1.2.3", R.UNSPECIFIED),
    ("::", R.UNSPECIFIED),
    ("::ffff:0.0.0.0", R.UNSPECIFIED),
    ("64:ff9b::", R.UNSPECIFIED),
    # private
    ("10.0.0.1", R.PRIVATE),
    ("10.255.255.255", R.PRIVATE),
    ("172.16.0.1", R.PRIVATE),
    ("172.31.255.255", R.PRIVATE),
    ("192.168.0.1", R.PRIVATE),
    ("192.168.255.255", R.PRIVATE),
    ("::ffff:10.0.0.1", R.PRIVATE),
    ("::ffff:192.168.1.1", R.PRIVATE),
    ("64:ff9b::a00:1", R.PRIVATE),
    ("64:ff9b:1::a00:1", R.PRIVATE),  # local-use NAT64, refused whole
    ("64:ff9b:1:ffff::808:808", R.PRIVATE),
    ("fec0::1", R.PRIVATE),  # deprecated site-local
    # link-local
    ("169.254.0.1", R.LINK_LOCAL),
    ("169.254.255.255", R.LINK_LOCAL),
    ("fe80::1", R.LINK_LOCAL),
    ("febf:ffff::1", R.LINK_LOCAL),
    ("fe80::1%eth0", R.LINK_LOCAL),
    ("2001:4860::1%1", R.LINK_LOCAL),  # any zone index: link-scoped
    ("::ffff:169.254.1.1", R.LINK_LOCAL),
    # shared address space (CGNAT)
    ("100.64.0.0", R.SHARED_ADDRESS),
    ("100.64.0.1", R.SHARED_ADDRESS),
    ("100.127.255.255", R.SHARED_ADDRESS),
    ("::ffff:100.64.1.1", R.SHARED_ADDRESS),
    # cloud metadata, in every form
    ("169.254.169.254", R.METADATA),
    ("169.254.170.2", R.METADATA),
    ("169.254.169.253", R.METADATA),
    ("169.254.169.123", R.METADATA),
    ("169.254.0.23", R.METADATA),
    ("100.100.100.200", R.METADATA),
    ("192.0.0.192", R.METADATA),
    ("168.63.129.16", R.METADATA),
    ("fd00:ec2::254", R.METADATA),
    ("fd00:ec2::253", R.METADATA),
    ("fd00:ec2::123", R.METADATA),
    ("fd00:ec2:0:0:0:0:0:254", R.METADATA),
    ("::ffff:169.254.169.254", R.METADATA),
    ("::ffff:a9fe:a9fe", R.METADATA),
    ("64:ff9b::a9fe:a9fe", R.METADATA),
    ("64:ff9b::169.254.169.254", R.METADATA),
    # unique local
    ("fc00::1", R.UNIQUE_LOCAL),
    ("fd00::1", R.UNIQUE_LOCAL),
    ("fd12:3456:789a::1", R.UNIQUE_LOCAL),
    ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", R.UNIQUE_LOCAL),
    # multicast and broadcast
    ("224.0.0.1", R.MULTICAST),
    ("239.255.255.250", R.MULTICAST),
    ("255.255.255.255", R.MULTICAST),
    ("ff02::1", R.MULTICAST),
    ("ff05::1:3", R.MULTICAST),
    ("::ffff:224.0.0.251", R.MULTICAST),
    # reserved, documentation, benchmarking
    ("192.0.0.1", R.RESERVED),
    ("192.0.0.170", R.RESERVED),
    ("192.0.2.1", R.RESERVED),
    ("198.51.100.7", R.RESERVED),
    ("203.0.113.9", R.RESERVED),
    ("198.18.0.1", R.RESERVED),
    ("198.19.255.255", R.RESERVED),
    ("192.88.99.1", R.RESERVED),
    ("240.0.0.1", R.RESERVED),
    ("255.255.255.254", R.RESERVED),
    ("::ffff:192.0.2.1", R.RESERVED),
    ("2001:db8::1", R.RESERVED),
    ("3fff::1", R.RESERVED),
    ("100::1", R.RESERVED),
    ("2001:2::1", R.RESERVED),  # benchmarking, inside the IETF block
    ("2001:10::1", R.RESERVED),  # ORCHID
    ("5f00::1", R.RESERVED),
    ("4000::1", R.RESERVED),  # outside global unicast
    ("e000::1", R.RESERVED),
    ("1::1", R.RESERVED),
    # IPv4-compatible and SIIT forms: refused whole (reserved), whatever they embed
    ("::127.0.0.1", R.RESERVED),
    ("::7f00:1", R.RESERVED),
    ("::8.8.8.8", R.RESERVED),
    ("::ffff:0:127.0.0.1", R.RESERVED),
    ("::ffff:0:808:808", R.RESERVED),
    # 6to4 and Teredo: refused whole
    ("2002:7f00:1::1", R.IPV4_TRANSITION),
    ("2002:a9fe:a9fe::1", R.IPV4_TRANSITION),
    ("2002:808:808::1", R.IPV4_TRANSITION),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", R.IPV4_TRANSITION),
    ("2001::1", R.IPV4_TRANSITION),
]


@pytest.mark.parametrize(("text", "expected"), TABLE, ids=[row[0] for row in TABLE])
def test_address_is_classified(text: str, expected: Refusal | None) -> None:
    """Each address gets the decision the module's rules give it, without any operator lists."""
    assert classify(ipaddress.ip_address(text)) == expected


OPERATOR = AddressPolicy.parse(allow=["127.0.0.1/32", "10.1.0.0/16", "fd12:3456:789a::/48", "169.254.0.0/16",
                                      "192.0.2.0/24"],
                               deny=["10.1.2.0/24", "93.184.215.0/24", "2606:4700::/32"])
LISTS: list[tuple[str, Refusal | None]] = [
    ("127.0.0.1", None),  # the one deliberate exception
    ("::ffff:127.0.0.1", None),  # the same host, mapped
    ("127.0.0.2", R.LOOPBACK),  # next to it: still refused
    ("::1", R.LOOPBACK),
    ("10.1.9.9", None),
    ("10.2.0.1", R.PRIVATE),
    ("10.1.2.3", R.DENIED),  # deny wins over allow
    ("::ffff:10.1.2.3", R.DENIED),
    ("fd12:3456:789a::5", None),
    ("fd12:3456:789b::5", R.UNIQUE_LOCAL),
    ("169.254.1.1", None),
    ("169.254.169.254", R.METADATA),  # an allow list never reaches metadata
    ("169.254.170.2", R.METADATA),
    ("192.0.2.10", None),
    ("93.184.215.14", R.DENIED),  # deny refuses public addresses too
    ("64:ff9b::5db8:d70e", R.DENIED),  # ... in their NAT64 form
    ("2606:4700:4700::1111", R.DENIED),
    ("8.8.8.8", None),
]


@pytest.mark.parametrize(("text", "expected"), LISTS, ids=[row[0] for row in LISTS])
def test_operator_lists_make_exceptions_and_refuse_more(text: str, expected: Refusal | None) -> None:
    """Allow entries open exactly the named networks, deny entries win over them, and neither list
    reaches metadata, unspecified or multicast addresses."""
    assert classify(ipaddress.ip_address(text), OPERATOR) == expected


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "0.0.0.0/8", "::/0", "::ffff:0:0/96", "2000::/3", "127.0.0.0/8"])
def test_allow_list_can_never_reach_unspecified_or_metadata_or_switch_itself_off(cidr: str) -> None:
    """Too-wide allow entries are refused at configuration; the narrower ones still keep rule 3."""
    try:
        policy = AddressPolicy.parse(allow=[cidr])
    except ValueError as exc:
        assert str(exc) == "allow-list entry is too wide"
        return
    assert classify(ipaddress.ip_address("0.0.0.0"), policy) == R.UNSPECIFIED
    assert classify(ipaddress.ip_address("::ffff:169.254.169.254"), policy) == R.METADATA


@pytest.mark.parametrize("cidr", ["10.0.0.1/8", "not-an-address", "10.0.0.0/33", "fe80::/129", "", "10.0.0.0/8 "])
def test_malformed_list_entries_are_refused_with_a_fixed_message(cidr: str) -> None:
    """A host-bits-set, malformed or out-of-range CIDR is a configuration error naming no input."""
    with pytest.raises(ValueError, match=r"^address list entry is not a CIDR network$"):
        AddressPolicy.parse(deny=[cidr])


def test_embedded_ipv4_reads_mapped_and_nat64_forms_only() -> None:
    """Only the mapped and well-known NAT64 forms are read as the IPv4 host they stand for."""
    assert embedded_ipv4(ipaddress.ip_address("::ffff:1.2.3.4")) == ipaddress.IPv4Address("1.2.3.4")
    assert embedded_ipv4(ipaddress.ip_address("64:ff9b::102:304")) == ipaddress.IPv4Address("1.2.3.4")
    for other in ("1.2.3.4", "::1.2.3.4", "2002:102:304::1", "64:ff9b:1::102:304"):
        assert embedded_ipv4(ipaddress.ip_address(other)) is None


def test_every_refusal_reason_is_reachable() -> None:
    """The closed set has no dead member: each reason is produced by some row above."""
    seen = {expected for _, expected in TABLE + LISTS if expected is not None}
    assert seen == set(Refusal)
