"""Per-call cost of identity on the request path, in microseconds (no network).

Measures, with the gateway's own objects: authenticating a bearer token the first time (full
signature check and claim mapping) and again (the verified-token cache also holds the mapped
principal, so only the revocation check runs); the claim mapping alone, for ASCII and for
non-ASCII claims; and minting the per-call upstream token. Run:
``.venv/bin/python -m bench.auth_micro``.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from portcullis.identity.authenticate import Authenticator
from portcullis.identity.claims import principal_from_claims
from portcullis.identity.config import ClaimMap
from portcullis.identity.dev_issuer import dev_issuer_config, issue_token
from portcullis.identity.jwks import JwksCache
from portcullis.identity.jwt_verify import BearerVerifier
from portcullis.identity.minting import KeyRing, TokenMinter, service_audience
from portcullis.identity.revocation import SqliteRevocations

AUDIENCE = "http://127.0.0.1:8080/mcp"


def _p50_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


async def main(n: int = 5000) -> None:
    state = Path(tempfile.mkdtemp(prefix="portcullis-auth-bench-"))
    issuer = dev_issuer_config(state, AUDIENCE)
    verifier = BearerVerifier([issuer], {issuer.name: JwksCache(issuer)})
    revocations = SqliteRevocations(state / "revocations.db", clock=lambda: 0.0)  # loaded once; never stale here
    revocations.load()
    auth = Authenticator(verifier=verifier, claim_map=ClaimMap(), required_scopes=("mcp:tools",),
                         revocations=revocations, cert_mapper=None, allow_anonymous=False,
                         resource_metadata_url=AUDIENCE, issuer_names={"dev": issuer.issuer}, dev_issuer_name="dev",
                         person_signals={"dev": issuer.person} if issuer.person else None)
    tokens = [issue_token(state, audience=AUDIENCE, user=f"u{i}", agent="bot", client=None, scopes=["mcp:tools"])
              for i in range(n)]
    first, cached = [], []
    for token in tokens:
        headers = {"authorization": f"Bearer {token}"}
        t = time.perf_counter()
        principal = await auth.authenticate(headers, {})
        first.append(time.perf_counter() - t)
        t = time.perf_counter()
        await auth.authenticate(headers, {})
        cached.append(time.perf_counter() - t)
    mapping = {}
    claim_map = ClaimMap()
    for label, claims in (
        ("ASCII", {"sub": "alice@example.com", "client_id": "console", "agent_id": "billing-bot", "tenant": "acme",
                   "sid": "s-7f3a", "source_app": "chat", "roles": ["finance", "employee", "approver"],
                   "scope": "mcp:tools billing:read", "department": "finance", "employment_type": "full_time",
                   "region": "emea", "principal_type": "agent"}),
        ("non-ASCII", {"sub": "josé.muñoz@example.com", "client_id": "console", "agent_id": "büro-bot",
                       "tenant": "société", "roles": ["comptabilité", "employé"],
                       "scope": "mcp:tools", "department": "finanças", "region": "東京"}),
    ):
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            principal_from_claims(claims, claim_map, subject=claims["sub"], issuer=issuer.issuer, issuer_name="dev",
                                  auth_method="bearer", person=issuer.person)
            samples.append(time.perf_counter() - t)
        mapping[label] = _p50_us(samples)
    minter = TokenMinter(KeyRing.generate(), issuer="portcullis://gateway")
    mint = []
    for i in range(n):
        t = time.perf_counter()
        minter.mint(principal, audience=service_audience("billing"), request_id=f"r{i}", tool="billing.x", target="x")
        mint.append(time.perf_counter() - t)
    print(f"authenticate, first use of a token (signature check): p50 {_p50_us(first):7.1f} us")
    print(f"authenticate, token already verified (cache):        p50 {_p50_us(cached):7.1f} us")
    for label, p50 in mapping.items():
        print(f"claim mapping alone, {label + ' claims:':<31} p50 {p50:7.1f} us  (first use of a token only)")
    print(f"mint the upstream token:                             p50 {_p50_us(mint):7.1f} us")
    print(f"per call, steady state (cached + mint):              p50 {_p50_us(cached) + _p50_us(mint):7.1f} us"
          "  (target <= 200 us)")
    print(f"per call, worst case (first use + mint):             p50 {_p50_us(first) + _p50_us(mint):7.1f} us")


if __name__ == "__main__":
    asyncio.run(main())
