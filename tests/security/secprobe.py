"""Hostile clients: the low-level probes of the security suite.

Each probe answers one question — did the server let this client in? — by doing what an
attacker would do on the wire (raw sockets, `ssl`, py-amqp, redis-py, kombu), never by reading
the server's configuration. "In" means the server answered at the protocol level.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtensionOID, NameOID

TIMEOUT = 10.0
#: The longest a probe waits for the worker before giving up (a deadline, not a measurement).
WAIT = 90.0
AMQP_HEADER = b"AMQP\x00\x00\x09\x01"
REDIS_PING = b"PING\r\n"


@dataclass(frozen=True)
class Endpoint:
    """One TLS broker port of the deployment."""

    kind: str  # "rabbitmq" | "redis"
    address: str
    port: int
    plaintext_port: int

    @property
    def hello(self) -> bytes:
        """The first bytes a client of this protocol sends."""
        return AMQP_HEADER if self.kind == "rabbitmq" else REDIS_PING

    def __str__(self) -> str:
        return f"{self.kind} {self.address}:{self.port}"


@dataclass(frozen=True)
class Outcome:
    """What a probe got: `got_in` is True when the server answered in its own protocol."""

    got_in: bool
    detail: str


def speaks_protocol(kind: str, data: bytes) -> bool:
    """True if *data* is a broker's answer: an AMQP frame (or its version header) or a RESP reply."""
    if kind == "rabbitmq":
        return data.startswith(b"AMQP") or data[:1] == b"\x01"
    return data[:1] in (b"+", b"-", b"$", b"*", b":", b"%", b"_", b">")


# --------------------------------------------------------------------------- TLS contexts


def client_context(ca: Path | None, cert: Path | None = None, key: Path | None = None, *,
                   versions: tuple[ssl.TLSVersion, ssl.TLSVersion] | None = None,
                   ciphers: str | None = None) -> ssl.SSLContext:
    """A client context. With *ca*, it verifies the server (host name included); without, it
    trusts anything — for probes whose point is the client side, not the server's identity.
    *versions* and *ciphers* (OpenSSL names, `@SECLEVEL=0` allowed) make legacy clients."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(str(ca))
    with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated: that is the point here
        warnings.simplefilter("ignore", DeprecationWarning)
        if versions:
            ctx.minimum_version, ctx.maximum_version = versions
        if ciphers:
            ctx.set_ciphers(ciphers)
    if cert:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx


def tls_attempt(ep: Endpoint, ctx: ssl.SSLContext, server_name: str | None = None) -> Outcome:
    """Handshake, send the protocol's hello, read. A TLS 1.3 server refuses a client
    certificate after the client's handshake is done, so the refusal can show on the read."""
    try:
        sock = socket.create_connection((ep.address, ep.port), timeout=TIMEOUT)
    except OSError as exc:
        return Outcome(False, f"connect failed: {exc}")
    try:
        tls = ctx.wrap_socket(sock, server_hostname=server_name or ep.address)
    except (ssl.SSLError, OSError) as exc:
        sock.close()
        return Outcome(False, f"handshake refused: {exc}")
    version, cipher = tls.version(), (tls.cipher() or ("?",))[0]
    try:
        tls.sendall(ep.hello)
        data = tls.recv(256)
    except (ssl.SSLError, OSError) as exc:
        return Outcome(False, f"{version} handshake, then refused: {exc}")
    finally:
        tls.close()
    if speaks_protocol(ep.kind, data):
        return Outcome(True, f"{ep.kind} answered over {version} {cipher}: {data[:24]!r}")
    return Outcome(False, f"closed without a protocol answer ({data[:24]!r})")


def plaintext_attempt(kind: str, address: str, port: int, hello: bytes) -> Outcome:
    """Speak the broker protocol without TLS."""
    try:
        sock = socket.create_connection((address, port), timeout=TIMEOUT)
    except OSError as exc:
        return Outcome(False, f"no listener: {exc.strerror or exc}")
    try:
        sock.sendall(hello)
        data = sock.recv(256)
    except OSError as exc:
        return Outcome(False, f"dropped: {exc.strerror or exc}")
    finally:
        sock.close()
    if speaks_protocol(kind, data):
        return Outcome(True, f"answered in plaintext: {data[:24]!r}")
    return Outcome(False, f"no protocol answer ({data[:24]!r})")


def legacy_attempt(ep: Endpoint, ciphers: str, cert: Path | None = None, key: Path | None = None) -> Outcome:
    """Like `tls_attempt`, with sslyze's legacy OpenSSL (nassl, OpenSSL 1.0.2): it still offers
    suites that this machine's OpenSSL 3 no longer has at all (3DES, static ECDH)."""
    from nassl.legacy_ssl_client import LegacySslClient
    from nassl.ssl_client import OpenSslVerifyEnum, OpenSslVersionEnum

    try:
        sock = socket.create_connection((ep.address, ep.port), timeout=TIMEOUT)
    except OSError as exc:
        return Outcome(False, f"connect failed: {exc}")
    client = LegacySslClient(underlying_socket=sock, ssl_version=OpenSslVersionEnum.TLSV1_2,
                             ssl_verify=OpenSslVerifyEnum.NONE, client_certificate_chain=cert, client_key=key)
    client.set_cipher_list(ciphers)
    try:
        client.do_handshake()
        cipher = client.get_current_cipher_name()
        client.write(ep.hello)
        data = client.read(256)
    except Exception as exc:  # nassl raises OpenSSLError, ConnectionError, socket errors
        return Outcome(False, f"refused: {type(exc).__name__}: {exc}")
    finally:
        sock.close()
    if speaks_protocol(ep.kind, data):
        return Outcome(True, f"{ep.kind} answered over {cipher}: {data[:24]!r}")
    return Outcome(False, f"closed without a protocol answer ({data[:24]!r})")


# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Issuer:
    cert: x509.Certificate
    key: Any


def load_pem_key(path: Path, passphrase: bytes | None = None) -> Any:
    return serialization.load_pem_private_key(path.read_bytes(), passphrase)


def _key_like(template: x509.Certificate) -> Any:
    public = template.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        return rsa.generate_private_key(public_exponent=65537, key_size=public.key_size)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    return ec.generate_private_key(public.curve)


def _sign_hash(key: Any) -> hashes.HashAlgorithm:
    return hashes.SHA384() if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384 \
        else hashes.SHA256()


def derive_leaf(template: x509.Certificate, issuer: Issuer, *, not_before: dt.datetime,
                not_after: dt.datetime, common_name: str | None = None,
                eku: list[x509.ObjectIdentifier] | None = None) -> tuple[x509.Certificate, Any]:
    """A new key and a certificate identical to *template* (subject, key usage, EKU, SANs)
    except for its validity, serial and key identifiers, signed by *issuer*; with
    *common_name* and *eku*, those too are replaced."""
    key = _key_like(template)
    subject = template.subject if common_name is None else \
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
                       critical=False)
    )
    for ext in template.extensions:
        if ext.oid in (ExtensionOID.SUBJECT_KEY_IDENTIFIER, ExtensionOID.AUTHORITY_KEY_IDENTIFIER):
            continue
        if ext.oid == ExtensionOID.EXTENDED_KEY_USAGE and eku is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(eku), ext.critical)
        else:
            builder = builder.add_extension(ext.value, ext.critical)
    return builder.sign(issuer.key, _sign_hash(issuer.key)), key


def self_signed_ca(common_name: str, key_type: str = "ec") -> Issuer:
    """A CA that has nothing to do with the deployment's."""
    key = ec.generate_private_key(ec.SECP256R1()) if key_type == "ec" else \
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issuer(cert, key)


def write_pair(directory: Path, stem: str, cert: x509.Certificate, key: Any,
               chain: bytes = b"") -> tuple[Path, Path]:
    """Write `stem.pem` (leaf + optional chain) and `stem.key` (0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + chain)
    key_path.touch(mode=0o600)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def key_body(pem: str) -> str:
    """The base64 body of a PEM key on one line (what a leak would contain, wrapped or not)."""
    return "".join(line for line in pem.splitlines() if line and not line.startswith("-----"))


def contains_secret(text: str, secret: str) -> bool:
    """*secret* appears in *text*, also across line wrapping and escaped newlines (JSON)."""
    if secret in text:
        return True
    flat = "".join(text.replace("\\n", "\n").split())
    return len(secret) > 40 and secret[:64] in flat


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# --------------------------------------------------------------------------- a permissive server


@contextmanager
def permissive_server(cert_dir: Path) -> Iterator[tuple[str, int]]:
    """A loopback TLS server that accepts every protocol version and cipher OpenSSL still has
    (RSA and EC certificates, anonymous suites, `@SECLEVEL=0`). A legacy client that gets in
    here proves it really offers what the brokers must refuse."""
    rsa_ca, ec_ca = self_signed_ca("permissive-rsa", "rsa"), self_signed_ca("permissive-ec", "ec")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers("ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    for ca in (rsa_ca, ec_ca):  # one certificate per key type: RSA key exchange needs RSA
        ctx.load_cert_chain(*write_pair(cert_dir, ca.cert.subject.rfc4514_string()[3:], ca.cert, ca.key))
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    if tls.recv(64):
                        tls.sendall(b"+PONG\r\n")
            except (ssl.SSLError, OSError):
                pass
            finally:
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[:2]
    finally:
        stop.set()
        listener.close()
        thread.join(TIMEOUT)
