"""The PKI: what it issues, how it stores it, how re-runs, renewals, revocations and pruning
behave, and that the certificates really work (and really fail) in a TLS handshake."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from celery_provision import model, pki
from celery_provision.errors import ProvisionError
from celery_provision.pki.leaves import build_leaf
from celery_provision.pki.state import dump_state

from pkiutil import (
    assert_is_ca,
    assert_is_leaf,
    client_context,
    cn_of,
    foreign_ca,
    handshake,
    load_cert,
    load_chain,
    load_key,
    server_context,
    sign_leaf,
    snapshot,
    snapshot_diff,
    write_pair,
)


def _issue(inv: Path, **kwargs) -> tuple[model.Deployment, pki.Layout, pki.Report]:  # noqa: ANN003
    d = model.load(inv)
    report = pki.issue(d, **kwargs)
    return d, d.layout, report


def _actions(report: pki.Report, action: str) -> set[str]:
    return {name for a, name, _ in report.events if a == action}


@pytest.fixture
def issued(inventory: Path) -> tuple[model.Deployment, pki.Layout]:
    d, layout, _ = _issue(inventory)
    return d, layout


def _with_intermediate(write_inventory) -> Path:  # noqa: ANN001
    return write_inventory(all_vars={"celery_provision_intermediate_ca": True}, name="inter")


# --------------------------------------------------------------------------- the CA


def test_root_ca_is_self_signed_with_critical_constraints_and_no_path_below(issued) -> None:  # noqa: ANN001
    _, layout = issued
    assert_is_ca(load_cert(layout.root_cert), path_length=0)


def test_trust_anchor_ca_pem_is_the_root_certificate(issued) -> None:  # noqa: ANN001
    _, layout = issued
    assert layout.ca_pem.read_bytes() == layout.root_cert.read_bytes()


def test_intermediate_ca_is_signed_by_root_which_allows_one_level(write_inventory) -> None:  # noqa: ANN001
    _, layout, _ = _issue(_with_intermediate(write_inventory))
    root = load_cert(layout.root_cert)
    assert_is_ca(root, path_length=1)
    assert_is_ca(load_cert(layout.intermediate_cert), issuer=root, path_length=0)


def test_leaves_are_signed_by_the_intermediate_and_carry_it_as_chain(write_inventory) -> None:  # noqa: ANN001
    _, layout, _ = _issue(_with_intermediate(write_inventory))
    intermediate = load_cert(layout.intermediate_cert)
    for host, kind in (("rabbitmq-1", "server"), ("worker-1", "client")):
        chain = load_chain(layout.cert(host, kind))
        assert chain[1:] == [intermediate]
        chain[0].verify_directly_issued_by(intermediate)


def test_ca_validity_follows_ca_days(write_inventory) -> None:  # noqa: ANN001
    _, layout, _ = _issue(write_inventory(all_vars={"celery_provision_ca_days": 100}))
    root = load_cert(layout.root_cert)
    assert (root.not_valid_after_utc - root.not_valid_before_utc).days == 100


def test_existing_ca_is_never_replaced_by_issue(inventory: Path) -> None:
    _, layout, _ = _issue(inventory)
    before = layout.root_cert.read_bytes(), layout.root_key.read_bytes()
    (inventory / "group_vars" / "all.yml").write_text(
        "celery_provision_key_type: ec-p384\ncelery_provision_signing_key_type: rsa2048\n"
    )
    _, _, report = _issue(inventory)
    assert (layout.root_cert.read_bytes(), layout.root_key.read_bytes()) == before
    assert "ca/root" not in _actions(report, "issued")


def test_force_retires_the_old_ca_and_reissues_every_leaf_under_the_new_one(issued) -> None:  # noqa: ANN001
    d, layout = issued
    old_root = layout.root_cert.read_bytes()
    report = pki.issue(d, force_ca=True)
    assert layout.root_cert.read_bytes() != old_root
    assert [p.name for p in layout.root.glob("ca.retired-*")]
    new_root = load_cert(layout.root_cert)
    load_cert(layout.cert("worker-1", "client")).verify_directly_issued_by(new_root)
    assert "worker-1/client" in _actions(report, "reissued")


# --------------------------------------------------------------------------- leaves


def test_server_certificate_names_host_address_and_extra_sans(issued) -> None:  # noqa: ANN001
    _, layout = issued
    assert_is_leaf(
        load_cert(layout.cert("rabbitmq-1", "server")), issuer=load_cert(layout.root_cert),
        eku=["serverAuth"], dns=["rabbitmq-1", "localhost"], ips=["127.0.0.1"], cn="rabbitmq-1",
    )


def test_single_rabbitmq_node_gets_a_server_auth_only_certificate(issued) -> None:  # noqa: ANN001
    _, layout = issued
    eku = load_cert(layout.cert("rabbitmq-1", "server")).extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert list(eku.value) == [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]


def test_clustered_rabbitmq_nodes_get_server_and_client_auth(write_inventory, basic_groups) -> None:  # noqa: ANN001
    groups = basic_groups
    groups["rabbitmq"]["rabbitmq-1"]["rabbitmq_cluster"] = True
    groups["rabbitmq"]["rabbitmq-2"] = {"ansible_host": "127.0.0.5", "rabbitmq_cluster": True}
    _, layout, _ = _issue(write_inventory(groups))
    root = load_cert(layout.root_cert)
    for host, ip in (("rabbitmq-1", "127.0.0.1"), ("rabbitmq-2", "127.0.0.5")):
        assert_is_leaf(load_cert(layout.cert(host, "server")), issuer=root, eku=["serverAuth", "clientAuth"])
    assert_is_leaf(load_cert(layout.cert("redis-1", "server")), issuer=root, eku=["serverAuth"])


def test_client_certificate_is_named_after_the_host_with_client_auth_only(issued) -> None:  # noqa: ANN001
    _, layout = issued
    root = load_cert(layout.root_cert)
    for host in ("worker-1", "client-1"):
        assert_is_leaf(load_cert(layout.cert(host, "client")), issuer=root, eku=["clientAuth"], dns=[host], cn=host)


def test_brokers_get_no_client_or_signing_certificates(issued) -> None:  # noqa: ANN001
    _, layout = issued
    assert sorted(p.name for p in (layout.hosts_dir / "redis-1").iterdir()) == ["server.key", "server.pem"]


def test_signing_certificate_is_for_code_signing_only_and_published_in_the_cert_store(issued) -> None:  # noqa: ANN001
    _, layout = issued
    cert = load_cert(layout.cert("worker-1", "signing"))
    assert_is_leaf(cert, issuer=load_cert(layout.root_cert), eku=["codeSigning"], cn="worker-1")
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert not ku.key_encipherment and not ku.key_agreement and not ku.content_commitment
    assert sorted(p.name for p in layout.signers_dir.iterdir()) == ["client-1.pem", "worker-1.pem"]
    assert layout.signer("worker-1").read_bytes() == layout.cert("worker-1", "signing").read_bytes()


def test_signing_certificate_is_neither_for_tls_clients_nor_servers(issued) -> None:  # noqa: ANN001
    _, layout = issued
    eku = load_cert(layout.cert("worker-1", "signing")).extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH not in eku.value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH not in eku.value


def test_signing_key_is_ecdsa_p256_by_default(write_inventory) -> None:  # noqa: ANN001
    _, layout, _ = _issue(write_inventory(fast=False))
    key = load_key(layout.key("worker-1", "signing"))
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert isinstance(load_cert(layout.cert("worker-1", "client")).public_key(), ec.EllipticCurvePublicKey)


@pytest.mark.parametrize(("key_type", "kind"), [("ed25519", ed25519.Ed25519PublicKey),
                                                ("ec-p256", ec.EllipticCurvePublicKey)])
def test_signing_certificate_of_a_non_rsa_key_type_is_a_valid_code_signing_leaf(
    write_inventory, key_type: str, kind: type  # noqa: ANN001
) -> None:
    _, layout, _ = _issue(write_inventory(all_vars={"celery_provision_signing_key_type": key_type}))
    cert = load_cert(layout.cert("worker-1", "signing"))
    assert isinstance(cert.public_key(), kind)
    assert_is_leaf(cert, issuer=load_cert(layout.root_cert), eku=["codeSigning"], cn="worker-1")
    assert layout.signer("worker-1").read_bytes() == layout.cert("worker-1", "signing").read_bytes()


@pytest.mark.parametrize("key_type", ["ed25519", "ec-p256"])
def test_a_non_rsa_signing_certificate_is_kept_on_a_rerun_without_state(write_inventory, key_type: str) -> None:  # noqa: ANN001
    inv = write_inventory(all_vars={"celery_provision_signing_key_type": key_type})
    _, layout, _ = _issue(inv)
    layout.state.unlink()
    before = layout.cert("worker-1", "signing").read_bytes()
    _, _, report = _issue(inv)
    assert "worker-1/signing" in _actions(report, "unchanged")
    assert layout.cert("worker-1", "signing").read_bytes() == before


@pytest.mark.parametrize(
    ("key_type", "kind", "size"),
    [("ec-p256", ec.EllipticCurvePublicKey, 256), ("ec-p384", ec.EllipticCurvePublicKey, 384),
     ("rsa2048", rsa.RSAPublicKey, 2048), ("rsa3072", rsa.RSAPublicKey, 3072),
     ("rsa4096", rsa.RSAPublicKey, 4096)],
)
def test_tls_keys_have_the_configured_key_type(write_inventory, key_type: str, kind: type, size: int) -> None:  # noqa: ANN001
    groups = {"rabbitmq": {"rabbitmq-1": {"ansible_host": "127.0.0.1"}},
              "celery_workers": {"worker-1": {"ansible_host": "127.0.0.3"}}}
    _, layout, _ = _issue(write_inventory(groups, {"celery_provision_key_type": key_type}))
    for path in (layout.root_cert, layout.cert("rabbitmq-1", "server"), layout.cert("worker-1", "client")):
        public = load_cert(path).public_key()
        assert isinstance(public, kind)
        assert public.key_size == size
    assert load_key(layout.key("worker-1", "client")).key_size == size


def test_signing_key_type_is_independent_of_the_tls_key_type(write_inventory) -> None:  # noqa: ANN001
    _, layout, _ = _issue(write_inventory(all_vars={"celery_provision_signing_key_type": "rsa3072"}))
    assert isinstance(load_cert(layout.cert("worker-1", "client")).public_key(), ec.EllipticCurvePublicKey)
    assert load_cert(layout.cert("worker-1", "signing")).public_key().key_size == 3072


def test_leaf_validity_follows_leaf_days(write_inventory) -> None:  # noqa: ANN001
    _, layout, _ = _issue(write_inventory(all_vars={"celery_provision_leaf_days": 7}))
    cert = load_cert(layout.cert("worker-1", "client"))
    # not_before is backdated a few minutes for clock skew; the validity is days + skew.
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 7


def test_private_keys_are_0600_in_0700_directories(issued) -> None:  # noqa: ANN001
    _, layout = issued
    keys = list(layout.root.rglob("*.key"))
    assert len(keys) == 1 + 2 + 2 * 2  # root, 2 servers, client+signing for 2 apps
    for key in keys:
        assert key.stat().st_mode & 0o777 == 0o600, key
    for directory in (layout.root, layout.ca_dir, layout.hosts_dir, *layout.hosts_dir.iterdir()):
        assert directory.stat().st_mode & 0o777 == 0o700, directory


def test_no_temporary_files_are_left_behind(issued) -> None:  # noqa: ANN001
    _, layout = issued
    assert not [p for p in layout.root.rglob("*.tmp")]


# --------------------------------------------------------------------------- the CA passphrase


def test_ca_key_is_encrypted_with_the_passphrase_from_an_environment_variable(
    write_inventory, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    monkeypatch.setenv("TEST_CA_PASS", "correct horse")
    _, layout, _ = _issue(write_inventory(all_vars={"celery_provision_ca_passphrase_env": "TEST_CA_PASS"}))
    assert b"ENCRYPTED" in layout.root_key.read_bytes()
    with pytest.raises(TypeError):
        load_key(layout.root_key)
    load_key(layout.root_key, b"correct horse")


def test_ca_key_is_encrypted_with_the_passphrase_from_a_file(write_inventory, tmp_path: Path) -> None:  # noqa: ANN001
    secret = tmp_path / "ca-pass"
    secret.write_text("battery staple\n")
    _, layout, _ = _issue(write_inventory(all_vars={"celery_provision_ca_passphrase_file": str(secret)}))
    load_key(layout.root_key, b"battery staple")


def test_ca_key_without_a_configured_passphrase_is_plain(issued) -> None:  # noqa: ANN001
    _, layout = issued
    assert b"ENCRYPTED" not in layout.root_key.read_bytes()


def test_leaves_can_be_issued_later_with_the_right_passphrase(write_inventory, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("TEST_CA_PASS", "s3cret")
    inv = write_inventory(all_vars={"celery_provision_ca_passphrase_env": "TEST_CA_PASS"})
    _, layout, _ = _issue(inv)
    layout.key("worker-1", "client").unlink()
    _, _, report = _issue(inv)
    assert _actions(report, "issued") == {"worker-1/client"}


def test_wrong_passphrase_is_refused_before_anything_changes(write_inventory, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("TEST_CA_PASS", "s3cret")
    inv = write_inventory(all_vars={"celery_provision_ca_passphrase_env": "TEST_CA_PASS"})
    _, layout, _ = _issue(inv)
    layout.key("worker-1", "client").unlink()
    before = snapshot(layout.root)
    monkeypatch.setenv("TEST_CA_PASS", "wrong")
    with pytest.raises(ProvisionError, match="wrong passphrase"):
        _issue(inv)
    assert snapshot_diff(before, snapshot(layout.root)) == []


# --------------------------------------------------------------------------- re-runs


def test_second_issue_issues_nothing(inventory: Path) -> None:
    _issue(inventory)
    _, _, report = _issue(inventory)
    assert not report.changed
    assert report.count("unchanged") == 6


def test_second_issue_leaves_every_file_byte_for_byte_and_mtime_identical(inventory: Path) -> None:
    _, layout, _ = _issue(inventory)
    before = snapshot(layout.root)
    _issue(inventory)
    assert snapshot_diff(before, snapshot(layout.root)) == []


def test_lost_state_file_is_rebuilt_from_the_certificates_without_reissuing(inventory: Path) -> None:
    _, layout, _ = _issue(inventory)
    layout.state.unlink()
    certs = {p: p.read_bytes() for p in layout.hosts_dir.rglob("*.pem")}
    _, _, report = _issue(inventory)
    assert not _actions(report, "issued") and not _actions(report, "reissued")
    assert {p: p.read_bytes() for p in certs} == certs


def _edit_host(inv: Path, group: str, host: str, **values) -> None:  # noqa: ANN003
    doc = yaml.safe_load((inv / "hosts.yml").read_text())
    doc["all"]["children"][group]["hosts"][host].update(values)
    (inv / "hosts.yml").write_text(yaml.safe_dump(doc))


def test_changed_extra_sans_reissue_only_that_server_certificate(inventory: Path) -> None:
    _, layout, _ = _issue(inventory)
    _edit_host(inventory, "rabbitmq", "rabbitmq-1", celery_provision_extra_sans=["localhost", "mq.example.org"])
    _, _, report = _issue(inventory)
    assert _actions(report, "reissued") == {"rabbitmq-1/server"}
    assert "mq.example.org" in load_cert(layout.cert("rabbitmq-1", "server")).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def test_changed_address_reissues_the_server_certificate_with_the_new_ip(inventory: Path) -> None:
    _, layout, _ = _issue(inventory)
    _edit_host(inventory, "redis", "redis-1", ansible_host="127.0.0.9")
    _, _, report = _issue(inventory)
    assert _actions(report, "reissued") == {"redis-1/server"}
    ips = load_cert(layout.cert("redis-1", "server")).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)
    assert [str(ip) for ip in ips] == ["127.0.0.9"]


def test_a_leaf_edited_on_disk_to_other_names_is_reissued(issued) -> None:  # noqa: ANN001
    d, layout = issued
    # A valid certificate from our CA, but for the wrong name: it must not be kept.
    root, root_key = load_cert(layout.root_cert), load_key(layout.root_key)
    cert, key = sign_leaf(root, root_key, "someone-else")
    write_pair(layout.hosts_dir / "worker-1", "client", cert, key)
    report = pki.issue(d)
    assert _actions(report, "reissued") == {"worker-1/client"}
    assert cn_of(load_cert(layout.cert("worker-1", "client"))) == "worker-1"


def test_a_signing_certificate_without_code_signing_is_reissued_once(issued) -> None:  # noqa: ANN001
    d, layout = issued
    # What an earlier version issued: the same key, no extended key usage (good for TLS too).
    spec = next(s for s in pki.leaf_specs(d) if s.name == "worker-1/signing")
    legacy = build_leaf(dataclasses.replace(spec, eku=()), load_key(layout.key("worker-1", "signing")),
                        load_cert(layout.root_cert), load_key(layout.root_key))
    layout.cert("worker-1", "signing").write_bytes(legacy.public_bytes(serialization.Encoding.PEM))
    assert _actions(pki.issue(d), "reissued") == {"worker-1/signing"}
    assert not pki.issue(d).changed


def test_changed_key_type_reissues_every_leaf_but_keeps_the_ca(inventory: Path) -> None:
    _, layout, _ = _issue(inventory)
    root = layout.root_cert.read_bytes()
    (inventory / "group_vars" / "all.yml").write_text(
        "celery_provision_key_type: ec-p384\ncelery_provision_signing_key_type: rsa2048\n"
    )
    _, _, report = _issue(inventory)
    assert _actions(report, "reissued") == {"rabbitmq-1/server", "redis-1/server", "worker-1/client",
                                            "client-1/client"}
    assert layout.root_cert.read_bytes() == root


# --------------------------------------------------------------------------- renew, revoke, prune


def test_renew_within_more_than_the_validity_renews_every_leaf(issued) -> None:  # noqa: ANN001
    d, layout = issued
    serials = {p: load_cert(p).serial_number for p in layout.hosts_dir.rglob("*.pem")}
    report = pki.renew(d, 400)
    assert report.count("renewed") == 6
    assert all(load_cert(p).serial_number != s for p, s in serials.items())
    assert load_cert(layout.root_cert) == load_cert(layout.root_cert)


def test_renew_within_less_than_the_remaining_validity_renews_nothing(issued) -> None:  # noqa: ANN001
    d, layout = issued
    before = snapshot(layout.root)
    report = pki.renew(d, 30)
    assert not report.changed
    assert snapshot_diff(before, snapshot(layout.root)) == []


# --------------------------------------------------------------------------- signing-key rotation


def _store(layout: pki.Layout, host: str = "worker-1") -> list[int]:
    return [c.serial_number for c in load_chain(layout.signer(host))]


def _signing_serial(layout: pki.Layout, host: str = "worker-1") -> int:
    return load_cert(layout.cert(host, "signing")).serial_number


def _replaced_hours_ago(layout: pki.Layout, hours: float, name: str = "worker-1/signing") -> None:
    """Move the recorded replacement of a signing certificate *hours* into the past."""
    state = json.loads(layout.state.read_text())
    at = dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)
    state["leaves"][name]["previous"]["replaced_at"] = at.isoformat()
    layout.state.write_text(dump_state(state))


def test_after_a_renewal_the_signer_store_holds_the_new_certificate_then_the_old(issued) -> None:  # noqa: ANN001
    d, layout = issued
    old = _signing_serial(layout)
    pki.renew(d, 400)
    assert _store(layout) == [_signing_serial(layout), old]


def test_the_replaced_signing_certificate_is_recorded_in_state(issued) -> None:  # noqa: ANN001
    d, layout = issued
    old = layout.cert("worker-1", "signing").read_text()
    pki.renew(d, 400)
    previous = json.loads(layout.state.read_text())["leaves"]["worker-1/signing"]["previous"]
    assert previous["pem"] == old
    assert int(previous["serial"], 16) == x509.load_pem_x509_certificate(old.encode()).serial_number
    assert dt.datetime.fromisoformat(previous["replaced_at"]) <= dt.datetime.now(dt.UTC)


def test_inside_the_overlap_window_a_second_run_changes_nothing(issued) -> None:  # noqa: ANN001
    d, layout = issued
    pki.renew(d, 400)
    _replaced_hours_ago(layout, 23)
    before = snapshot(layout.root)
    assert not pki.issue(d).changed
    assert snapshot_diff(before, snapshot(layout.root)) == []


def test_after_the_overlap_window_the_next_run_drops_the_old_certificate(issued) -> None:  # noqa: ANN001
    d, layout = issued
    pki.renew(d, 400)
    _replaced_hours_ago(layout, 25)
    report = pki.issue(d)
    assert _actions(report, "retired") == {"worker-1/signing"}
    assert _store(layout) == [_signing_serial(layout)]
    assert layout.signer("worker-1").read_bytes() == layout.cert("worker-1", "signing").read_bytes()
    assert "previous" not in json.loads(layout.state.read_text())["leaves"]["worker-1/signing"]
    assert not pki.issue(d).changed


def test_the_overlap_window_follows_signing_overlap_hours(write_inventory) -> None:  # noqa: ANN001
    inv = write_inventory(all_vars={"celery_provision_signing_overlap_hours": 48})
    d, layout, _ = _issue(inv)
    pki.renew(d, 400)
    _replaced_hours_ago(layout, 47)
    pki.issue(d)
    assert len(_store(layout)) == 2
    _replaced_hours_ago(layout, 49)
    pki.issue(d)
    assert len(_store(layout)) == 1


def test_with_no_overlap_a_renewed_signing_certificate_replaces_the_old_at_once(write_inventory) -> None:  # noqa: ANN001
    d, layout, _ = _issue(write_inventory(all_vars={"celery_provision_signing_overlap_hours": 0}))
    pki.renew(d, 400)
    assert _store(layout) == [_signing_serial(layout)]
    assert "previous" not in json.loads(layout.state.read_text())["leaves"]["worker-1/signing"]


def test_a_signing_certificate_replaced_because_it_was_revoked_is_not_kept(issued) -> None:  # noqa: ANN001
    d, layout = issued
    pki.revoke(d, "worker-1", kinds=("signing",))
    pki.issue(d)
    assert _store(layout) == [_signing_serial(layout)]


def test_a_previous_signing_certificate_revoked_later_leaves_the_store(issued) -> None:  # noqa: ANN001
    d, layout = issued
    pki.renew(d, 400)
    state = json.loads(layout.state.read_text())
    previous = state["leaves"]["worker-1/signing"]["previous"]
    state["revoked"].append({"serial": previous["serial"], "name": "worker-1/signing", "date": previous["replaced_at"],
                             "reason": "key compromise", "issuer": state["leaves"]["worker-1/signing"]["issuer"],
                             "not_after": previous["not_after"]})
    layout.state.write_text(dump_state(state))
    pki.issue(d)
    assert _store(layout) == [_signing_serial(layout)]


def test_an_expired_previous_signing_certificate_leaves_the_store(issued) -> None:  # noqa: ANN001
    d, layout = issued
    pki.renew(d, 400)
    state = json.loads(layout.state.read_text())
    state["leaves"]["worker-1/signing"]["previous"]["not_after"] = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
    layout.state.write_text(dump_state(state))
    pki.issue(d)
    assert _store(layout) == [_signing_serial(layout)]


def test_revoking_a_host_removes_its_store_file_with_both_certificates(issued) -> None:  # noqa: ANN001
    d, layout = issued
    pki.renew(d, 400)
    pki.revoke(d, "worker-1")
    assert not layout.signer("worker-1").exists()
    assert len(_store(layout, "client-1")) == 2


def _crl_serials(layout: pki.Layout) -> set[int]:
    return {r.serial_number for r in x509.load_pem_x509_crl(layout.crl_pem.read_bytes())}


def test_crl_exists_and_is_empty_before_any_revocation(issued) -> None:  # noqa: ANN001
    _, layout = issued
    crl = x509.load_pem_x509_crl(layout.crl_pem.read_bytes())
    assert crl.is_signature_valid(load_cert(layout.root_cert).public_key())
    assert len(crl) == 0


def test_revoke_lists_every_certificate_of_the_host_in_a_signed_crl(issued) -> None:  # noqa: ANN001
    d, layout = issued
    serials = {load_cert(layout.cert("worker-1", k)).serial_number for k in ("client", "signing")}
    pki.revoke(d, "worker-1")
    crl = x509.load_pem_x509_crl(layout.crl_pem.read_bytes())
    assert crl.is_signature_valid(load_cert(layout.root_cert).public_key())
    assert _crl_serials(layout) == serials


def test_revoke_removes_the_signing_certificate_from_the_cert_store_at_once(issued) -> None:  # noqa: ANN001
    d, layout = issued
    pki.revoke(d, "worker-1")
    assert not layout.signer("worker-1").exists()
    assert layout.signer("client-1").exists()


def test_issue_after_revoke_replaces_the_revoked_certificates(issued) -> None:  # noqa: ANN001
    d, layout = issued
    old = load_cert(layout.cert("worker-1", "client")).serial_number
    pki.revoke(d, "worker-1", kinds=("client",))
    report = pki.issue(d)
    assert _actions(report, "reissued") == {"worker-1/client"}
    assert load_cert(layout.cert("worker-1", "client")).serial_number != old
    assert old in _crl_serials(layout)


def test_revoking_a_host_not_in_the_inventory_is_an_error(issued) -> None:  # noqa: ANN001
    d, _ = issued
    with pytest.raises(ProvisionError, match="no host 'nobody' in the inventory"):
        pki.revoke(d, "nobody")


def test_prune_revokes_and_deletes_hosts_removed_from_the_inventory(write_inventory, basic_groups) -> None:  # noqa: ANN001
    groups = basic_groups
    groups["celery_workers"]["worker-2"] = {"ansible_host": "127.0.0.6"}
    inv = write_inventory(groups)
    _, layout, _ = _issue(inv)
    gone = {load_cert(layout.cert("worker-2", k)).serial_number for k in ("client", "signing")}
    del groups["celery_workers"]["worker-2"]
    write_inventory(groups)
    report = pki.prune(model.load(inv))
    assert _actions(report, "pruned") == {"worker-2"}
    assert not (layout.hosts_dir / "worker-2").exists()
    assert not layout.signer("worker-2").exists()
    assert _crl_serials(layout) == gone


def test_prune_with_nothing_removed_changes_nothing(issued) -> None:  # noqa: ANN001
    d, layout = issued
    before = snapshot(layout.root)
    report = pki.prune(d)
    assert not report.changed
    assert snapshot_diff(before, snapshot(layout.root)) == []


def test_check_finds_no_problem_in_a_fresh_pki(issued) -> None:  # noqa: ANN001
    d, _ = issued
    assert pki.check(d) == []


def test_check_reports_a_key_that_does_not_match_its_certificate(issued) -> None:  # noqa: ANN001
    d, layout = issued
    layout.key("worker-1", "client").write_bytes(layout.key("client-1", "client").read_bytes())
    assert any("does not match" in p for p in pki.check(d))


def test_check_reports_a_private_key_readable_by_others(issued) -> None:  # noqa: ANN001
    d, layout = issued
    layout.key("worker-1", "client").chmod(0o644)
    assert any("mode 0644" in p for p in pki.check(d))


# --------------------------------------------------------------------------- one judge: issue repairs what check reports


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _repairs(report: pki.Report) -> list[tuple[str, str]]:
    return [(name, detail) for a, name, detail in report.events if a == "repaired"]


def test_issue_narrows_a_widened_leaf_key_back_to_0600(issued) -> None:  # noqa: ANN001
    d, layout = issued
    layout.key("worker-1", "client").chmod(0o644)
    report = pki.issue(d)
    assert _mode(layout.key("worker-1", "client")) == 0o600
    assert _repairs(report) == [("hosts/worker-1/client.key", "mode 0644 -> 0600")]


def test_a_repaired_leaf_keeps_its_key_and_certificate(issued) -> None:  # noqa: ANN001
    d, layout = issued
    key, cert = layout.key("worker-1", "client"), layout.cert("worker-1", "client")
    before = key.read_bytes(), cert.read_bytes(), load_cert(cert).serial_number
    key.chmod(0o644)
    report = pki.issue(d)
    assert (key.read_bytes(), cert.read_bytes(), load_cert(cert).serial_number) == before
    assert not _actions(report, "issued") | _actions(report, "reissued") | _actions(report, "renewed")
    assert "worker-1/client" in _actions(report, "unchanged")


def test_issue_narrows_a_widened_host_directory_back_to_0700_once(issued) -> None:  # noqa: ANN001
    d, layout = issued
    (layout.hosts_dir / "worker-1").chmod(0o755)
    report = pki.issue(d)
    assert _mode(layout.hosts_dir / "worker-1") == 0o700
    # Two leaves live in it: the directory is judged twice, repaired and reported once.
    assert _repairs(report) == [("hosts/worker-1", "mode 0755 -> 0700")]


def test_issue_narrows_a_widened_root_ca_key(issued) -> None:  # noqa: ANN001
    d, layout = issued
    before = layout.root_key.read_bytes()
    layout.root_key.chmod(0o640)
    report = pki.issue(d)
    assert _mode(layout.root_key) == 0o600
    assert layout.root_key.read_bytes() == before
    assert _repairs(report) == [("ca/root.key", "mode 0640 -> 0600")]


def test_issue_narrows_a_widened_intermediate_ca_key(write_inventory) -> None:  # noqa: ANN001
    d, layout, _ = _issue(_with_intermediate(write_inventory))
    layout.intermediate_key.chmod(0o644)
    report = pki.issue(d)
    assert _mode(layout.intermediate_key) == 0o600
    assert _repairs(report) == [("ca/intermediate.key", "mode 0644 -> 0600")]


def test_issue_narrows_widened_pki_directories(issued) -> None:  # noqa: ANN001
    d, layout = issued
    for directory in (layout.root, layout.ca_dir, layout.hosts_dir):
        directory.chmod(0o755)
    pki.issue(d)
    assert [_mode(p) for p in (layout.root, layout.ca_dir, layout.hosts_dir)] == [0o700] * 3


def test_a_repair_is_counted_in_the_summary(issued) -> None:  # noqa: ANN001
    d, layout = issued
    layout.key("worker-1", "signing").chmod(0o604)
    report = pki.issue(d)
    assert report.changed
    assert report.summary() == "1 repaired"


def test_check_passes_after_issue_repaired_widened_modes(issued) -> None:  # noqa: ANN001
    d, layout = issued
    layout.key("worker-1", "client").chmod(0o644)
    (layout.hosts_dir / "redis-1").chmod(0o755)
    layout.root_key.chmod(0o644)
    assert len(pki.check(d)) == 3
    pki.issue(d)
    assert pki.check(d) == []


def test_issue_after_a_repair_has_nothing_to_do(issued) -> None:  # noqa: ANN001
    d, layout = issued
    layout.key("worker-1", "client").chmod(0o644)
    pki.issue(d)
    before = snapshot(layout.root)
    again = pki.issue(d)
    assert not again.changed
    assert again.summary() == "nothing to do"
    assert snapshot_diff(before, snapshot(layout.root)) == []


def test_a_widened_key_that_is_reissued_anyway_is_replaced_not_repaired(issued) -> None:  # noqa: ANN001
    d, layout = issued
    pki.revoke(d, "worker-1", kinds=("client",))
    layout.key("worker-1", "client").chmod(0o644)
    report = pki.issue(d)
    assert _actions(report, "reissued") == {"worker-1/client"}
    assert _repairs(report) == []
    assert _mode(layout.key("worker-1", "client")) == 0o600


def test_check_reports_a_widened_host_directory_once(issued) -> None:  # noqa: ANN001
    d, layout = issued
    (layout.hosts_dir / "worker-1").chmod(0o755)
    problems = pki.check(d)
    assert problems == [f"{layout.hosts_dir / 'worker-1'}: mode 0755 is wider than 0700"]


def test_judge_calls_a_widened_key_a_repair_and_not_a_reissue(issued) -> None:  # noqa: ANN001
    d, layout = issued
    layout.key("worker-1", "client").chmod(0o644)
    state = pki.state.load_state(layout)
    issuer = pki.ca.Issuer.of(load_cert(layout.root_cert))
    spec = next(s for s in pki.leaf_specs(d) if s.name == "worker-1/client")
    now = dt.datetime.now(dt.timezone.utc)
    for trust_record in (True, False):
        verdict = pki.judge(spec, layout, issuer, state, now=now, trust_record=trust_record)
        assert [p.code for p in verdict.problems] == ["key-mode"]
        assert not verdict.reissue
        assert verdict.repairs == verdict.problems


def test_judge_gives_issue_and_check_the_same_problems_for_an_edited_leaf(issued) -> None:  # noqa: ANN001
    d, layout = issued
    root, root_key = load_cert(layout.root_cert), load_key(layout.root_key)
    write_pair(layout.hosts_dir / "worker-1", "client", *sign_leaf(root, root_key, "someone-else"))
    state = pki.state.load_state(layout)
    issuer = pki.ca.Issuer.of(root)
    spec = next(s for s in pki.leaf_specs(d) if s.name == "worker-1/client")
    now = dt.datetime.now(dt.timezone.utc)
    # The files no longer match state.json: issue's fast path falls back to judging the files.
    as_issue = pki.judge(spec, layout, issuer, state, now=now)
    as_check = pki.judge(spec, layout, issuer, state, now=now, trust_record=False)
    assert as_issue == as_check
    assert [p.code for p in as_issue.problems] == ["inventory-changed"]
    assert as_issue.reissue and as_issue.action == "reissued"


# --------------------------------------------------------------------------- real TLS handshakes


def _server(layout: pki.Layout, host: str = "rabbitmq-1", *, crl: bool = False):  # noqa: ANN202
    return server_context(layout.ca_pem, layout.cert(host, "server"), layout.key(host, "server"),
                          crl=layout.crl_pem if crl else None)


def _client(layout: pki.Layout, host: str = "worker-1"):  # noqa: ANN202
    return client_context(layout.ca_pem, layout.cert(host, "client"), layout.key(host, "client"))


def test_handshake_with_issued_certificates_authenticates_both_sides(issued) -> None:  # noqa: ANN001
    _, layout = issued
    result = handshake(_server(layout, crl=True), _client(layout), "rabbitmq-1")
    assert result.ok, result
    assert result.peer_cn == "worker-1"


def test_handshake_by_ip_address_matches_the_ip_san(issued) -> None:  # noqa: ANN001
    _, layout = issued
    assert handshake(_server(layout), _client(layout), "127.0.0.1").ok


def test_client_rejects_a_server_certificate_for_another_name(issued) -> None:  # noqa: ANN001
    _, layout = issued
    result = handshake(_server(layout, "redis-1"), _client(layout), "rabbitmq-1")
    assert result.client_error and "Hostname mismatch" in result.client_error


def test_server_rejects_a_client_without_a_certificate(issued) -> None:  # noqa: ANN001
    _, layout = issued
    result = handshake(_server(layout), client_context(layout.ca_pem, None, None), "rabbitmq-1")
    assert not result.ok
    assert result.peer_cn is None


def test_server_rejects_a_client_certificate_from_another_ca(issued, tmp_path: Path) -> None:  # noqa: ANN001
    _, layout = issued
    ca, ca_key = foreign_ca()
    cert, key = write_pair(tmp_path, "intruder", *sign_leaf(ca, ca_key, "worker-1"))
    result = handshake(_server(layout), client_context(layout.ca_pem, cert, key), "rabbitmq-1")
    assert result.server_error and "certificate verify failed" in result.server_error
    assert result.peer_cn is None


def test_server_rejects_an_expired_client_certificate(issued, tmp_path: Path) -> None:  # noqa: ANN001
    _, layout = issued
    now = dt.datetime.now(dt.timezone.utc)
    expired = sign_leaf(load_cert(layout.root_cert), load_key(layout.root_key), "worker-1",
                        not_before=now - dt.timedelta(days=10), not_after=now - dt.timedelta(days=1))
    cert, key = write_pair(tmp_path, "expired", *expired)
    result = handshake(_server(layout), client_context(layout.ca_pem, cert, key), "rabbitmq-1")
    assert result.server_error and "certificate has expired" in result.server_error


def test_server_rejects_a_revoked_client_certificate(issued, tmp_path: Path) -> None:  # noqa: ANN001
    d, layout = issued
    # Keep the revoked pair: the next `issue` would replace it.
    cert = tmp_path / "c.pem"
    key = tmp_path / "c.key"
    cert.write_bytes(layout.cert("worker-1", "client").read_bytes())
    key.write_bytes(layout.key("worker-1", "client").read_bytes())
    pki.revoke(d, "worker-1")
    result = handshake(_server(layout, crl=True), client_context(layout.ca_pem, cert, key), "rabbitmq-1")
    assert result.server_error and "certificate revoked" in result.server_error


def test_server_rejects_a_server_certificate_used_as_client_certificate(issued) -> None:  # noqa: ANN001
    _, layout = issued
    client = client_context(layout.ca_pem, layout.cert("redis-1", "server"), layout.key("redis-1", "server"))
    result = handshake(_server(layout), client, "rabbitmq-1")
    assert result.server_error and "unsuitable certificate purpose" in result.server_error


@pytest.mark.parametrize("key_type", ["ed25519", "rsa2048"])
def test_server_rejects_a_signing_certificate_used_as_client_certificate(write_inventory, key_type: str) -> None:  # noqa: ANN001
    _, layout, _ = _issue(write_inventory(all_vars={"celery_provision_signing_key_type": key_type}))
    client = client_context(layout.ca_pem, layout.cert("worker-1", "signing"), layout.key("worker-1", "signing"))
    result = handshake(_server(layout), client, "rabbitmq-1")
    assert result.server_error and "unsuitable certificate purpose" in result.server_error
    assert result.peer_cn is None


def test_handshake_works_through_the_intermediate_chain(write_inventory) -> None:  # noqa: ANN001
    _, layout, _ = _issue(_with_intermediate(write_inventory))
    # Both sides trust only the root: the chain in the leaf files must complete the path.
    result = handshake(_server(layout, crl=True), _client(layout), "rabbitmq-1")
    assert result.ok, result
    assert result.peer_cn == "worker-1"


# --------------------------------------------------------------------------- concurrency


def test_two_concurrent_issue_runs_produce_one_consistent_pki(write_inventory, basic_groups) -> None:  # noqa: ANN001
    groups = basic_groups
    groups["celery_workers"].update({f"w-{i}": {"ansible_host": f"127.0.1.{i}"} for i in range(1, 25)})
    inv = write_inventory(groups)
    command = [sys.executable, "-m", "celery_provision.cli", "certs", "issue", "-i", str(inv)]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    d = model.load(inv)
    assert pki.check(d) == []
    layout = d.layout
    assert len(list(layout.root.glob("ca.retired-*"))) == 0
    # One run issued everything, the other found it done: nothing was issued twice.
    issued_lines = [out.count("  issued  ") for out, _ in results]
    assert sorted(issued_lines) == [0, 1 + 2 + 2 * 26]
