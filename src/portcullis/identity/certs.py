"""Map a verified client certificate to a client identity.

The TLS handshake has already checked the chain against ``client_ca_file``, the validity dates and
the signature; this module only decides *who* the certificate names. It follows these steps, and
any step that fails refuses the certificate (``map`` returns None and the caller denies):

1. Parse the certificate (PEM or DER).
2. Refuse a CA certificate: a CA is not a workload.
3. Read the URI SANs. More than one is refused (an X.509-SVID carries exactly one, and two would
   make the identity ambiguous). One that is not a well-formed SPIFFE ID is refused rather than
   ignored, so a certificate that tried and failed to be an SVID cannot fall through to a CN rule.
4. Read the subject CN; a subject with several CNs has none for matching.
5. The first rule, in configured order, whose matcher fits gives the identity. No rule: refused.

SPIFFE IDs follow the SPIFFE-ID spec: ``spiffe://<trust-domain>/<path>``, lower-case trust domain
of ``[a-z0-9._-]``, path segments of ``[A-Za-z0-9._-]`` that are not empty, ``.`` or ``..``; no
userinfo, port, query, fragment, percent-encoding or trailing slash. A prefix rule matches the
trust domain exactly and the path by whole segments: ``spiffe://example.org/agent/billing`` matches
``…/agent/billing`` and ``…/agent/billing/x`` but never ``…/agent/billing-bot``; a prefix ending
in ``/`` matches only what lies strictly below it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

log = logging.getLogger("portcullis.identity")

_MAX_SPIFFE_ID_BYTES = 2048
_MAX_TRUST_DOMAIN = 255
_SPIFFE = re.compile(r"spiffe://([a-z0-9._-]+)((?:/[A-Za-z0-9._-]+)*)")
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$"


@dataclass(frozen=True, slots=True)
class SpiffeId:
    trust_domain: str
    path: tuple[str, ...]

    def __str__(self) -> str:
        return "spiffe://" + "/".join((self.trust_domain, *self.path))


def _parse(value: str, *, allow_root: bool) -> SpiffeId:
    if len(value.encode()) > _MAX_SPIFFE_ID_BYTES:
        raise ValueError("SPIFFE ID too long")
    match = _SPIFFE.fullmatch(value)
    if match is None:
        raise ValueError("not a well-formed SPIFFE ID")
    trust_domain, path = match[1], tuple(match[2].split("/")[1:])
    if len(trust_domain) > _MAX_TRUST_DOMAIN:
        raise ValueError("SPIFFE trust domain too long")
    if any(segment in (".", "..") for segment in path):
        raise ValueError("SPIFFE ID path has a '.' or '..' segment")
    if not path and not allow_root:
        raise ValueError("SPIFFE ID has no path")
    return SpiffeId(trust_domain, path)


def parse_spiffe_id(value: str) -> SpiffeId:
    """A workload SPIFFE ID (non-empty path); ``ValueError`` if malformed."""
    return _parse(value, allow_root=False)


@dataclass(frozen=True, slots=True)
class _SpiffePrefix:
    base: SpiffeId
    strictly_below: bool  # written with a trailing '/'

    @classmethod
    def parse(cls, value: str) -> _SpiffePrefix:
        strictly_below = value.endswith("/")
        return cls(_parse(value.removesuffix("/") if strictly_below else value, allow_root=True), strictly_below)

    def matches(self, spiffe_id: SpiffeId) -> bool:
        depth = len(self.base.path)
        return (
            spiffe_id.trust_domain == self.base.trust_domain
            and spiffe_id.path[:depth] == self.base.path
            and (len(spiffe_id.path) > depth or not self.strictly_below)
        )


class CertMappingRule(BaseModel):
    """One certificate → identity rule: exactly one matcher, and the identity it grants."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    match_spiffe_prefix: str | None = Field(
        None,
        description="SPIFFE ID or prefix, matched by whole path segments on an exact trust domain; a trailing '/' "
        "matches only IDs strictly below it.",
    )
    match_subject_cn: str | None = Field(None, min_length=1, description="Exact (case-sensitive) subject CN.")
    client_id: str = Field(pattern=_NAME, description="Client id granted to a matching certificate.")
    agent_id: str | None = Field(None, pattern=_NAME, description="Agent id granted, if any.")
    tenant: str | None = Field(None, pattern=_NAME, description="Tenant granted, if any.")
    roles: tuple[str, ...] = Field((), max_length=32, description="Roles granted.")

    @field_validator("match_spiffe_prefix")
    @classmethod
    def _well_formed_prefix(cls, value: str | None) -> str | None:
        if value is not None:
            _SpiffePrefix.parse(value)
        return value

    @field_validator("roles")
    @classmethod
    def _named_roles(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not re.fullmatch(_NAME, role) for role in value):
            raise ValueError(f"role names must match {_NAME}")
        return value

    @model_validator(mode="after")
    def _one_matcher(self) -> CertMappingRule:
        if (self.match_spiffe_prefix is None) == (self.match_subject_cn is None):
            raise ValueError("give exactly one of 'match_spiffe_prefix' or 'match_subject_cn'")
        return self


@dataclass(frozen=True, slots=True)
class CertIdentity:
    """Who a verified client certificate names, as granted by the rule it matched."""

    client_id: str
    agent_id: str | None
    tenant: str | None
    roles: tuple[str, ...]
    spiffe_id: str | None
    subject: str  # RFC 4514
    fingerprint_sha256: str  # lower-case hex of the DER


@dataclass(frozen=True, slots=True)
class _Facts:
    spiffe_id: SpiffeId | None
    common_name: str | None
    subject: str
    fingerprint_sha256: str


class CertIdentityMapper:
    """Maps certificates to identities by the first matching rule; an empty rule set is an error."""

    def __init__(self, rules: Iterable[CertMappingRule]) -> None:
        self._rules = tuple(rules)
        if not self._rules:
            raise ValueError("CertIdentityMapper needs at least one rule (no rules would deny every client)")
        self._prefixes = tuple(
            _SpiffePrefix.parse(r.match_spiffe_prefix) if r.match_spiffe_prefix is not None else None
            for r in self._rules
        )

    def map(self, certificate: str | bytes) -> CertIdentity | None:
        """The identity for a PEM (str or bytes) or DER certificate, or None if refused or unmatched."""
        facts = _facts(certificate)
        if facts is None:
            return None
        for rule, prefix in zip(self._rules, self._prefixes, strict=True):
            if (prefix is not None and facts.spiffe_id is not None and prefix.matches(facts.spiffe_id)) or (
                rule.match_subject_cn is not None and rule.match_subject_cn == facts.common_name
            ):
                return CertIdentity(
                    client_id=rule.client_id,
                    agent_id=rule.agent_id,
                    tenant=rule.tenant,
                    roles=rule.roles,
                    spiffe_id=str(facts.spiffe_id) if facts.spiffe_id else None,
                    subject=facts.subject,
                    fingerprint_sha256=facts.fingerprint_sha256,
                )
        log.info("client certificate matched no rule",
                 extra={"fields": {"fingerprint_sha256": facts.fingerprint_sha256}})
        return None


def _refuse(reason: str, fingerprint: str | None = None) -> None:
    log.warning("client certificate refused", extra={"fields": {"reason": reason, "fingerprint_sha256": fingerprint}})


def _facts(certificate: str | bytes) -> _Facts | None:
    # 1. parse
    try:
        data = certificate.encode("ascii") if isinstance(certificate, str) else certificate
        cert = (x509.load_pem_x509_certificate(data) if data.lstrip().startswith(b"-----BEGIN")
                else x509.load_der_x509_certificate(data))
        fingerprint = cert.fingerprint(hashes.SHA256()).hex()
    except ValueError:
        _refuse("unparsable certificate")
        return None
    try:
        # 2. not a CA
        try:
            if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                _refuse("CA certificate", fingerprint)
                return None
        except x509.ExtensionNotFound:
            pass
        # 3. at most one URI SAN, and it must be a SPIFFE ID
        try:
            uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
                x509.UniformResourceIdentifier
            )
        except x509.ExtensionNotFound:
            uris = []
        if len(uris) > 1:
            _refuse("more than one URI SAN", fingerprint)
            return None
        spiffe_id = None
        if uris:
            try:
                spiffe_id = parse_spiffe_id(uris[0])
            except ValueError:
                _refuse("URI SAN is not a well-formed SPIFFE ID", fingerprint)
                return None
        # 4. one CN or none
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        common_name = cns[0].value if len(cns) == 1 and isinstance(cns[0].value, str) else None
        subject = cert.subject.rfc4514_string()
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
        _refuse("malformed certificate extensions", fingerprint)
        return None
    return _Facts(spiffe_id, common_name, subject, fingerprint)
