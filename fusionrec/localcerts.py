"""Throwaway certificates for the local secure services (deploy/local/secure.sh) and their tests: a CA,
a server certificate for 127.0.0.1/localhost, a client certificate, as PEM for the Python clients and
PKCS12 for the JVM servers. Nothing here is for production: keys are unencrypted PEM on local disk.

  python -m fusionrec.localcerts DIR      # writes what is missing in DIR; the PKCS12 password from
                                          # FUSIONREC_KEYSTORE_PASSWORD (never an argument: `ps` shows those)

Needs the `cryptography` package (the dev extra).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Issued", "issue", "make_ca", "write_pem", "write_set"]

PASSWORD_ENV = "FUSIONREC_KEYSTORE_PASSWORD"


@dataclass(frozen=True)
class Issued:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_ca(name: str = "fusionrec local CA", days: int = 3650) -> Issued:
    """A self-signed CA (a second call makes a CA nobody trusts: the "unknown CA" tests)."""
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # key_cert_sign, crl_sign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(key, cert)


def issue(
    ca: Issued,
    common_name: str,
    *,
    server: bool,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> Issued:
    """A leaf certificate signed by `ca`: a server one names 127.0.0.1 and localhost (clients check the
    address they dial); `not_after` in the past makes an expired one."""
    key = _key()
    start = not_before or _now() - dt.timedelta(minutes=5)
    end = not_after or _now() + dt.timedelta(days=825)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return Issued(key, builder.sign(ca.key, hashes.SHA256()))


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def write_pem(issued: Issued, cert_path: Path, key_path: Path | None = None) -> None:
    """The certificate as PEM; its key as unencrypted PKCS#8 PEM (mode 600) when `key_path` is given."""
    _write(cert_path, issued.cert.public_bytes(serialization.Encoding.PEM))
    if key_path is not None:
        _write(
            key_path,
            issued.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )


def write_pkcs12(issued: Issued, ca: Issued, path: Path, password: str) -> None:
    """A JVM keystore: the key, its certificate and the CA chain (Kafka's and Cassandra's server side)."""
    _write(
        path,
        pkcs12.serialize_key_and_certificates(
            b"server",
            issued.key,
            issued.cert,
            [ca.cert],
            serialization.BestAvailableEncryption(password.encode()),
        ),
    )


def write_set(folder: Path, password: str) -> list[Path]:
    """ca.pem, server.{pem,key,p12}, client.{pem,key} in `folder`, unless ca.pem is already there
    (so restarts keep the certificates their clients trust); returns the files written."""
    if (folder / "ca.pem").is_file():
        return []
    ca = make_ca()
    server = issue(ca, "fusionrec-server", server=True)
    client = issue(ca, "fusionrec-client", server=False)
    write_pem(server, folder / "server.pem", folder / "server.key")
    write_pkcs12(server, ca, folder / "server.p12", password)
    write_pem(client, folder / "client.pem", folder / "client.key")
    write_pem(ca, folder / "ca.pem", folder / "ca.key")  # last: its presence marks a complete set
    return [folder / n for n in ("server.pem", "server.key", "server.p12", "client.pem", "client.key", "ca.pem")]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    password = os.environ.get(PASSWORD_ENV)
    if not password:
        print(f"localcerts: error: set {PASSWORD_ENV} (the PKCS12 keystore password)", file=sys.stderr)
        return 2
    written = write_set(Path(argv[0]), password)
    print(f"localcerts: {len(written)} files written in {argv[0]}" if written else "localcerts: certificates exist")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
