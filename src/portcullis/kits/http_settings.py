"""The HTTP kit's configuration as data (a service's YAML or JSON), validated once into an
:class:`~portcullis.kits.http.HttpKitConfig`.

Unknown keys are errors; units are in the names. Every field, with its default::

    rules:                      # required, at least one
      - scheme: https           # http | https
        host: api.example.com   # exact, "*.suffix" (subdomains), or "*" (any host; addresses still checked)
        port: 8443              # default: the scheme's
        path_prefix: /v2/       # default "/"
    allow_cidrs: []             # address exceptions (never metadata, unspecified, multicast; <= /8, /32)
    deny_cidrs: []              # refused even when public; wins over allow_cidrs
    caller_headers: [accept, accept-language, content-type, if-match, if-none-match,
                     if-modified-since, if-unmodified-since, cache-control]
    content_types: [application/json, text/plain]   # type/subtype or type/*
    max_response_bytes: 1048576
    max_redirects: 5
    timeout_s: 15               # the whole fetch, redirects and lookups included
    connect_timeout_s: 5        # each connection attempt (and TLS handshake)
    ca_file: null               # PEM bundle to trust for https instead of the system's
    user_agent: portcullis-http-kit
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from portcullis.kits.http import HttpKitConfig
from portcullis.kits.http_headers import DEFAULT_CALLER_HEADERS
from portcullis.kits.http_url import UrlRule
from portcullis.kits.net_addresses import AddressPolicy


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


class UrlRuleSettings(_Strict):
    scheme: StrictStr
    host: StrictStr
    port: StrictInt | None = None
    path_prefix: StrictStr = "/"


class HttpKitSettings(_Strict):
    rules: list[UrlRuleSettings] = Field(min_length=1)
    allow_cidrs: list[StrictStr] = []
    deny_cidrs: list[StrictStr] = []
    caller_headers: list[StrictStr] = sorted(DEFAULT_CALLER_HEADERS)
    content_types: list[StrictStr] = ["application/json", "text/plain"]
    max_response_bytes: StrictInt = Field(1024 * 1024, gt=0)
    max_redirects: StrictInt = Field(5, ge=0, le=20)
    timeout_s: float = Field(15.0, gt=0)
    connect_timeout_s: float = Field(5.0, gt=0)
    ca_file: StrictStr | None = None
    user_agent: StrictStr = "portcullis-http-kit"


def load_http_kit_config(data: Mapping[str, Any]) -> HttpKitConfig:
    """Validate ``data`` into a config; raises ``ValueError`` naming the first problem's field."""
    try:
        settings = HttpKitSettings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top)"
        raise ValueError(f"HTTP kit setting {where}: {first['msg']}") from None
    rules = tuple(UrlRule(rule.scheme, rule.host, port=rule.port, path_prefix=rule.path_prefix)
                  for rule in settings.rules)
    return HttpKitConfig(
        rules=rules,
        addresses=AddressPolicy.parse(allow=settings.allow_cidrs, deny=settings.deny_cidrs),
        caller_headers=frozenset(settings.caller_headers),
        content_types=frozenset(settings.content_types),
        max_response_bytes=settings.max_response_bytes,
        max_redirects=settings.max_redirects,
        timeout_s=settings.timeout_s,
        connect_timeout_s=settings.connect_timeout_s,
        ca_file=settings.ca_file,
        user_agent=settings.user_agent,
    )
