"""`celery-provision audit`: what each rule catches, and that a secure config passes.

Certificates are made at test time with `cryptography`; none is checked in.
Rule tests start from a secure configuration (built with real files) and break
one thing, so each test fails if the check that catches that thing is removed.
"""

from __future__ import annotations

import datetime
import itertools
import json
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from celery_provision.audit import (
    RULES,
    TABLE,
    Finding,
    Severity,
    audit_config,
    exit_status,
    format_table,
    load_config,
    to_json,
)
from celery_provision.errors import ProvisionError

FIXTURES = Path(__file__).parent / "audit_fixtures"
NOW = datetime.datetime.now(datetime.UTC)


# --------------------------------------------------------------------------- a tiny PKI


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


_RSA_POOL: list[rsa.RSAPrivateKey] = []
_rsa_turn = itertools.count()


def _rsa() -> rsa.RSAPrivateKey:
    """A distinct-enough RSA key: calls cycle through 8 keys, generated once (RSA is slow)."""
    if not _RSA_POOL:
        _RSA_POOL.extend(
            rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(8)
        )
    return _RSA_POOL[next(_rsa_turn) % len(_RSA_POOL)]


def _write_key(path: Path, key: Any, mode: int = 0o600, passphrase: bytes | None = None) -> Path:
    encryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    path.chmod(mode)
    return path


def _cert(
    subject: str,
    key: Any,
    *,
    issuer: str = "audit-test-ca",
    issuer_key: Any = None,
    serial: int | None = None,
    not_after: datetime.datetime | None = None,
) -> x509.Certificate:
    issuer_key = issuer_key or key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=400))
        .not_valid_after(not_after or NOW + datetime.timedelta(days=365))
    )
    return builder.sign(issuer_key, hashes.SHA256())


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture(scope="module")
def ca_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def files(tmp_path: Path, ca_key: Any) -> dict[str, Path]:
    """The on-host files of a worker, laid out as the roles deploy them."""
    d = tmp_path / "etc-celery"
    (d / "signers").mkdir(parents=True)
    tls_key = ec.generate_private_key(ec.SECP256R1())
    sign_key, peer_key = _rsa(), _rsa()
    sign_cert = _cert("worker-1", sign_key, issuer_key=ca_key)
    out = {
        "ca": _write_cert(d / "ca.pem", _cert("audit-test-ca", ca_key)),
        "client_cert": _write_cert(d / "client.pem", _cert("worker-1", tls_key, issuer_key=ca_key)),
        "client_key": _write_key(d / "client.key", tls_key),
        "signing_cert": _write_cert(d / "signing.pem", sign_cert),
        "signing_key": _write_key(d / "signing.key", sign_key),
        "signers": d / "signers",
        "policy": d / "policy.json",
        "rabbitmq_password": d / "rabbitmq.password",
        "redis_password": d / "redis.password",
    }
    _write_cert(d / "signers" / "worker-1.pem", sign_cert)
    _write_cert(d / "signers" / "client-1.pem", _cert("client-1", peer_key, issuer_key=ca_key))
    _write_policy(out["policy"], {"worker-1": ["proj.*"], "client-1": ["proj.reports.*"]})
    for secret in ("rabbitmq_password", "redis_password"):
        out[secret].write_text("Zq8-not-in-the-config-file\n")
        out[secret].chmod(0o600)
    return out


def secure_settings(f: dict[str, Path]) -> dict[str, Any]:
    """Settings like the renderer's: TLS everywhere, client certs, host names, signed tasks."""
    password = f["rabbitmq_password"].read_text().strip()
    return {
        "broker_url": f"amqps://worker-1:{password}@rabbit-1.example:5671/celery",
        "broker_use_ssl": {
            "ca_certs": str(f["ca"]),
            "certfile": str(f["client_cert"]),
            "keyfile": str(f["client_key"]),
            "cert_reqs": ssl.CERT_REQUIRED,
            "server_hostname": "rabbit-1.example",
        },
        "broker_connection_retry_on_startup": True,
        "result_backend": f"rediss://worker-1:{password}@redis-1.example:6380/1",
        "redis_backend_use_ssl": {
            "ssl_ca_certs": str(f["ca"]),
            "ssl_certfile": str(f["client_cert"]),
            "ssl_keyfile": str(f["client_key"]),
            "ssl_cert_reqs": ssl.CERT_REQUIRED,
        },
        "celery_provision_envelope": {
            "signer": "worker-1",
            "key": str(f["signing_key"]),
            "cert": str(f["signing_cert"]),
            "ca": str(f["ca"]),
            "store": str(f["signers"]),
            "max_age": 86400,
            "policy": str(f["policy"]),
            "role": "worker",
        },
        "task_serializer": "celery-provision-json",
        "accept_content": ["celery-provision-json"],
        "result_serializer": "json",
        "result_accept_content": ["json"],
        "worker_enable_remote_control": False,
    }


def auth_settings(f: dict[str, Path]) -> dict[str, Any]:
    """The secure settings signed with Celery's auth serializer instead of the envelope."""
    conf = secure_settings(f)
    del conf["celery_provision_envelope"]
    return conf | {
        "task_serializer": "auth",
        "accept_content": ["auth"],
        "security_key": str(f["signing_key"]),
        "security_certificate": str(f["signing_cert"]),
        "security_cert_store": str(f["signers"] / "*.pem"),
        "security_digest": "sha256",
    }


def codes(conf: dict[str, Any]) -> set[str]:
    return {finding.code for finding in audit_config(conf)}


def only(conf: dict[str, Any], code: str) -> list[Finding]:
    return [finding for finding in audit_config(conf) if finding.code == code]


# --------------------------------------------------------------------------- the secure config


SECURE_MODULE = '''\
"""Rendered for worker-1 (test copy): secrets are read at import time."""
import ssl
from pathlib import Path

_ETC = Path({etc!r})


def _secret(name):
    return (_ETC / name).read_text().strip()


broker_url = "amqps://worker-1@rabbit-1.example:5671/celery"
broker_password = _secret("rabbitmq.password")
broker_use_ssl = {{
    "ca_certs": str(_ETC / "ca.pem"),
    "certfile": str(_ETC / "client.pem"),
    "keyfile": str(_ETC / "client.key"),
    "cert_reqs": ssl.CERT_REQUIRED,
    "server_hostname": "rabbit-1.example",
}}
broker_login_method = "AMQPLAIN"
broker_connection_retry_on_startup = True
result_backend = "rediss://worker-1@redis-1.example:6380/1?ssl_cert_reqs=required"
redis_password = _secret("redis.password")
redis_backend_use_ssl = {{
    "ssl_ca_certs": str(_ETC / "ca.pem"),
    "ssl_certfile": str(_ETC / "client.pem"),
    "ssl_keyfile": str(_ETC / "client.key"),
    "ssl_cert_reqs": ssl.CERT_REQUIRED,
}}
celery_provision_envelope = {{
    "signer": "worker-1",
    "key": str(_ETC / "signing.key"),
    "cert": str(_ETC / "signing.pem"),
    "ca": str(_ETC / "ca.pem"),
    "store": str(_ETC / "signers"),
    "max_age": 86400,
    "policy": str(_ETC / "policy.json"),
    "role": "worker",
}}
task_serializer = "celery-provision-json"
accept_content = ["celery-provision-json"]
result_serializer = "json"
result_accept_content = ["json"]
worker_enable_remote_control = False
'''


def test_secure_rendered_config_audits_clean(files: dict[str, Path], tmp_path: Path) -> None:
    module = tmp_path / "celeryconfig.py"
    module.write_text(SECURE_MODULE.format(etc=str(files["ca"].parent)))
    findings = audit_config(load_config(str(module)))
    assert exit_status(findings, Severity.LOW) == 0, format_table(findings)
    assert {f.code for f in findings} <= {"results-unsigned"}


def test_secure_settings_dict_audits_clean(files: dict[str, Path]) -> None:
    findings = audit_config(secure_settings(files))
    assert {f.code for f in findings} == {"results-unsigned"}, format_table(findings)


# --------------------------------------------------------------------------- the insecure fixture


@pytest.fixture
def insecure_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ca_key: Any) -> Path:
    """Bad signing material for insecure_config.py: expired, duplicate, non-RSA, world-readable."""
    d = tmp_path / "bad"
    (d / "signers").mkdir(parents=True)
    key = _rsa()
    _write_key(d / "signing.key", key, mode=0o644, passphrase=b"literal-key-passphrase")
    _write_cert(d / "signing.pem", _cert("worker-1", _rsa(), issuer_key=ca_key))  # not this key
    expired = _cert("old", _rsa(), issuer_key=ca_key, not_after=NOW - datetime.timedelta(days=30))
    _write_cert(d / "signers" / "expired.pem", expired)
    _write_cert(d / "signers" / "a.pem", _cert("a", _rsa(), issuer_key=ca_key, serial=4242))
    _write_cert(d / "signers" / "b.pem", _cert("b", _rsa(), issuer_key=ca_key, serial=4242))
    ec_key = ec.generate_private_key(ec.SECP256R1())
    _write_cert(d / "signers" / "ec.pem", _cert("ec", ec_key, issuer_key=ca_key))
    (d / "signers" / "notes.pem").write_text("not a certificate\n")
    monkeypatch.setenv("AUDIT_FIXTURE_FILES", str(d))
    return d


# Rules that exclude one another or a rule the fixture needs; each has its own test below.
NOT_IN_FIXTURE = {
    "signing-disabled",  # the fixture turns signing on but still accepts unsigned content
    "signing-incomplete",  # the fixture sets every security_* file to check their content
    "cert-store-empty",  # the fixture's store has (bad) certificates in it
    "broker-url-unset",
    "file-not-found",  # every file the fixture names is created by the test
    "unchecked-transport",
    "remote-control-on",  # signed workers only; the fixture accepts unsigned content
    # The fixture signs with Celery's auth serializer; with the envelope beside it, tasks and
    # control would count as signed and unsigned-accepted/remote-control-unsigned not apply.
    "envelope-incomplete",
    "envelope-serializer",
    "envelope-allows-any-task",
    "sentinel-plaintext",  # the fixture's backend is rediss://, not sentinel://
}
# Rules for producers and operators only: tests/test_audit_roles.py has them.
NOT_FOR_WORKERS = {r.code for r in TABLE} - {r.code for r in TABLE if "worker" in r.roles}


def test_insecure_fixture_triggers_every_rule_that_can_co_occur(insecure_files: Path) -> None:
    found = codes(load_config(str(FIXTURES / "insecure_config.py")))
    assert set(RULES) - NOT_IN_FIXTURE - NOT_FOR_WORKERS - found == set()


def test_insecure_fixture_fails_at_the_default_threshold(insecure_files: Path) -> None:
    findings = audit_config(load_config(str(FIXTURES / "insecure_config.py")))
    assert exit_status(findings, Severity.HIGH) == 1


def test_no_finding_reveals_a_password(insecure_files: Path) -> None:
    out = to_json(audit_config(load_config(str(FIXTURES / "insecure_config.py"))))
    assert "hunter22" not in out and "literal-key-passphrase" not in out


# --------------------------------------------------------------------------- one rule at a time

Change = Callable[[dict[str, Any], dict[str, Path]], None]


def _set(**values: Any) -> Change:
    def change(conf: dict[str, Any], _files: dict[str, Path]) -> None:
        conf.update(values)

    return change


def _ssl(setting: str, **values: Any) -> Change:
    def change(conf: dict[str, Any], _files: dict[str, Path]) -> None:
        conf[setting] = {**conf[setting], **values}
        for key in [k for k, v in conf[setting].items() if v is None]:
            del conf[setting][key]

    return change


def _drop(*settings: str) -> Change:
    def change(conf: dict[str, Any], _files: dict[str, Path]) -> None:
        for setting in settings:
            conf.pop(setting, None)

    return change


def _store(make: Callable[[Path, Any], None]) -> Change:
    def change(conf: dict[str, Any], files: dict[str, Path]) -> None:
        make(files["signers"], files)

    return change


def _auth(*changes: Change) -> Change:
    """Sign with Celery's auth serializer instead of the envelope, then apply CHANGES."""

    def change(conf: dict[str, Any], files: dict[str, Path]) -> None:
        conf.clear()
        conf.update(auth_settings(files))
        for then in changes:
            then(conf, files)

    return change


def _envelope(**values: Any) -> Change:
    """Set (or, with None, remove) keys of celery_provision_envelope."""

    def change(conf: dict[str, Any], _files: dict[str, Path]) -> None:
        envelope = conf["celery_provision_envelope"] = {**conf["celery_provision_envelope"], **values}
        for key in [k for k, v in envelope.items() if v is None]:
            del envelope[key]

    return change


def _write_policy(path: Path, allowed: dict[str, list[str]]) -> None:
    """The deployment's trust policy file, as `celery_provision.render.policy` writes it."""
    path.write_text(json.dumps({"allowed": allowed, "control": {"worker": ["ops-1"], "operator": ["worker-1"]},
                                "results": ["worker-1"]}, sort_keys=True))


def _allowed(allowed: dict[str, list[str]]) -> Change:
    """Let the policy file allow *allowed* (signer: task globs)."""

    def change(_conf: dict[str, Any], files: dict[str, Path]) -> None:
        _write_policy(files["policy"], allowed)

    return change


def _expired_signer(store: Path, _f: Any) -> None:
    old = _cert("gone", _rsa(), not_after=NOW - datetime.timedelta(days=1))
    _write_cert(store / "gone.pem", old)


def _duplicate_signer(store: Path, _f: Any) -> None:
    for name in ("x", "y"):
        _write_cert(store / f"{name}.pem", _cert(name, _rsa(), serial=77))


def _ec_signer(store: Path, _f: Any) -> None:
    _write_cert(store / "ec.pem", _cert("ec", ec.generate_private_key(ec.SECP256R1())))


def _garbage_signer(store: Path, _f: Any) -> None:
    (store / "README.pem").write_text("signers go here\n")


def _empty_store(store: Path, _f: Any) -> None:
    for path in store.iterdir():
        path.unlink()


def _key_world_readable(conf: dict[str, Any], files: dict[str, Path]) -> None:
    files["client_key"].chmod(0o644)


def _signing_key_world_readable(conf: dict[str, Any], files: dict[str, Path]) -> None:
    files["signing_key"].chmod(0o644)


def _other_signing_cert(conf: dict[str, Any], files: dict[str, Path]) -> None:
    _write_cert(files["signing_cert"], _cert("worker-1", _rsa()))


def _password_literal(conf: dict[str, Any], files: dict[str, Path]) -> None:
    conf["__file__"] = str(files["ca"].parent / "celeryconfig.py")
    Path(conf["__file__"]).write_text(f'broker_url = "{conf["broker_url"]}"\n')


REDIS_BROKER = "rediss://worker-1:pw@redis-1.example:6380/0"

CASES: list[tuple[str, Change, str, Severity]] = [
    # (behaviour, change to the secure config, code, severity)
    (
        "pickle_accepted_is_critical",
        _set(accept_content=["json", "pickle"]),
        "unsafe-serializer",
        Severity.CRITICAL,
    ),
    (
        "pickle_mime_type_accepted_is_critical",
        _set(result_accept_content=["application/x-python-serialize"]),
        "unsafe-serializer",
        Severity.CRITICAL,
    ),
    (
        "pickle_result_serializer_is_high",
        _set(result_serializer="pickle"),
        "unsafe-serializer",
        Severity.HIGH,
    ),
    (
        "pickle_event_serializer_is_high",
        _set(event_serializer="pickle"),
        "unsafe-serializer",
        Severity.HIGH,
    ),
    (
        "yaml_accepted_is_medium",
        _set(result_accept_content=["json", "yaml"]),
        "unsafe-serializer",
        Severity.MEDIUM,
    ),
    (
        "custom_serializer_is_unverifiable",
        _set(result_accept_content=["json", "myformat"]),
        "unknown-serializer",
        Severity.MEDIUM,
    ),
    (
        "json_tasks_without_envelope_are_unsigned",
        _drop("celery_provision_envelope"),
        "signing-disabled",
        Severity.MEDIUM,
    ),
    (
        "envelope_without_store_and_policy",
        _envelope(store=None, policy=None),
        "envelope-incomplete",
        Severity.MEDIUM,
    ),
    (
        "envelope_that_is_not_a_dict",
        _set(celery_provision_envelope="worker-1"),
        "envelope-incomplete",
        Severity.MEDIUM,
    ),
    (
        "envelope_with_msgpack_tasks",
        _set(task_serializer="msgpack"),
        "envelope-serializer",
        Severity.MEDIUM,
    ),
    (
        "envelope_with_plain_json_tasks_runs_unchecked_without_secure",
        _set(task_serializer="json"),
        "envelope-serializer",
        Severity.MEDIUM,
    ),
    (
        "envelope_accepting_msgpack_too",
        _set(accept_content=["celery-provision-json", "msgpack"]),
        "envelope-serializer",
        Severity.LOW,
    ),
    (
        "envelope_letting_a_producer_call_any_task",
        _allowed({"worker-1": ["proj.*"], "client-1": ["*"]}),
        "envelope-allows-any-task",
        Severity.INFO,
    ),
    ("envelope_store_empty", _store(_empty_store), "cert-store-empty", Severity.HIGH),
    ("envelope_key_world_readable", _signing_key_world_readable, "private-key-exposed",
     Severity.HIGH),
    (
        "auth_serializer_signs_the_body_only",
        _auth(),
        "auth-serializer-headers-unsigned",
        Severity.MEDIUM,
    ),
    (
        "auth_signing_with_json_still_accepted",
        _auth(_set(accept_content=["auth", "json"])),
        "unsigned-accepted",
        Severity.HIGH,
    ),
    (
        "auth_without_signing_files",
        _auth(_drop("security_key", "security_certificate", "security_cert_store")),
        "signing-incomplete",
        Severity.MEDIUM,
    ),
    ("sha1_signatures", _auth(_set(security_digest="sha1")), "weak-digest", Severity.HIGH),
    ("expired_cert_in_store", _auth(_store(_expired_signer)), "cert-store-expired", Severity.HIGH),
    (
        "duplicate_issuer_serial_in_store",
        _auth(_store(_duplicate_signer)),
        "cert-store-duplicate",
        Severity.HIGH,
    ),
    ("ec_cert_in_store", _auth(_store(_ec_signer)), "cert-store-non-rsa", Severity.HIGH),
    (
        "non_certificate_in_store",
        _auth(_store(_garbage_signer)),
        "cert-store-invalid",
        Severity.HIGH,
    ),
    ("store_matching_nothing", _auth(_store(_empty_store)), "cert-store-empty", Severity.HIGH),
    (
        "signing_cert_not_matching_key",
        _auth(_other_signing_cert),
        "signing-cert-invalid",
        Severity.HIGH,
    ),
    ("world_readable_client_key", _key_world_readable, "private-key-exposed", Severity.HIGH),
    ("no_broker_url", _drop("broker_url"), "broker-url-unset", Severity.HIGH),
    (
        "plain_amqp_broker",
        _set(broker_url="amqp://worker-1:pw@rabbit-1.example:5672/celery", broker_use_ssl=False),
        "plaintext-transport",
        Severity.CRITICAL,
    ),
    (
        "plain_pyamqp_broker",
        _set(broker_url="pyamqp://worker-1:pw@rabbit-1.example//", broker_use_ssl=None),
        "plaintext-transport",
        Severity.CRITICAL,
    ),
    (
        "plain_redis_backend",
        _set(
            result_backend="redis://worker-1:pw@redis-1.example:6379/1", redis_backend_use_ssl=None
        ),
        "plaintext-transport",
        Severity.CRITICAL,
    ),
    (
        "sentinel_backend_without_tls",
        _set(
            result_backend="sentinel://worker-1:pw@redis-1.example:26379/1",
            redis_backend_use_ssl=None,
        ),
        "plaintext-transport",
        Severity.CRITICAL,
    ),
    (
        "redis_broker_with_use_ssl_true",
        _set(broker_url="redis://worker-1:pw@redis-1.example:6379/0", broker_use_ssl=True),
        "plaintext-transport",
        Severity.CRITICAL,
    ),
    (
        "rediss_broker_without_tls_options",
        _set(broker_url=REDIS_BROKER, broker_use_ssl=False),
        "rediss-unverified",
        Severity.CRITICAL,
    ),
    (
        "rediss_backend_without_cert_reqs",
        _set(redis_backend_use_ssl=None),
        "backend-tls-options-missing",
        Severity.LOW,
    ),
    (
        "amqp_cert_reqs_none",
        _ssl("broker_use_ssl", cert_reqs=ssl.CERT_NONE),
        "tls-verification-disabled",
        Severity.CRITICAL,
    ),
    (
        "redis_cert_reqs_none_word",
        _ssl("redis_backend_use_ssl", ssl_cert_reqs="none"),
        "tls-verification-disabled",
        Severity.CRITICAL,
    ),
    (
        "url_cert_reqs_CERT_NONE",
        _set(
            result_backend="rediss://w:pw@redis-1.example:6380/1?ssl_cert_reqs=CERT_NONE",
            redis_backend_use_ssl=None,
        ),
        "tls-verification-disabled",
        Severity.CRITICAL,
    ),
    (
        "cert_reqs_optional",
        _ssl("broker_use_ssl", cert_reqs=ssl.CERT_OPTIONAL),
        "tls-verification-disabled",
        Severity.LOW,
    ),
    (
        "amqps_without_server_hostname",
        _ssl("broker_use_ssl", server_hostname=None),
        "hostname-not-checked",
        Severity.HIGH,
    ),
    (
        "redis_hostname_check_off",
        _ssl("redis_backend_use_ssl", ssl_check_hostname=False),
        "hostname-not-checked",
        Severity.HIGH,
    ),
    ("amqps_with_use_ssl_true", _set(broker_use_ssl=True), "hostname-not-checked", Severity.HIGH),
    ("no_ca_certs", _ssl("broker_use_ssl", ca_certs=None), "no-private-ca", Severity.MEDIUM),
    (
        "broker_without_client_cert",
        _ssl("broker_use_ssl", certfile=None, keyfile=None),
        "no-client-certificate",
        Severity.MEDIUM,
    ),
    (
        "backend_without_client_key",
        _ssl("redis_backend_use_ssl", ssl_keyfile=None),
        "no-client-certificate",
        Severity.MEDIUM,
    ),
    (
        "amqp_cert_reqs_as_string",
        _ssl("broker_use_ssl", cert_reqs="required"),
        "cert-reqs-spelling",
        Severity.MEDIUM,
    ),
    (
        "redis_broker_dict_CERT_name",
        _set(
            broker_url=REDIS_BROKER,
            broker_use_ssl={
                "ssl_cert_reqs": "CERT_REQUIRED",
                "ssl_ca_certs": "/x",
                "ssl_certfile": "/x",
                "ssl_keyfile": "/x",
            },
        ),
        "cert-reqs-spelling",
        Severity.MEDIUM,
    ),
    (
        "url_cert_reqs_quoted_constant",
        _set(result_backend="rediss://w:pw@redis-1.example:6380/1?ssl_cert_reqs=ssl.CERT_REQUIRED"),
        "cert-reqs-spelling",
        Severity.MEDIUM,
    ),
    (
        "cert_reqs_spelled_two_ways",
        _ssl("redis_backend_use_ssl", ssl_cert_reqs="required"),
        "cert-reqs-inconsistent",
        Severity.LOW,
    ),
    (
        "guest_user",
        _set(broker_url="amqps://guest:guest@rabbit-1.example:5671/celery"),
        "guest-credentials",
        Severity.CRITICAL,
    ),
    (
        "amqp_url_without_user",
        _set(broker_url="amqps://rabbit-1.example:5671/celery"),
        "missing-credentials",
        Severity.HIGH,
    ),
    (
        "redis_url_without_password",
        _set(result_backend="rediss://redis-1.example:6380/1"),
        "missing-credentials",
        Severity.HIGH,
    ),
    ("password_literal_in_url", _password_literal, "password-in-config", Severity.HIGH),
    (
        "unknown_scheme",
        _set(result_backend="db+postgresql://u@db/celery"),
        "unchecked-transport",
        Severity.INFO,
    ),
    (
        "file_absent_here",
        _ssl("broker_use_ssl", ca_certs="/nonexistent/ca.pem"),
        "file-not-found",
        Severity.INFO,
    ),
    ("made_up_worker_port", _set(worker_port=5555), "no-effect-setting", Severity.MEDIUM),
    ("made_up_setting", _set(worker_colour="blue"), "no-effect-setting", Severity.LOW),
    (
        "create_missing_queues_off",
        _set(task_create_missing_queues=False),
        "not-a-security-control",
        Severity.INFO,
    ),
    (
        "hijack_root_logger_off",
        _set(worker_hijack_root_logger=False),
        "not-a-security-control",
        Severity.INFO,
    ),
    (
        "uppercase_setting_name",
        _set(CELERY_TASK_SERIALIZER="json"),
        "deprecated-setting-name",
        Severity.LOW,
    ),
    (
        "remote_control_without_signing",
        lambda conf, files: (
            conf.pop("celery_provision_envelope"), conf.update(worker_enable_remote_control=True)
        ),
        "remote-control-unsigned",
        Severity.LOW,
    ),
    (
        "pool_restarts_on",
        _set(worker_pool_restarts=True, worker_enable_remote_control=True),
        "pool-restarts-enabled",
        Severity.LOW,
    ),
    (
        "remote_control_left_at_default",
        _drop("worker_enable_remote_control"),
        "remote-control-on",
        Severity.LOW,
    ),
    (
        "remote_control_turned_on",
        _set(worker_enable_remote_control=True),
        "remote-control-on",
        Severity.INFO,
    ),
    ("extended_results", _set(result_extended=True), "result-extended", Severity.LOW),
    ("protocol_1", _set(task_protocol=1), "old-task-protocol", Severity.LOW),
    (
        "retry_on_startup_unset",
        _drop("broker_connection_retry_on_startup"),
        "retry-on-startup-unset",
        Severity.LOW,
    ),
    (
        "sentinel_without_tls_in_sentinel_kwargs_is_critical",
        _set(result_backend="sentinel://worker-1:pw@redis-1.example:26379/1",
             result_backend_transport_options={"master_name": "celery", "sentinel_kwargs": {}}),
        "sentinel-plaintext",
        Severity.CRITICAL,
    ),
]


@pytest.mark.parametrize(
    ("change", "code", "severity"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_rule_flags_the_broken_setting(
    files: dict[str, Path], change: Change, code: str, severity: Severity
) -> None:
    conf = secure_settings(files)
    assert code not in codes(conf)
    change(conf, files)
    assert severity in {f.severity for f in only(conf, code)}, format_table(audit_config(conf))


def test_every_rule_has_a_case() -> None:
    assert set(RULES) - {c[2] for c in CASES} - {"results-unsigned"} - NOT_FOR_WORKERS == set()


# --------------------------------------------------------------------------- what must NOT be flagged


def test_amqp_scheme_with_broker_use_ssl_is_tls(files: dict[str, Path]) -> None:
    conf = secure_settings(files) | {
        "broker_url": "amqp://worker-1:pw@rabbit-1.example:5671/celery"
    }
    assert "plaintext-transport" not in codes(conf)


def test_rediss_broker_with_cert_reqs_in_url_is_verified(files: dict[str, Path]) -> None:
    conf = secure_settings(files) | {
        "broker_url": REDIS_BROKER + "?ssl_cert_reqs=required",
        "broker_use_ssl": False,
    }
    assert "rediss-unverified" not in codes(conf)


def test_rediss_backend_with_cert_reqs_in_url_is_accepted(files: dict[str, Path]) -> None:
    conf = secure_settings(files) | {
        "result_backend": "rediss://w:pw@redis-1.example:6380/1?ssl_cert_reqs=CERT_REQUIRED",
        "redis_backend_use_ssl": None,
    }
    assert {"backend-tls-options-missing", "cert-reqs-spelling"} & codes(conf) == set()


def test_x509_login_needs_no_password(files: dict[str, Path]) -> None:
    conf = secure_settings(files) | {
        "broker_url": "amqps://rabbit-1.example:5671/celery",
        "broker_login_method": "EXTERNAL",
    }
    assert "missing-credentials" not in codes(conf)


def test_password_read_at_import_time_is_not_in_the_config(
    files: dict[str, Path], tmp_path: Path
) -> None:
    module = tmp_path / "celeryconfig.py"
    module.write_text(SECURE_MODULE.format(etc=str(files["ca"].parent)))
    assert "password-in-config" not in codes(load_config(str(module)))


def test_password_settings_count_as_credentials(files: dict[str, Path]) -> None:
    conf = secure_settings(files) | {
        "broker_url": "amqps://worker-1@rabbit-1.example:5671/celery",
        "broker_password": "from-a-file",
        "result_backend": "rediss://worker-1@redis-1.example:6380/1",
        "redis_password": "from-a-file",
    }
    assert "missing-credentials" not in codes(conf)


def test_constant_in_dicts_and_word_in_urls_is_consistent(files: dict[str, Path]) -> None:
    conf = secure_settings(files)
    conf["result_backend"] += "?ssl_cert_reqs=required"
    assert "cert-reqs-inconsistent" not in codes(conf)


def test_cert_name_in_url_is_noted_for_redis_py_tools(files: dict[str, Path]) -> None:
    conf = secure_settings(files)
    conf["result_backend"] += "?ssl_cert_reqs=CERT_REQUIRED"
    assert {f.severity for f in only(conf, "cert-reqs-inconsistent")} == {Severity.LOW}


def test_remote_control_under_the_envelope_counts_as_signed(files: dict[str, Path]) -> None:
    conf = secure_settings(files) | {"worker_enable_remote_control": True}
    assert "remote-control-unsigned" not in codes(conf)


def test_remote_control_with_auth_signing_counts_as_signed(files: dict[str, Path]) -> None:
    conf = auth_settings(files) | {"worker_enable_remote_control": True}
    assert "remote-control-unsigned" not in codes(conf)


def test_envelope_setting_is_not_a_no_effect_setting(files: dict[str, Path]) -> None:
    assert "no-effect-setting" not in codes(secure_settings(files))


def test_envelope_config_is_not_told_to_sign(files: dict[str, Path]) -> None:
    assert "signing-disabled" not in codes(secure_settings(files))


def test_incomplete_envelope_names_each_missing_key(files: dict[str, Path]) -> None:
    conf = secure_settings(files)
    _envelope(store=None, max_age=None)(conf, files)
    [finding] = only(conf, "envelope-incomplete")
    assert "store, max_age" in finding.reason and "signing-disabled" not in codes(conf)


def test_envelope_files_absent_here_are_only_noted(files: dict[str, Path]) -> None:
    conf = secure_settings(files)
    _envelope(ca="/nonexistent/ca.pem", store="/nonexistent/signers")(conf, files)
    assert {f.severity for f in only(conf, "file-not-found")} == {Severity.INFO}
    assert len(only(conf, "file-not-found")) == 2


def test_worker_letting_its_own_signer_call_any_task_is_only_noted(files: dict[str, Path]) -> None:
    conf = secure_settings(files)
    _allowed({"worker-1": ["*"], "client-1": ["*"]})(conf, files)
    [finding] = only(conf, "envelope-allows-any-task")
    assert finding.severity is Severity.INFO and "client-1, worker-1" in finding.reason


def test_auth_serializer_finding_names_the_envelope_as_the_fix(files: dict[str, Path]) -> None:
    [finding] = only(auth_settings(files), "auth-serializer-headers-unsigned")
    assert "task name, id, ETA, expiry travel unsigned" in finding.reason
    assert "nothing refuses replays" in finding.reason
    assert "celery_provision_envelope" in finding.fix
    assert "celery_provision.runtime.secure(app)" in finding.fix


def test_auth_in_accept_content_beside_the_envelope_is_flagged(files: dict[str, Path]) -> None:
    conf = secure_settings(files) | {"accept_content": ["celery-provision-json", "auth"]}
    assert "auth-serializer-headers-unsigned" in codes(conf)


def test_pickle_beside_the_envelope_stays_critical(files: dict[str, Path]) -> None:
    conf = secure_settings(files) | {"accept_content": ["celery-provision-json", "pickle"]}
    assert Severity.CRITICAL in {f.severity for f in only(conf, "unsafe-serializer")}


def test_unsigned_results_are_only_noted(files: dict[str, Path]) -> None:
    assert {f.severity for f in only(secure_settings(files), "results-unsigned")} == {Severity.INFO}


def test_envelope_signed_results_are_not_noted(files: dict[str, Path]) -> None:
    conf = secure_settings(files) | {
        "result_serializer": "celery-provision-result",
        "result_accept_content": ["celery-provision-result"],
    }
    assert not {"results-unsigned", "unknown-serializer"} & codes(conf)


def test_auth_signed_results_are_not_noted(files: dict[str, Path]) -> None:
    conf = auth_settings(files) | {"result_serializer": "auth", "result_accept_content": ["auth"]}
    assert "results-unsigned" not in codes(conf)


def test_group_readable_key_is_accepted(files: dict[str, Path]) -> None:
    files["client_key"].chmod(0o640)
    assert "private-key-exposed" not in codes(secure_settings(files))


# --------------------------------------------------------------------------- loading


def test_loads_a_module_path_from_the_current_directory(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "proj_audit_fixture"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "celeryconfig.py").write_text(SECURE_MODULE.format(etc=str(files["ca"].parent)))
    monkeypatch.chdir(tmp_path)
    conf = load_config("proj_audit_fixture.celeryconfig")
    assert conf["task_serializer"] == "celery-provision-json" and conf["__file__"].endswith("celeryconfig.py")


def test_imports_and_helpers_are_not_settings(tmp_path: Path) -> None:
    module = tmp_path / "cfg.py"
    module.write_text(
        "import ssl\nSECRET_FILE = '/x'\ndef helper():\n    pass\nbroker_url = 'amqps://h//'\n"
    )
    assert set(load_config(str(module))) == {"broker_url", "__file__"}


def test_old_setting_names_are_read_through_celery(tmp_path: Path) -> None:
    module = tmp_path / "cfg.py"
    module.write_text(
        "BROKER_URL = 'amqp://guest@localhost//'\nCELERY_ACCEPT_CONTENT = ['pickle']\n"
    )
    findings = audit_config(load_config(str(module)))
    assert ("unsafe-serializer", "CELERY_ACCEPT_CONTENT") in {(f.code, f.setting) for f in findings}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("broker_url = 'amqps://h//'\nx = (\n", "syntax error"),
        ("raise RuntimeError('no secrets here')\n", "RuntimeError"),
        ("import sys\nsys.exit(3)\n", "SystemExit"),
        ("import no_such_module_xyz\n", "no_such_module_xyz"),
        (
            "BROKER_URL = 'amqp://'\nCELERY_TASK_SERIALIZER = 'json'\nresult_backend = 'rpc://'\n",
            "Celery refuses",
        ),
    ],
    ids=[
        "syntax_error",
        "raises_on_import",
        "exits_on_import",
        "imports_missing_module",
        "mixes_old_and_new_names",
    ],
)
def test_unusable_file_is_one_line_provision_error(
    tmp_path: Path, source: str, message: str
) -> None:
    module = tmp_path / "bad.py"
    module.write_text(source)
    with pytest.raises(ProvisionError) as info:
        load_config(str(module))
    assert (
        message in str(info.value)
        and str(module) in str(info.value)
        and "\n" not in str(info.value)
    )


@pytest.mark.parametrize("target", ["no_such_pkg_xyz.celeryconfig", "/nonexistent/celeryconfig.py"])
def test_missing_target_names_it(target: str) -> None:
    with pytest.raises(ProvisionError, match="no such") as info:
        load_config(target)
    assert info.value.where == target


# --------------------------------------------------------------------------- output


SAMPLE = [
    Finding(Severity.LOW, "old-task-protocol", "task_protocol", "legacy", "remove it"),
    Finding(Severity.CRITICAL, "unsafe-serializer", "accept_content", "pickle", "use auth"),
]


def test_severities_are_ordered() -> None:
    assert Severity.INFO < Severity.LOW < Severity.MEDIUM < Severity.HIGH < Severity.CRITICAL
    assert Severity("high") is Severity.HIGH


@pytest.mark.parametrize(
    ("fail_on", "status"),
    [(Severity.CRITICAL, 1), (Severity.HIGH, 1), (Severity.LOW, 1)],
)
def test_exit_status_is_1_at_or_above_threshold(fail_on: Severity, status: int) -> None:
    assert exit_status(SAMPLE, fail_on) == status


def test_exit_status_is_0_below_threshold() -> None:
    assert exit_status(SAMPLE[:1], Severity.MEDIUM) == 0
    assert exit_status([], Severity.INFO) == 0


def test_json_lists_findings_worst_first() -> None:
    rows = json.loads(to_json(SAMPLE))
    assert [r["severity"] for r in rows] == ["critical", "low"]
    assert set(rows[0]) == {"severity", "code", "setting", "reason", "fix"}


def test_table_shows_reason_and_fix_worst_first() -> None:
    table = format_table(SAMPLE)
    assert table.index("unsafe-serializer") < table.index("old-task-protocol")
    assert "fix: use auth" in table


def test_every_reason_and_fix_is_one_line(insecure_files: Path) -> None:
    for finding in audit_config(load_config(str(FIXTURES / "insecure_config.py"))):
        assert "\n" not in finding.reason and "\n" not in finding.fix and finding.fix


# --------------------------------------------------------------------------- Sentinel


def _sentinel_settings(f: dict[str, Path], sentinel_kwargs: Any) -> dict[str, Any]:
    """The secure settings with the result backend behind Sentinel (celery #6455, #8016)."""
    password = f["rabbitmq_password"].read_text().strip()
    urls = ";".join(f"sentinel://worker-1:{password}@redis-{i}.example:26379/1" for i in (1, 2, 3))
    return secure_settings(f) | {
        "result_backend": urls,
        "result_backend_transport_options": {"master_name": "celery", "sentinel_kwargs": sentinel_kwargs},
    }


def _sentinel_tls(f: dict[str, Path]) -> dict[str, Any]:
    return {"ssl": True, "ssl_ca_certs": str(f["ca"]), "ssl_certfile": str(f["client_cert"]),
            "ssl_keyfile": str(f["client_key"]), "ssl_cert_reqs": ssl.CERT_REQUIRED}


def test_sentinel_urls_with_tls_to_the_sentinels_are_not_plaintext(files: dict[str, Path]) -> None:
    found = codes(_sentinel_settings(files, _sentinel_tls(files)))
    assert not {"plaintext-transport", "sentinel-plaintext"} & found, found


@pytest.mark.parametrize("sentinel_kwargs", [None, {}, {"ssl_cert_reqs": ssl.CERT_REQUIRED}, {"ssl": False}],
                         ids=["unset", "empty", "no-ssl-flag", "ssl-false"])
def test_sentinel_without_tls_in_sentinel_kwargs_is_critical(files: dict[str, Path], sentinel_kwargs: Any) -> None:
    (finding,) = only(_sentinel_settings(files, sentinel_kwargs), "sentinel-plaintext")
    assert finding.severity == Severity.CRITICAL
    assert finding.setting == "result_backend_transport_options"


def test_sentinel_with_unverified_tls_in_sentinel_kwargs_is_flagged(files: dict[str, Path]) -> None:
    kwargs = _sentinel_tls(files) | {"ssl_cert_reqs": ssl.CERT_NONE}
    found = codes(_sentinel_settings(files, kwargs))
    assert "sentinel-plaintext" not in found and found - {"results-unsigned"} == {"tls-verification-disabled"}, found
