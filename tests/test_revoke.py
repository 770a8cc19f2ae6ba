"""Revocation closes every door (issue 11, item 5), on the controller's side: a host revoked as a
whole stays revoked (nothing is issued to it), is exported as gone (broker users absent, out of
the firewall and the x509 map), is skipped by the workers' play, is listed by `verify` with
its old files tried against every broker; `certs readmit` brings it back with new keys and
new passwords. No broker is started: the TLS doors are tried against an in-process server."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pkiutil import (
    assert_one_line_error,
    load_cert,
    load_key,
    server_context,
    sign_leaf,
    snapshot,
    snapshot_diff,
)

from celery_provision import export, model, pki, verify
from celery_provision.layout import Layout
from celery_provision.model import Endpoint

REPO = Path(__file__).resolve().parent.parent
SKIPPED = "  skipped  client-1  (revoked: certs readmit client-1 to re-admit)"
RESULT_BACKEND = {"celery_provision_result_backend": "redis"}


@pytest.fixture
def inv(write_inventory) -> Path:  # noqa: ANN001
    """The basic deployment with Redis as result backend (so client-1 has two passwords)."""
    return write_inventory(all_vars=RESULT_BACKEND)


@pytest.fixture
def issued(cli, inv: Path) -> Layout:  # noqa: ANN001
    """Certificates and passwords issued, as controller.yml does."""
    assert cli("certs", "issue", "-i", inv).code == 0
    assert cli("credentials", "-i", inv).code == 0
    return model.load(inv).layout


@pytest.fixture
def revoked(cli, inv: Path, issued: Layout) -> Layout:  # noqa: ANN001
    """client-1 revoked as a whole."""
    assert cli("certs", "revoke", "-i", inv, "client-1").code == 0
    return issued


def _serials(layout: Layout, host: str) -> dict[str, int]:
    return {k: load_cert(layout.cert(host, k)).serial_number for k in ("client", "signing")}


def _passwords(layout: Layout, host: str) -> dict[str, str]:
    return {p.parent.name: p.read_text() for p in layout.credentials.glob(f"*/{host}")}


def _crl_serials(layout: Layout) -> set[int]:
    from cryptography import x509

    return {r.serial_number for r in x509.load_pem_x509_crl(layout.crl_pem.read_bytes())}


def _export(cli, inv: Path) -> dict[str, Any]:  # noqa: ANN001
    result = cli("export", "-i", inv)
    assert result.code == 0, result.err
    return json.loads(result.out)


def _users(data: dict[str, Any], broker: str, service: str) -> dict[str, dict[str, Any]]:
    return {u["name"]: u for u in data["hosts"][broker][service]["users"]}


# --------------------------------------------------------------------------- a revoked host stays revoked


def test_revoke_then_issue_does_not_reissue_the_revoked_host(cli, inv: Path, issued: Layout) -> None:  # noqa: ANN001
    before = _serials(issued, "client-1")
    cli("certs", "revoke", "-i", inv, "client-1")
    cli("certs", "issue", "-i", inv)
    assert _serials(issued, "client-1") == before
    assert set(before.values()) <= _crl_serials(issued)


def test_issue_reports_the_revoked_host_as_skipped_and_how_to_readmit_it(cli, inv: Path, revoked: Layout) -> None:  # noqa: ANN001
    result = cli("certs", "issue", "-i", inv)
    assert result.code == 0
    assert SKIPPED in result.out.splitlines()
    assert result.out.splitlines()[-1] == "certs: nothing to do; 4 unchanged; 1 revoked host(s) skipped"


def test_issue_after_a_revocation_changes_nothing_on_disk(cli, inv: Path, revoked: Layout) -> None:  # noqa: ANN001
    before = snapshot(revoked.root)
    assert "nothing to do" in cli("certs", "issue", "-i", inv).out  # controller.yml: changed_when
    assert snapshot_diff(before, snapshot(revoked.root)) == []


def test_issue_for_the_revoked_host_alone_skips_it(cli, inv: Path, revoked: Layout) -> None:  # noqa: ANN001
    before = snapshot(revoked.root)
    result = cli("certs", "issue", "-i", inv, "--host", "client-1")
    assert SKIPPED in result.out.splitlines()
    assert snapshot_diff(before, snapshot(revoked.root)) == []


def test_issue_does_not_recreate_a_revoked_hosts_deleted_files(cli, inv: Path, revoked: Layout) -> None:  # noqa: ANN001
    revoked.cert("client-1", "client").unlink()
    cli("certs", "issue", "-i", inv)
    assert not revoked.cert("client-1", "client").exists()


def test_renew_skips_the_revoked_host(cli, inv: Path, revoked: Layout) -> None:  # noqa: ANN001
    before = _serials(revoked, "client-1")
    result = cli("certs", "renew", "-i", inv, "--within", "400")
    assert SKIPPED in result.out.splitlines()
    assert "client-1/" not in result.out.replace(SKIPPED, "")
    assert _serials(revoked, "client-1") == before


def test_revoking_one_kind_revokes_only_that_certificate(cli, inv: Path, issued: Layout) -> None:  # noqa: ANN001
    old = load_cert(issued.cert("client-1", "client")).serial_number
    cli("certs", "revoke", "-i", inv, "client-1", "--kind", "client")
    result = cli("certs", "issue", "-i", inv)
    assert "reissued  client-1/client  (revoked)" in result.out
    assert load_cert(issued.cert("client-1", "client")).serial_number != old
    assert pki.revoked_hosts(model.load(inv)) == {}


def test_revoke_reports_the_host_itself_as_revoked(cli, inv: Path, issued: Layout) -> None:  # noqa: ANN001
    out = cli("certs", "revoke", "-i", inv, "client-1").out.splitlines()
    assert "  revoked  client-1  (host: nothing is issued to it until `certs readmit`)" in out
    assert out[-1] == "certs: 3 revoked"


def test_revoking_a_revoked_host_again_changes_nothing(cli, inv: Path, revoked: Layout) -> None:  # noqa: ANN001
    before = snapshot(revoked.root)
    result = cli("certs", "revoke", "-i", inv, "client-1")
    assert (result.code, result.out.strip()) == (0, "certs: nothing to do")
    assert snapshot_diff(before, snapshot(revoked.root)) == []


def test_check_names_the_revoked_host_and_does_not_fail_for_it(cli, inv: Path, revoked: Layout) -> None:  # noqa: ANN001
    result = cli("certs", "check", "-i", inv)
    assert result.code == 0
    first, last = result.out.splitlines()[0], result.out.splitlines()[-1]
    assert first.startswith("REVOKED  client-1  (since ")
    assert first.endswith(": revoked by operator; certs readmit client-1 to re-admit)")
    assert last == "certs check: ok"


def test_check_fails_when_a_revoked_host_holds_a_certificate_that_is_not_revoked(
    cli, inv: Path, revoked: Layout  # noqa: ANN001
) -> None:
    cert, _ = sign_leaf(load_cert(revoked.root_cert), load_key(revoked.root_key), "client-1")
    from cryptography.hazmat.primitives import serialization

    revoked.cert("client-1", "client").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    result = cli("certs", "check", "-i", inv)
    assert result.code != 0
    assert "client-1/client.pem: the host is revoked but this certificate is not on the CRL" in result.out


def test_list_shows_the_revoked_hosts_certificates_as_revoked_even_when_deleted(
    cli, inv: Path, revoked: Layout  # noqa: ANN001
) -> None:
    revoked.cert("client-1", "signing").unlink()
    rows = json.loads(cli("certs", "list", "-i", inv, "--json").out)
    status = {(r["name"], r["kind"]): r["status"] for r in rows}
    assert status[("client-1", "client")] == "revoked"
    assert status[("client-1", "signing")] == "revoked"
    assert status[("worker-1", "client")] == "ok"


def test_the_revoked_hosts_signing_certificate_stays_out_of_the_signer_store(cli, inv: Path, revoked: Layout) -> None:  # noqa: ANN001
    cli("certs", "issue", "-i", inv)
    assert not revoked.signer("client-1").exists()
    assert revoked.signer("worker-1").exists()


# --------------------------------------------------------------------------- readmit


def test_readmit_issues_new_keys_and_certificates_with_new_serials(cli, inv: Path, revoked: Layout) -> None:  # noqa: ANN001
    serials = _serials(revoked, "client-1")
    keys = {k: revoked.key("client-1", k).read_bytes() for k in ("client", "signing")}
    result = cli("certs", "readmit", "-i", inv, "client-1")
    assert result.code == 0, result.err
    new = _serials(revoked, "client-1")
    assert all(new[k] != serials[k] for k in serials)
    assert all(revoked.key("client-1", k).read_bytes() != keys[k] for k in keys)
    assert set(serials.values()) <= _crl_serials(revoked)  # the old ones stay revoked
    assert not set(new.values()) & _crl_serials(revoked)


def test_readmit_rotates_the_hosts_passwords_and_no_one_elses(cli, inv: Path, revoked: Layout) -> None:  # noqa: ANN001
    old, others = _passwords(revoked, "client-1"), _passwords(revoked, "worker-1")
    assert set(old) == {"rabbitmq", "redis"}
    cli("certs", "readmit", "-i", inv, "client-1")
    new = _passwords(revoked, "client-1")
    assert set(new) == set(old) and all(new[s] != old[s] for s in old)
    assert _passwords(revoked, "worker-1") == others
    files = [p for p in revoked.credentials.glob("*/client-1")]
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in files)


def test_a_rotated_password_follows_the_password_rules(cli, inv: Path, revoked: Layout) -> None:  # noqa: ANN001
    cli("certs", "readmit", "-i", inv, "client-1")
    for value in _passwords(revoked, "client-1").values():
        assert value.endswith("\n") and len(value.strip()) == 43 and value.strip().isalnum()


def test_readmit_prints_what_it_rotated_and_reissued(cli, inv: Path, revoked: Layout) -> None:  # noqa: ANN001
    out = cli("certs", "readmit", "-i", inv, "client-1").out.splitlines()
    assert out == [
        "  rotated  rabbitmq/client-1  (new password)",
        "  rotated  redis/client-1  (new password)",
        " reissued  client-1/client  (re-admitted)",
        " reissued  client-1/signing  (re-admitted)",
        " admitted  client-1  (re-admitted: new keys, certificates and passwords)",
        "certs: 2 reissued, 1 admitted, 2 rotated",
    ]


def test_a_readmitted_host_is_issued_to_again_and_its_signer_trusted(cli, inv: Path, revoked: Layout) -> None:  # noqa: ANN001
    cli("certs", "readmit", "-i", inv, "client-1")
    again = cli("certs", "issue", "-i", inv)
    assert again.out.splitlines()[-1] == "certs: nothing to do; 6 unchanged"
    assert revoked.signer("client-1").read_bytes() == revoked.cert("client-1", "signing").read_bytes()
    assert cli("certs", "check", "-i", inv).out.strip() == "certs check: ok"


def test_a_readmitted_host_is_exported_present_with_its_new_passwords(cli, inv: Path, revoked: Layout) -> None:  # noqa: ANN001
    cli("certs", "readmit", "-i", inv, "client-1")
    data = _export(cli, inv)
    user = _users(data, "redis-1", "redis")["client-1"]
    assert (user["state"], user["password"]) == ("present", _passwords(revoked, "client-1")["redis"].strip())
    assert data["hosts"]["client-1"]["celery"]["revoked"] is False


# --------------------------------------------------------------------------- bad input


@pytest.fixture
def untouched(revoked: Layout) -> Iterator[Layout]:
    """Asserts, after the test, that neither the PKI nor the passwords changed at all."""
    before = snapshot(revoked.root), snapshot(revoked.credentials)
    yield revoked
    assert snapshot_diff(before[0], snapshot(revoked.root)) == []
    assert snapshot_diff(before[1], snapshot(revoked.credentials)) == []


def test_readmitting_a_host_that_is_not_revoked_is_one_line_and_writes_nothing(cli, inv: Path, untouched) -> None:  # noqa: ANN001
    assert_one_line_error(cli("certs", "readmit", "-i", inv, "worker-1"), "'worker-1' is not revoked", "state.json")


def test_readmitting_a_name_not_in_the_inventory_is_one_line_and_writes_nothing(cli, inv: Path, untouched) -> None:  # noqa: ANN001
    assert_one_line_error(cli("certs", "readmit", "-i", inv, "ghost"), "no host 'ghost' in the inventory")


def test_revoking_a_name_not_in_the_inventory_is_one_line_and_writes_nothing(cli, inv: Path, untouched) -> None:  # noqa: ANN001
    assert_one_line_error(cli("certs", "revoke", "-i", inv, "ghost"), "no host 'ghost' in the inventory")


def test_revoking_a_broker_as_a_whole_is_one_line_and_writes_nothing(cli, inv: Path, untouched) -> None:  # noqa: ANN001
    assert_one_line_error(cli("certs", "revoke", "-i", inv, "redis-1"), "'redis-1' is a broker", "--kind server")


def test_revoking_a_host_never_issued_is_one_line_and_writes_nothing(cli, write_inventory, basic_groups) -> None:  # noqa: ANN001
    inv = write_inventory(basic_groups)
    assert cli("certs", "issue", "-i", inv).code == 0
    basic_groups["celery_clients"]["client-2"] = {"ansible_host": "127.0.0.5"}
    write_inventory(basic_groups)
    layout = model.load(inv).layout
    before = snapshot(layout.root)
    assert_one_line_error(cli("certs", "revoke", "-i", inv, "client-2"), "no certificates issued for 'client-2'")
    assert snapshot_diff(before, snapshot(layout.root)) == []


def test_readmit_with_a_wrong_ca_passphrase_rotates_no_password(
    cli, write_inventory, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    inv = write_inventory(all_vars={**RESULT_BACKEND, "celery_provision_ca_passphrase_env": "REVOKE_TEST_PASS"})
    monkeypatch.setenv("REVOKE_TEST_PASS", "right")
    for argv in (("certs", "issue"), ("credentials",), ("certs", "revoke")):
        assert cli(*argv, "-i", inv, *(["client-1"] if argv[-1] == "revoke" else [])).code == 0
    layout = model.load(inv).layout
    before = snapshot(layout.root), snapshot(layout.credentials)
    monkeypatch.setenv("REVOKE_TEST_PASS", "wrong")
    assert_one_line_error(cli("certs", "readmit", "-i", inv, "client-1"), "wrong passphrase")
    assert snapshot_diff(before[0], snapshot(layout.root)) == []
    assert snapshot_diff(before[1], snapshot(layout.credentials)) == []


# --------------------------------------------------------------------------- export


def test_site_sequence_exports_the_revoked_hosts_users_absent_without_passwords(cli, inv: Path, issued: Layout) -> None:  # noqa: ANN001
    # controller.yml's order: certs issue, credentials, export; then revoke, and site.yml again.
    cli("certs", "revoke", "-i", inv, "client-1")
    cli("certs", "issue", "-i", inv)
    cli("credentials", "-i", inv)
    data = _export(cli, inv)
    assert _users(data, "rabbitmq-1", "rabbitmq")["client-1"] == {
        "name": "client-1", "password": None, "tags": [], "permissions": [], "topic_permissions": [],
        "state": "absent"}
    assert _users(data, "redis-1", "redis")["client-1"] == {
        "name": "client-1", "password": None, "rules": "", "state": "absent"}


def test_export_marks_every_admitted_user_present(cli, inv: Path, revoked: Layout) -> None:  # noqa: ANN001
    data = _export(cli, inv)
    for broker, service in (("rabbitmq-1", "rabbitmq"), ("redis-1", "redis")):
        worker = _users(data, broker, service)["worker-1"]
        assert worker["state"] == "present" and worker["password"]


def test_export_before_any_revocation_has_every_user_present(cli, inv: Path, issued: Layout) -> None:  # noqa: ANN001
    data = _export(cli, inv)
    states = {u["state"] for b, s in (("rabbitmq-1", "rabbitmq"), ("redis-1", "redis"))
              for u in data["hosts"][b][s]["users"]}
    assert states == {"present"}
    assert data["revoked_hosts"] == []


def test_export_keeps_the_revoked_host_out_of_the_firewall_and_the_x509_map(cli, inv: Path, revoked: Layout) -> None:  # noqa: ANN001
    data = _export(cli, inv)
    rabbitmq, redis = data["hosts"]["rabbitmq-1"]["rabbitmq"], data["hosts"]["redis-1"]["redis"]
    assert "127.0.0.4/32" not in rabbitmq["allowed_sources"] + redis["allowed_sources"]
    assert "127.0.0.3/32" in rabbitmq["allowed_sources"] and "127.0.0.3/32" in redis["allowed_sources"]
    assert set(rabbitmq["x509_client_certs"]) == {"worker-1"}


def test_export_gives_the_revoked_host_no_config_files_signers_or_keys(cli, inv: Path, revoked: Layout) -> None:  # noqa: ANN001
    data = _export(cli, inv)
    host = data["hosts"]["client-1"]
    assert host["celery"] == {"revoked": True, "worker": False, "role": "client"}
    assert set(host["tls"]) == {"ca", "crl"}
    assert data["revoked_hosts"] == ["client-1"]
    assert str(revoked.signer("client-1")) not in data["signers"]


def test_export_needs_no_password_file_of_a_revoked_host(cli, inv: Path, revoked: Layout) -> None:  # noqa: ANN001
    for path in revoked.credentials.glob("*/client-1"):
        path.unlink()
    assert _export(cli, inv)["hosts"]["client-1"]["celery"]["revoked"] is True


def test_the_workers_play_ends_a_revoked_host_before_asking_it_anything() -> None:
    play = yaml.safe_load((REPO / "playbooks" / "celery_workers.yml").read_text())[0]
    assert play["gather_facts"] is False
    first, second = play["pre_tasks"][0], play["pre_tasks"][1]
    assert "revoked" in first["when"]
    assert [t.get("ansible.builtin.meta") for t in first["block"]][-1] == "end_host"
    assert "ansible.builtin.setup" in second


# --------------------------------------------------------------------------- verify (the pure parts)


def test_verify_tries_every_broker_for_every_revoked_host(inv: Path, revoked: Layout) -> None:
    d = model.load(inv)
    doors = verify.doors(d, pki.revoked_hosts(d), d.hosts["worker-1"])
    own = {(door.endpoint.service, door.endpoint.host.name) for door in doors if door.own_cert}
    assert own == {("rabbitmq", "rabbitmq-1"), ("redis", "redis-1")}
    assert {door.host for door in doors} == {"client-1"}
    assert all(door.cert == revoked.cert("client-1", "client") for door in doors if door.own_cert)


def test_verify_tries_the_old_passwords_with_the_old_and_with_a_valid_certificate(inv: Path, revoked: Layout) -> None:
    d = model.load(inv)
    doors = verify.doors(d, pki.revoked_hosts(d), d.hosts["worker-1"])
    old = {s: p.strip() for s, p in _passwords(revoked, "client-1").items()}
    for door in doors:
        assert (door.user, door.password) == ("client-1", old[door.endpoint.service])
    assert {door.cert for door in doors if not door.own_cert} == {revoked.cert("worker-1", "client")}
    assert len(doors) == 4


def test_verify_tries_a_certificate_login_where_no_password_exists(write_inventory, cli) -> None:  # noqa: ANN001
    inv = write_inventory(all_vars={**RESULT_BACKEND, "celery_provision_auth": "x509"})
    for argv in (("certs", "issue"), ("credentials",)):
        cli(*argv, "-i", inv)
    cli("certs", "revoke", "-i", inv, "client-1")
    d = model.load(inv)
    doors = verify.doors(d, pki.revoked_hosts(d), d.hosts["worker-1"])
    rabbitmq = [door for door in doors if door.endpoint.service == "rabbitmq"]
    assert [(door.own_cert, door.password) for door in rabbitmq] == [(True, None)]


def test_verify_lists_the_revoked_hosts(inv: Path, revoked: Layout) -> None:
    d = model.load(inv)
    row = verify.revoked_listing(d, pki.revoked_hosts(d))
    assert (row.check, row.ok) == ("revoked hosts", True)
    assert row.detail.startswith("client-1 (since 20")


def test_verify_lists_none_when_no_host_is_revoked(inv: Path, issued: Layout) -> None:
    d = model.load(inv)
    assert verify.revoked_listing(d, pki.revoked_hosts(d)).detail == "none"


def test_verify_connects_with_an_admitted_client(inv: Path, revoked: Layout) -> None:
    d = model.load(inv)
    assert verify._admitted_client(d, pki.revoked_hosts(d)).name == "worker-1"


@pytest.mark.parametrize(("exc", "verdict"), [
    (ssl.SSLError(1, "[SSL: SSLV3_ALERT_CERTIFICATE_REVOKED] sslv3 alert certificate revoked"), True),
    (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), True),
    (ConnectionResetError(104, "Connection reset by peer"), True),
    (ssl.SSLCertVerificationError(1, "certificate verify failed"), None),
    (ConnectionRefusedError(111, "Connection refused"), None),
    (TimeoutError("timed out"), None),
    (socket.gaierror(-2, "Name or service not known"), None),
], ids=["tls-alert", "tls-eof", "reset", "broker-cert-not-verified", "nothing-listening", "timeout", "no-such-name"])
def test_only_the_brokers_own_refusal_counts_as_refused(exc: BaseException, verdict: bool | None) -> None:
    assert verify.refusal(exc) is verdict


# --------------------------------------------------------------------------- verify against an in-process TLS server


def _tls_server(layout: Layout, *, crl: bool, answer: bytes) -> tuple[int, Callable[[], None]]:
    """One-connection TLS server on 127.0.0.1 as rabbitmq-1, requiring a client certificate
    (checked against the CRL if *crl*), answering *answer* to the first message."""
    ctx = server_context(layout.ca_pem, layout.cert("rabbitmq-1", "server"), layout.key("rabbitmq-1", "server"),
                         crl=layout.crl_pem if crl else None)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(64)
                tls.sendall(answer)
        except OSError:
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def stop() -> None:
        thread.join(10)
        listener.close()

    return listener.getsockname()[1], stop


def _door(d: model.Deployment, port: int) -> verify.Door:
    door = next(x for x in verify.doors(d, pki.revoked_hosts(d), d.hosts["worker-1"])
                if x.own_cert and x.endpoint.service == "rabbitmq")
    return verify.Door(door.host, Endpoint(door.endpoint.host, "rabbitmq", port), door.cert, door.key,
                       door.user, door.password, True)


def test_a_revoked_certificate_refused_at_the_tls_layer_passes(inv: Path, revoked: Layout) -> None:
    d = model.load(inv)
    port, stop = _tls_server(revoked, crl=True, answer=b"AMQP")
    try:
        check = verify._door_check(d, _door(d, port))
    finally:
        stop()
    assert check.ok, check
    assert check.detail.startswith("refused")  # the alert itself, or the EOF that follows it


def test_a_door_nobody_answers_fails_as_untested(inv: Path, revoked: Layout) -> None:
    d = model.load(inv)
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # closed again: nothing listens there
    check = verify._door_check(d, _door(d, port))
    assert not check.ok
    assert check.detail.startswith("could not test")


def test_a_broker_that_accepts_the_revoked_certificate_must_refuse_the_login(inv: Path, revoked: Layout) -> None:
    d = model.load(inv)
    port, stop = _tls_server(revoked, crl=False, answer=b"\x01 not really AMQP")
    try:
        check = verify._door_check(d, _door(d, port))
    finally:
        stop()
    assert not check.ok, check  # the certificate got through and no login refusal was seen


def test_export_reads_the_same_revoked_hosts_as_verify(inv: Path, revoked: Layout) -> None:
    d = model.load(inv)
    assert export.export(d)["revoked_hosts"] == list(pki.revoked_hosts(d)) == ["client-1"]
