"""The `celery-provision` command: what each certs action prints and returns, and that every
error a user can cause is one readable line, a non-zero exit and no change on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509

from celery_provision import model
from celery_provision.layout import Layout
from pkiutil import assert_one_line_error, load_cert, snapshot, snapshot_diff


def _pki(inv: Path) -> Layout:
    return model.load(inv).layout


@pytest.fixture
def issued(cli, inventory: Path) -> Layout:  # noqa: ANN001
    assert cli("certs", "issue", "-i", inventory).code == 0
    return _pki(inventory)


# --------------------------------------------------------------------------- the happy paths


def test_issue_lists_what_it_issued_and_exits_zero(cli, inventory: Path) -> None:  # noqa: ANN001
    result = cli("certs", "issue", "-i", inventory)
    assert result.code == 0
    assert "issued  ca/root" in result.out
    assert "issued  worker-1/client" in result.out
    assert result.out.rstrip().endswith("certs: 7 issued")


def test_second_issue_says_nothing_to_do(cli, inventory: Path, issued: Layout) -> None:  # noqa: ANN001
    result = cli("certs", "issue", "-i", inventory)
    assert result.code == 0
    assert result.out.strip() == "certs: nothing to do; 6 unchanged"


def test_issue_for_one_host_issues_only_that_host(cli, inventory: Path) -> None:  # noqa: ANN001
    result = cli("certs", "issue", "-i", inventory, "--host", "worker-1")
    assert result.code == 0
    layout = _pki(inventory)
    assert sorted(p.name for p in layout.hosts_dir.iterdir()) == ["worker-1"]


def test_init_creates_only_the_ca(cli, inventory: Path) -> None:  # noqa: ANN001
    assert cli("certs", "init", "-i", inventory).code == 0
    layout = _pki(inventory)
    assert layout.root_cert.exists() and not layout.hosts_dir.exists()


def test_init_without_force_keeps_an_existing_ca(cli, inventory: Path, issued: Layout) -> None:  # noqa: ANN001
    before = issued.root_cert.read_bytes()
    assert cli("certs", "init", "-i", inventory).code == 0
    assert issued.root_cert.read_bytes() == before


def test_init_with_force_retires_the_ca(cli, inventory: Path, issued: Layout) -> None:  # noqa: ANN001
    before = issued.root_cert.read_bytes()
    result = cli("certs", "init", "-i", inventory, "--force")
    assert result.code == 0
    assert "retired" in result.out
    assert issued.root_cert.read_bytes() != before


def test_list_shows_one_row_per_certificate(cli, inventory: Path, issued: Layout) -> None:  # noqa: ANN001
    result = cli("certs", "list", "-i", inventory)
    assert result.code == 0
    lines = result.out.strip().splitlines()
    assert lines[0].split() == ["NAME", "KIND", "KEY", "SANS", "EXPIRES", "DAYS", "STATUS"]
    assert len(lines) == 1 + 7
    assert all(line.endswith("ok") for line in lines[1:])


def test_list_json_gives_machine_readable_rows(cli, inventory: Path, issued: Layout) -> None:  # noqa: ANN001
    rows = json.loads(cli("certs", "list", "-i", inventory, "--json").out)
    server = next(r for r in rows if (r["name"], r["kind"]) == ("rabbitmq-1", "server"))
    assert set(server["sans"]) == {"rabbitmq-1", "localhost", "127.0.0.1"}
    assert server["key_type"] == "ec-p256"
    assert server["status"] == "ok"
    assert {r["kind"] for r in rows} == {"ca", "server", "client", "signing"}


def test_list_marks_a_revoked_certificate(cli, inventory: Path, issued: Layout) -> None:  # noqa: ANN001
    cli("certs", "revoke", "-i", inventory, "worker-1", "--kind", "client")
    rows = json.loads(cli("certs", "list", "-i", inventory, "--json").out)
    status = {(r["name"], r["kind"]): r["status"] for r in rows}
    assert status[("worker-1", "client")] == "revoked"
    assert status[("worker-1", "signing")] == "ok"


def test_check_passes_on_a_fresh_pki(cli, inventory: Path, issued: Layout) -> None:  # noqa: ANN001
    result = cli("certs", "check", "-i", inventory)
    assert (result.code, result.out.strip()) == (0, "certs check: ok")


def test_check_fails_when_a_key_is_missing(cli, inventory: Path, issued: Layout) -> None:  # noqa: ANN001
    issued.key("worker-1", "client").unlink()
    result = cli("certs", "check", "-i", inventory)
    assert result.code != 0
    assert "FAIL" in result.out and "worker-1/client.pem: missing" in result.out


def test_check_fails_after_revoking_a_certificate_until_the_next_issue(cli, inventory: Path, issued: Layout) -> None:  # noqa: ANN001
    cli("certs", "revoke", "-i", inventory, "client-1", "--kind", "client")
    assert cli("certs", "check", "-i", inventory).code != 0
    cli("certs", "issue", "-i", inventory)
    assert cli("certs", "check", "-i", inventory).code == 0


def test_check_without_a_ca_fails(cli, inventory: Path) -> None:  # noqa: ANN001
    result = cli("certs", "check", "-i", inventory)
    assert result.code != 0
    assert "no CA" in result.out


def test_renew_within_days_renews_and_reports(cli, inventory: Path, issued: Layout) -> None:  # noqa: ANN001
    result = cli("certs", "renew", "-i", inventory, "--within", "400")
    assert result.code == 0
    assert "certs: 6 renewed" in result.out


def test_revoke_writes_the_serial_to_the_crl(cli, inventory: Path, issued: Layout) -> None:  # noqa: ANN001
    serial = load_cert(issued.cert("worker-1", "client")).serial_number
    result = cli("certs", "revoke", "-i", inventory, "worker-1", "--kind", "client")
    assert result.code == 0
    assert "revoked  worker-1/client" in result.out
    crl = x509.load_pem_x509_crl(issued.crl_pem.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None


def test_prune_removes_a_host_that_left_the_inventory(cli, write_inventory, basic_groups) -> None:  # noqa: ANN001
    inv = write_inventory(basic_groups)
    cli("certs", "issue", "-i", inv)
    del basic_groups["celery_clients"]
    write_inventory(basic_groups)
    result = cli("certs", "prune", "-i", inv)
    assert result.code == 0
    assert "pruned  client-1" in result.out
    assert not (_pki(inv).hosts_dir / "client-1").exists()


def test_credentials_are_created_once_as_0600_files(cli, inventory: Path) -> None:  # noqa: ANN001
    first = cli("credentials", "-i", inventory)
    assert first.code == 0
    d = model.load(inventory)
    files = [p for p in d.credentials_dir.rglob("*") if p.is_file() and p.name != ".lock"]
    assert files and all(p.stat().st_mode & 0o777 == 0o600 for p in files)
    before = {p: p.read_bytes() for p in files}
    assert "0 created" in cli("credentials", "-i", inventory).out
    assert {p: p.read_bytes() for p in files} == before


def test_prepare_issues_creates_and_prints_the_model_that_export_prints(cli, inventory: Path) -> None:  # noqa: ANN001
    """site.yml's controller play makes this one call instead of issue, credentials and export."""
    result = cli("prepare", "-i", inventory)
    assert result.code == 0, result.err
    assert "issued  worker-1/client" in result.err and "certs: 7 issued" in result.err
    assert "created  rabbitmq/" in result.err
    assert result.out == cli("export", "-i", inventory).out  # stdout is the model alone


def test_a_second_prepare_reports_nothing_to_do_and_nothing_created(cli, inventory: Path) -> None:  # noqa: ANN001
    assert cli("prepare", "-i", inventory).code == 0
    again = cli("prepare", "-i", inventory)
    assert "certs: nothing to do" in again.err and "credentials: 0 created" in again.err  # controller.yml


def test_prepare_with_a_broken_inventory_is_one_line_and_prints_no_model(cli, inventory: Path) -> None:  # noqa: ANN001
    (inventory / "hosts.yml").write_text("all:\n  children: [unclosed\n")
    result = cli("prepare", "-i", inventory)
    assert_one_line_error(result, "hosts.yml:", "not a valid inventory")
    assert result.out == ""


def test_export_prints_every_host_with_its_tls_paths(cli, inventory: Path, issued: Layout) -> None:  # noqa: ANN001
    cli("credentials", "-i", inventory)
    result = cli("export", "-i", inventory)
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert set(data["hosts"]) == {"rabbitmq-1", "redis-1", "worker-1", "client-1"}
    assert data["hosts"]["rabbitmq-1"]["tls"]["server_cert"] == str(issued.cert("rabbitmq-1", "server"))
    assert data["hosts"]["worker-1"]["tls"]["client_key"] == str(issued.key("worker-1", "client"))
    assert data["hosts"]["worker-1"]["tls"]["cert_store"] == str(issued.signers_dir)


def test_export_lists_the_signer_certificates_once_for_the_deployment(cli, inventory: Path, issued: Layout) -> None:  # noqa: ANN001
    cli("credentials", "-i", inventory)
    data = json.loads(cli("export", "-i", inventory).out)
    assert data["signers"] == [str(p) for p in sorted(issued.signers_dir.glob("*.pem"))]
    assert data["signers"]  # every identity's signing certificate
    assert all("signers" not in h.get("celery", {}) for h in data["hosts"].values())  # not N x N


# --------------------------------------------------------------------------- the errors of issue 2
# Each: one readable line naming the problem and the file or host, a non-zero exit, no
# traceback, and the PKI as it was (bytes, mtimes, modes, no new or lost files).


@pytest.fixture
def unchanged(issued: Layout):  # noqa: ANN201
    """Asserts, after the test body ran, that the PKI did not change at all."""
    before = snapshot(issued.root)
    yield issued
    assert snapshot_diff(before, snapshot(issued.root)) == []


def test_missing_inventory_is_named(cli, tmp_path: Path, unchanged) -> None:  # noqa: ANN001
    assert_one_line_error(cli("certs", "issue", "-i", tmp_path / "nope"), "inventory not found", "nope")


def test_malformed_inventory_names_file_and_line(cli, inventory: Path, unchanged) -> None:  # noqa: ANN001
    (inventory / "hosts.yml").write_text("all:\n  children: [unclosed\n")
    assert_one_line_error(cli("certs", "issue", "-i", inventory), "hosts.yml:", "not a valid inventory")


def test_host_name_that_is_not_a_dns_name_is_refused(cli, inventory: Path, unchanged) -> None:  # noqa: ANN001
    (inventory / "hosts.yml").write_text(
        "all:\n  children:\n    rabbitmq:\n      hosts:\n        rabbitmq-1:\n"
        "    celery_workers:\n      hosts:\n        worker_1:\n"
    )
    assert_one_line_error(cli("certs", "issue", "-i", inventory), "'worker_1'", "not a valid DNS name")


def test_duplicate_host_names_are_refused(cli, inventory: Path, unchanged) -> None:  # noqa: ANN001
    text = (inventory / "hosts.yml").read_text()
    (inventory / "hosts.yml").write_text(text.replace("client-1:", "Worker-1:"))
    assert_one_line_error(cli("certs", "issue", "-i", inventory), "duplicate host names", "Worker-1")


def test_unknown_key_type_is_refused(cli, inventory: Path, unchanged) -> None:  # noqa: ANN001
    (inventory / "group_vars" / "all.yml").write_text("celery_provision_key_type: ed25519\n")
    assert_one_line_error(cli("certs", "issue", "-i", inventory), "all.yml", "'ed25519' is not one of")


def test_unwritable_pki_directory_is_named(cli, inventory: Path, tmp_path: Path, unchanged) -> None:  # noqa: ANN001
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = cli("certs", "issue", "-i", inventory, "--pki-dir", blocker / "pki")
    assert_one_line_error(result, "cannot create directory", str(blocker))


def test_wrong_ca_passphrase_is_refused(cli, write_inventory, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("TEST_CA_PASS", "right")
    inv = write_inventory(all_vars={"celery_provision_ca_passphrase_env": "TEST_CA_PASS"})
    cli("certs", "issue", "-i", inv)
    layout = _pki(inv)
    layout.cert("worker-1", "client").unlink()  # so that the run must sign something
    before = snapshot(layout.root)
    monkeypatch.setenv("TEST_CA_PASS", "wrong")
    assert_one_line_error(cli("certs", "issue", "-i", inv), "wrong passphrase", "root.key")
    assert snapshot_diff(before, snapshot(layout.root)) == []


def test_corrupted_ca_key_is_named(cli, inventory: Path, issued: Layout) -> None:  # noqa: ANN001
    issued.root_key.write_bytes(issued.root_key.read_bytes()[:60])
    issued.cert("worker-1", "client").unlink()
    before = snapshot(issued.root)
    assert_one_line_error(cli("certs", "issue", "-i", inventory), "CA private key is corrupted", "root.key")
    assert snapshot_diff(before, snapshot(issued.root)) == []


def test_corrupted_ca_certificate_is_named(cli, inventory: Path, issued: Layout) -> None:  # noqa: ANN001
    issued.root_cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    before = snapshot(issued.root)
    assert_one_line_error(cli("certs", "issue", "-i", inventory), "CA certificate is corrupted", "root.pem")
    assert snapshot_diff(before, snapshot(issued.root)) == []


def test_revoking_an_unknown_host_is_an_error(cli, inventory: Path, unchanged) -> None:  # noqa: ANN001
    assert_one_line_error(cli("certs", "revoke", "-i", inventory, "ghost"), "'ghost'")


def test_negative_renew_window_is_an_error(cli, inventory: Path, unchanged) -> None:  # noqa: ANN001
    assert_one_line_error(cli("certs", "renew", "-i", inventory, "--within", "-1"), "--within")


# --------------------------------------------------------------------------- the real console script


def test_console_script_issues_and_checks(console, inventory: Path) -> None:  # noqa: ANN001
    assert console("certs", "issue", "-i", inventory).code == 0
    result = console("certs", "check", "-i", inventory)
    assert (result.code, result.out.strip()) == (0, "certs check: ok")


def test_console_script_missing_inventory_is_one_line(console, tmp_path: Path) -> None:  # noqa: ANN001
    assert_one_line_error(console("certs", "issue", "-i", tmp_path / "nope"), "inventory not found")


def test_console_script_malformed_inventory_is_one_line(console, inventory: Path) -> None:  # noqa: ANN001
    (inventory / "hosts.yml").write_text("all:\n  children: [unclosed\n")
    assert_one_line_error(console("certs", "issue", "-i", inventory), "not a valid inventory")


def test_console_script_wrong_passphrase_is_one_line(console, write_inventory) -> None:  # noqa: ANN001
    inv = write_inventory(all_vars={"celery_provision_ca_passphrase_env": "TEST_CA_PASS"})
    assert console("certs", "issue", "-i", inv, env={"TEST_CA_PASS": "right"}).code == 0
    layout = _pki(inv)
    layout.cert("worker-1", "client").unlink()
    before = snapshot(layout.root)
    result = console("certs", "issue", "-i", inv, env={"TEST_CA_PASS": "wrong"})
    assert_one_line_error(result, "wrong passphrase")
    assert snapshot_diff(before, snapshot(layout.root)) == []


def test_console_script_usage_error_is_one_line(console) -> None:  # noqa: ANN001
    assert_one_line_error(console("certs", "issue"), "-i/--inventory")


def test_console_script_check_exits_non_zero_on_a_problem(console, inventory: Path) -> None:  # noqa: ANN001
    console("certs", "issue", "-i", inventory)
    _pki(inventory).key("rabbitmq-1", "server").chmod(0o644)
    result = console("certs", "check", "-i", inventory)
    assert result.code == 1
    assert "mode 0644" in result.out


def _cluster_inventory(write_inventory, basic_groups) -> Path:  # noqa: ANN001
    basic_groups["rabbitmq"] = {f"rabbitmq-{i}": {"ansible_host": f"10.0.0.{i}", "rabbitmq_cluster": True}
                                for i in (1, 2, 3)}
    return write_inventory(basic_groups)


def test_credentials_creates_the_clusters_erlang_cookie_once(cli, write_inventory, basic_groups) -> None:  # noqa: ANN001
    inv = _cluster_inventory(write_inventory, basic_groups)
    assert "created  rabbitmq/.erlang.cookie" in cli("credentials", "-i", inv).out
    assert ".erlang.cookie" not in cli("credentials", "-i", inv).out


def test_export_gives_each_cluster_node_its_name_the_members_its_peers_and_the_cookie(
        cli, write_inventory, basic_groups) -> None:  # noqa: ANN001
    inv = _cluster_inventory(write_inventory, basic_groups)
    assert cli("certs", "issue", "-i", inv).code == 0
    cli("credentials", "-i", inv)
    hosts = json.loads(cli("export", "-i", inv).out)["hosts"]
    cluster = hosts["rabbitmq-2"]["rabbitmq"]["cluster"]
    assert cluster["enabled"] and cluster["longnames"]
    assert cluster["nodename"] == "rabbit@10.0.0.2"
    assert cluster["nodes"] == ["rabbit@10.0.0.1", "rabbit@10.0.0.2", "rabbit@10.0.0.3"]
    assert cluster["peer_sources"] == ["10.0.0.1/32", "10.0.0.3/32"]  # not itself, not the workers
    assert len(cluster["cookie"]) == 64
    assert {h["rabbitmq"]["cluster"]["cookie"] for n, h in hosts.items() if n.startswith("rabbitmq-")} == {
        cluster["cookie"]}


def test_export_of_a_single_node_has_no_cluster_and_no_cookie(cli, inventory: Path, issued: Layout) -> None:  # noqa: ANN001
    cli("credentials", "-i", inventory)
    cluster = json.loads(cli("export", "-i", inventory).out)["hosts"]["rabbitmq-1"]["rabbitmq"]["cluster"]
    assert cluster == {"enabled": False, "nodename": "rabbit@localhost", "longnames": False, "nodes": [],
                       "peer_sources": [], "cookie": None}
