"""`celery-provision audit --role`: what a config reveals of a host holding another role's powers.

The rendered configs of every Celery host of the shipped inventories audit clean under
their own role; tests/audit_fixtures/insecure_shared_config.py, one module shared by a
worker and the web app, shows each role rule; a producer's config modelled on the
rendered one breaks one thing at a time, so each test fails if its check is removed.
"""

from __future__ import annotations

import shutil
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kombu import Exchange, Queue

from celery_provision import cli, credentials, model, pki, render
from celery_provision.audit import (
    ROLES,
    RULES,
    TABLE,
    Finding,
    Severity,
    audit_config,
    format_table,
    read_config,
)
from celery_provision.audit.checks import ENVELOPE, ENVELOPE_KEYS

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(__file__).parent / "audit_fixtures" / "insecure_shared_config.py"
ROLE_RULES = {r.code for r in TABLE if r.roles != ROLES}
INVENTORIES = {
    "local": ("worker-1", "client-1", "ops-1"),
    "example": ("worker-ingest-1", "worker-reports-1", "web-1", "ops-1"),
}


def codes(findings: list[Finding]) -> set[str]:
    return {f.code for f in findings}


def at_least_low(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity >= Severity.LOW]


# --------------------------------------------------------------------------- rendered configs


@pytest.fixture(scope="module")
def deployments(tmp_path_factory: pytest.TempPathFactory) -> dict[str, model.Deployment]:
    """Each shipped inventory copied aside, with its PKI and passwords made there."""
    out = {}
    for name in INVENTORIES:
        inv = tmp_path_factory.mktemp(name) / "inventory"
        shutil.copytree(REPO / "inventories" / name, inv)
        d = model.load(inv)
        with pytest.MonkeyPatch.context() as mp:
            if d.settings.ca_passphrase_env:  # the example's CA key is encrypted
                mp.setenv(d.settings.ca_passphrase_env, "test-only-ca-passphrase")
            pki.issue(d)
        credentials.ensure(d)
        out[name] = d
    return out


def _rendered(d: model.Deployment, host: str, tmp_path: Path) -> Path:
    return render.write_all(d, tmp_path / "out", hosts=[host], controller_paths=True)[0][0]


@pytest.mark.parametrize(
    ("inventory", "host"),
    [(inv, host) for inv, hosts in INVENTORIES.items() for host in hosts],
    ids=[f"{inv}-{host}" for inv, hosts in INVENTORIES.items() for host in hosts],
)
def test_rendered_config_audits_clean_under_its_role(
    deployments: dict[str, model.Deployment], inventory: str, host: str, tmp_path: Path
) -> None:
    d = deployments[inventory]
    findings = audit_config(read_config(str(_rendered(d, host, tmp_path))), role=d.host(host).role)
    assert at_least_low(findings) == [], format_table(findings)


def test_inventories_have_each_role(deployments: dict[str, model.Deployment]) -> None:
    for name, hosts in INVENTORIES.items():
        assert {deployments[name].host(h).role for h in hosts} == set(ROLES)


def test_rendered_worker_with_operators_only_notes_remote_control(
    deployments: dict[str, model.Deployment], tmp_path: Path
) -> None:
    findings = audit_config(read_config(str(_rendered(deployments["local"], "worker-1", tmp_path))))
    assert [f.severity for f in findings if f.code == "remote-control-on"] == [Severity.INFO]


@pytest.mark.parametrize("host", INVENTORIES["local"])
def test_rendered_envelope_has_exactly_the_keys_the_audit_requires(
    deployments: dict[str, model.Deployment], host: str, tmp_path: Path
) -> None:
    conf = read_config(str(_rendered(deployments["local"], host, tmp_path)))
    assert tuple(conf.settings[ENVELOPE]) == ENVELOPE_KEYS


def test_rendered_docstring_names_the_audit_command_for_its_role(
    deployments: dict[str, model.Deployment],
) -> None:
    d = deployments["local"]
    for host in INVENTORIES["local"]:
        role = d.host(host).role
        assert f"`celery-provision audit --role {role} celeryconfig`" in render.render(d, d.host(host))


# --------------------------------------------------------------------------- the insecure fixture


def _shared(role: str) -> list[Finding]:
    return audit_config(read_config(str(SHARED)), role=role)


def test_worker_with_remote_control_left_at_the_default_is_flagged() -> None:
    [finding] = [f for f in _shared("worker") if f.code == "remote-control-on"]
    assert (finding.severity, finding.setting) == (Severity.LOW, "worker_enable_remote_control")


def test_producer_carrying_worker_settings_is_flagged() -> None:
    [finding] = [f for f in _shared("client") if f.code == "worker-settings-outside-worker"]
    assert finding.severity is Severity.MEDIUM
    for name in ("worker_prefetch_multiplier", "task_acks_late", "task_reject_on_worker_lost"):
        assert name in finding.reason


def test_operator_carrying_worker_settings_is_flagged() -> None:
    assert "worker-settings-outside-worker" in codes(_shared("operator"))


def test_producer_declaring_its_queues_is_flagged() -> None:
    [finding] = [f for f in _shared("client") if f.code == "producer-declares-queues"]
    assert finding.severity is Severity.LOW
    assert "'celery', 'reports'" in finding.reason


def test_producer_sending_task_sent_events_is_flagged() -> None:
    [finding] = [f for f in _shared("client") if f.code == "producer-sends-events"]
    assert (finding.severity, finding.setting) == (Severity.LOW, "task_send_sent_event")


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("worker", {"remote-control-on"}),
        ("client", {"worker-settings-outside-worker", "producer-declares-queues",
                    "producer-sends-events"}),
        ("operator", {"worker-settings-outside-worker"}),
    ],
)
def test_shared_fixture_shows_only_the_role_rules_of_its_role(role: str, expected: set[str]) -> None:
    assert codes(at_least_low(_shared(role))) == expected


def test_every_role_rule_is_shown_by_the_fixture() -> None:
    assert ROLE_RULES - set().union(*(codes(_shared(role)) for role in ROLES)) <= {
        "remote-control-unsigned",  # unsigned configs: tests/test_audit.py
        "pool-restarts-enabled",
        "envelope-allows-any-task",  # reads the policy file, absent here: tests/test_audit.py
    }


# --------------------------------------------------------------------------- one thing at a time


def secure_client() -> dict[str, Any]:
    """A producer's settings as the renderer writes them (the files need not exist here)."""
    etc = "/nonexistent/etc-celery/client-1"
    return {
        "broker_url": "amqps://client-1@rabbit-1.example:5671/celery",
        "broker_use_ssl": {
            "ca_certs": f"{etc}/ca.pem",
            "certfile": f"{etc}/client.pem",
            "keyfile": f"{etc}/client.key",
            "cert_reqs": ssl.CERT_REQUIRED,
            "server_hostname": "rabbit-1.example",
        },
        "broker_password": "read-from-a-file",
        "broker_connection_retry_on_startup": True,
        "celery_provision_envelope": {
            "signer": "client-1",
            "key": f"{etc}/signing.key",
            "cert": f"{etc}/signing.pem",
            "ca": f"{etc}/ca.pem",
            "store": f"{etc}/signers",
            "max_age": 86400,
            "policy": f"{etc}/policy.json",
            "role": "client",
        },
        "task_serializer": "celery-provision-json",
        "accept_content": ["celery-provision-json"],
        "task_queues": {
            "celery": {"exchange": "celery.tasks", "exchange_type": "topic",
                       "routing_key": "celery", "no_declare": True},
        },
        "task_default_queue": "celery",
    }


Change = Callable[[dict[str, Any]], None]


def _set(**values: Any) -> Change:
    return lambda conf: conf.update(values)


def _drop_no_declare(conf: dict[str, Any]) -> None:
    del conf["task_queues"]["celery"]["no_declare"]


ROLE_CASES: list[tuple[str, Change, str, Severity]] = [
    ("prefetch_multiplier", _set(worker_prefetch_multiplier=1), "worker-settings-outside-worker",
     Severity.MEDIUM),
    ("acks_late", _set(task_acks_late=True), "worker-settings-outside-worker", Severity.MEDIUM),
    ("remote_control_off", _set(worker_enable_remote_control=False),
     "worker-settings-outside-worker", Severity.MEDIUM),
    ("queue_without_no_declare", _drop_no_declare, "producer-declares-queues", Severity.LOW),
    ("no_task_queues", lambda conf: conf.pop("task_queues"), "producer-declares-queues",
     Severity.LOW),
    ("task_sent_events", _set(task_send_sent_event=True), "producer-sends-events", Severity.LOW),
]


@pytest.mark.parametrize(
    ("change", "code", "severity"), [c[1:] for c in ROLE_CASES], ids=[c[0] for c in ROLE_CASES]
)
def test_producer_rule_flags_the_broken_setting(
    change: Change, code: str, severity: Severity
) -> None:
    conf = secure_client()
    assert code not in codes(audit_config(conf, role="client"))
    change(conf)
    findings = audit_config(conf, role="client")
    assert severity in {f.severity for f in findings if f.code == code}, format_table(findings)


def test_every_producer_and_operator_rule_has_a_case() -> None:
    not_for_workers = {r.code for r in TABLE if "worker" not in r.roles}
    assert not_for_workers - {c[2] for c in ROLE_CASES} == set()


def test_secure_producer_audits_clean() -> None:
    assert at_least_low(audit_config(secure_client(), role="client")) == []


# --------------------------------------------------------------------------- what must NOT be flagged


def test_logging_and_time_limits_are_not_worker_settings() -> None:
    conf = secure_client() | {
        "worker_hijack_root_logger": False,
        "worker_log_format": "%(message)s",
        "worker_redirect_stdouts": False,
        "task_time_limit": 60,
        "task_soft_time_limit": 50,
    }
    assert "worker-settings-outside-worker" not in codes(audit_config(conf, role="client"))


def test_imported_queues_with_no_declare_are_not_flagged() -> None:
    queue = Queue("celery", Exchange("celery.tasks", "topic"), routing_key="celery", no_declare=True)
    conf = secure_client() | {"task_queues": [queue]}
    assert "producer-declares-queues" not in codes(audit_config(conf, role="client"))
    conf["task_queues"] = [Queue("celery", Exchange("celery.tasks", "topic"), routing_key="celery")]
    assert "producer-declares-queues" in codes(audit_config(conf, role="client"))


def test_worker_may_declare_queues_and_carry_worker_settings() -> None:
    conf = secure_client() | {"task_acks_late": True, "worker_enable_remote_control": False}
    _drop_no_declare(conf)
    assert ROLE_RULES & codes(audit_config(conf, role="worker")) == set()


def unsigned_client() -> dict[str, Any]:
    """The producer's settings without the envelope: JSON tasks, unsigned."""
    conf = secure_client()
    del conf["celery_provision_envelope"]
    return conf


def test_worker_only_rules_do_not_apply_to_producers() -> None:
    conf = unsigned_client()
    assert "remote-control-unsigned" in codes(audit_config(conf, role="worker"))
    assert not {"remote-control-unsigned", "remote-control-on"} & codes(
        audit_config(conf, role="client")
    )


def test_unsigned_worker_is_told_once_about_remote_control() -> None:
    found = codes(audit_config(unsigned_client(), role="worker"))
    assert "remote-control-unsigned" in found and "remote-control-on" not in found


def test_unknown_role_is_refused() -> None:
    with pytest.raises(ValueError, match="beat"):
        audit_config(secure_client(), role="beat")


# --------------------------------------------------------------------------- one fact, one place


def test_audit_roles_are_the_models_roles() -> None:
    assert set(ROLES) == set(model.CELERY_ROLES.values())
    assert set(RULES) >= ROLE_RULES


@pytest.mark.parametrize("role", ROLES)
def test_cli_takes_each_role(role: str, capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(["audit", "--role", role, "--fail-on", "low", str(SHARED)])
    out = capsys.readouterr().out
    assert status == 1
    expected = "remote-control-on" if role == "worker" else "worker-settings-outside-worker"
    assert expected in out


def test_cli_audits_as_a_worker_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    cli.main(["audit", str(SHARED)])
    out = capsys.readouterr().out
    assert "remote-control-on" in out and "producer-declares-queues" not in out
