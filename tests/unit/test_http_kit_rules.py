"""The HTTP kit's pure parts: URL canonicalisation, URL rules, header and response checks."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from portcullis.kits import http_headers as hh
from portcullis.kits.http import HttpKit, HttpKitConfig, HttpKitResponse
from portcullis.kits.http_errors import MESSAGES, HttpKitError, HttpKitReason
from portcullis.kits.http_resolve import checked_addresses
from portcullis.kits.http_settings import load_http_kit_config
from portcullis.kits.http_url import Target, UrlRule, first_match, parse_target
from portcullis.kits.net_addresses import AddressPolicy, Refusal, classify
from tests.security.http_kit_support import ipv4_spelling

CANONICAL: list[tuple[str, tuple[str, str, int, str]]] = [
    ("HTTP://Example.COM/a/b", ("http", "example.com", 80, "/a/b")),
    ("https://example.com:443/", ("https", "example.com", 443, "/")),
    ("https://example.com:8443", ("https", "example.com", 8443, "/")),
    ("http://example.com./x", ("http", "example.com", 80, "/x")),
    ("http://ex%41mple.com/", ("http", "example.com", 80, "/")),
    ("http://\u2603.com/", ("http", "xn--n3h.com", 80, "/")),
    ("http://\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com/", ("http", "example.com", 80, "/")),
    ("http://example.com/a/./b/../c", ("http", "example.com", 80, "/a/c")),
    ("http://example.com/a/%2e%2E/c", ("http", "example.com", 80, "/c")),
    ("http://example.com\\a\\b", ("http", "example.com", 80, "/a/b")),
    ("http://example.com/a b?q=1 2#frag", ("http", "example.com", 80, "/a%20b?q=1%202")),
    ("http://example.com/caf\u00e9", ("http", "example.com", 80, "/caf%C3%A9")),
    ("http://0x7f.1:00080/", ("http", "127.0.0.1", 80, "/")),
    ("http://[0:0::1]:8080/", ("http", "::1", 8080, "/")),
]


@pytest.mark.parametrize(("url", "expected"), CANONICAL, ids=[row[0] for row in CANONICAL])
def test_url_is_canonicalised_by_the_whatwg_parser(url: str, expected: tuple[str, str, int, str]) -> None:
    """Scheme, host, port and request target come from the parser's one canonical reading."""
    target = parse_target(url)
    assert (target.scheme, target.host, target.port, target.request_target) == expected


def test_authority_brackets_ipv6_and_omits_the_default_port() -> None:
    """The Host header: brackets for IPv6 literals, the port only when not the scheme's default."""
    assert parse_target("http://[::1]:8080/").authority == "[::1]:8080"
    assert parse_target("https://Example.com:443/").authority == "example.com"
    assert parse_target("http://example.com:8080/").authority == "example.com:8080"
    assert parse_target("http://127.1/").literal == ipaddress.IPv4Address("127.0.0.1")


def test_relative_location_is_resolved_against_the_current_url() -> None:
    """A redirect's Location is joined to the current URL by the same parser."""
    base = parse_target("https://example.com/a/b?x").href
    assert parse_target("../c", base=base).href == "https://example.com/c"
    assert parse_target("//other.test/p", base=base).href == "https://other.test/p"
    assert parse_target("?y", base=base).href == "https://example.com/a/b?y"


def test_overlong_url_is_refused() -> None:
    """A URL over 8,192 characters is refused before it is parsed."""
    with pytest.raises(HttpKitError) as caught:
        parse_target("http://example.com/" + "a" * 8200)
    assert caught.value.reason == HttpKitReason.URL_INVALID


RULE = UrlRule("https", "*.Example.com", path_prefix="/api")
MATCHES: list[tuple[str, bool]] = [
    ("https://a.example.com/api", True),
    ("https://a.b.example.com/api/v1?x=1", True),
    ("https://A.EXAMPLE.COM./api/", True),
    ("https://example.com/api", False),  # a wildcard does not match its own suffix
    ("https://evilexample.com/api", False),
    ("https://a.example.com.evil.test/api", False),
    ("https://a.example.com/apix", False),
    ("https://a.example.com/ap", False),
    ("https://a.example.com/api/..%2fadmin", False),
    ("https://a.example.com/api/%2e%2e/admin", False),  # resolved to /admin by the parser
    ("https://a.example.com:8443/api", False),
    ("http://a.example.com/api", False),
    ("https://a.example.com:443/api", True),
]


@pytest.mark.parametrize(("url", "allowed"), MATCHES, ids=[row[0] for row in MATCHES])
def test_rule_matches_scheme_host_port_and_path(url: str, allowed: bool) -> None:
    """A wildcard rule matches subdomains only, on its scheme and default port, under its path prefix."""
    assert RULE.matches(parse_target(url)) is allowed


def test_exact_and_literal_rules() -> None:
    """Exact hosts compare canonical forms; an IPv6 rule host matches the literal in any spelling."""
    assert UrlRule("http", "[::1]", port=8080).matches(parse_target("http://[0::1]:8080/x"))
    assert UrlRule("http", "0x7f.1").host == "127.0.0.1"
    assert UrlRule("http", "B\u00fccher.example").host == "xn--bcher-kva.example"
    assert not UrlRule("http", "example.com").matches(parse_target("http://www.example.com/"))
    with pytest.raises(HttpKitError) as caught:
        first_match((UrlRule("http", "example.com"),), parse_target("http://example.org/"))
    assert caught.value.reason == HttpKitReason.URL_NOT_ALLOWED


@pytest.mark.parametrize(("scheme", "host", "port", "prefix"), [
    ("ftp", "example.com", None, "/"), ("http", "", None, "/"), ("http", "a@b", None, "/"),
    ("http", "example.com:8080", None, "/"), ("http", "example.com/x", None, "/"), ("http", "*.127.0.0.1", None, "/"),
    ("http", "a.*.com", None, "/"), ("http", "**.com", None, "/"), ("http", "example.com", 0, "/"),
    ("http", "example.com", 70000, "/"), ("http", "example.com", None, "api"), ("http", "example.com", None, "/a/../b"),
    ("http", "example.com", None, "/a?b"), ("http", "example.com", None, "/a b"),
])
def test_malformed_rules_are_configuration_errors(scheme: str, host: str, port: int | None, prefix: str) -> None:
    """Schemes other than http(s), hosts that are not hosts, bad ports and non-canonical prefixes."""
    with pytest.raises(ValueError, match="URL rule"):
        UrlRule(scheme, host, port=port, path_prefix=prefix)


def test_config_refuses_an_empty_rule_list_and_bad_limits() -> None:
    """No rules is an error, never "allow all"; limits must be positive."""
    with pytest.raises(ValueError, match="at least one URL rule"):
        HttpKitConfig(rules=())
    with pytest.raises(ValueError, match="positive"):
        HttpKitConfig(rules=(UrlRule("https", "example.com"),), max_response_bytes=0)
    with pytest.raises(ValueError, match="content type"):
        HttpKitConfig(rules=(UrlRule("https", "example.com"),), content_types=frozenset({"text"}))
    with pytest.raises(ValueError, match="user agent"):
        HttpKitConfig(rules=(UrlRule("https", "example.com"),), user_agent="a\r\nb")


@pytest.mark.parametrize(("headers", "body", "refused"), [
    ({"content-type": "application/json"}, b"{}", None),
    ({"content-type": "Application/JSON; charset=utf-8"}, b"{}", None),
    ({"content-type": "application/json", "content-encoding": "identity"}, b"{}", None),
    ({}, b"", None),
    ({"content-encoding": "gzip"}, b"", HttpKitReason.CONTENT_ENCODING_REFUSED),
    ({"content-type": "application/json", "content-encoding": "deflate"}, b"x", HttpKitReason.CONTENT_ENCODING_REFUSED),
    ({"content-type": "application/jsonx"}, b"x", HttpKitReason.CONTENT_TYPE_REFUSED),
    ({"content-type": "text/html"}, b"x", HttpKitReason.CONTENT_TYPE_REFUSED),
    ({"content-type": "application/json/x"}, b"x", HttpKitReason.CONTENT_TYPE_REFUSED),
    ({"content-type": ""}, b"x", HttpKitReason.CONTENT_TYPE_REFUSED),
    ({}, b"x", HttpKitReason.CONTENT_TYPE_REFUSED),
])
def test_response_checks(headers: dict[str, str], body: bytes, refused: HttpKitReason | None) -> None:
    """Encodings other than identity are refused; a non-empty body needs an allowed media type."""
    allowed = hh.allowed_media_types({"application/json"})
    if refused is None:
        hh.check_response(headers, body, allowed)
        return
    with pytest.raises(HttpKitError) as caught:
        hh.check_response(headers, body, allowed)
    assert caught.value.reason == refused


def test_text_decodes_by_charset_and_never_fails() -> None:
    """A declared charset is used; an unknown one or bad bytes fall back without raising."""
    def text(content_type: str, body: bytes) -> str:
        return HttpKitResponse(200, {"content-type": content_type}, body, "http://x/").text()
    assert text("text/plain; charset=ISO-8859-1", b"caf\xe9") == "caf\u00e9"
    assert text('text/plain; charset="utf-8"', b"caf\xc3\xa9") == "caf\u00e9"
    assert text("text/plain; charset=no-such", b"a\xff") == "a\ufffd"
    assert text("text/plain; charset=windows-1252", b"\x80") == "\u20ac"
    for codec in ("punycode", "unicode_escape", "idna", "rot13", "base64", "zlib"):  # not text encodings
        assert text(f"text/plain; charset={codec}", b"\\u0041-x") == "\\u0041-x"


def test_checked_addresses_refuse_the_whole_answer_and_unmap() -> None:
    """One refused address refuses the answer; a mapped answer is connected to as its IPv4 host."""
    ip = ipaddress.ip_address
    policy = AddressPolicy()
    assert checked_addresses([ip("::ffff:8.8.8.8"), ip("8.8.8.8")], policy) == (ip("8.8.8.8"),)
    with pytest.raises(HttpKitError) as caught:
        checked_addresses([ip("8.8.8.8"), ip("10.0.0.1")], policy)
    assert (caught.value.reason, caught.value.address_reason) == (HttpKitReason.ADDRESS_REFUSED, Refusal.PRIVATE)
    for answer in ([], [ip("8.8.8.8")] * 65):
        with pytest.raises(HttpKitError) as caught:
            checked_addresses(answer, policy)
        assert caught.value.reason == HttpKitReason.DNS_FAILED


def test_every_reason_has_a_fixed_message() -> None:
    """The closed set of reasons maps onto fixed messages that name no input."""
    assert set(MESSAGES) == set(HttpKitReason)
    assert all(str(HttpKitError(reason)) == MESSAGES[reason] for reason in HttpKitReason)


def test_target_is_frozen() -> None:
    """A parsed target cannot be changed after its checks."""
    target = parse_target("http://example.com/")
    with pytest.raises(AttributeError):
        target.host = "127.0.0.1"  # type: ignore[misc]
    assert isinstance(target, Target)


# ---------------------------------------------------------------- generated IPv4 host encodings


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1).flatmap(ipv4_spelling))
def test_every_ipv4_spelling_reaches_the_address_check_as_its_number(case: tuple[int, str]) -> None:
    """Whatever the spelling, the host the kit checks is the number it spells, and so is its decision."""
    value, text = case
    target = parse_target(f"http://{text}/")
    assert target.literal is not None
    assert classify(target.literal) == classify(ipaddress.IPv4Address(value))
    assert ipaddress.IPv4Address(value) in (target.literal, getattr(target.literal, "ipv4_mapped", None))


def test_docs_example_builds_a_valid_kit() -> None:
    """The docs/kits.md example's configuration is valid (everything before its first network call)."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "kits.md").read_text()
    block = text.split("## HTTP kit")[1].split("```python\n")[1].split("```")[0]
    setup = block.split("page = await")[0]
    namespace: dict[str, object] = {}
    exec(compile(setup, "docs/kits.md", "exec"), namespace)  # our own documentation
    kit = namespace["kit"]
    assert isinstance(kit, HttpKit) and len(kit.config.rules) == 2


def test_settings_load_into_a_config() -> None:
    """The data form (a service's YAML) validates into the same frozen config."""
    config = load_http_kit_config(yaml.safe_load("""
        rules:
          - {scheme: https, host: "*.example.com", path_prefix: /v2/}
          - {scheme: http, host: 10.20.0.7, port: 8080}
        allow_cidrs: [10.20.0.7/32]
        deny_cidrs: [203.0.113.0/24]
        content_types: [application/json, text/*]
        max_response_bytes: 65536
        timeout_s: 2.5
    """))
    assert config.rules[0] == UrlRule("https", "*.example.com", path_prefix="/v2/")
    assert config.addresses == AddressPolicy.parse(allow=["10.20.0.7/32"], deny=["203.0.113.0/24"])
    assert (config.max_response_bytes, config.timeout_s, config.max_redirects) == (65536, 2.5, 5)
    assert config.content_types == frozenset({"application/json", "text/*"})


@pytest.mark.parametrize(("data", "problem"), [
    ({}, "rules"),
    ({"rules": []}, "rules"),
    ({"rules": [{"scheme": "https", "host": "a.test"}], "timeout": 5}, "timeout"),
    ({"rules": [{"scheme": "https", "host": "a.test", "paths": "/"}]}, "rules.0.paths"),
    ({"rules": [{"scheme": "https", "host": "a.test", "port": "443"}]}, "rules.0.port"),
    ({"rules": [{"scheme": "https", "host": "a.test"}], "max_response_bytes": 0}, "max_response_bytes"),
    ({"rules": [{"scheme": "https", "host": "a.test"}], "max_redirects": 100}, "max_redirects"),
])
def test_settings_refuse_unknown_keys_and_bad_values(data: dict[str, object], problem: str) -> None:
    """Unknown keys, wrong types and out-of-range limits are errors that name the field."""
    with pytest.raises(ValueError, match=f"^HTTP kit setting {re.escape(problem)}:"):
        load_http_kit_config(data)


@pytest.mark.parametrize("data", [
    {"rules": [{"scheme": "ftp", "host": "a.test"}]},
    {"rules": [{"scheme": "https", "host": "a.test"}], "allow_cidrs": ["0.0.0.0/0"]},
    {"rules": [{"scheme": "https", "host": "a.test"}], "caller_headers": ["x-forwarded-for"]},
])
def test_settings_keep_the_config_checks(data: dict[str, object]) -> None:
    """The data form cannot bypass the rule, address-list and header checks."""
    with pytest.raises(ValueError):
        load_http_kit_config(data)


async def test_kit_refuses_a_missing_ca_file_and_other_methods(tmp_path: Path) -> None:
    """A ca_file that cannot be loaded is a configuration error at construction; only GET and POST exist."""
    rules = (UrlRule("https", "example.com"),)
    for bad in (tmp_path / "missing.pem", tmp_path / "empty.pem"):
        bad.write_text("not a certificate") if bad.name == "empty.pem" else None
        with pytest.raises(ValueError, match="ca_file"):
            HttpKit(HttpKitConfig(rules=rules, ca_file=str(bad)))
    kit = HttpKit(HttpKitConfig(rules=rules))
    with pytest.raises(ValueError, match="GET or POST"):
        await kit.fetch("DELETE", "https://example.com/")
    with pytest.raises(ValueError, match="GET or POST"):
        await kit.fetch("POST", "https://example.com/", body="text")  # type: ignore[arg-type]
