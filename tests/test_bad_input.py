"""Bad-input corpus: malformed inventories, settings, PKI files and command lines.

Every case starts from a valid inventory with an issued PKI (CA key encrypted with a
passphrase from the environment), breaks one thing, runs the command in-process and expects
one readable line naming the problem, a non-zero exit, no traceback, and every file of the
PKI byte-for-byte (and mtime) as it was.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from celery_provision import model, pki
from celery_provision.layout import Layout
from pkiutil import assert_one_line_error, foreign_ca, snapshot, snapshot_diff

PASS_ENV = "BAD_INPUT_CA_PASS"
PASSPHRASE = "right passphrase"
GROUPS: dict[str, Any] = {
    "rabbitmq": {"rabbitmq-1": {"ansible_host": "127.0.0.1"}},
    "redis": {"redis-1": {"ansible_host": "127.0.0.2"}},
    "celery_workers": {"worker-1": {"ansible_host": "127.0.0.3"}},
    "celery_clients": {"client-1": {"ansible_host": "127.0.0.4"}},
}
ALL_VARS: dict[str, Any] = {
    "celery_provision_key_type": "ec-p256",
    "celery_provision_signing_key_type": "rsa2048",
    "celery_provision_ca_passphrase_env": PASS_ENV,
}


def _write(inv: Path, groups: dict[str, Any], all_vars: dict[str, Any]) -> None:
    (inv / "group_vars").mkdir(parents=True, exist_ok=True)
    doc = {"all": {"children": {g: {"hosts": h} for g, h in groups.items()}}}
    (inv / "hosts.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    (inv / "group_vars" / "all.yml").write_text(yaml.safe_dump(all_vars, sort_keys=False))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One valid inventory with its PKI, issued once per module and copied by every case."""
    base = tmp_path_factory.mktemp("bad-input")
    _write(base / "inv", GROUPS, ALL_VARS)
    saved = os.environ.get(PASS_ENV)
    os.environ[PASS_ENV] = PASSPHRASE
    try:
        pki.issue(model.load(base / "inv"))
    finally:
        if saved is None:
            os.environ.pop(PASS_ENV)
        else:
            os.environ[PASS_ENV] = saved
    return base


@dataclass
class Env:
    """One case's copy of the template: the inventory, its PKI and helpers to break them."""

    base: Path
    monkeypatch: pytest.MonkeyPatch

    @property
    def inv(self) -> Path:
        return self.base / "inv"

    @property
    def pki(self) -> Layout:
        return Layout.beside(self.inv)

    def set_vars(self, **values: Any) -> None:
        _write(self.inv, GROUPS, {**ALL_VARS, **values})

    def set_groups(self, groups: dict[str, Any], **values: Any) -> None:
        _write(self.inv, groups, {**ALL_VARS, **values})

    def edit_host(self, group: str, host: str, **values: Any) -> None:
        groups = yaml.safe_load(yaml.safe_dump(GROUPS))
        groups[group][host].update(values)
        self.set_groups(groups)

    def hosts_text(self, text: str) -> None:
        (self.inv / "hosts.yml").write_text(text)

    def needs_signing(self) -> None:
        """Remove one leaf so that `certs issue` must load the CA key."""
        self.pki.cert("worker-1", "client").unlink()


def _groups(**changes: Any) -> dict[str, Any]:
    groups = yaml.safe_load(yaml.safe_dump(GROUPS))
    for name, value in changes.items():
        if value is None:
            groups.pop(name)
        else:
            groups[name] = value
    return groups


ISSUE = ("certs", "issue")


@dataclass(frozen=True)
class Case:
    id: str
    breaks: Callable[[Env], Any]
    needles: tuple[str, ...]
    argv: tuple[str, ...] = ISSUE


def _case(id: str, breaks: Callable[[Env], Any], *needles: str, argv: tuple[str, ...] = ISSUE) -> Any:
    return pytest.param(Case(id, breaks, needles, argv), id=id)


def _passphrase_dir(e: Env) -> None:
    (e.base / "pass-dir").mkdir()
    e.set_vars(celery_provision_ca_passphrase_env=None, celery_provision_ca_passphrase_file=str(e.base / "pass-dir"))
    e.needs_signing()


def _passphrase_file(content: str | None) -> Callable[[Env], None]:
    def breaks(e: Env) -> None:
        path = e.base / "pass-file"
        if content is not None:
            path.write_text(content)
        e.set_vars(celery_provision_ca_passphrase_env=None, celery_provision_ca_passphrase_file=str(path))
        e.needs_signing()
    return breaks


def _env(value: str | None) -> Callable[[Env], None]:
    def breaks(e: Env) -> None:
        if value is None:
            e.monkeypatch.delenv(PASS_ENV)
        else:
            e.monkeypatch.setenv(PASS_ENV, value)
        e.needs_signing()
    return breaks


def _foreign_ca_cert(e: Env) -> None:
    cert, _ = foreign_ca()
    e.pki.root_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    e.needs_signing()


def _truncate(which: str, keep: float) -> Callable[[Env], None]:
    def breaks(e: Env) -> None:
        path = getattr(e.pki, which)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])
        e.needs_signing()
    return breaks


def _missing_ca_key(e: Env) -> None:
    e.pki.root_key.unlink()
    e.needs_signing()


def _pki_dir_under_a_file(e: Env) -> None:
    (e.base / "a-file").write_text("")
    e.set_vars(celery_provision_pki_dir=str(e.base / "a-file" / "pki"))


def _missing_inventory(e: Env) -> None:
    shutil.rmtree(e.inv)


CASES = [
    # ---- settings of the wrong type or value
    _case("key-type-unknown", lambda e: e.set_vars(celery_provision_key_type="ec-p521"), "celery_provision_key_type", "'ec-p521'"),
    _case("signing-key-unknown", lambda e: e.set_vars(celery_provision_signing_key_type="ec-p384"), "celery_provision_signing_key_type", "'ec-p384'"),
    _case("signing-overlap-negative", lambda e: e.set_vars(celery_provision_signing_overlap_hours=-1), "celery_provision_signing_overlap_hours", "zero or more"),
    _case("signing-overlap-string", lambda e: e.set_vars(celery_provision_signing_overlap_hours="1d"), "celery_provision_signing_overlap_hours", "expected an integer"),
    _case("signing-overlap-bool", lambda e: e.set_vars(celery_provision_signing_overlap_hours=True), "celery_provision_signing_overlap_hours"),
    _case("ca-days-string", lambda e: e.set_vars(celery_provision_ca_days="ten"), "celery_provision_ca_days", "expected an integer"),
    _case("leaf-days-zero", lambda e: e.set_vars(celery_provision_leaf_days=0), "celery_provision_leaf_days", "must be positive"),
    _case("leaf-days-negative", lambda e: e.set_vars(celery_provision_leaf_days=-5), "celery_provision_leaf_days"),
    _case("leaf-days-bool", lambda e: e.set_vars(celery_provision_leaf_days=True), "celery_provision_leaf_days"),
    _case("intermediate-string", lambda e: e.set_vars(celery_provision_intermediate_ca="yes"), "celery_provision_intermediate_ca", "true or false"),
    _case("signed-results-string", lambda e: e.set_vars(celery_provision_signed_results="true"), "celery_provision_signed_results"),
    _case("queues-string", lambda e: e.set_vars(celery_provision_queues="celery"), "celery_provision_queues", "expected a list"),
    _case("queues-numbers", lambda e: e.set_vars(celery_provision_queues=[1, 2]), "celery_provision_queues", "list of strings"),
    _case("queue-name-space", lambda e: e.set_vars(celery_provision_queues=["bad queue"]), "celery_provision_queues", "'bad queue'"),
    _case("allowed-tasks-string", lambda e: e.edit_host("celery_clients", "client-1", celery_provision_allowed_tasks="app.*"), "celery_provision_allowed_tasks", "expected a list"),
    _case("allowed-tasks-space", lambda e: e.edit_host("celery_clients", "client-1", celery_provision_allowed_tasks=["app ping"]), "celery_provision_allowed_tasks", "'app ping' is not a task name pattern"),
    _case("message-max-age-zero", lambda e: e.set_vars(celery_provision_message_max_age=0), "celery_provision_message_max_age", "must be positive"),
    _case("broker-unknown", lambda e: e.set_vars(celery_provision_broker="kafka"), "celery_provision_broker", "'kafka'"),
    _case("backend-unknown", lambda e: e.set_vars(celery_provision_result_backend="mongodb"), "celery_provision_result_backend"),
    _case("auth-unknown", lambda e: e.set_vars(celery_provision_auth="ldap"), "celery_provision_auth", "'ldap'"),
    # ---- a replicated Redis under Sentinel
    _case("sentinel-two-hosts", lambda e: e.set_groups(_groups(redis={
        f"redis-{i}": {"ansible_host": f"127.0.0.{i + 1}", "redis_sentinel": True} for i in (1, 2)})),
        "redis_sentinel", "at least 3 hosts"),
    _case("sentinel-string", lambda e: e.set_vars(redis_sentinel="yes"), "redis_sentinel", "true or false"),
    _case("sentinel-port-string", lambda e: e.set_vars(redis_sentinel_port="sentinel"), "redis_sentinel_port",
          "port number"),
    _case("x509-with-redis-broker", lambda e: e.set_vars(celery_provision_auth="x509", celery_provision_broker="redis"), "x509"),
    _case("delivery-unknown", lambda e: e.set_vars(celery_provision_delivery="exactly_once"), "celery_provision_delivery"),
    _case("vhost-empty", lambda e: e.set_vars(celery_provision_vhost=""), "celery_provision_vhost"),
    _case("pki-dir-not-a-path", lambda e: e.set_vars(celery_provision_pki_dir=42), "celery_provision_pki_dir"),
    # ---- admin networks
    _case("admin-networks-string", lambda e: e.set_vars(celery_provision_admin_networks="10.0.0.0/8"), "celery_provision_admin_networks", "expected a list"),
    _case("admin-network-host-bits", lambda e: e.set_vars(celery_provision_admin_networks=["10.0.0.1/8"]), "invalid CIDR '10.0.0.1/8'"),
    _case("admin-network-prefix-33", lambda e: e.set_vars(celery_provision_admin_networks=["10.0.0.0/33"]), "invalid CIDR '10.0.0.0/33'"),
    _case("admin-network-garbage", lambda e: e.set_vars(celery_provision_admin_networks=["intranet"]), "invalid CIDR 'intranet'"),
    _case("admin-network-ipv6-host-bits", lambda e: e.set_vars(celery_provision_admin_networks=["fd00::1/64"]), "invalid CIDR 'fd00::1/64'"),
    # ---- per-host values
    _case("extra-san-not-dns", lambda e: e.edit_host("rabbitmq", "rabbitmq-1", celery_provision_extra_sans=["mq_1"]), "celery_provision_extra_sans", "'mq_1'"),
    _case("extra-san-wildcard", lambda e: e.edit_host("rabbitmq", "rabbitmq-1", celery_provision_extra_sans=["*.example.org"]), "'*.example.org'"),
    _case("extra-sans-string", lambda e: e.edit_host("rabbitmq", "rabbitmq-1", celery_provision_extra_sans="localhost"), "celery_provision_extra_sans", "expected a list"),
    _case("address-bad-ip", lambda e: e.edit_host("redis", "redis-1", ansible_host="999.1.1.1"), "ansible_host", "'999.1.1.1'"),
    _case("address-with-space", lambda e: e.edit_host("redis", "redis-1", ansible_host="redis 1"), "ansible_host"),
    _case("port-out-of-range", lambda e: e.edit_host("rabbitmq", "rabbitmq-1", rabbitmq_tls_port=70000), "rabbitmq_tls_port", "70000"),
    _case("port-not-a-number", lambda e: e.edit_host("rabbitmq", "rabbitmq-1", rabbitmq_tls_port="https"), "rabbitmq_tls_port"),
    _case("rabbitmq-ports-disagree", lambda e: e.set_groups(_groups(rabbitmq={
        "rabbitmq-1": {"ansible_host": "127.0.0.1"}, "rabbitmq-2": {"rabbitmq_tls_port": 5000}})), "disagree on rabbitmq_tls_port"),
    _case("rabbitmq-cluster-mixed", lambda e: e.set_groups(_groups(rabbitmq={
        "rabbitmq-1": {"ansible_host": "127.0.0.1", "rabbitmq_cluster": True},
        "rabbitmq-2": {"ansible_host": "127.0.0.5"}})), "disagree on rabbitmq_cluster", "rabbitmq-2 false"),
    _case("rabbitmq-cluster-not-bool", lambda e: e.edit_host("rabbitmq", "rabbitmq-1", rabbitmq_cluster="yes"),
          "rabbitmq_cluster", "expected true or false"),
    # ---- groups and host names
    _case("group-typo", lambda e: e.set_groups(_groups(celery_workers=None, celery_worker={"worker-1": {}})), "unknown group 'celery_worker'", "celery_workers"),
    _case("group-typo-rabbitmq", lambda e: e.set_groups(_groups(rabbitmq=None, rabbitmqq={"rabbitmq-1": {}})), "unknown group 'rabbitmqq'"),
    _case("host-name-underscore", lambda e: e.set_groups(_groups(celery_workers={"worker_1": {}})), "'worker_1'", "not a valid DNS name"),
    _case("host-name-label-too-long", lambda e: e.set_groups(_groups(celery_workers={"w" * 64: {}})), "not a valid DNS name"),
    _case("host-name-trailing-hyphen", lambda e: e.set_groups(_groups(celery_workers={"worker-": {}})), "'worker-'"),
    _case("host-named-like-admin", lambda e: e.set_groups(_groups(celery_clients={"admin": {}})), "'admin'", "admin user"),
    _case("duplicate-names-case", lambda e: e.set_groups(_groups(celery_clients={"WORKER-1": {}})), "duplicate host names"),
    _case("duplicate-yaml-key", lambda e: e.hosts_text(
        "all:\n  children:\n    rabbitmq:\n      hosts:\n        rabbitmq-1: {}\n"
        "    celery_workers:\n      hosts:\n        worker-1: {}\n        worker-1: {}\n"), "duplicate mapping key 'worker-1'", "hosts.yml:9"),
    _case("no-workers", lambda e: e.set_groups(_groups(celery_workers=None)), "'celery_workers' has no hosts"),
    _case("host-in-two-celery-roles", lambda e: e.set_groups(_groups(celery_operators={"client-1": {}})), "'client-1'", "exactly one Celery role"),
    _case("client-queue-nobody-consumes", lambda e: e.edit_host("celery_clients", "client-1", celery_provision_queues=["celery", "lost"]), "client-1", "no worker consumes 'lost'"),
    _case("broker-group-empty", lambda e: e.set_groups(_groups(rabbitmq=None), celery_provision_broker="rabbitmq"), "celery_provision_broker"),
    _case("no-hosts-at-all", lambda e: e.hosts_text("all:\n  hosts: {}\n"), "no hosts"),
    _case("hosts-yaml-malformed", lambda e: e.hosts_text("all:\n  children: [unclosed\n"), "not a valid inventory", "hosts.yml:"),
    _case("hosts-yaml-list", lambda e: e.hosts_text("- rabbitmq-1\n- worker-1\n"), "not a valid inventory"),
    _case("group-vars-malformed", lambda e: (e.inv / "group_vars" / "all.yml").write_text("celery_provision_queues: [\n"), "variables"),
    _case("inventory-missing", _missing_inventory, "inventory not found"),
    # ---- the CA passphrase
    _case("passphrase-env-unset", _env(None), PASS_ENV, "not set"),
    _case("passphrase-env-empty", _env(""), PASS_ENV, "empty"),
    _case("passphrase-wrong", _env("wrong"), "wrong passphrase", "root.key"),
    _case("passphrase-file-missing", _passphrase_file(None), "CA passphrase file not found", "pass-file"),
    _case("passphrase-file-empty", _passphrase_file("\n"), "CA passphrase file is empty"),
    _case("passphrase-file-wrong", _passphrase_file("wrong\n"), "wrong passphrase"),
    _case("passphrase-file-is-a-directory", _passphrase_dir, "is a directory", "pass-dir"),
    # ---- the PKI on disk
    _case("ca-cert-truncated", _truncate("root_cert", 0.5), "CA certificate is corrupted", "root.pem"),
    _case("ca-cert-empty", _truncate("root_cert", 0), "CA certificate", "root.pem"),
    _case("ca-key-truncated", _truncate("root_key", 0.5), "CA private key", "root.key"),
    _case("ca-key-missing", _missing_ca_key, "CA is incomplete", "root.key"),
    _case("ca-cert-of-another-key", _foreign_ca_cert, "does not match its certificate", "root.key"),
    _case("state-json-corrupted", lambda e: e.pki.state.write_text("{not json"), "state file", "state.json"),
    _case("pki-dir-under-a-file", _pki_dir_under_a_file, "cannot create directory", "a-file"),
    # ---- command lines
    _case("cli-missing-inventory-option", lambda e: None, "-i/--inventory", argv=("certs", "issue", "--host", "worker-1")),
    _case("cli-unknown-action", lambda e: None, "invalid choice", argv=("certs", "destroy")),
    _case("cli-within-not-a-number", lambda e: None, "--within", argv=("certs", "renew", "-i", "{inv}", "--within", "ten")),
    _case("cli-within-negative", lambda e: None, "--within", argv=("certs", "renew", "-i", "{inv}", "--within", "-3")),
    _case("cli-revoke-unknown-kind", lambda e: None, "--kind", argv=("certs", "revoke", "-i", "{inv}", "--kind", "ca", "worker-1")),
    _case("cli-revoke-unknown-host", lambda e: None, "'ghost'", argv=("certs", "revoke", "-i", "{inv}", "ghost")),
    _case("cli-revoke-a-broker", lambda e: None, "'redis-1' is a broker", argv=("certs", "revoke", "-i", "{inv}", "redis-1")),
    _case("cli-readmit-not-revoked", lambda e: None, "'worker-1' is not revoked",
          argv=("certs", "readmit", "-i", "{inv}", "worker-1")),
    _case("cli-readmit-unknown-host", lambda e: None, "'ghost'", argv=("certs", "readmit", "-i", "{inv}", "ghost")),
    _case("cli-unknown-option", lambda e: None, "--colour", argv=("certs", "list", "-i", "{inv}", "--colour")),
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_readable_line_and_changes_nothing(
    case: Case, template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli  # noqa: ANN001
) -> None:
    base = Path(shutil.copytree(template, tmp_path / "case", symlinks=True))
    monkeypatch.setenv(PASS_ENV, PASSPHRASE)
    env = Env(base, monkeypatch)
    case.breaks(env)
    before = snapshot(env.pki.root)
    assert before, "the case must start from an issued PKI"
    argv = [a.replace("{inv}", str(env.inv)) for a in case.argv]
    if case.argv == ISSUE:
        argv += ["-i", str(env.inv)]
    assert_one_line_error(cli(*argv), *case.needles)
    assert snapshot_diff(before, snapshot(env.pki.root)) == []
