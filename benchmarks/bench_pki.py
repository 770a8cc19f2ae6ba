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

With `--parse-n N`, inventory loading side by side: `model.load` against ansible-core's own
parse of the same inventory (InventoryManager, plus the variables it genuinely has to read:
VariableManager.get_vars for one host per distinct set of groups, and each host's own
variables and host_vars lookup), interleaved, each run in a fresh forked process.

With `--scale 100,1000,10000`, the controller side end to end through the CLI
(`celery_provision.cli.main`, in a fresh forked process each): `certs issue`, its no-op
re-run, `render` and `export`, with the time per worker at each size, and `certs issue` at the
largest size against the floor of the same leaves (TLS and signing certificate per worker).

Usage: benchmarks/bench_pki.py [--n 1000] [--openssl-sample 20] [--rsa-sample 10]
                               [--parse-n 10000] [--scale 100,1000,10000]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import multiprocessing
import statistics
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

from celery_provision import cli, model, pki  # noqa: E402
from celery_provision.pki import ops as pki_ops  # noqa: E402 - `issue` looks leaf_specs up here

TARGET_FLOOR_RATIO = 1.3
TARGET_OPENSSL_SPEEDUP = 50.0
TARGET_NOOP_10K_SECONDS = 2.0
TARGET_LOAD_RATIO = 1.5
TARGET_LINEAR_RATIO = 1.2
#: certs issue for 10,000 workers end to end against the bare floor of the same key types.
TARGET_ISSUE_FLOOR_RATIO = 2.0


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


def _address(i: int) -> str:
    return f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"


def write_inventory(inv: Path, n: int, *, variables: bool = False, redis: bool = False,
                    all_vars: str = "") -> Path:
    """An INI inventory with one RabbitMQ broker and N workers.

    *variables*: also what the per-host variable path must get right: a group_vars/all.yml,
    a group (every third worker) with its own group_vars file, a group var in the INI that
    every worker templates, and host_vars files for a few workers. *redis*: a Redis host as
    the result backend. *all_vars*: more lines for group_vars/all.yml.
    """
    inv.mkdir(parents=True)
    lines = ["[rabbitmq]", "mq-1 ansible_host=10.255.0.1", ""]
    if redis:
        lines += ["[redis]", "cache-1 ansible_host=10.255.0.2", ""]
    lines += ["[celery_workers]", *(f"worker-{i} ansible_host={_address(i)}" for i in range(n))]
    if variables:
        lines += ["", "[zone_a]", *(f"worker-{i}" for i in range(0, n, 3))]
        lines += ["", "[celery_workers:vars]", "celery_worker_config_dir=/srv/celery/{{ inventory_hostname }}"]
        (inv / "group_vars").mkdir()
        (inv / "group_vars" / "zone_a.yml").write_text("celery_worker_config_name: zone_a_config.py\n")
        (inv / "host_vars").mkdir()
        for i in (1, 7, 42):
            if i < n:
                (inv / "host_vars" / f"worker-{i}.yml").write_text(f"celery_worker_config_dir: /opt/w{i}\n")
    if variables or all_vars:
        (inv / "group_vars").mkdir(exist_ok=True)
        text = "celery_provision_queues: [celery, mail]\n" if variables else ""
        (inv / "group_vars" / "all.yml").write_text(text + all_vars)
    (inv / "hosts.ini").write_text("\n".join(lines) + "\n")
    return inv


def bench_parse(n: int, root: Path) -> float:
    """`model.load` of an inventory with one broker and N workers."""
    inv = write_inventory(root / "inventory", n)
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


# --------------------------------------------------------------------------- fresh processes


def _child(conn: Any, fn: Any, args: tuple[Any, ...]) -> None:
    try:
        conn.send(("ok", fn(*args)))
    except BaseException as exc:  # noqa: BLE001 - reported by the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def in_fresh_process(fn: Any, *args: Any) -> Any:
    """Run fn(*args) in a forked child and return its result.

    Each measurement starts from the same state, as a new `celery-provision` process would:
    ansible-core keeps process-wide caches (the host_group_vars plugin remembers every
    group_vars/host_vars lookup), so a second load in one process would be unfairly cheap.
    Modules are already imported (the parent warmed them up), so import time is not counted.
    """
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(send, fn, args))
    child.start()
    send.close()
    status, value = receive.recv()
    child.join()
    if status != "ok":
        raise RuntimeError(f"{getattr(fn, '__name__', fn)}: {value}")
    return value


def _warm_up(root: Path) -> None:
    """Import and load ansible-core's plugins once, on a tiny inventory of its own."""
    inv = write_inventory(root / "warm-up", 2, variables=True)
    model.load(inv)
    _ansible_floor(inv)


# --------------------------------------------------------------------------- inventory loading


def _ansible_floor(inv: Path) -> float:
    """ansible-core's own work to know every host's variables.

    Counted: InventoryManager parsing the source; a VariableManager; `get_vars` for one host
    per distinct set of groups (group_vars/all, group_vars/<group> by depth and priority,
    inventory group vars: the same for every host of that set); and for every host its own
    variables (`Host.get_vars`: inventory host vars and magic variables) and its host_vars
    lookup through the vars plugins. Not counted: what only the model does (merging the
    levels per host, role defaults and their templates, validation, the Deployment).
    """
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager
    from ansible.vars.plugins import get_vars_from_inventory_sources

    start = _clock()
    loader = DataLoader()
    inventory = InventoryManager(loader=loader, sources=[str(inv)])
    variables = VariableManager(loader=loader, inventory=inventory)
    seen: set[frozenset[str]] = set()
    for host in inventory.get_hosts():
        groups = frozenset(g.name for g in host.get_groups())
        if groups not in seen:
            seen.add(groups)
            variables.get_vars(host=host, include_hostvars=False)
        host.get_vars()
        get_vars_from_inventory_sources(loader, [str(inv)], [host], "task")
    return _clock() - start


def _inventory_manager_alone(inv: Path) -> float:
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    start = _clock()
    InventoryManager(loader=DataLoader(), sources=[str(inv)])
    return _clock() - start


def _model_load(inv: Path) -> float:
    start = _clock()
    model.load(inv)
    return _clock() - start


def bench_loading(n: int, root: Path, repeats: int) -> list[tuple[str, float, float, float]]:
    """(variant, InventoryManager alone, ansible-core floor, model.load): medians of
    *repeats* interleaved runs, each in a fresh process."""
    rows = []
    for label, variables in (("plain INI", False), ("INI + group_vars/host_vars", True)):
        inv = write_inventory(root / f"load-{int(variables)}", n, variables=variables)
        alone: list[float] = []
        floor: list[float] = []
        ours: list[float] = []
        for _ in range(repeats):
            alone.append(in_fresh_process(_inventory_manager_alone, inv))
            floor.append(in_fresh_process(_ansible_floor, inv))
            ours.append(in_fresh_process(_model_load, inv))
        rows.append((label, statistics.median(alone), statistics.median(floor), statistics.median(ours)))
    return rows


# --------------------------------------------------------------------------- the CLI at scale


def _cli(argv: list[str]) -> tuple[float, str]:
    """`celery-provision ARGV` in-process, stdout captured (printed output is part of the cost)."""
    out = io.StringIO()
    start = _clock()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(argv)
    elapsed = _clock() - start
    if code != 0:
        raise RuntimeError(f"celery-provision {' '.join(argv)}: exit {code}: {out.getvalue()[-500:]}")
    return elapsed, out.getvalue()


def _issue(inv: Path) -> float:
    return _cli(["certs", "issue", "-i", str(inv)])[0]


def _reissue(inv: Path) -> float:
    elapsed, out = _cli(["certs", "issue", "-i", str(inv)])
    changed = [ln for ln in out.splitlines() if not ln.startswith("certs:")]
    assert not changed, changed[:5]  # a no-op: nothing issued, repaired or published
    return elapsed


def _credentials(inv: Path) -> float:
    return _cli(["credentials", "-i", str(inv)])[0]


def _render(inv: Path, out: Path) -> float:
    return _cli(["render", "-i", str(inv), "--out", str(out)])[0]


def _export(inv: Path) -> float:
    return _cli(["export", "-i", str(inv)])[0]


SCALE_STEPS = ("certs issue", "no-op re-run", "render", "export", "model.load")


def bench_scale(sizes: list[int], root: Path) -> dict[int, dict[str, float]]:
    """Each CLI step for N workers (plus a RabbitMQ and a Redis host), in a fresh process each;
    the model's default key types (TLS and signing keys ec-p256). The largest size also gets
    its floor: the same leaves (a TLS certificate and a signing certificate per worker, the
    brokers' server certificates) made in memory by `bench_floor` on every core."""
    table: dict[int, dict[str, float]] = {}
    for n in sizes:
        inv = write_inventory(root / f"scale-{n}" / "inventory", n, redis=True,
                              all_vars="celery_provision_result_backend: redis\n")
        row: dict[str, float] = {}
        row["certs issue"] = in_fresh_process(_issue, inv)
        row["no-op re-run"] = in_fresh_process(_reissue, inv)
        in_fresh_process(_credentials, inv)  # set-up for export: the broker passwords
        row["render"] = in_fresh_process(_render, inv, root / f"scale-{n}" / "out")
        row["export"] = in_fresh_process(_export, inv)
        row["model.load"] = in_fresh_process(_model_load, inv)
        if n == max(sizes):
            row["floor"] = in_fresh_process(bench_floor, 2 * n + 2, os.cpu_count() or 1)
        table[n] = row
        print(f"  N={n}: " + ", ".join(f"{k} {'-' if v is None else f'{v:.2f} s'}" for k, v in row.items()),
              file=sys.stderr, flush=True)
    return table


def _verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def print_loading(n: int, rows: list[tuple[str, float, float, float]], repeats: int) -> None:
    print(f"inventory loading, {n} workers, median of {repeats} interleaved runs, a fresh process each")
    print(f"  {'inventory':28}  {'InventoryManager':>16}  {'ansible-core floor':>18}  {'model.load':>10}  "
          f"{'ms/host':>7}  ratio")
    for label, alone, floor, ours in rows:
        ratio = ours / floor
        print(f"  {label:28}  {alone:14.3f} s  {floor:16.3f} s  {ours:8.3f} s  {ours / n * 1000:7.3f}  "
              f"{ratio:.2f}x (target <= {TARGET_LOAD_RATIO}x) {_verdict(ratio <= TARGET_LOAD_RATIO)}")
    print("  floor = InventoryManager + get_vars for one host per distinct group set + each host's own")
    print("          variables and host_vars lookup (what ansible-core itself must read)")




def print_scale(table: dict[int, dict[str, float]]) -> None:
    sizes = sorted(table)
    print("controller side through the CLI, a fresh process per step (the model's key types: "
          "TLS and signing keys ec-p256)")
    head = "".join(f"  {'N=' + format(n, ','):>20}" for n in sizes)
    print(f"  {'step':14}{head}")
    print(f"  {'':14}" + "".join(f"  {'s':>9} {'ms/worker':>10}" for _ in sizes))
    for step in SCALE_STEPS:
        print(f"  {step:14}" + "".join(f"  {table[n][step]:9.3f} {table[n][step] / n * 1000:10.3f}" for n in sizes))
    big = max(sizes)
    issue, floor = table[big]["certs issue"], table[big]["floor"]
    print(f"  certs issue over {big:,} workers / floor of the same leaves ({2 * big + 2:,} ec-p256 key+certificate "
          f"pairs in memory, {os.cpu_count()} procs: {floor:.3f} s) = {issue / floor:.2f}x "
          f"(target <= {TARGET_ISSUE_FLOOR_RATIO}x) {_verdict(issue / floor <= TARGET_ISSUE_FLOOR_RATIO)}")
    if len(sizes) > 1:
        mid = sorted(sizes)[-2]
        print(f"  per worker at {big:,} / per worker at {mid:,} (target <= {TARGET_LINEAR_RATIO}x):")
        for step in SCALE_STEPS:
            ratio = (table[big][step] / big) / (table[mid][step] / mid)
            print(f"    {step:14}  {ratio:5.2f}x  {_verdict(ratio <= TARGET_LINEAR_RATIO)}")
    if big >= 10000:
        noop = table[big]["no-op re-run"]
        print(f"  no-op re-run of certs issue over {big:,} workers = {noop:.2f} s "
              f"(target < {TARGET_NOOP_10K_SECONDS} s) {_verdict(noop < TARGET_NOOP_10K_SECONDS)}")


# --------------------------------------------------------------------------- main


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="number of workers (default 1000)")
    parser.add_argument("--openssl-sample", type=int, default=20, help="certificates made with openssl")
    parser.add_argument("--rsa-sample", type=int, default=10, help="RSA signing keys generated")
    parser.add_argument("--signing-key-type", default="rsa2048", choices=("rsa2048", "rsa3072", "rsa4096"))
    parser.add_argument("--dir", help="work directory (default: a temporary one, removed after)")
    parser.add_argument("--parse-n", type=int, default=0, metavar="N",
                        help="also compare model.load with ansible-core's own parse for N workers")
    parser.add_argument("--parse-repeats", type=int, default=3, help="interleaved runs of each (median)")
    parser.add_argument("--scale", default="", metavar="N,N,...",
                        help="also time certs issue, its re-run, render and export via the CLI at each N")
    parser.add_argument("--skip-issue", action="store_true", help="skip the pki.issue/floor/openssl rows")
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench-pki-"))
    try:
        n = args.n
        print(f"load average {_loadavg()}")
        if args.parse_n or args.scale:
            _warm_up(root)
        if args.parse_n:
            print_loading(args.parse_n, bench_loading(args.parse_n, root / "loading", args.parse_repeats),
                          args.parse_repeats)
            print()
        if args.scale:
            sizes = sorted(int(x) for x in args.scale.split(","))
            print_scale(bench_scale(sizes, root / "scale"))
            print()
        if args.skip_issue:
            print(f"load average {_loadavg()}")
            return 0
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
        print(f"load average {_loadavg()}")
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
