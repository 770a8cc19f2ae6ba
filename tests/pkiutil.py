"""PKI test helpers: extension assertions (after trustme), snapshots, a tiny foreign CA,
backdated leaves and a real TLS handshake over loopback."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import socket
import ssl
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

EKU = {"serverAuth": ExtendedKeyUsageOID.SERVER_AUTH, "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH,
       "codeSigning": ExtendedKeyUsageOID.CODE_SIGNING}


# --------------------------------------------------------------------------- reading


def load_cert(path: Path) -> x509.Certificate:
    """The first certificate of a PEM file (a leaf file may carry its chain after it)."""
    return x509.load_pem_x509_certificates(path.read_bytes())[0]


def load_chain(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def load_key(path: Path, passphrase: bytes | None = None):  # noqa: ANN201
    return serialization.load_pem_private_key(path.read_bytes(), password=passphrase)


def sans_of(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) of a certificate's SAN extension."""
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.DNSName), [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]


def cn_of(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


# --------------------------------------------------------------------------- assertions


def _ski_matches(cert: x509.Certificate) -> None:
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert not ski.critical
    assert ski.value.digest == x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def _aki_points_at(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert not aki.critical
    issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert aki.value.key_identifier == issuer_ski
    assert cert.issuer == issuer.subject
    cert.verify_directly_issued_by(issuer)


def assert_is_ca(cert: x509.Certificate, *, issuer: x509.Certificate | None = None,
                 path_length: int | None = 0) -> None:
    """A CA certificate: critical BasicConstraints(ca, pathlen), critical KeyUsage that signs
    certificates and CRLs and nothing a leaf does, SKI of its key, AKI of its issuer."""
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca is True
    assert bc.value.path_length == path_length
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value.key_cert_sign and ku.value.crl_sign
    assert not ku.value.key_encipherment and not ku.value.data_encipherment
    _ski_matches(cert)
    _aki_points_at(cert, issuer or cert)
    try:
        cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        pass
    else:  # pragma: no cover - fails the assertion
        raise AssertionError("a CA certificate must not carry an EKU")


def assert_is_leaf(cert: x509.Certificate, *, issuer: x509.Certificate, eku: Sequence[str],
                   dns: Sequence[str] = (), ips: Sequence[str] = (), cn: str | None = None) -> None:
    """A leaf: critical BasicConstraints(ca=False), critical KeyUsage without certificate or CRL
    signing, exactly the wanted EKUs, exactly the wanted SANs, SKI/AKI, signed by *issuer*."""
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca is False
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value.digital_signature
    assert not ku.value.key_cert_sign and not ku.value.crl_sign
    if eku:
        ext = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        assert not ext.critical
        assert set(ext.value) == {EKU[e] for e in eku}
    if dns or ips:
        got_dns, got_ips = sans_of(cert)
        assert sorted(got_dns) == sorted(dns)
        assert sorted(got_ips) == sorted(ips)
        assert not cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical
    if cn is not None:
        assert cn_of(cert) == cn
    _ski_matches(cert)
    _aki_points_at(cert, issuer)


# --------------------------------------------------------------------------- snapshots


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under *root*: type, mode, mtime (ns) and, for files, the bytes."""
    out: dict[str, tuple] = {}
    if not root.exists():
        return out
    for path in sorted([root, *root.rglob("*")]):
        st = path.lstat()
        rel = str(path.relative_to(root))
        if stat.S_ISREG(st.st_mode):
            out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_mtime_ns, path.read_bytes())
        else:
            out[rel] = ("dir" if path.is_dir() else "other", stat.S_IMODE(st.st_mode), st.st_mtime_ns, None)
    return out


def snapshot_diff(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    """Human-readable differences between two snapshots ([] when identical)."""
    diff = [f"+ {p}" for p in sorted(set(after) - set(before))]
    diff += [f"- {p}" for p in sorted(set(before) - set(after))]
    for p in sorted(set(before) & set(after)):
        if before[p] != after[p]:
            what = [name for name, a, b in zip(("type", "mode", "mtime", "bytes"), before[p], after[p]) if a != b]
            diff.append(f"~ {p} ({', '.join(what)})")
    return diff


# --------------------------------------------------------------------------- hand-made certificates


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def write_pair(directory: Path, name: str, cert: x509.Certificate, key) -> tuple[Path, Path]:  # noqa: ANN001
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def sign_leaf(issuer_cert: x509.Certificate, issuer_key, cn: str, *, eku: str = "clientAuth",  # noqa: ANN001
              sans: Sequence[str] = (), not_before: dt.datetime | None = None,
              not_after: dt.datetime | None = None) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A leaf made outside the tool (for foreign-CA and expired-certificate cases)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    names = [x509.IPAddress(ipaddress.ip_address(s)) if _is_ip(s) else x509.DNSName(s) for s in (sans or [cn])]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(minutes=5))
        .not_valid_after(not_after or now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([EKU[eku]]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    return cert, key


def foreign_ca(cn: str = "some other CA") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA that has nothing to do with ours."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=10))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- a real handshake


@dataclass
class Handshake:
    """What each side saw. `ok` means both completed and exchanged application data."""

    server_error: str | None
    client_error: str | None
    peer_cn: str | None

    @property
    def ok(self) -> bool:
        return self.server_error is None and self.client_error is None


def server_context(ca: Path, cert: Path, key: Path, *, crl: Path | None = None) -> ssl.SSLContext:
    """A server that requires a client certificate from *ca* (and checks *crl* if given)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cafile=str(ca))
    ctx.verify_mode = ssl.CERT_REQUIRED
    if crl is not None:
        ctx.load_verify_locations(cafile=str(crl))
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return ctx


def client_context(ca: Path, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """A client that verifies the server against *ca* and checks its host name."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile=str(ca))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, server_hostname: str) -> Handshake:
    """Connect *client* to *server* over 127.0.0.1 and exchange one message."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)
    port = listener.getsockname()[1]
    seen: dict[str, str | None] = {"error": None, "cn": None}

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError as exc:
            seen["error"] = f"accept: {exc}"
            return
        conn.settimeout(30)
        try:
            with server.wrap_socket(conn, server_side=True) as tls:
                peer = tls.getpeercert()
                seen["cn"] = dict(x[0] for x in peer["subject"]).get("commonName") if peer else None
                tls.sendall(b"ok")
                tls.recv(2)
        except (ssl.SSLError, OSError) as exc:
            seen["error"] = f"{type(exc).__name__}: {exc}"
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_error = None
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
            with client.wrap_socket(raw, server_hostname=server_hostname) as tls:
                if tls.recv(2) != b"ok":
                    client_error = "connection closed before the server's message"
                else:
                    tls.sendall(b"ok")
    except (ssl.SSLError, OSError) as exc:
        client_error = f"{type(exc).__name__}: {exc}"
    thread.join(30)
    listener.close()
    return Handshake(seen["error"], client_error, seen["cn"])


# --------------------------------------------------------------------------- CLI errors


def assert_one_line_error(result, *needles: str) -> str:  # noqa: ANN001
    """A failed command: non-zero exit, exactly one stderr line saying what and where, no
    traceback. Returns the line."""
    assert result.code not in (0, None), result
    assert "Traceback" not in result.err + result.out, result.err
    lines = [ln for ln in result.err.splitlines() if ln.strip()]
    assert len(lines) == 1, result.err
    line = lines[0]
    assert re.match(r"celery-provision( [a-z]+)*: error: ", line), line
    for needle in needles:
        assert needle in line, line
    return line
