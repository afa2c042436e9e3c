"""Client certificates for the kafka-auth broker, made with ``cryptography``: signed by the
broker's CA (whose key keytool left in ca.p12), or by a stranger CA it does not trust."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from service.devtools.servers import AUTH_STORE_PASSWORD, auth_tls_dir


@dataclass(frozen=True)
class Issuer:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()


def broker_ca(tls: Path | None = None) -> Issuer:
    data = ((tls or auth_tls_dir()) / "ca.p12").read_bytes()
    key, cert, _ = pkcs12.load_key_and_certificates(data, AUTH_STORE_PASSWORD.encode())
    assert isinstance(key, rsa.RSAPrivateKey) and cert is not None
    return Issuer(key, cert)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _builder(subject: str, issuer: x509.Name, public: rsa.RSAPublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
    )


def stranger_ca() -> Issuer:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        _builder("stranger CA", _name("stranger CA"), key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Issuer(key, cert)


def client_secret(issuer: Issuer, password: str | None = None) -> dict[str, str]:
    """AWS's CLIENT_CERTIFICATE_TLS_AUTH secret: certificate (chain, client first), PKCS#8
    privateKey, and privateKeyPassword when the key is encrypted."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = _builder("esmd-client", issuer.cert.subject, key.public_key()).sign(
        issuer.key, hashes.SHA256()
    )
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password
        else serialization.NoEncryption()
    )
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    ).decode()
    chain = cert.public_bytes(serialization.Encoding.PEM).decode() + issuer.pem
    secret = {"certificate": chain, "privateKey": private}
    if password:
        secret["privateKeyPassword"] = password
    return secret


def server_tls(issuer: Issuer, folder: Path) -> ssl.SSLContext:
    """A server context for 127.0.0.1 with a certificate ``issuer`` signed, requiring client
    certificates that ``issuer`` signed (mTLS)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (
        _builder("127.0.0.1", issuer.cert.subject, key.public_key())
        .add_extension(san, critical=False)
        .sign(issuer.key, hashes.SHA256())
    )
    cert_file, key_file = folder / "server.pem", folder / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=issuer.pem)
    context.load_cert_chain(cert_file, key_file)
    context.verify_mode = ssl.CERT_REQUIRED
    return context
