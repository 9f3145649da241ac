"""``trivault certs``: a local CA plus server and client certificates for one deployment.

Servers get CN ``trivault-server-<i>``, SANs IP 127.0.0.1, DNS localhost and DNS
``server<i>`` (container name), EKUs serverAuth + clientAuth (a server is also a TLS
client of its peers). Clients get CN ``trivault-client-<name>`` and clientAuth only.
Keys are ECDSA P-256, written with mode 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from wire.tls import CLIENT_CN_PREFIX, SERVER_CN_PREFIX


@dataclass(frozen=True)
class CertPaths:
    """Files of one deployment's certificates."""

    root: Path

    @property
    def ca(self) -> Path:
        return self.root / "ca.pem"

    def server(self, i: int) -> tuple[Path, Path]:
        """(cert, key) of server ``i``."""
        return self.root / f"server{i}.pem", self.root / f"server{i}.key"

    def client(self, name: str = "owner") -> tuple[Path, Path]:
        """(cert, key) of client ``name``."""
        return self.root / f"client-{name}.pem", self.root / f"client-{name}.key"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    os.chmod(path, 0o600)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "TriVault"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(cn: str, key, ca_cert: x509.Certificate, ca_key, ekus: list, sans: list, days: int) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, key_agreement=True, key_encipherment=False,
                                      content_commitment=False, data_encipherment=False, key_cert_sign=False,
                                      crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(ca_key, hashes.SHA256())


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_ca(root: Path, days: int = 365) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Create (or load) the deployment CA in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    paths = CertPaths(root)
    if paths.ca.exists() and (root / "ca.key").exists():
        cert = x509.load_pem_x509_certificate(paths.ca.read_bytes())
        key = serialization.load_pem_private_key((root / "ca.key").read_bytes(), None)
        return cert, key  # type: ignore[return-value]
    key = _key()
    now = dt.datetime.now(dt.timezone.utc)
    name = _name("TriVault local CA")
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         key_encipherment=False, content_commitment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _write_key(root / "ca.key", key)
    _write_cert(paths.ca, cert)
    return cert, key


def make_server_cert(root: Path, i: int, extra_dns: tuple[str, ...] = (), days: int = 365) -> tuple[Path, Path]:
    """Issue server ``i``'s certificate (serverAuth + clientAuth)."""
    ca_cert, ca_key = make_ca(root)
    key = _key()
    sans = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"), x509.DNSName(f"server{i}")]
    sans += [x509.DNSName(d) for d in extra_dns]
    cert = _issue(f"{SERVER_CN_PREFIX}{i}", key, ca_cert, ca_key,
                  [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], sans, days)
    c, k = CertPaths(root).server(i)
    _write_key(k, key)
    _write_cert(c, cert)
    return c, k


def make_client_cert(root: Path, name: str = "owner", days: int = 365) -> tuple[Path, Path]:
    """Issue a client certificate (clientAuth only)."""
    if not name.replace("-", "").isalnum():
        raise ValueError("client name must be alphanumeric (dashes allowed)")
    ca_cert, ca_key = make_ca(root)
    key = _key()
    cert = _issue(f"{CLIENT_CN_PREFIX}{name}", key, ca_cert, ca_key, [ExtendedKeyUsageOID.CLIENT_AUTH], [], days)
    c, k = CertPaths(root).client(name)
    _write_key(k, key)
    _write_cert(c, cert)
    return c, k


def make_deployment(root: Path, clients: tuple[str, ...] = ("owner",), extra_dns: tuple[str, ...] = ()) -> CertPaths:
    """CA + three server certificates + client certificates in ``root``."""
    root = Path(root)
    make_ca(root)
    for i in range(3):
        make_server_cert(root, i, extra_dns)
    for name in clients:
        make_client_cert(root, name)
    return CertPaths(root)
