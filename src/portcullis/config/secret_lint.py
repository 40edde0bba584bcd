"""Checks on a gateway's secret references that lint and serve share (config/loader.py).

* every reference is one the grammar knows, and its provider is configured (a vault reference needs
  ``secrets.vault``), including those in a stdio service's ``env`` (the schema cannot tell them apart);
* no stdio service's ``env_passthrough`` names a provider credential (the sealing key's variable, a Vault
  token or AppRole variable) or a variable another reference reads: a child gets only the secrets its
  own configuration declares.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from portcullis.config.model import GatewayConfig, StdioService
from portcullis.config.secret_store import references
from portcullis.config.secrets import is_reference, parse_ref

PROVIDER_TOKEN_ENV = frozenset({"VAULT_TOKEN", "BAO_TOKEN", "VAULT_ROLE_ID", "VAULT_SECRET_ID"})
"""Variables the Vault and OpenBao tools read credentials from, never handed to a child either."""

Loc = tuple[str | int, ...]


def credential_env_names(gateway: GatewayConfig) -> frozenset[str]:
    """Environment variables holding a provider credential or read by any ``secret://env/`` reference."""
    names = set(PROVIDER_TOKEN_ENV) | {gateway.secrets.sealed.key_env}
    refs = list(references(gateway.model_dump(mode="json", exclude={"secrets"})))
    vault = gateway.secrets.vault
    if vault is not None:
        refs += [ref for ref in vault.auth.model_dump().values() if isinstance(ref, str) and is_reference(ref)]
    for ref in refs:
        try:
            parsed = parse_ref(ref)
        except ValueError:
            continue  # reported by secret_problems
        if parsed.provider == "env":
            names.add(parsed.path)
    return frozenset(names)


def secret_problems(gateway: GatewayConfig) -> Iterator[tuple[Loc, str]]:
    """``(location, message)`` for each problem; messages name references and variables, never values."""
    for loc, ref in _located(gateway.model_dump(mode="json", exclude={"secrets"})):
        dotted = ".".join(str(part) for part in loc)
        try:
            parsed = parse_ref(ref)  # the models' patterns check most; a stdio env value has none
        except ValueError as exc:
            yield loc, f"{dotted}: {exc}"
            continue
        if parsed.provider == "vault" and gateway.secrets.vault is None:
            yield loc, f"{dotted}: {ref} needs secrets.vault, which is not configured"
    credentials = credential_env_names(gateway)
    for name, service in gateway.services.items():
        if not isinstance(service, StdioService):
            continue
        for index, variable in enumerate(service.env_passthrough):
            if variable in credentials:
                yield (("services", name, "env_passthrough", index),
                       f"services.{name}.env_passthrough: {variable} holds a secret provider credential or a "
                       "secret another reference reads; declare what the child needs in env: as a secret:// "
                       "reference instead")


def _located(value: Any, loc: Loc = ()) -> Iterator[tuple[Loc, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _located(item, (*loc, key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _located(item, (*loc, index))
    elif isinstance(value, str) and is_reference(value):
        yield loc, value
