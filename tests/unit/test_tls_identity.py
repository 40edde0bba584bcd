"""Client-certificate identity mapping, the server TLS context and the ASGI TLS extension."""

from __future__ import annotations

import hashlib
import pickle
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from portcullis.identity.certs import CertIdentityMapper, CertMappingRule, SpiffeId, parse_spiffe_id
from portcullis.identity.tls import (
    TlsConfig,
    TlsH11Protocol,
    TlsHttpToolsProtocol,
    build_server_context,
    peer_certificate,
    tls_extension,
    uvicorn_kwargs,
)
from tests.pki import BILLING_BOT, Authority, Issued, Pki, make_pki

CA = Authority.create()
_KEY = ec.generate_private_key(ec.SECP256R1())  # one key for every in-memory leaf: only the certificates differ


def leaf(*uris: str, cn: str | None = None, ca: bool = False) -> Issued:
    return CA.issue(uris=uris, cn=cn, ca=ca, key=_KEY)


RULES = (
    CertMappingRule(match_spiffe_prefix=BILLING_BOT, client_id="billing", agent_id="billing-bot", tenant="acme",
                    roles=("billing.read",)),
    CertMappingRule(match_spiffe_prefix="spiffe://example.org/agent/", client_id="any-agent"),
    CertMappingRule(match_spiffe_prefix="spiffe://example.org/svc/reports", client_id="reports"),
    CertMappingRule(match_subject_cn="reporting-job", client_id="reporting", roles=("reports.read",)),
)
MAPPER = CertIdentityMapper(RULES)


# --------------------------------------------------------------------------- mapping table


@pytest.mark.parametrize(
    ("uris", "cn", "client_id"),
    [
        ((BILLING_BOT,), None, "billing"),  # exact id
        ((BILLING_BOT + "/worker-2",), None, "billing"),  # below the exact id, by whole segment
        (("spiffe://example.org/agent/support-bot",), None, "any-agent"),  # under the '/agent/' prefix
        (("spiffe://example.org/svc/reports",), None, "reports"),  # prefix without '/' matches itself
        (("spiffe://example.org/svc/reports/daily",), None, "reports"),
        ((), "reporting-job", "reporting"),  # CN rule
        ((BILLING_BOT,), "reporting-job", "billing"),  # first matching rule wins
    ],
)
def test_mapper_grants_the_identity_of_the_first_matching_rule(uris: tuple[str, ...], cn: str | None,
                                                               client_id: str) -> None:
    """A certificate gets the identity of the first rule, in configured order, that it matches."""
    identity = MAPPER.map(leaf(*uris, cn=cn).pem)
    assert identity is not None and identity.client_id == client_id


@pytest.mark.parametrize(
    ("uris", "cn"),
    [
        (("spiffe://example.org/svc/reports-v2",), None),  # segment-prefix confusion
        (("spiffe://example.org/svc/report",), None),
        (("spiffe://example.org/agent",), None),  # '/agent/' means strictly below /agent
        (("spiffe://example.org/agents/x",), None),
        (("spiffe://example.org.evil/agent/billing-bot",), None),  # trust domain is exact
        (("spiffe://evil.example.org/agent/billing-bot",), None),
        (("spiffe://other.org/agent/billing-bot",), None),
        (("spiffe://example.org/svc/other",), None),  # matches no rule
        ((), "Reporting-Job"),  # CN is case-sensitive
        ((), "reporting-job.evil"),
        ((), None),  # nothing to match on
    ],
)
def test_mapper_returns_none_when_no_rule_matches(uris: tuple[str, ...], cn: str | None) -> None:
    """No matching rule means no identity (the caller denies)."""
    assert MAPPER.map(leaf(*uris, cn=cn).pem) is None


def test_prefix_rule_for_billing_never_matches_billing_bot() -> None:
    """'…/agent/billing' is a whole-segment prefix, so it does not match '…/agent/billing-bot'."""
    mapper = CertIdentityMapper([CertMappingRule(match_spiffe_prefix="spiffe://example.org/agent/billing",
                                                 client_id="billing")])
    assert mapper.map(leaf(BILLING_BOT).pem) is None
    assert mapper.map(leaf("spiffe://example.org/agent/billing").pem) is not None


def test_two_uri_sans_are_refused_even_when_a_cn_rule_matches() -> None:
    """A certificate with two URI SANs is ambiguous and refused outright."""
    cert = leaf(BILLING_BOT, "spiffe://example.org/agent/admin", cn="reporting-job")
    assert MAPPER.map(cert.pem) is None
    assert MAPPER.map(leaf(BILLING_BOT, "https://example.org/x").pem) is None


MALFORMED_SPIFFE = [
    "spiffe://Example.org/agent/billing-bot",  # upper-case trust domain
    "SPIFFE://example.org/agent/billing-bot",  # upper-case scheme
    "spiffe://example.org:8443/agent/billing-bot",  # port
    "spiffe://user@example.org/agent/billing-bot",  # userinfo
    "spiffe://example.org/agent/billing-bot?x=1",  # query
    "spiffe://example.org/agent/billing-bot#frag",  # fragment
    "spiffe://example.org/agent/../admin",  # dot-dot segment
    "spiffe://example.org/agent/./billing-bot",  # dot segment
    "spiffe://example.org/agent//billing-bot",  # empty segment
    "spiffe://example.org/agent/billing-bot/",  # trailing slash
    "spiffe://example.org/agent/billing%2Dbot",  # percent-encoding
    "spiffe://example.org",  # no path
    "spiffe://example.org/",
    "spiffe:///agent/billing-bot",  # no trust domain
    "spiffe:example.org/agent/billing-bot",
    "https://example.org/agent/billing-bot",  # not SPIFFE at all
    "spiffe://example.org/" + "a" * 2048,  # too long
]


@pytest.mark.parametrize("uri", MALFORMED_SPIFFE)
def test_certificate_with_malformed_spiffe_id_is_refused(uri: str) -> None:
    """A URI SAN that is not a well-formed SPIFFE ID is refused, even if a CN rule would match."""
    assert MAPPER.map(leaf(uri, cn="reporting-job").pem) is None


@pytest.mark.parametrize("uri", MALFORMED_SPIFFE)
def test_parse_spiffe_id_rejects_malformed_ids(uri: str) -> None:
    """parse_spiffe_id raises on every malformed id."""
    with pytest.raises(ValueError, match="SPIFFE"):
        parse_spiffe_id(uri)


def test_parse_spiffe_id_splits_trust_domain_and_segments() -> None:
    """A well-formed id parses into trust domain and path segments and prints back unchanged."""
    parsed = parse_spiffe_id("spiffe://prod.example-1.org/ns/Default_x/sa/a.b-c")
    assert parsed == SpiffeId("prod.example-1.org", ("ns", "Default_x", "sa", "a.b-c"))
    assert str(parsed) == "spiffe://prod.example-1.org/ns/Default_x/sa/a.b-c"


def test_identity_carries_rule_grants_and_certificate_facts() -> None:
    """The identity has the rule's grants plus the SPIFFE id, subject and SHA-256 fingerprint."""
    cert = leaf(BILLING_BOT, cn="bot")
    identity = MAPPER.map(cert.pem)
    assert identity is not None
    assert (identity.client_id, identity.agent_id, identity.tenant, identity.roles) == (
        "billing", "billing-bot", "acme", ("billing.read",))
    assert identity.spiffe_id == BILLING_BOT
    assert identity.subject == "CN=bot,O=Portcullis Tests"
    assert identity.fingerprint_sha256 == hashlib.sha256(cert.der).hexdigest()


def test_mapper_accepts_pem_str_pem_bytes_and_der() -> None:
    """The same certificate maps the same way in every encoding."""
    cert = leaf(BILLING_BOT)
    assert MAPPER.map(cert.pem) == MAPPER.map(cert.pem.decode()) == MAPPER.map(cert.der) is not None


@pytest.mark.parametrize("garbage", [b"", b"not a certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n", b"\x30\x03\x02"])
def test_unparsable_certificate_is_refused(garbage: str | bytes) -> None:
    """Bytes that are not a certificate give no identity rather than an exception."""
    assert MAPPER.map(garbage) is None


def test_ca_certificate_is_refused() -> None:
    """A CA certificate is not a workload, whatever its SAN says."""
    assert MAPPER.map(leaf(BILLING_BOT, ca=True).pem) is None


# --------------------------------------------------------------------------- rule configuration


@pytest.mark.parametrize(
    "fields",
    [
        {"client_id": "x"},  # no matcher
        {"client_id": "x", "match_spiffe_prefix": BILLING_BOT, "match_subject_cn": "bot"},  # two matchers
        {"client_id": "x", "match_spiffe_prefix": "spiffe://Example.org/agent"},  # malformed prefix
        {"client_id": "x", "match_spiffe_prefix": "spiffe://example.org/agent//"},
        {"client_id": "x", "match_spiffe_prefix": "spiffe://example.org/../agent"},
        {"client_id": "x", "match_spiffe_prefix": "example.org/agent"},
        {"client_id": "x", "match_subject_cn": ""},
        {"client_id": "", "match_subject_cn": "bot"},
        {"client_id": "x", "match_subject_cn": "bot", "roles": ["ok", "bad role"]},
        {"client_id": "x", "match_subject_cn": "bot", "match_ou": "y"},  # unknown key
    ],
)
def test_bad_mapping_rules_are_configuration_errors(fields: dict[str, object]) -> None:
    """A rule with zero or two matchers, a malformed prefix or an unknown key does not load."""
    with pytest.raises(ValidationError):
        CertMappingRule.model_validate(fields)


def test_empty_rule_set_is_an_error() -> None:
    """No rules is a configuration error, not 'allow'."""
    with pytest.raises(ValueError, match="at least one rule"):
        CertIdentityMapper([])


def test_trust_domain_prefix_matches_every_workload_in_it() -> None:
    """'spiffe://example.org/' matches any workload of that trust domain and no other."""
    mapper = CertIdentityMapper([CertMappingRule(match_spiffe_prefix="spiffe://example.org/", client_id="td")])
    assert mapper.map(leaf(BILLING_BOT).pem) is not None
    assert mapper.map(leaf("spiffe://example.com/agent/billing-bot").pem) is None


# --------------------------------------------------------------------------- TLS configuration


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _cfg(pki: Pki, **fields: object) -> TlsConfig:
    return TlsConfig.model_validate({"cert_file": str(pki.server.cert_file), "key_file": str(pki.server.key_file),
                                     **fields})


@pytest.mark.parametrize(
    "fields",
    [
        {"client_auth": "required"},  # no CA to verify against
        {"client_auth": "optional"},
        {"client_ca_file": "ca.crt"},  # a CA that would silently be unused
        {"client_auth": "sometimes", "client_ca_file": "ca.crt"},
        {"min_version": "TLSv1.1"},
        {"ciphers": "ALL"},
    ],
)
def test_bad_tls_configs_do_not_load(fields: dict[str, object]) -> None:
    """Client auth without a CA, a CA without client auth, old versions and unknown keys are errors."""
    with pytest.raises(ValidationError):
        TlsConfig.model_validate({"cert_file": "s.crt", "key_file": "s.key", **fields})


@pytest.mark.parametrize(("client_auth", "mode"), [("none", ssl.CERT_NONE), ("optional", ssl.CERT_OPTIONAL),
                                                   ("required", ssl.CERT_REQUIRED)])
def test_server_context_is_hardened_and_verifies_per_client_auth(pki: Pki, client_auth: str, mode: int) -> None:
    """The context has TLS >= 1.2, no compression or renegotiation, AEAD suites and the asked verify mode."""
    ca = {"client_ca_file": str(pki.ca_file)} if client_auth != "none" else {}
    ctx = build_server_context(_cfg(pki, client_auth=client_auth, **ca))
    assert ctx.verify_mode == mode
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION and ctx.options & ssl.OP_NO_RENEGOTIATION
    assert all("GCM" in c["name"] or "CHACHA20" in c["name"] for c in ctx.get_ciphers())
    assert len(ctx.get_ca_certs()) == (1 if ca else 0)  # only the configured CA, never the system store


def test_min_version_tls13_is_applied(pki: Pki) -> None:
    """min_version TLSv1.3 refuses TLS 1.2 at the context."""
    assert build_server_context(_cfg(pki, min_version="TLSv1.3")).minimum_version == ssl.TLSVersion.TLSv1_3


def test_uvicorn_kwargs_fail_early_on_missing_files(tmp_path: Path) -> None:
    """A missing certificate file fails when the kwargs are built, not when the server starts."""
    cfg = TlsConfig(cert_file=str(tmp_path / "nope.crt"), key_file=str(tmp_path / "nope.key"))
    with pytest.raises(OSError):
        uvicorn_kwargs(cfg)


def test_uvicorn_kwargs_choose_the_tls_protocol_and_a_picklable_factory(pki: Pki) -> None:
    """The kwargs name the extension-filling protocol class and a context factory that survives pickling."""
    kwargs = uvicorn_kwargs(_cfg(pki))
    assert kwargs["http"] is TlsHttpToolsProtocol
    assert uvicorn_kwargs(_cfg(pki), http="h11")["http"] is TlsH11Protocol
    factory = pickle.loads(pickle.dumps(kwargs["ssl_context_factory"]))
    assert isinstance(factory(None, lambda: None), ssl.SSLContext)


# --------------------------------------------------------------------------- ASGI TLS extension


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> ssl.SSLObject:
    """A real TLS handshake through memory BIOs; returns the server's SSLObject."""
    bios = [ssl.MemoryBIO() for _ in range(4)]
    server = server_ctx.wrap_bio(bios[0], bios[1], server_side=True)
    client = client_ctx.wrap_bio(bios[2], bios[3], server_hostname="localhost")
    done = {id(server): False, id(client): False}
    for _ in range(20):
        for obj, out, peer_in in ((client, bios[3], bios[0]), (server, bios[1], bios[2])):
            if not done[id(obj)]:
                try:
                    obj.do_handshake()
                    done[id(obj)] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(out.read())
        if all(done.values()):
            return server
    raise AssertionError("handshake did not finish")


def test_tls_extension_reports_the_verified_client_certificate(pki: Pki) -> None:
    """After a handshake the extension has the client's PEM, its RFC 4514 name and IANA version/suite numbers."""
    server_ctx = build_server_context(_cfg(pki, client_auth="required", client_ca_file=str(pki.ca_file)))
    client_ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    client_ctx.load_cert_chain(pki.cn_client.cert_file, pki.cn_client.key_file)
    ext = tls_extension(_handshake(server_ctx, client_ctx))
    assert x509.load_pem_x509_certificate(ext["client_cert_chain"][0].encode()) == pki.cn_client.cert
    assert ext["client_cert_name"] == "CN=reporting-job,OU=analytics,O=Portcullis Tests"
    assert ext["client_cert_error"] is None
    assert ext["tls_version"] == 0x0304
    assert ext["cipher_suite"] in (0x1301, 0x1302, 0x1303)
    assert peer_certificate({"extensions": {"tls": ext}}) == ext["client_cert_chain"][0]


def test_tls_extension_is_empty_without_client_auth(pki: Pki) -> None:
    """With client_auth 'none' no certificate is asked for, so none is reported."""
    client_ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ext = tls_extension(_handshake(build_server_context(_cfg(pki)), client_ctx))
    assert ext["client_cert_chain"] == () and ext["client_cert_name"] is None
    assert ext["tls_version"] == 0x0303
    assert ext["cipher_suite"] in (0xC02B, 0xC02C, 0xC02F, 0xC030, 0xCCA8, 0xCCA9)


@pytest.mark.parametrize("scope", [{}, {"extensions": None}, {"extensions": {}}, {"extensions": {"tls": "x"}},
                                   {"extensions": {"tls": {"client_cert_chain": ()}}}])
def test_peer_certificate_is_none_without_a_certificate(scope: dict[str, object]) -> None:
    """No extension, or an empty chain, means no peer certificate."""
    assert peer_certificate(scope) is None
