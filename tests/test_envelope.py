"""The signed envelope as pure logic (celery_provision.runtime.envelope): what a worker believes.

Certificates are made here with `cryptography` (a deployment CA, signing leaves with EKU
codeSigning, a TLS client leaf, a foreign CA); one test takes a signing certificate that
`celery-provision certs` issued. Live workers refusing real messages are in
tests/test_envelope_live.py and the hostile-client suite.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from celery_provision.runtime.envelope import HEADER, Refused, Signer, Trust

JSON = "application/json"
BODY = json.dumps([["/tmp/x"], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]).encode()
NOW = dt.datetime.now(dt.UTC)


@dataclass
class CA:
    cert: x509.Certificate
    key: Any

    @classmethod
    def new(cls, name: str) -> CA:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        return cls(cert, key)

    def leaf(self, cn: str, *, eku: x509.ObjectIdentifier = ExtendedKeyUsageOID.CODE_SIGNING, key: Any = None,
             days: tuple[int, int] = (-1, 10)) -> tuple[x509.Certificate, Any]:
        key = key or ed25519.Ed25519PrivateKey.generate()
        cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(NOW + dt.timedelta(days=days[0])).not_valid_after(NOW + dt.timedelta(days=days[1]))
                .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
                .sign(self.key, hashes.SHA256()))
        return cert, key


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class World:
    ca: CA
    store: Path
    trust: Trust
    client: Signer
    worker: Signer

    def signer(self, name: str, cert: x509.Certificate, key: Any, *, in_store: bool = True) -> Signer:
        if in_store:
            (self.store / f"{name}.pem").write_bytes(_pem(cert))
        return Signer(name, key, cert)


@pytest.fixture
def world(tmp_path: Path) -> World:
    ca = CA.new("deployment CA")
    (tmp_path / "ca.pem").write_bytes(_pem(ca.cert))
    store = tmp_path / "signers"
    store.mkdir()
    trust = Trust(store, tmp_path / "ca.pem", {"client-1": ("app.ping", "app.add"), "worker-1": ("*",)}, 3600)
    w = World(ca, store, trust, None, None)  # type: ignore[arg-type]
    w.client = w.signer("client-1", *ca.leaf("client-1"))
    w.worker = w.signer("worker-1", *ca.leaf("worker-1", key=ec.generate_private_key(ec.SECP256R1())))
    return w


def headers(task: str = "app.ping", **extra: Any) -> dict[str, Any]:
    return {"lang": "py", "task": task, "id": "a1", "eta": None, "expires": None, "retries": 0,
            "timelimit": [None, None], "root_id": "a1", "parent_id": None, "argsrepr": "('/tmp/x',)", **extra}


def signed(signer: Signer, h: dict[str, Any] | None = None, body: bytes = BODY, **kw: Any) -> dict[str, Any]:
    h = headers() if h is None else h
    h[HEADER] = signer.sign_task(h, JSON, "utf-8", body, **kw)
    return h


def refusal(trust: Trust, h: dict[str, Any], body: bytes = BODY, decoded: Any = None) -> Refused:
    with pytest.raises(Refused) as caught:
        trust.verify_task(h, JSON, "utf-8", body, decoded)
    return caught.value


# --------------------------------------------------------------------------- genuine messages


def test_a_genuine_message_names_its_signer(world: World) -> None:
    assert world.trust.verify_task(signed(world.client), JSON, "utf-8", BODY) == "client-1"


def test_an_ecdsa_signer_verifies_too(world: World) -> None:
    assert world.trust.verify_task(signed(world.worker, headers("app.anything")), JSON, "utf-8", BODY) == "worker-1"


def test_headers_a_broker_adds_in_transit_do_not_break_the_signature(world: World) -> None:
    h = signed(world.client)
    h.update({"x-delivery-count": 3, "x-death": [{"count": 1}], "redelivered": True})
    assert world.trust.verify_task(h, JSON, "utf-8", BODY) == "client-1"


def test_a_tuple_and_a_list_sign_alike(world: World) -> None:
    """A header's tuple arrives as a list (AMQP arrays, JSON): the canonical form is the same."""
    h = signed(world.client, headers(timelimit=(None, None)))
    h["timelimit"] = [None, None]
    assert world.trust.verify_task(h, JSON, "utf-8", BODY) == "client-1"


def test_a_store_file_with_the_previous_and_the_new_certificate_accepts_both(world: World) -> None:
    old_cert, old_key = world.ca.leaf("client-1")
    new_cert, new_key = world.ca.leaf("client-1")
    (world.store / "client-1.pem").write_bytes(_pem(new_cert) + _pem(old_cert))
    for cert, key in ((old_cert, old_key), (new_cert, new_key)):
        assert world.trust.verify_task(signed(Signer("client-1", key, cert)), JSON, "utf-8", BODY) == "client-1"


# --------------------------------------------------------------------------- altered messages


def test_a_relabelled_task_is_refused(world: World) -> None:
    h = signed(world.client)
    h["task"] = "app.touch"
    assert "signature does not match" in refusal(world.trust, h).reason


@pytest.mark.parametrize("header, value", [("id", "other"), ("eta", "2030-01-01T00:00:00+00:00"),
                                            ("expires", "2030-01-01T00:00:00+00:00"), ("retries", 5),
                                            ("shadow", "app.ping")])
def test_an_altered_header_is_refused(world: World, header: str, value: Any) -> None:
    h = signed(world.client)
    h[header] = value
    assert not refusal(world.trust, h).authentic


def test_altered_arguments_are_refused(world: World) -> None:
    h = signed(world.client)
    assert "signature does not match" in refusal(world.trust, h, BODY.replace(b"/tmp/x", b"/etc/x")).reason


def test_an_envelope_moved_to_another_signer_is_refused(world: World) -> None:
    h = signed(world.client)
    h[HEADER] = {**h[HEADER], "signer": "worker-1"}
    assert refusal(world.trust, h).signer == "worker-1"


def test_an_unsigned_message_is_refused(world: World) -> None:
    assert "unsigned" in refusal(world.trust, headers()).reason


@pytest.mark.parametrize("envelope", [{"v": 1}, "text", {"v": 2, "signer": "client-1", "kid": "x", "at": 1, "sig": ""},
                                      {"v": 1, "signer": "client-1", "kid": "x", "at": "soon", "sig": ""}])
def test_a_malformed_envelope_is_refused(world: World, envelope: Any) -> None:
    refusal(world.trust, headers(**{HEADER: envelope}))


# --------------------------------------------------------------------------- who signed


def test_a_signer_not_in_the_store_is_refused(world: World) -> None:
    stranger = world.signer("client-2", *world.ca.leaf("client-2"), in_store=False)
    assert "unknown signer" in refusal(world.trust, signed(stranger)).reason


def test_a_signer_removed_from_the_store_is_refused(world: World) -> None:
    h = signed(world.client)
    (world.store / "client-1.pem").unlink()
    assert "unknown signer" in refusal(world.trust, h).reason


def test_a_key_other_than_the_stored_certificate_is_refused(world: World) -> None:
    twin = world.signer("client-1", *world.ca.leaf("client-1"), in_store=False)  # same name, another key
    assert "not trusted" in refusal(world.trust, signed(twin)).reason


def test_a_tls_client_certificate_does_not_sign_messages(world: World) -> None:
    tls = world.signer("client-1", *world.ca.leaf("client-1", eku=ExtendedKeyUsageOID.CLIENT_AUTH))
    assert "not trusted" in refusal(world.trust, signed(tls)).reason


def test_a_signer_certificate_from_a_foreign_ca_is_refused(world: World) -> None:
    foreign = world.signer("client-1", *CA.new("deployment CA").leaf("client-1"))
    assert "not trusted" in refusal(world.trust, signed(foreign)).reason


def test_a_certificate_issued_to_another_name_is_refused(world: World) -> None:
    mislabelled = world.signer("client-1", *world.ca.leaf("worker-1"))
    assert "not trusted" in refusal(world.trust, signed(mislabelled)).reason


def test_an_expired_signer_certificate_is_refused(world: World) -> None:
    expired = world.signer("client-1", *world.ca.leaf("client-1", days=(-10, -1)))
    assert "expired" in refusal(world.trust, signed(expired)).reason


@pytest.mark.parametrize("name", ["../worker-1", ".hidden", ""])
def test_a_signer_name_that_is_not_a_file_name_is_refused(world: World, name: str) -> None:
    h = signed(world.client)
    h[HEADER] = {**h[HEADER], "signer": name}
    refusal(world.trust, h)


# --------------------------------------------------------------------------- what it may ask


def test_a_task_outside_the_signers_allow_list_is_refused_and_the_refusal_is_authentic(world: World) -> None:
    refused = refusal(world.trust, signed(world.client, headers("app.touch")))
    assert (refused.reason, refused.authentic) == ("may not call app.touch", True)


def test_a_chain_step_outside_the_allow_list_is_refused_with_its_id(world: World) -> None:
    step = {"task": "app.touch", "args": [], "kwargs": {}, "options": {"task_id": "b2"}, "subtask_type": None}
    body = json.dumps([[1], {}, {"callbacks": None, "errbacks": None, "chain": [step], "chord": None}]).encode()
    refused = refusal(world.trust, signed(world.client, body=body), body, json.loads(body))
    assert (refused.reason, refused.task_ids) == ("may not call app.touch", ("b2",))


def test_a_signature_passed_as_an_argument_is_checked_too(world: World) -> None:
    inner = {"task": "app.touch", "args": [], "kwargs": {}, "options": {}, "subtask_type": None}
    body = json.dumps([[], {"tasks": [inner]}, None]).encode()
    h = signed(world.client, headers("celery.group"), body)
    assert refusal(world.trust, h, body, json.loads(body)).reason == "may not call app.touch"


def test_canvas_builtins_are_allowed_to_whoever_may_call_something(world: World) -> None:
    inner = {"task": "app.add", "args": [1, 2], "kwargs": {}, "options": {}, "subtask_type": None}
    body = json.dumps([[], {"tasks": [inner]}, None]).encode()
    h = signed(world.client, headers("celery.group"), body)
    assert world.trust.verify_task(h, JSON, "utf-8", body, json.loads(body)) == "client-1"


def test_a_signer_without_an_allow_list_may_call_nothing(world: World) -> None:
    ops = world.signer("ops-1", *world.ca.leaf("ops-1"))
    assert refusal(world.trust, signed(ops, headers("celery.group"))).reason == "may not call celery.group"


# --------------------------------------------------------------------------- when


def test_a_message_older_than_the_maximum_age_is_refused(world: World) -> None:
    refused = refusal(world.trust, signed(world.client, at=time.time() - 3700))
    assert "maximum age" in refused.reason and refused.authentic


def test_an_eta_extends_the_maximum_age_by_its_delay(world: World) -> None:
    at = time.time() - 3700
    eta = dt.datetime.fromtimestamp(at + 600, dt.UTC).isoformat()
    h = signed(world.client, headers(eta=eta), at=at)
    assert world.trust.verify_task(h, JSON, "utf-8", BODY) == "client-1"


def test_a_message_signed_in_the_future_is_refused(world: World) -> None:
    assert "future" in refusal(world.trust, signed(world.client, at=time.time() + 3600)).reason


# --------------------------------------------------------------------------- blobs


def test_a_signed_blob_opens_to_its_data_and_signer(world: World) -> None:
    assert world.trust.open_blob(world.worker.sign_blob(b'{"method": "ping"}')) == ("worker-1", b'{"method": "ping"}')


def test_an_altered_blob_is_refused(world: World) -> None:
    blob = world.worker.sign_blob(b'{"method": "ping"}').replace(b"ping", b"shutdown")
    with pytest.raises(Refused, match="signature does not match"):
        world.trust.open_blob(blob)


def test_an_old_blob_is_refused(world: World) -> None:
    with pytest.raises(Refused, match="signed more than 300 s ago"):
        world.trust.open_blob(world.worker.sign_blob(b"{}", at=time.time() - 301), max_age=300)


def test_a_signing_certificate_issued_by_celery_provision_certs_is_trusted(cli, inventory: Path) -> None:
    from celery_provision import model

    assert cli("certs", "issue", "-i", str(inventory)).code == 0
    d = model.load(inventory)
    host, layout = d.apps[0], d.layout
    trust = Trust(layout.signers_dir, layout.ca_pem, {host.name: ("*",)})
    signer = Signer.load(host.name, layout.key(host.name, "signing"), layout.cert(host.name, "signing"))
    assert trust.verify_task(signed(signer), JSON, "utf-8", BODY) == host.name


def test_a_blob_from_a_signer_not_named_for_that_kind_of_message_is_refused(world: World) -> None:
    """Control messages a worker takes come from operators only: a producer's signed
    `shutdown` is refused, however well signed."""
    with pytest.raises(Refused, match="may not send this kind of message"):
        world.trust.open_blob(world.client.sign_blob(b'{"method": "shutdown"}'), signers=("ops-1",))


def test_a_signer_issued_by_an_intermediate_is_trusted_through_the_chain_in_its_store_file(world: World) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intermediate")])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(world.ca.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=20))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(world.ca.key, hashes.SHA256()))
    intermediate = CA(cert, key)
    leaf, leaf_key = intermediate.leaf("client-1")
    (world.store / "client-1.pem").write_bytes(_pem(leaf) + _pem(intermediate.cert))
    assert world.trust.verify_task(signed(Signer("client-1", leaf_key, leaf)), JSON, "utf-8", BODY) == "client-1"


def test_a_signer_issued_by_an_intermediate_without_its_chain_is_refused(world: World) -> None:
    intermediate = CA.new("intermediate")  # not issued by the deployment's root either
    leaf, leaf_key = intermediate.leaf("client-1")
    (world.store / "client-1.pem").write_bytes(_pem(leaf) + _pem(intermediate.cert))
    assert "not trusted" in refusal(world.trust, signed(Signer("client-1", leaf_key, leaf))).reason
