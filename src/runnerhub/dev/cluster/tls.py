"""A certificate authority of the local cluster's own, made with `cryptography`: the
certificates for TLS between the parts RunnerHub runs or reaches (a runner host's engine
API with client certificates today). Keys are EC P-256 (quick to make), written 0600 from
the start; certificates last a year.
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

from runnerhub.paths import private_dir, write_private

VALID = dt.timedelta(days=365)


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM files."""

    cert: Path
    key: Path

    def bundle(self, out: Path) -> Path:
        """Certificate then key in one file (what HAProxy's `crt` reads)."""
        write_private(out, self.cert.read_text() + self.key.read_text())
        return out


class LocalCA:
    """A CA whose certificate and key live in `directory` (made there on first use)."""

    def __init__(self, directory: Path, name: str = "RunnerHub local CA") -> None:
        self.directory = directory
        self.cert = directory / "ca.pem"
        key_file = directory / "ca.key"
        if self.cert.exists() and key_file.exists():
            key = serialization.load_pem_private_key(key_file.read_bytes(), None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            self._key = key
            self._cert = x509.load_pem_x509_certificate(self.cert.read_bytes())
            return
        private_dir(directory)
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self._cert = (
            _builder(subject, subject, self._key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        write_private(key_file, _pem_key(self._key))
        self.cert.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        name: str,
        hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
        client: bool = False,
        also_client: bool = False,
    ) -> Issued:
        """A certificate for `name`: a server's for `hosts`, or a client's (`client`); a
        server's that it may also show as a client (`also_client`: etcd's gateway dials its
        own gRPC port with it)."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [ExtendedKeyUsageOID.SERVER_AUTH]
        if also_client and not client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = _builder(subject, self._cert.subject, key.public_key()).add_extension(
            x509.ExtendedKeyUsage(usages), critical=False
        )
        if not client:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False
            )
        cert = builder.sign(self._key, hashes.SHA256())
        issued = Issued(self.directory / f"{name}.pem", self.directory / f"{name}.key")
        write_private(issued.key, _pem_key(key))
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return issued


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALID)
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
