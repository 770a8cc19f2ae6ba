"""Transport attacks on both brokers: plaintext, missing or untrusted client certificates,
legacy TLS versions and weak cipher suites. Each is refused by RabbitMQ and by Redis.

The legacy clients are proven real by the controls at the end: the very same client contexts
get in to a permissive local TLS server, so a refusal by a broker is the broker's doing.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

import secprobe
from secprobe import Endpoint

V = ssl.TLSVersion

# Client contexts the brokers must refuse: name -> (TLS versions, OpenSSL cipher string).
LEGACY_PROTOCOLS = {
    "tls1.0": ((V.TLSv1, V.TLSv1), "DEFAULT:@SECLEVEL=0"),
    "tls1.1": ((V.TLSv1_1, V.TLSv1_1), "DEFAULT:@SECLEVEL=0"),
}
WEAK_CIPHERS = {
    # CBC (MAC-then-encrypt) suites even with forward secrecy: not in Mozilla intermediate.
    "cbc-only": ((V.TLSv1_2, V.TLSv1_2), "ECDHE+AES+SHA1:ECDHE+AES+SHA256:ECDHE+AES+SHA384:-AESGCM:-AESCCM:@SECLEVEL=0"),
    # RSA key exchange: no forward secrecy.
    "rsa-key-exchange": ((V.TLSv1_2, V.TLSv1_2), "kRSA:@SECLEVEL=0"),
    # Anonymous (unauthenticated) key exchange.
    "anonymous": ((V.TLSv1_2, V.TLSv1_2), "aNULL:@SECLEVEL=0"),
    # No encryption at all.
    "null-encryption": ((V.TLSv1_2, V.TLSv1_2), "eNULL:@SECLEVEL=0"),
}
# OpenSSL 3 here has no 3DES suites at all: they are offered with sslyze's legacy OpenSSL.
THREE_DES = "3DES"


def legacy_context(live, name: str) -> ssl.SSLContext:
    versions, ciphers = {**LEGACY_PROTOCOLS, **WEAK_CIPHERS}[name]
    return secprobe.client_context(None, *live.tls_pair(live.worker), versions=versions, ciphers=ciphers)


@pytest.mark.probe
def test_plaintext_port_does_not_speak_the_protocol(broker: Endpoint) -> None:
    """Nothing answers AMQP or RESP on the daemons' plaintext ports (model.PLAINTEXT_PORTS)."""
    outcome = secprobe.plaintext_attempt(broker.kind, broker.address, broker.plaintext_port, broker.hello)
    assert not outcome.got_in, outcome.detail


@pytest.mark.probe
def test_plaintext_bytes_on_the_tls_port_get_no_answer(broker: Endpoint) -> None:
    outcome = secprobe.plaintext_attempt(broker.kind, broker.address, broker.port, broker.hello)
    assert not outcome.got_in, outcome.detail


@pytest.mark.probe
def test_tls_without_a_client_certificate_is_refused(live, broker: Endpoint) -> None:
    outcome = secprobe.tls_attempt(broker, secprobe.client_context(live.layout.ca_pem))
    assert not outcome.got_in, outcome.detail


@pytest.fixture(scope="module")
def foreign_client(live) -> tuple[Path, Path]:
    """A client certificate with the worker's very name and extensions, from a foreign CA."""
    from cryptography import x509

    template = x509.load_pem_x509_certificate(live.tls_pair(live.worker)[0].read_bytes())
    foreign = secprobe.self_signed_ca("celery-provision root CA")
    cert, key = secprobe.derive_leaf(template, foreign, not_before=secprobe.now() - secprobe.dt.timedelta(hours=1),
                                     not_after=secprobe.now() + secprobe.dt.timedelta(days=30))
    return secprobe.write_pair(live.tmp / "foreign", "client", cert, key)


@pytest.mark.probe
def test_client_certificate_from_a_foreign_ca_is_refused(live, broker: Endpoint, foreign_client) -> None:
    outcome = secprobe.tls_attempt(broker, secprobe.client_context(live.layout.ca_pem, *foreign_client))
    assert not outcome.got_in, outcome.detail


def own_ca_client(live, name: str, *, days_from: int, days_to: int) -> tuple[Path, Path]:
    """A copy of the worker's client certificate (new key) issued by the deployment's own CA,
    valid from `now + days_from` to `now + days_to`."""
    from cryptography import x509

    template = x509.load_pem_x509_certificate(live.tls_pair(live.worker)[0].read_bytes())
    start = secprobe.now() + secprobe.dt.timedelta(days=days_from)
    cert, key = secprobe.derive_leaf(template, live.issuer(), not_before=start,
                                     not_after=secprobe.now() + secprobe.dt.timedelta(days=days_to))
    return secprobe.write_pair(live.tmp / name, "client", cert, key, live.chain())


@pytest.fixture(scope="module")
def expired_client(live) -> tuple[Path, Path]:
    return own_ca_client(live, "expired", days_from=-400, days_to=-1)


@pytest.fixture(scope="module")
def current_twin_client(live) -> tuple[Path, Path]:
    """Made exactly like `expired_client`, but valid today."""
    return own_ca_client(live, "twin", days_from=-1, days_to=30)


@pytest.mark.probe
def test_expired_client_certificate_from_the_own_ca_is_refused(live, broker: Endpoint, expired_client) -> None:
    outcome = secprobe.tls_attempt(broker, secprobe.client_context(live.layout.ca_pem, *expired_client))
    assert not outcome.got_in, outcome.detail


def test_control_a_current_certificate_made_the_same_way_gets_in(live, broker: Endpoint, current_twin_client) -> None:
    """The expired-certificate probe differs from this one only in the dates."""
    outcome = secprobe.tls_attempt(broker, secprobe.client_context(live.layout.ca_pem, *current_twin_client))
    assert outcome.got_in, outcome.detail


@pytest.mark.probe
@pytest.mark.parametrize("protocol", sorted(LEGACY_PROTOCOLS))
def test_legacy_tls_version_is_refused(live, broker: Endpoint, protocol: str) -> None:
    outcome = secprobe.tls_attempt(broker, legacy_context(live, protocol))
    assert not outcome.got_in, outcome.detail


@pytest.mark.probe
@pytest.mark.parametrize("suites", sorted(WEAK_CIPHERS))
def test_weak_cipher_suites_are_refused(live, broker: Endpoint, suites: str) -> None:
    outcome = secprobe.tls_attempt(broker, legacy_context(live, suites))
    assert not outcome.got_in, outcome.detail


@pytest.mark.probe
def test_3des_cipher_suites_are_refused(live, broker: Endpoint) -> None:
    outcome = secprobe.legacy_attempt(broker, THREE_DES, *live.tls_pair(live.worker))
    assert not outcome.got_in, outcome.detail


def test_control_the_worker_certificate_gets_in(live, broker: Endpoint) -> None:
    """The probes can see success: a legitimate client gets a protocol answer."""
    outcome = secprobe.tls_attempt(broker, secprobe.client_context(live.layout.ca_pem, *live.tls_pair(live.worker)))
    assert outcome.got_in, outcome.detail


@pytest.fixture(scope="module")
def permissive(tmp_path_factory: pytest.TempPathFactory):
    with secprobe.permissive_server(tmp_path_factory.mktemp("permissive")) as (address, port):
        yield secprobe.Endpoint("redis", address, port, 0)


@pytest.mark.parametrize("name", sorted({**LEGACY_PROTOCOLS, **WEAK_CIPHERS}))
def test_control_each_legacy_client_gets_in_to_a_permissive_server(live, permissive, name: str) -> None:
    """Each legacy client context really offers what the brokers refuse."""
    outcome = secprobe.tls_attempt(permissive, legacy_context(live, name))
    assert outcome.got_in, outcome.detail


def signing_pair(live, host: str) -> tuple[Path, Path]:
    """*host*'s signing certificate (EKU codeSigning only) and key, with the chain after it."""
    layout = live.layout
    directory = live.tmp / f"signing-as-tls-{host}"
    directory.mkdir(exist_ok=True)
    cert, key = directory / "signing.pem", directory / "signing.key"
    cert.write_bytes(layout.cert(host, "signing").read_bytes() + live.chain())
    key.touch(mode=0o600)
    key.write_bytes(layout.key(host, "signing").read_bytes())
    return cert, key


@pytest.mark.probe
def test_signing_certificate_as_tls_client_certificate_is_refused(live, broker: Endpoint) -> None:
    """The worker's message-signing pair (`signing.pem`, `signing.key`) presented for TLS."""
    outcome = secprobe.tls_attempt(broker, secprobe.client_context(live.layout.ca_pem,
                                                                   *signing_pair(live, live.worker)))
    assert not outcome.got_in, outcome.detail


@pytest.fixture(scope="module")
def client_auth_twin_of_the_signing_cert(live) -> tuple[Path, Path]:
    """Made like the worker's signing certificate, by the same CA, but with EKU clientAuth."""
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    template = x509.load_pem_x509_certificate(live.layout.cert(live.worker, "signing").read_bytes())
    cert, key = secprobe.derive_leaf(template, live.issuer(), not_before=secprobe.now() - secprobe.dt.timedelta(hours=1),
                                     not_after=secprobe.now() + secprobe.dt.timedelta(days=30),
                                     eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    return secprobe.write_pair(live.tmp / "signing-twin", "client", cert, key, live.chain())


def test_control_the_signing_certificate_with_eku_client_auth_gets_in(live, broker: Endpoint,
                                                                    client_auth_twin_of_the_signing_cert) -> None:
    """The signing-certificate probe differs from this one only in the extended key usage."""
    outcome = secprobe.tls_attempt(broker, secprobe.client_context(live.layout.ca_pem,
                                                                   *client_auth_twin_of_the_signing_cert))
    assert outcome.got_in, outcome.detail
