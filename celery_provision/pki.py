"""The PKI: a CA (optionally with an intermediate), broker server certificates, worker and
client certificates, Celery message-signing keys, revocation and a CRL.

Everything is decided per artefact: a re-run issues nothing when every certificate is valid
and matches the inventory, and never touches a file it does not have to replace.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import multiprocessing
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import ProvisionError
from .files import locked, private_dir, read_bytes, write_atomic
from .layout import KINDS, Layout
from .model import Deployment, Host, is_ip

__all__ = [
    "Layout",
    "LeafSpec",
    "Report",
    "leaf_specs",
    "issue",
    "renew",
    "revoke",
    "prune",
    "inventory_rows",
    "check",
    "generate_key",
    "key_type_of",
    "passphrase_for",
]

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
_SKEW = dt.timedelta(minutes=5)
_EKU = {
    "serverAuth": ExtendedKeyUsageOID.SERVER_AUTH,
    "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH,
}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


# --------------------------------------------------------------------------- keys


def generate_key(key_type: str) -> Key:
    """A new private key of *key_type* (`ec-p256`, `ec-p384`, `rsa2048`, `rsa3072`, `rsa4096`)."""
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type in ("rsa2048", "rsa3072", "rsa4096"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[3:]))
    raise ProvisionError(f"unknown key type {key_type!r}")


def key_type_of(public_key: Any) -> str:
    """The key type name of a public key, e.g. `ec-p256`."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "ec-p256", "secp384r1": "ec-p384"}.get(public_key.curve.name, public_key.curve.name)
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"rsa{public_key.key_size}"
    return type(public_key).__name__


def _hash_for(key: Key) -> hashes.HashAlgorithm:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _key_pem(key: Key, passphrase: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _same_key(cert: x509.Certificate, key: Key) -> bool:
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    return cert.public_key().public_bytes(enc, pub) == key.public_key().public_bytes(enc, pub)


# --------------------------------------------------------------------------- what should exist


@dataclass(frozen=True)
class LeafSpec:
    """One leaf certificate the inventory asks for."""

    host: str
    kind: str  # server | client | signing
    key_type: str
    sans: tuple[str, ...]
    eku: tuple[str, ...]
    days: int

    @property
    def name(self) -> str:
        return f"{self.host}/{self.kind}"

    def fingerprint(self) -> str:
        """A digest of everything that, when it changes, calls for a new certificate."""
        doc = json.dumps([self.host, self.kind, self.key_type, self.sans, self.eku])
        return hashlib.sha256(doc.encode()).hexdigest()[:32]


def leaf_specs(d: Deployment) -> list[LeafSpec]:
    """The leaf certificates the deployment needs, in a stable order."""
    s = d.settings
    clustered = len(d.group("rabbitmq")) > 1
    specs: list[LeafSpec] = []
    for h in d.hosts.values():
        if h.is_broker:
            # Inter-node TLS makes a clustered RabbitMQ node a TLS client of its peers too.
            eku = ("serverAuth", "clientAuth") if (h.is_rabbitmq and clustered) else ("serverAuth",)
            services = [d.service_name(g) for g in ("rabbitmq", "redis") if g in h.groups]
            sans = tuple(dict.fromkeys([*h.sans, *(n for n in services if n)]))
            specs.append(LeafSpec(h.name, "server", s.key_type, sans, eku, s.leaf_days))
        if h.is_app:
            specs.append(LeafSpec(h.name, "client", s.key_type, (h.name,), ("clientAuth",), s.leaf_days))
            specs.append(LeafSpec(h.name, "signing", s.signing_key_type, (), (), s.leaf_days))
    return specs


# --------------------------------------------------------------------------- certificate building


def _name(cn: str, org: str = "celery-provision") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _san(value: str) -> x509.GeneralName:
    return x509.IPAddress(ipaddress.ip_address(value)) if is_ip(value) else x509.DNSName(value)


def _build_ca(
    key: Key, subject: x509.Name, days: int, *, issuer: tuple[x509.Certificate, Key] | None, path_length: int
) -> x509.Certificate:
    now = _now()
    issuer_name = issuer[0].subject if issuer else subject
    signer = issuer[1] if issuer else key
    not_after = now + dt.timedelta(days=days)
    if issuer:
        not_after = min(not_after, issuer[0].not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
        )
    )
    return builder.sign(signer, _hash_for(signer))


def _build_leaf(spec: LeafSpec, key: Key, issuer_cert: x509.Certificate, issuer_key: Key) -> x509.Certificate:
    now = _now()
    not_after = min(now + dt.timedelta(days=spec.days), issuer_cert.not_valid_after_utc)
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(spec.host))
        .issuer_name(issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False,
                key_encipherment=is_rsa and spec.kind == "server", data_encipherment=False,
                key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    )
    if spec.eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage([_EKU[e] for e in spec.eku]), critical=False)
    if spec.sans:
        builder = builder.add_extension(x509.SubjectAlternativeName([_san(s) for s in spec.sans]), critical=False)
    return builder.sign(issuer_key, _hash_for(issuer_key))


@dataclass(frozen=True)
class _Job:
    """What every issuing process needs; inherited through fork, never sent over a pipe."""

    issuer_cert: x509.Certificate
    issuer_key: Key
    issuer_id: str
    chain: bytes
    layout: Layout


_JOB: _Job | None = None


def _issue_one(spec: LeafSpec) -> dict[str, Any]:
    """Generate, sign and write one leaf (in a worker process); return its state record."""
    job = _JOB
    assert job is not None
    key = generate_key(spec.key_type)
    cert = _build_leaf(spec, key, job.issuer_cert, job.issuer_key)
    cert_pem, key_pem = _cert_pem(cert), _key_pem(key)
    full = cert_pem + job.chain if spec.kind != "signing" else cert_pem
    private_dir(job.layout.hosts_dir / spec.host)
    # Key first: a cert never points at a key that is not there yet.
    # Not fsynced one by one: a leaf key lost in a crash no longer matches the digest in
    # state.json, so the next run reissues it (the CA key and state.json stay durable).
    write_atomic(job.layout.key(spec.host, spec.kind), key_pem, 0o600, durable=False)
    write_atomic(job.layout.cert(spec.host, spec.kind), full, 0o644)
    if spec.kind == "signing":
        private_dir(job.layout.signers_dir)
        write_atomic(job.layout.signer(spec.host), cert_pem, 0o644)
    return _record(spec, cert, full, key_pem, job.issuer_id)


def _issue_many(
    specs: Sequence[LeafSpec],
    job: _Job,
    progress: Callable[[int, int], None] | None,
    processes: int | None = None,
) -> Iterable[tuple[LeafSpec, dict[str, Any]]]:
    """Generate keys, sign and write, on every core when there is enough work to share."""
    global _JOB
    _JOB = job
    workers = min(processes or os.cpu_count() or 1, max(1, len(specs) // 8))
    try:
        if workers <= 1:
            results: Iterable[dict[str, Any]] = map(_issue_one, specs)
            pool = None
        else:
            pool = multiprocessing.get_context("fork").Pool(workers)
            chunk = max(1, min(64, len(specs) // (workers * 4)))
            results = pool.imap(_issue_one, specs, chunksize=chunk)
        try:
            for done, (spec, record) in enumerate(zip(specs, results, strict=True), 1):
                if progress:
                    progress(done, len(specs))
                yield spec, record
        finally:
            if pool is not None:
                pool.close()
                pool.join()
    finally:
        _JOB = None


# --------------------------------------------------------------------------- the CA


def passphrase_for(d: Deployment) -> bytes | None:
    """The CA key passphrase from the configured environment variable or file, if any."""
    s = d.settings
    if s.ca_passphrase_env:
        value = os.environ.get(s.ca_passphrase_env)
        if value is None:
            raise ProvisionError(
                f"the CA passphrase variable {s.ca_passphrase_env} is not set in the environment",
                where="celery_provision_ca_passphrase_env",
            )
        if not value:
            raise ProvisionError(f"the CA passphrase variable {s.ca_passphrase_env} is empty")
        return value.encode()
    if s.ca_passphrase_file:
        path = Path(s.ca_passphrase_file).expanduser()
        if not path.is_absolute():
            path = d.inventory.parent / path if d.inventory.is_file() else d.inventory / path
        data = read_bytes(path, "CA passphrase file").rstrip(b"\r\n")
        if not data:
            raise ProvisionError("CA passphrase file is empty", where=str(path))
        return data
    value = os.environ.get("CELERY_PROVISION_CA_PASSPHRASE")
    return value.encode() if value else None


def _load_cert(path: Path, what: str) -> x509.Certificate:
    data = read_bytes(path, what)
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise ProvisionError(f"{what} is corrupted (not a PEM certificate)", where=str(path)) from None


def _load_certs(path: Path, what: str) -> list[x509.Certificate]:
    data = read_bytes(path, what)
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ProvisionError(f"{what} is corrupted (not a PEM certificate)", where=str(path)) from None


def _load_key(path: Path, what: str, passphrase: bytes | None) -> Key:
    data = read_bytes(path, what)
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError:
        if passphrase:
            raise ProvisionError(f"{what} is not encrypted but a passphrase was given", where=str(path)) from None
        raise ProvisionError(
            f"{what} is encrypted: set its passphrase (celery_provision_ca_passphrase_env or "
            "_file, or CELERY_PROVISION_CA_PASSPHRASE)",
            where=str(path),
        ) from None
    except ValueError as exc:
        if b"ENCRYPTED" in data and passphrase:
            raise ProvisionError(f"wrong passphrase for {what}", where=str(path)) from None
        raise ProvisionError(f"{what} is corrupted ({exc})", where=str(path)) from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise ProvisionError(f"{what} has an unsupported key type", where=str(path))
    return key


@dataclass
class _CA:
    """The loaded CA: certificates always, private keys only when something must be signed."""

    layout: Layout
    passphrase: bytes | None
    root: x509.Certificate
    intermediate: x509.Certificate | None
    _key: Key | None = None
    _issuer_id: str | None = None

    @property
    def issuer_cert(self) -> x509.Certificate:
        return self.intermediate or self.root

    @property
    def issuer_id(self) -> str:
        if self._issuer_id is None:  # asked once per leaf written: compute it once
            self._issuer_id = hashlib.sha256(_cert_pem(self.issuer_cert)).hexdigest()[:32]
        return self._issuer_id

    def issuer_key(self) -> Key:
        if self._key is None:
            path = self.layout.intermediate_key if self.intermediate else self.layout.root_key
            key = _load_key(path, "CA private key", self.passphrase)
            if not _same_key(self.issuer_cert, key):
                raise ProvisionError("CA private key does not match its certificate", where=str(path))
            self._key = key
        return self._key

    def chain(self) -> bytes:
        """What follows a leaf in its PEM file: the intermediate, when there is one."""
        return _cert_pem(self.intermediate) if self.intermediate else b""


def _ensure_ca(d: Deployment, layout: Layout, passphrase: bytes | None, report: Report, *, force: bool) -> _CA:
    """Load the CA, creating it when (and only when) none exists."""
    s = d.settings
    has_cert, has_key = layout.root_cert.exists(), layout.root_key.exists()
    if force and (has_cert or has_key):
        retired = layout.ca_dir.with_name(f"ca.retired-{_now():%Y%m%dT%H%M%S}")
        layout.ca_dir.rename(retired)
        report.add("retired", "ca", f"previous CA moved to {retired}")
        has_cert = has_key = False
    if has_cert != has_key:
        missing = layout.root_key if has_cert else layout.root_cert
        raise ProvisionError("CA is incomplete (certificate or key missing); refusing to replace it", where=str(missing))
    private_dir(layout.ca_dir)
    if not has_cert:
        key = generate_key(s.key_type)
        cert = _build_ca(key, _name(f"celery-provision root CA {d.inventory.name}"), s.ca_days, issuer=None,
                         path_length=1 if s.intermediate_ca else 0)
        write_atomic(layout.root_key, _key_pem(key, passphrase), 0o600)
        write_atomic(layout.root_cert, _cert_pem(cert), 0o644)
        report.add("issued", "ca/root", "root CA")
    root = _load_cert(layout.root_cert, "CA certificate")
    if not root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
        raise ProvisionError("CA certificate is not a CA", where=str(layout.root_cert))
    intermediate = None
    if s.intermediate_ca:
        intermediate = _ensure_intermediate(d, layout, root, passphrase, report)
    if not layout.ca_pem.exists() or layout.ca_pem.read_bytes() != _cert_pem(root):
        # Publish a changed root only if it is the one whose key we hold (a replaced root.pem
        # must fail before anything is written).
        if not _same_key(root, _load_key(layout.root_key, "CA private key", passphrase)):
            raise ProvisionError("CA private key does not match its certificate", where=str(layout.root_key))
        write_atomic(layout.ca_pem, _cert_pem(root), 0o644)
    return _CA(layout, passphrase, root, intermediate)


def _ensure_intermediate(
    d: Deployment, layout: Layout, root: x509.Certificate, passphrase: bytes | None, report: Report,
    *, renew_within: dt.timedelta | None = None,
) -> x509.Certificate:
    cert_ok = False
    if layout.intermediate_cert.exists() and layout.intermediate_key.exists():
        cert = _load_cert(layout.intermediate_cert, "intermediate CA certificate")
        cert_ok = _issued_by(cert, root) and cert.not_valid_after_utc > _now() + (renew_within or dt.timedelta(0))
        if cert_ok:
            return cert
    root_key = _load_key(layout.root_key, "CA private key", passphrase)
    if not _same_key(root, root_key):
        raise ProvisionError("CA private key does not match its certificate", where=str(layout.root_key))
    key = generate_key(d.settings.key_type)
    cert = _build_ca(key, _name(f"celery-provision intermediate CA {d.inventory.name}"), d.settings.ca_days,
                     issuer=(root, root_key), path_length=0)
    write_atomic(layout.intermediate_key, _key_pem(key, passphrase), 0o600)
    write_atomic(layout.intermediate_cert, _cert_pem(cert), 0o644)
    report.add("issued", "ca/intermediate", "intermediate CA")
    return cert


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


# --------------------------------------------------------------------------- state


def _load_state(layout: Layout) -> dict[str, Any]:
    try:
        data = json.loads(layout.state.read_text())
    except FileNotFoundError:
        return {"version": 1, "leaves": {}, "revoked": [], "crl_number": 0}
    except (OSError, ValueError) as exc:
        raise ProvisionError(f"PKI state file is unreadable or corrupted ({exc})", where=str(layout.state)) from None
    data.setdefault("leaves", {})
    data.setdefault("revoked", [])
    data.setdefault("crl_number", 0)
    return data


def _save_state(layout: Layout, state: dict[str, Any], original: str) -> None:
    text = json.dumps(state, indent=1, sort_keys=True)
    if text != original:
        write_atomic(layout.state, text.encode(), 0o600)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


# --------------------------------------------------------------------------- report


@dataclass
class Report:
    """What a run did, artefact by artefact."""

    events: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, action: str, name: str, detail: str = "") -> None:
        self.events.append((action, name, detail))

    def count(self, action: str) -> int:
        return sum(1 for a, _, _ in self.events if a == action)

    @property
    def changed(self) -> bool:
        return any(a != "unchanged" for a, _, _ in self.events)

    def summary(self) -> str:
        parts = [f"{self.count(a)} {a}" for a in ("issued", "reissued", "renewed", "revoked", "pruned", "retired")
                 if self.count(a)]
        return ", ".join(parts) if parts else "nothing to do"


# --------------------------------------------------------------------------- decisions


def _revoked_serials(state: dict[str, Any]) -> set[str]:
    return {r["serial"] for r in state["revoked"]}


def _leaf_problem(spec: LeafSpec, layout: Layout, ca: _CA, state: dict[str, Any],
                  renew_before: dt.datetime) -> str | None:
    """None if the leaf on disk is good; else why it must be (re)issued."""
    cert_path, key_path = layout.cert(spec.host, spec.kind), layout.key(spec.host, spec.kind)
    try:
        cert_bytes, key_bytes = cert_path.read_bytes(), key_path.read_bytes()
    except FileNotFoundError:
        return "missing"
    record = state["leaves"].get(spec.name)
    if record and record.get("cert") == _sha(cert_bytes) and record.get("key") == _sha(key_bytes):
        # Fast path: the files are byte-for-byte what this tool wrote and recorded.
        if record.get("spec") != spec.fingerprint():
            return "inventory changed"
        if record.get("issuer") != ca.issuer_id:
            return "issued by another CA"
        if record["serial"] in _revoked_serials(state):
            return "revoked"
        if dt.datetime.fromisoformat(record["not_after"]) <= renew_before:
            return "expires"
        return None
    # Slow path: files we have no record of (state lost, or edited by hand). Judge the files.
    try:
        certs = x509.load_pem_x509_certificates(cert_bytes)
        key = serialization.load_pem_private_key(key_bytes, password=None)
    except (ValueError, TypeError):
        return "unreadable"
    cert = certs[0]
    if not _same_key(cert, key) or not _issued_by(cert, ca.issuer_cert):  # type: ignore[arg-type]
        return "does not match its key or CA"
    if _spec_of(cert, spec) != spec.fingerprint():
        return "inventory changed"
    if format(cert.serial_number, "x") in _revoked_serials(state):
        return "revoked"
    if cert.not_valid_after_utc <= renew_before:
        return "expires"
    state["leaves"][spec.name] = _record(spec, cert, cert_bytes, key_bytes, ca.issuer_id)
    return None


def _spec_of(cert: x509.Certificate, spec: LeafSpec) -> str:
    """The fingerprint the certificate on disk satisfies, for comparison with the wanted one."""
    try:
        sans = tuple(
            str(n.value) for n in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        )
    except x509.ExtensionNotFound:
        sans = ()
    try:
        oids = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        eku = tuple(name for name, oid in _EKU.items() if oid in oids)
    except x509.ExtensionNotFound:
        eku = ()
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    host = str(cn[0].value) if cn else ""
    wanted_order = {s: i for i, s in enumerate(spec.sans)}
    sans = tuple(sorted(sans, key=lambda s: wanted_order.get(s, len(wanted_order))))
    return LeafSpec(host, spec.kind, key_type_of(cert.public_key()), sans, eku, spec.days).fingerprint()


def _record(spec: LeafSpec, cert: x509.Certificate, cert_bytes: bytes, key_bytes: bytes,
            issuer_id: str) -> dict[str, Any]:
    return {
        "serial": format(cert.serial_number, "x"),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "spec": spec.fingerprint(),
        "issuer": issuer_id,
        "cert": _sha(cert_bytes),
        "key": _sha(key_bytes),
    }


def _sync_signers(d: Deployment, layout: Layout, state: dict[str, Any]) -> None:
    """The cert store holds exactly the current, unrevoked signing certificates."""
    if not layout.signers_dir.exists():
        return
    revoked = _revoked_serials(state)
    for path in layout.signers_dir.glob("*.pem"):
        host = path.stem
        record = state["leaves"].get(f"{host}/signing")
        if host not in d.hosts or record is None or record["serial"] in revoked:
            path.unlink()
            continue
        cert_file = layout.cert(host, "signing")
        if cert_file.exists() and path.read_bytes() != cert_file.read_bytes():
            write_atomic(path, cert_file.read_bytes(), 0o644)
    for name, record in state["leaves"].items():
        host, kind = name.split("/")
        if kind == "signing" and host in d.hosts and record["serial"] not in revoked:
            target, source = layout.signer(host), layout.cert(host, "signing")
            if source.exists() and not target.exists():
                private_dir(layout.signers_dir)
                write_atomic(target, source.read_bytes(), 0o644)


def _ensure_crl(d: Deployment, layout: Layout, ca: _CA, state: dict[str, Any], report: Report,
                *, force: bool = False) -> None:
    """Write the CRL when it is missing, stale, about to expire, or from another issuer."""
    now = _now()
    revoked = [r for r in state["revoked"] if r.get("issuer") == ca.issuer_id
               and dt.datetime.fromisoformat(r["not_after"]) > now]
    wanted = sorted(r["serial"] for r in revoked)
    if not force and layout.crl_pem.exists():
        try:
            crl = x509.load_pem_x509_crl(layout.crl_pem.read_bytes())
            current = sorted(format(r.serial_number, "x") for r in crl)
            fresh = crl.next_update_utc and crl.next_update_utc - now > dt.timedelta(days=d.settings.crl_days / 3)
            if current == wanted and fresh and crl.issuer == ca.issuer_cert.subject and crl.is_signature_valid(
                ca.issuer_cert.public_key()  # type: ignore[arg-type]
            ):
                return
        except ValueError:
            pass
    key = ca.issuer_key()
    state["crl_number"] = int(state["crl_number"]) + 1
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.issuer_cert.subject)
        .last_update(now - _SKEW)
        .next_update(now + dt.timedelta(days=d.settings.crl_days))
        .add_extension(x509.CRLNumber(state["crl_number"]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
    )
    for r in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(int(r["serial"], 16))
            .revocation_date(dt.datetime.fromisoformat(r["date"]))
            .build()
        )
    write_atomic(layout.crl_pem, builder.sign(key, _hash_for(key)).public_bytes(serialization.Encoding.PEM), 0o644)
    report.add("crl", "crl", f"{len(revoked)} revoked")


# --------------------------------------------------------------------------- operations


def _run(d: Deployment, fn: Callable[[Layout, dict[str, Any]], None]) -> None:
    layout = d.layout
    private_dir(layout.root)
    with locked(layout.root):
        state = _load_state(layout)
        original = json.dumps(state, indent=1, sort_keys=True) if layout.state.exists() else ""
        try:
            fn(layout, state)
        finally:
            _save_state(layout, state, original)


def issue(
    d: Deployment,
    *,
    renew_within_days: int | None = None,
    force_ca: bool = False,
    progress: Callable[[int, int], None] | None = None,
    only: Iterable[str] | None = None,
    processes: int | None = None,
) -> Report:
    """Create the CA if absent, then (re)issue every leaf that is missing or stale."""
    report = Report()
    passphrase = passphrase_for(d)

    def body(layout: Layout, state: dict[str, Any]) -> None:
        ca = _ensure_ca(d, layout, passphrase, report, force=force_ca)
        if renew_within_days is not None and ca.intermediate is not None:
            within = dt.timedelta(days=renew_within_days)
            new = _ensure_intermediate(d, layout, ca.root, passphrase, report, renew_within=within)
            if new != ca.intermediate:
                ca = _CA(layout, passphrase, ca.root, new)
        renew_before = _now() + dt.timedelta(days=renew_within_days or 0)
        wanted = [s for s in leaf_specs(d) if only is None or s.host in set(only)]
        todo: list[tuple[LeafSpec, str]] = []
        for spec in wanted:
            problem = _leaf_problem(spec, layout, ca, state, renew_before)
            if problem is None:
                report.add("unchanged", spec.name)
            else:
                todo.append((spec, problem))
        if todo:
            job = _Job(ca.issuer_cert, ca.issuer_key(), ca.issuer_id, ca.chain(), layout)
            reasons = dict((s.name, p) for s, p in todo)
            for spec, record in _issue_many([s for s, _ in todo], job, progress, processes):
                state["leaves"][spec.name] = record
                reason = reasons[spec.name]
                action = "issued" if reason == "missing" else ("renewed" if reason == "expires" else "reissued")
                report.add(action, spec.name, reason)
        _sync_signers(d, layout, state)
        _ensure_crl(d, layout, ca, state, report)

    _run(d, body)
    return report


def renew(d: Deployment, within_days: int, **kwargs: Any) -> Report:
    """Reissue every certificate that expires within *within_days* days."""
    if within_days < 0:
        raise ProvisionError(f"--within must be zero or more days, got {within_days}")
    return issue(d, renew_within_days=within_days, **kwargs)


def _revoke_leaf(state: dict[str, Any], name: str, ca: _CA, reason: str) -> bool:
    record = state["leaves"].get(name)
    if record is None or record["serial"] in _revoked_serials(state):
        return False
    state["revoked"].append({
        "serial": record["serial"], "name": name, "date": _now().isoformat(), "reason": reason,
        "issuer": record["issuer"], "not_after": record["not_after"],
    })
    return True


def revoke(d: Deployment, name: str, *, kinds: Sequence[str] = KINDS, reason: str = "revoked by operator") -> Report:
    """Revoke a host's certificates (all kinds by default) and publish a new CRL.

    The files stay in place until the next `issue`, which replaces revoked certificates of
    hosts still in the inventory; the signing certificate leaves the cert store at once.
    """
    report = Report()
    passphrase = passphrase_for(d)

    def body(layout: Layout, state: dict[str, Any]) -> None:
        known = {n.split("/")[0] for n in state["leaves"]}
        if name not in known:
            raise ProvisionError(f"no certificates issued for {name!r}", where=str(layout.root))
        ca = _ensure_ca(d, layout, passphrase, Report(), force=False)
        for kind in kinds:
            if _revoke_leaf(state, f"{name}/{kind}", ca, reason):
                report.add("revoked", f"{name}/{kind}")
        _sync_signers(d, layout, state)
        _ensure_crl(d, layout, ca, state, report, force=bool(report.events))

    _run(d, body)
    return report


def prune(d: Deployment) -> Report:
    """Revoke and delete the certificates of hosts that left the inventory."""
    report = Report()
    passphrase = passphrase_for(d)

    def body(layout: Layout, state: dict[str, Any]) -> None:
        ca = _ensure_ca(d, layout, passphrase, Report(), force=False)
        gone = sorted({n.split("/")[0] for n in state["leaves"]} - set(d.hosts))
        if layout.hosts_dir.exists():
            gone = sorted(set(gone) | {p.name for p in layout.hosts_dir.iterdir() if p.is_dir() and p.name not in d.hosts})
        for host in gone:
            for kind in KINDS:
                _revoke_leaf(state, f"{host}/{kind}", ca, "host removed from the inventory")
                state["leaves"].pop(f"{host}/{kind}", None)
            shutil.rmtree(layout.hosts_dir / host, ignore_errors=True)
            report.add("pruned", host)
        _sync_signers(d, layout, state)
        if gone:
            _ensure_crl(d, layout, ca, state, report, force=True)

    _run(d, body)
    return report


# --------------------------------------------------------------------------- list and check


def _cert_row(name: str, kind: str, path: Path, revoked: set[str], now: dt.datetime,
              expected: bool) -> dict[str, Any]:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return {"name": name, "kind": kind, "key_type": "?", "sans": [], "not_after": None,
                "days_left": None, "status": "unreadable", "path": str(path)}
    try:
        sans = [str(n.value) for n in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value]
    except x509.ExtensionNotFound:
        sans = []
    left = (cert.not_valid_after_utc - now).days
    serial = format(cert.serial_number, "x")
    if serial in revoked:
        status = "revoked"
    elif cert.not_valid_after_utc <= now:
        status = "expired"
    elif not expected:
        status = "not in inventory"
    elif left < 30:
        status = "expiring"
    else:
        status = "ok"
    return {"name": name, "kind": kind, "key_type": key_type_of(cert.public_key()), "sans": sans,
            "not_after": cert.not_valid_after_utc.isoformat(), "days_left": left, "status": status,
            "serial": serial, "path": str(path)}


def inventory_rows(d: Deployment) -> list[dict[str, Any]]:
    """One row per certificate on disk: name, kind, key type, SANs, expiry, days left, status."""
    layout = d.layout
    state = _load_state(layout)
    revoked = _revoked_serials(state)
    now = _now()
    rows = []
    for label, path in (("root", layout.root_cert), ("intermediate", layout.intermediate_cert)):
        if path.exists():
            rows.append(_cert_row(f"ca/{label}", "ca", path, revoked, now, True))
    wanted = {s.name for s in leaf_specs(d)}
    if layout.hosts_dir.exists():
        for host_dir in sorted(layout.hosts_dir.iterdir()):
            for kind in KINDS:
                path = host_dir / f"{kind}.pem"
                if path.exists():
                    rows.append(_cert_row(host_dir.name, kind, path, revoked, now,
                                          f"{host_dir.name}/{kind}" in wanted))
    return rows


def check(d: Deployment) -> list[str]:
    """Every problem with the PKI on disk (chains, key pairs, expiry, permissions); [] if none."""
    layout = d.layout
    problems: list[str] = []
    if not layout.root_cert.exists():
        return [f"{layout.root_cert}: no CA (run `celery-provision certs issue`)"]
    state = _load_state(layout)
    revoked = _revoked_serials(state)
    now = _now()

    def mode_ok(path: Path, limit: int) -> None:
        mode = path.stat().st_mode & 0o777
        if mode & ~limit:
            problems.append(f"{path}: mode {mode:04o} is wider than {limit:04o}")

    for directory in [layout.root, layout.ca_dir, *([layout.hosts_dir] if layout.hosts_dir.exists() else [])]:
        mode_ok(directory, 0o700)
    try:
        root = _load_cert(layout.root_cert, "CA certificate")
    except ProvisionError as exc:
        return [str(exc)]
    if root.not_valid_after_utc <= now:
        problems.append(f"{layout.root_cert}: CA expired on {root.not_valid_after_utc:%Y-%m-%d}")
    issuer = root
    if layout.root_key.exists():
        mode_ok(layout.root_key, 0o600)
    if layout.intermediate_cert.exists():
        try:
            issuer = _load_cert(layout.intermediate_cert, "intermediate CA certificate")
        except ProvisionError as exc:
            problems.append(str(exc))
        if not _issued_by(issuer, root):
            problems.append(f"{layout.intermediate_cert}: not issued by the root CA")
        if layout.intermediate_key.exists():
            mode_ok(layout.intermediate_key, 0o600)
    for spec in leaf_specs(d):
        cert_path, key_path = layout.cert(spec.host, spec.kind), layout.key(spec.host, spec.kind)
        if not cert_path.exists() or not key_path.exists():
            problems.append(f"{cert_path}: missing")
            continue
        mode_ok(key_path, 0o600)
        mode_ok(key_path.parent, 0o700)
        try:
            cert = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (ValueError, TypeError):
            problems.append(f"{cert_path}: certificate or key unreadable")
            continue
        if not _same_key(cert, key):  # type: ignore[arg-type]
            problems.append(f"{key_path}: does not match {cert_path.name}")
        if not _issued_by(cert, issuer):
            problems.append(f"{cert_path}: chain does not verify against the CA")
        if cert.not_valid_after_utc <= now:
            problems.append(f"{cert_path}: expired on {cert.not_valid_after_utc:%Y-%m-%d}")
        elif cert.not_valid_before_utc > now:
            problems.append(f"{cert_path}: not valid before {cert.not_valid_before_utc:%Y-%m-%d}")
        if format(cert.serial_number, "x") in revoked:
            problems.append(f"{cert_path}: revoked")
        if _spec_of(cert, spec) != spec.fingerprint():
            problems.append(f"{cert_path}: does not match the inventory (names, key type or usage)")
    if layout.crl_pem.exists():
        try:
            crl = x509.load_pem_x509_crl(layout.crl_pem.read_bytes())
            if crl.next_update_utc and crl.next_update_utc <= now:
                problems.append(f"{layout.crl_pem}: CRL expired")
            if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                problems.append(f"{layout.crl_pem}: CRL not signed by the issuing CA")
        except ValueError:
            problems.append(f"{layout.crl_pem}: CRL unreadable")
    return problems
