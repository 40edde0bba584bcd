"""The development token issuer: signs tokens locally so the embedded default works alone.

DEVELOPMENT ONLY. Its private key sits in the state directory; anyone who can read that file can
mint tokens for any user. The gateway trusts it only when ``identity.allow_insecure_dev_issuer``
is set, and says so in a warning at every start.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from portcullis.identity.issuers import IssuerConfig, PersonSignal
from portcullis.identity.minting import b64url, jwk_thumbprint, public_jwk
from portcullis.identity.state_dir import create_private_once, write_private

DEV_ISSUER = "portcullis-dev://local"
# The development issuer's positive person signal: `token issue --user bob` (no --agent) is bob's own.
PERSON_CLAIM, PERSON_VALUE = "principal_type", "user"
_KEY_FILE = "dev-issuer-key.pem"
_JWKS_FILE = "dev-issuer-jwks.json"


def _load_or_create_key(state_dir: Path) -> Ed25519PrivateKey:
    path = state_dir / _KEY_FILE
    if not path.exists():
        # processes sharing a state directory (replicas, a CLI beside the gateway) race here: the
        # first key created wins and every other process reads it, never a key of its own
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        create_private_once(path, pem)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ValueError("the development issuer key must be Ed25519")
    return loaded


def dev_issuer_config(state_dir: Path, audience: str) -> IssuerConfig:
    """The issuer entry that trusts the local development key (creating it on first use)."""
    key = _load_or_create_key(state_dir)
    jwk = public_jwk(key)
    jwk.update(kid=jwk_thumbprint(jwk), use="sig", alg="EdDSA")
    write_private(state_dir / _JWKS_FILE, json.dumps({"keys": [jwk]}).encode())
    return IssuerConfig(name="dev", issuer=DEV_ISSUER, jwks_file=str(state_dir / _JWKS_FILE),
                        algorithms=("EdDSA",), audience=audience,
                        person=PersonSignal(claim=PERSON_CLAIM, equals=PERSON_VALUE))


def issue_token(state_dir: Path, *, audience: str, user: str | None, agent: str | None, client: str | None,
                scopes: Sequence[str], tenant: str | None = None, roles: Sequence[str] = (),
                source_app: str | None = None, ttl_s: int = 3600, now: float | None = None,
                extra: dict[str, Any] | None = None) -> str:
    """Sign an access token with the development key (EdDSA, ``typ: at+jwt``).

    A token for a user and no agent says so (``principal_type: user``, the development issuer's
    person signal); one naming an agent says ``agent``, else ``client``. ``extra`` overrides any claim.
    """
    key = _load_or_create_key(state_dir)
    jwk = public_jwk(key)
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"iss": DEV_ISSUER, "aud": audience, "sub": user or agent or client or "anonymous",
                              "iat": issued, "nbf": issued, "exp": issued + ttl_s, "jti": secrets.token_hex(16),
                              "scope": " ".join(scopes), "client_id": client or agent or user or "dev-client"}
    kind = "agent" if agent else PERSON_VALUE if user else "client"
    optional = {"agent_id": agent, "tenant": tenant, "source_app": source_app, "roles": list(roles) or None,
                PERSON_CLAIM: kind}
    claims.update({k: v for k, v in optional.items() if v is not None})
    claims.update(extra or {})
    header = {"alg": "EdDSA", "typ": "at+jwt", "kid": jwk_thumbprint(jwk)}
    signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                     b64url(json.dumps(claims, separators=(",", ":")).encode()))
    return signing_input + "." + b64url(key.sign(signing_input.encode()))
