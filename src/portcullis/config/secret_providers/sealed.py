"""``secret://sealed/<path>#field``: one key of a JSON mapping sealed with AES-256-GCM.

The file is an envelope ``{"v": 1, "alg": "AES-256-GCM", "nonce": <b64>, "ct": <b64>}``; the key is
32 bytes, base64, in an environment variable (``secrets.sealed.key_env``, default
``PORTCULLIS_SEALED_KEY``) that stdio services may never be handed. The envelope's version and
algorithm are bound as associated data, so a tampered header fails like a tampered ciphertext.
``portcullis secrets seal`` writes such files (cli/secrets_cmd.py).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from portcullis.config.secret_providers.base import SecretUnavailable, pick_field, read_bounded, utf8
from portcullis.config.secrets import SecretRef

DEFAULT_KEY_ENV = "PORTCULLIS_SEALED_KEY"
ALG = "AES-256-GCM"
_AAD = b"portcullis-sealed:v1:" + ALG.encode()


def generate_key() -> str:
    """A new random key, base64 (what ``key_env`` holds)."""
    return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()


def decode_key(text: str | None) -> bytes:
    if text is None:
        raise SecretUnavailable("the sealing key's environment variable is not set")
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SecretUnavailable("the sealing key is not base64") from None
    if len(key) != 32:
        raise SecretUnavailable("the sealing key is not 32 bytes")
    return key


def seal(mapping: Mapping[str, str], key: bytes) -> bytes:
    """The envelope holding ``mapping`` (string values only), encrypted under ``key``."""
    if not mapping or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in mapping.items()):
        raise ValueError("a sealed file holds a non-empty mapping of names to non-empty strings")
    nonce = os.urandom(12)
    ct = AESGCM(key).encrypt(nonce, json.dumps(dict(mapping), sort_keys=True).encode(), _AAD)
    envelope = {"v": 1, "alg": ALG, "nonce": base64.b64encode(nonce).decode(), "ct": base64.b64encode(ct).decode()}
    return (json.dumps(envelope, indent=2) + "\n").encode()


def unseal(data: bytes, key: bytes) -> Any:
    """The mapping sealed in ``data``; SecretUnavailable (no detail) if it is not one sealed with ``key``."""
    try:
        envelope = json.loads(utf8(data))
        if not isinstance(envelope, dict) or envelope.get("v") != 1 or envelope.get("alg") != ALG:
            raise ValueError
        nonce = base64.b64decode(envelope["nonce"], validate=True)
        ct = base64.b64decode(envelope["ct"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise SecretUnavailable("the file is not a sealed envelope (v 1, AES-256-GCM)") from None
    if len(nonce) != 12:
        raise SecretUnavailable("the file is not a sealed envelope (v 1, AES-256-GCM)")
    try:
        plain = AESGCM(key).decrypt(nonce, ct, _AAD)
    except InvalidTag:
        raise SecretUnavailable("the sealed file cannot be opened: wrong key, or it was altered") from None
    try:
        return json.loads(plain)
    except ValueError:
        raise SecretUnavailable("the sealed file does not hold a JSON mapping") from None


class SealedProvider:
    def __init__(self, key_env: str = DEFAULT_KEY_ENV, environ: Mapping[str, str] | None = None) -> None:
        self.key_env = key_env
        self._environ = environ

    def read(self, ref: SecretRef) -> str:
        key = decode_key((os.environ if self._environ is None else self._environ).get(self.key_env))
        return pick_field(unseal(read_bounded(Path(ref.path)), key), ref.field)
