"""Leaf certificates: what the inventory asks for, how one is built, and issuing many in parallel."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import multiprocessing
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from ..files import private_dir, write_atomic
from ..layout import Layout
from ..model import is_ip
from .certs import EKU, SKEW, cert_pem, name, now
from .keys import Key, generate_key, hash_for, key_pem, key_type_of
from .state import record

#: A SAN written as DNS name although it reads as an IP address (a cluster node's address).
DNS_PREFIX = "dns:"

if TYPE_CHECKING:
    from ..model import Deployment

__all__ = ["LeafSpec", "Job", "leaf_specs", "spec_of", "build_leaf", "issue_many"]


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
        """`host/kind`, the leaf's name in reports and state.json."""
        return f"{self.host}/{self.kind}"

    def fingerprint(self) -> str:
        """A digest of everything that, when it changes, calls for a new certificate."""
        doc = json.dumps([self.host, self.kind, self.key_type, self.sans, self.eku])
        return hashlib.sha256(doc.encode()).hexdigest()[:32]


def leaf_specs(d: Deployment) -> list[LeafSpec]:
    """The leaf certificates the deployment needs, in a stable order."""
    s = d.settings
    clustered = d.rabbitmq_cluster
    # A replica is a TLS client of its primary, a Sentinel of the servers and of its peers.
    replicated = d.replication is not None
    specs: list[LeafSpec] = []
    for h in d.hosts.values():
        if h.is_broker:
            # Inter-node TLS makes a clustered RabbitMQ node a TLS client of its peers (and of
            # its own CLI tools' nodes) too; independent brokers in a failover list only serve.
            both = (h.is_rabbitmq and clustered) or (h.is_redis and replicated)
            eku = ("serverAuth", "clientAuth") if both else ("serverAuth",)
            services = [d.service_name(g) for g in ("rabbitmq", "redis") if g in h.groups]
            # A cluster node's name is rabbit@<address>, and Erlang's inet_tls_dist checks that
            # host part as a DNS name, never against an iPAddress SAN (OTP 25:
            # {bad_cert,hostname_check_failed}): the address is a DNS name too.
            node = [f"{DNS_PREFIX}{h.address}"] if h.is_rabbitmq and clustered and is_ip(h.address) else []
            sans = tuple(dict.fromkeys([*h.sans, *(n for n in services if n), *node]))
            specs.append(LeafSpec(h.name, "server", s.key_type, sans, eku, s.leaf_days))
        if h.is_app:
            specs.append(LeafSpec(h.name, "client", s.key_type, (h.name,), ("clientAuth",), s.leaf_days))
            # Code signing only: a signing certificate can never complete a TLS handshake
            # (OpenSSL's ssl_client purpose and Erlang's ssl both want clientAuth).
            specs.append(LeafSpec(h.name, "signing", s.signing_key_type, (), ("codeSigning",), s.leaf_days))
    return specs


def spec_of(cert: x509.Certificate, spec: LeafSpec) -> str:
    """The fingerprint the certificate on disk satisfies, for comparison with *spec*'s."""
    try:
        sans = tuple(
            f"{DNS_PREFIX}{n.value}" if isinstance(n, x509.DNSName) and is_ip(n.value) else str(n.value)
            for n in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        )
    except x509.ExtensionNotFound:
        sans = ()
    try:
        oids = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        eku = tuple(label for label, oid in EKU.items() if oid in oids)
    except x509.ExtensionNotFound:
        eku = ()
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    host = str(cn[0].value) if cn else ""
    wanted_order = {s: i for i, s in enumerate(spec.sans)}
    sans = tuple(sorted(sans, key=lambda s: wanted_order.get(s, len(wanted_order))))
    return LeafSpec(host, spec.kind, key_type_of(cert.public_key()), sans, eku, spec.days).fingerprint()


def _san(value: str) -> x509.GeneralName:
    if value.startswith(DNS_PREFIX):
        return x509.DNSName(value.removeprefix(DNS_PREFIX))
    return x509.IPAddress(ipaddress.ip_address(value)) if is_ip(value) else x509.DNSName(value)


def build_leaf(spec: LeafSpec, key: Key, issuer_cert: x509.Certificate, issuer_key: Key) -> x509.Certificate:
    """The certificate *spec* asks for, of *key*, signed by the issuer (never outliving it)."""
    start = now()
    not_after = min(start + dt.timedelta(days=spec.days), issuer_cert.not_valid_after_utc)
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(spec.host))
        .issuer_name(issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - SKEW)
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
        builder = builder.add_extension(x509.ExtendedKeyUsage([EKU[e] for e in spec.eku]), critical=False)
    if spec.sans:
        builder = builder.add_extension(x509.SubjectAlternativeName([_san(s) for s in spec.sans]), critical=False)
    return builder.sign(issuer_key, hash_for(issuer_key))


@dataclass(frozen=True)
class Job:
    """What every issuing process needs; inherited through fork, never sent over a pipe."""

    issuer_cert: x509.Certificate
    issuer_key: Key
    issuer_id: str
    chain: bytes
    layout: Layout


#: The job of the running `issue_many`, set before the pool forks so its workers inherit it.
_JOB: Job | None = None


def _issue_one(spec: LeafSpec) -> dict[str, Any]:
    """Generate, sign and write one leaf (in a worker process); return its state record.

    Module-level so that the pool can pickle it by name; it reads the job from `_JOB`.
    """
    job = _JOB
    assert job is not None
    key = generate_key(spec.key_type)
    cert = build_leaf(spec, key, job.issuer_cert, job.issuer_key)
    cert_bytes, key_bytes = cert_pem(cert), key_pem(key)
    # Every leaf file carries its chain (an intermediate CA, where there is one): a worker
    # checks a signer's certificate up to the root in its ca.pem.
    full = cert_bytes + job.chain
    private_dir(job.layout.hosts_dir / spec.host)
    # Key first: a cert never points at a key that is not there yet.
    # Not fsynced one by one: a leaf key lost in a crash no longer matches the digest in
    # state.json, so the next run reissues it (the CA key and state.json stay durable).
    write_atomic(job.layout.key(spec.host, spec.kind), key_bytes, 0o600, durable=False)
    write_atomic(job.layout.cert(spec.host, spec.kind), full, 0o644)
    # The signer store is written by `signers.sync_signers`, once every leaf is issued.
    return record(spec.fingerprint(), cert, full, key_bytes, job.issuer_id)


def issue_many(
    specs: Sequence[LeafSpec],
    job: Job,
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
            for done, (spec, entry) in enumerate(zip(specs, results, strict=True), 1):
                if progress:
                    progress(done, len(specs))
                yield spec, entry
        finally:
            if pool is not None:
                pool.close()
                pool.join()
    finally:
        _JOB = None
