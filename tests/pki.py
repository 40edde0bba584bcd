"""A tiny test PKI: real X.509 certificates made with ``cryptography`` for real TLS handshakes.

:func:`make_pki` writes a root CA, a loopback server certificate and a set of client certificates
(good, expired, foreign-CA, two-URI) as PEM files into a directory. :meth:`Authority.issue` makes
any other leaf in memory, for table tests of the identity mapper.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

BILLING_BOT = "spiffe://example.org/agent/billing-bot"

_Key = ec.EllipticCurvePrivateKey


def _name(cn: str | None = None, ou: str | None = None, o: str | None = "Portcullis Tests") -> x509.Name:
    parts = []
    if o is not None:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o))
    if ou is not None:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    if cn is not None:
        parts.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(parts)


def _key() -> _Key:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: _Key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass(frozen=True)
class Issued:
    """A certificate, its key and (once written) its PEM files."""

    cert: x509.Certificate
    key: _Key
    cert_file: Path | None = None
    key_file: Path | None = None

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def write(self, directory: Path, stem: str) -> Issued:
        cert_file, key_file = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert_file.write_bytes(self.pem)
        key_file.write_bytes(_key_pem(self.key))
        key_file.chmod(0o600)
        return Issued(self.cert, self.key, cert_file, key_file)


@dataclass(frozen=True)
class Authority:
    """A self-signed root CA that issues leaves directly."""

    cert: x509.Certificate
    key: _Key

    @classmethod
    def create(cls, name: str = "Portcullis Test Root CA") -> Authority:
        key = _key()
        now = dt.datetime.now(dt.UTC)
        subject = _name(cn=name)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        *,
        cn: str | None = None,
        ou: str | None = None,
        uris: tuple[str, ...] = (),
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        server: bool = False,
        ca: bool = False,
        valid_from: dt.datetime | None = None,
        valid_until: dt.datetime | None = None,
        key: _Key | None = None,
    ) -> Issued:
        """A leaf signed by this CA (``ca=True`` makes a CA-flagged certificate, for hostile tests)."""
        key = key or _key()
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn=cn, ou=ou)).issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid_from or now - dt.timedelta(hours=1))
            .not_valid_after(valid_until or now + dt.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                  else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        names += [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return Issued(builder.sign(self.key, hashes.SHA256()), key)


@dataclass(frozen=True)
class Pki:
    """Everything :func:`make_pki` wrote, by role."""

    directory: Path
    ca: Authority
    ca_file: Path
    server: Issued
    billing_bot: Issued  # SPIFFE URI SAN spiffe://example.org/agent/billing-bot
    cn_client: Issued  # no SAN; subject CN=reporting-job, OU=analytics
    expired: Issued  # billing-bot's identity, expired yesterday
    untrusted: Issued  # billing-bot's identity, issued by another CA
    two_uris: Issued  # two URI SANs


def make_pki(directory: Path) -> Pki:
    """Create the test PKI and write every certificate and key into ``directory`` as PEM."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, other_ca = Authority.create(), Authority.create("Some Other Root CA")
    ca_file = directory / "ca.crt"
    ca_file.write_bytes(ca.pem)
    now = dt.datetime.now(dt.UTC)
    return Pki(
        directory=directory,
        ca=ca,
        ca_file=ca_file,
        server=ca.issue(cn="localhost", dns=("localhost",), ips=("127.0.0.1",), server=True).write(directory, "server"),
        billing_bot=ca.issue(uris=(BILLING_BOT,)).write(directory, "billing-bot"),
        cn_client=ca.issue(cn="reporting-job", ou="analytics").write(directory, "cn-client"),
        expired=ca.issue(uris=(BILLING_BOT,), valid_from=now - dt.timedelta(days=10),
                         valid_until=now - dt.timedelta(days=1)).write(directory, "expired"),
        untrusted=other_ca.issue(uris=(BILLING_BOT,)).write(directory, "untrusted"),
        two_uris=ca.issue(uris=(BILLING_BOT, "spiffe://example.org/agent/admin")).write(directory, "two-uris"),
    )
