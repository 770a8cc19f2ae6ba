#!/usr/bin/env python3
"""Benchmark: issuing client certificates for N workers with `celery_provision.pki`.

Measured side by side, in one run, on the same cores:

* ours     -- `pki.issue` on a Deployment of N client-only hosts (client certificates only:
              the RSA signing certificates are measured separately below), files written;
* floor    -- a bare loop that only generates the same key type and signs an equivalent
              certificate with `cryptography`, spread over the same number of processes;
* openssl  -- `openssl genpkey` + `req` + `x509 -req` per certificate, on a sample,
              extrapolated per certificate;
* no-op    -- a second `pki.issue` over the same N certificates (nothing to do);
* parsing  -- `model.load` of a generated inventory with N workers;
* signing  -- the RSA signing key per worker (rsa2048 by default), on a sample.

Usage: benchmarks/bench_pki.py [--n 1000] [--openssl-sample 20] [--rsa-sample 10]
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

from celery_provision import model, pki  # noqa: E402
from celery_provision.pki import ops as pki_ops  # noqa: E402 - `issue` looks leaf_specs up here

TARGET_FLOOR_RATIO = 1.3
TARGET_OPENSSL_SPEEDUP = 50.0
TARGET_NOOP_10K_SECONDS = 2.0


def _clock() -> float:
    return time.perf_counter()


# --------------------------------------------------------------------------- ours


def _deployment(n: int, root: Path, key_type: str) -> model.Deployment:
    """N client-only hosts, built directly (inventory parsing is measured on its own)."""
    role_vars = {"rabbitmq_tls_port": 5671, "rabbitmq_admin_user": "admin", "redis_tls_port": 6380,
                 "redis_admin_user": "admin", "celery_worker_config_dir": "/etc/celery-provision"}
    hosts = {
        f"worker-{i}": model.Host(name=f"worker-{i}", address=f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}",
                                  groups=frozenset({"celery_workers"}), role_vars=role_vars)
        for i in range(n)
    }
    settings = model.Settings(broker="rabbitmq", result_backend="rpc", key_type=key_type)
    return model.Deployment(inventory=root / "bench", hosts=hosts, settings=settings,
                            pki_dir=root / "pki", credentials_dir=root / "credentials")


def _client_specs_only():  # noqa: ANN202
    """A spec filter: client certificates only (signing keys are reported separately)."""
    original = pki.leaf_specs

    def client_only(d: model.Deployment) -> list[pki.LeafSpec]:
        return [s for s in original(d) if s.kind == "client"]

    return original, client_only


def bench_ours(n: int, root: Path, key_type: str) -> tuple[float, float, int]:
    d = _deployment(n, root, key_type)
    original, client_only = _client_specs_only()
    pki_ops.leaf_specs = client_only  # type: ignore[assignment]
    try:
        start = _clock()
        report = pki.issue(d)
        first = _clock() - start
        issued = report.count("issued") - 1  # minus the CA
        start = _clock()
        again = pki.issue(d)
        noop = _clock() - start
        assert not again.changed, again.events[:5]
    finally:
        pki_ops.leaf_specs = original  # type: ignore[assignment]
    return first, noop, issued


# --------------------------------------------------------------------------- the floor


_FLOOR_CA: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None


def _floor_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "floor CA")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def _floor_one(i: int) -> int:
    """Key generation and signing of a certificate with the same extensions, in memory."""
    assert _FLOOR_CA is not None
    ca_cert, ca_key = _FLOOR_CA
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    name = f"worker-{i}"
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "celery-provision"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return len(pem)


def bench_floor(n: int, processes: int) -> float:
    global _FLOOR_CA
    _FLOOR_CA = _floor_ca()
    start = _clock()
    if processes <= 1:
        for i in range(n):
            _floor_one(i)
    else:
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            for _ in pool.imap_unordered(_floor_one, range(n), chunksize=max(1, n // (processes * 8))):
                pass
    return _clock() - start


# --------------------------------------------------------------------------- openssl


_OPENSSL_EXT = """basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:{name}
"""


def bench_openssl(sample: int, work: Path) -> float:
    """Seconds per certificate for genpkey + req + x509 -req (after a CA made once)."""
    work.mkdir(parents=True)
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=work)  # noqa: E731
    run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ca.key")
    run("req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=openssl CA", "-days", "30", "-out", "ca.pem")
    start = _clock()
    for i in range(sample):
        name = f"worker-{i}"
        (work / f"{name}.ext").write_text(_OPENSSL_EXT.format(name=name))
        run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f"{name}.key")
        run("req", "-new", "-key", f"{name}.key", "-subj", f"/O=celery-provision/CN={name}", "-out", f"{name}.csr")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "365", "-sha256", "-extfile", f"{name}.ext", "-out", f"{name}.pem")
    return (_clock() - start) / sample


# --------------------------------------------------------------------------- parsing and signing keys


def bench_parse(n: int, root: Path) -> float:
    """`model.load` of an inventory with one broker and N workers."""
    inv = root / "inventory"
    inv.mkdir(parents=True)
    lines = ["[rabbitmq]", "mq-1 ansible_host=10.255.0.1", "", "[celery_workers]"]
    lines += [f"worker-{i} ansible_host=10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}" for i in range(n)]
    (inv / "hosts.ini").write_text("\n".join(lines) + "\n")
    start = _clock()
    d = model.load(inv)
    elapsed = _clock() - start
    assert len(d.hosts) == n + 1
    return elapsed


def bench_signing_keys(sample: int, key_type: str) -> float:
    start = _clock()
    for _ in range(sample):
        pki.generate_key(key_type)
    return (_clock() - start) / sample


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="number of workers (default 1000)")
    parser.add_argument("--openssl-sample", type=int, default=20, help="certificates made with openssl")
    parser.add_argument("--rsa-sample", type=int, default=10, help="RSA signing keys generated")
    parser.add_argument("--signing-key-type", default="rsa2048", choices=("rsa2048", "rsa3072", "rsa4096"))
    parser.add_argument("--dir", help="work directory (default: a temporary one, removed after)")
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench-pki-"))
    try:
        n = args.n
        print(f"celery-provision PKI benchmark: N={n} client certificates (ec-p256), {cores} cores, "
              f"python {sys.version.split()[0]}")
        floor = bench_floor(n, cores)
        ours, noop, issued = bench_ours(n, root / "ours", "ec-p256")
        assert issued == n, issued
        openssl = bench_openssl(args.openssl_sample, root / "openssl")
        parse = bench_parse(n, root / "parse")
        signing = bench_signing_keys(args.rsa_sample, args.signing_key_type)
        ours_per = ours / n
        rows = [
            ("floor (keygen+sign, in memory, %d procs)" % cores, floor, floor / n),
            ("ours: pki.issue, files written", ours, ours_per),
            (f"openssl CLI (sample {args.openssl_sample}, extrapolated)", openssl * n, openssl),
            ("ours: no-op re-run", noop, noop / n),
            ("inventory parsing (model.load)", parse, parse / n),
            (f"{args.signing_key_type} signing keys (sample {args.rsa_sample}, 1 core, extrapolated)",
             signing * n, signing),
        ]
        width = max(len(r[0]) for r in rows)
        print(f"{'':{width}}  {'total s':>9}  {'per cert ms':>11}")
        for label, total, per in rows:
            print(f"{label:{width}}  {total:9.3f}  {per * 1000:11.3f}")
        ratio = ours / floor
        speedup = openssl / ours_per
        print()
        print(f"ours / floor           = {ratio:6.2f}x   (target <= {TARGET_FLOOR_RATIO}x)  "
              f"{'OK' if ratio <= TARGET_FLOOR_RATIO else 'MISSED'}")
        print(f"openssl / ours per cert = {speedup:6.1f}x   (target >= {TARGET_OPENSSL_SPEEDUP:.0f}x)  "
              f"{'OK' if speedup >= TARGET_OPENSSL_SPEEDUP else 'MISSED'}")
        if n >= 10000:
            print(f"no-op re-run over {n}  = {noop:6.2f} s  (target < {TARGET_NOOP_10K_SECONDS} s)  "
                  f"{'OK' if noop < TARGET_NOOP_10K_SECONDS else 'MISSED'}")
        else:
            print(f"no-op re-run over {n}  = {noop:6.3f} s  (the 2 s target is for --n 10000)")
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
