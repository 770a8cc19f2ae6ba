"""The rendered Celery configuration: loaded into a real Celery app, it says exactly what the
brokers were configured to accept."""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from celery import Celery
from cryptography import x509

from celery_provision import audit, credentials, model, pki, render, runtime
from celery_provision.errors import ProvisionError
from celery_provision.layout import state_dir
from celery_provision.verify import load_module


def _ready(inv: Path) -> model.Deployment:
    d = model.load(inv)
    pki.issue(d)
    credentials.ensure(d)
    return d


def _app(d: model.Deployment, host: str, tmp_path: Path, *, controller_paths: bool = True) -> Celery:
    path = render.write_all(d, tmp_path / "out", hosts=[host], controller_paths=controller_paths)[0][0]
    app = Celery("t", set_as_current=False)
    app.config_from_object(load_module(path))
    return app


@pytest.fixture
def deployment(inventory: Path) -> model.Deployment:
    return _ready(inventory)


def test_one_config_module_per_worker_and_client(deployment: model.Deployment, tmp_path: Path) -> None:
    written = render.write_all(deployment, tmp_path)
    assert sorted(p.parent.name for p, _ in written) == ["client-1", "worker-1"]
    assert all(p.name == "celeryconfig.py" for p, _ in written)


def test_broker_url_is_amqps_to_the_broker_tls_port_and_vhost(deployment: model.Deployment, tmp_path: Path) -> None:
    conf = _app(deployment, "worker-1", tmp_path).conf
    assert conf.broker_url == "amqps://worker-1@127.0.0.1:5671/celery"


def test_broker_port_follows_the_inventory(write_inventory: Any, basic_groups: dict, tmp_path: Path) -> None:
    basic_groups["rabbitmq"]["rabbitmq-1"]["rabbitmq_tls_port"] = 15671
    d = _ready(write_inventory(basic_groups))
    assert _app(d, "worker-1", tmp_path).conf.broker_url.endswith(":15671/celery")


def test_vhost_with_a_slash_is_escaped(write_inventory: Any, tmp_path: Path) -> None:
    d = _ready(write_inventory(all_vars={"celery_provision_vhost": "/celery"}))
    assert _app(d, "worker-1", tmp_path).conf.broker_url.endswith("/%2Fcelery")


def test_tls_requires_and_checks_the_broker_certificate(deployment: model.Deployment, tmp_path: Path) -> None:
    conf = _app(deployment, "worker-1", tmp_path).conf
    tls = conf.broker_use_ssl
    assert tls["cert_reqs"] == ssl.CERT_REQUIRED
    assert tls["server_hostname"] == "127.0.0.1"
    assert Path(tls["ca_certs"]).read_bytes() == (deployment.pki_dir / "ca.pem").read_bytes()
    assert x509.load_pem_x509_certificate(Path(tls["certfile"]).read_bytes()).subject.rfc4514_string().endswith(
        "CN=worker-1"
    ) or "CN=worker-1" in x509.load_pem_x509_certificate(Path(tls["certfile"]).read_bytes()).subject.rfc4514_string()


def test_result_backend_is_rediss_with_verification(deployment: model.Deployment, tmp_path: Path) -> None:
    conf = _app(deployment, "worker-1", tmp_path).conf
    assert conf.result_backend == "rediss://worker-1@127.0.0.2:6380/1?ssl_cert_reqs=required"
    assert conf.redis_backend_use_ssl["ssl_cert_reqs"] == ssl.CERT_REQUIRED


def test_passwords_are_read_from_files_not_written_in_the_config(deployment: model.Deployment,
                                                                   tmp_path: Path) -> None:
    conf = _app(deployment, "worker-1", tmp_path).conf
    text = render.render(deployment, deployment.host("worker-1"), controller_paths=True)
    for service in ("rabbitmq", "redis"):
        secret = credentials.password(deployment, service, "worker-1")
        assert secret not in text
    assert conf.broker_password == credentials.password(deployment, "rabbitmq", "worker-1")
    assert conf.redis_password == credentials.password(deployment, "redis", "worker-1")


def test_messages_are_signed_and_pickle_is_accepted_nowhere(deployment: model.Deployment, tmp_path: Path) -> None:
    conf = _app(deployment, "worker-1", tmp_path).conf
    # JSON on the wire, signed in the envelope (celery_provision.runtime), never Celery's `auth`.
    assert (conf.task_serializer, conf.accept_content, conf.event_serializer) == ("celery-provision-json", ["celery-provision-json"], "json")
    assert "pickle" not in {*conf.accept_content, *conf.result_accept_content, conf.result_serializer}
    assert not [k for k in _settings(deployment, "worker-1") if k.startswith("security_")]
    env = conf[runtime.CONFIG]
    assert env["signer"] == "worker-1" and env["max_age"] == 86400
    assert Path(env["key"]).exists() and Path(env["cert"]).exists()
    assert Path(env["ca"]).read_bytes() == (deployment.pki_dir / "ca.pem").read_bytes()
    assert Path(env["store"]).is_dir()
    assert {p.stem for p in Path(env["store"]).glob("*.pem")} >= {"worker-1", "client-1"}


def test_a_worker_knows_what_each_signer_may_call_and_a_producer_nothing(write_inventory: Any, basic_groups: dict,
                                                                         tmp_path: Path) -> None:
    basic_groups["celery_clients"]["client-1"]["celery_provision_allowed_tasks"] = ["app.public.*"]
    d = _ready(write_inventory(basic_groups))
    worker = runtime.protect.Runtime(None, _app(d, "worker-1", tmp_path).conf[runtime.CONFIG])
    client = runtime.protect.Runtime(None, _app(d, "client-1", tmp_path).conf[runtime.CONFIG])
    assert worker.trust.allowed == {"worker-1": ("*",), "client-1": ("app.public.*",)}
    assert client.trust.allowed == {}


@pytest.mark.parametrize("all_vars", [
    {},
    pytest.param({"celery_provision_intermediate_ca": True}, id="intermediate-ca"),
])
def test_the_envelope_signs_and_checks_with_the_rendered_files(write_inventory: Any, tmp_path: Path,
                                                                all_vars: dict) -> None:
    deployment = _ready(write_inventory(all_vars=all_vars))
    client, worker = (_app(deployment, h, tmp_path / h).conf[runtime.CONFIG] for h in ("client-1", "worker-1"))
    signer = runtime.Signer.load(client["signer"], client["key"], client["cert"])
    trust = runtime.protect.Runtime(None, worker).trust
    headers = {"task": "app.add", "id": "t-1"}
    body = b'[[2, 2], {}, {}]'
    headers[runtime.HEADER] = signer.sign_task(headers, "application/json", "utf-8", body)
    assert trust.verify_task(headers, "application/json", "utf-8", body) == "client-1"
    with pytest.raises(runtime.Refused, match="signature does not match"):
        trust.verify_task(headers, "application/json", "utf-8", b'[[2, 3], {}, {}]')


def test_signed_results_when_the_inventory_asks(write_inventory: Any, tmp_path: Path) -> None:
    d = _ready(write_inventory(all_vars={"celery_provision_signed_results": True}))
    conf = _app(d, "worker-1", tmp_path).conf
    assert (conf.result_serializer, conf.result_accept_content) == (runtime.RESULT_SERIALIZER,
                                                                    [runtime.RESULT_SERIALIZER])


def test_unsigned_results_are_json(deployment: model.Deployment, tmp_path: Path) -> None:
    conf = _app(deployment, "worker-1", tmp_path).conf
    assert (conf.result_serializer, conf.result_accept_content) == ("json", ["json"])


def test_at_least_once_delivery_acks_late(deployment: model.Deployment, tmp_path: Path) -> None:
    conf = _app(deployment, "worker-1", tmp_path).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.broker_connection_retry_on_startup is True


def test_at_most_once_delivery_acks_early(write_inventory: Any, tmp_path: Path) -> None:
    d = _ready(write_inventory(all_vars={"celery_provision_delivery": "at_most_once"}))
    assert _app(d, "worker-1", tmp_path).conf.task_acks_late is False


def test_x509_login_uses_external_and_has_no_password(write_inventory: Any, tmp_path: Path) -> None:
    d = _ready(write_inventory(all_vars={"celery_provision_auth": "x509"}))
    conf = _app(d, "worker-1", tmp_path).conf
    assert conf.broker_login_method == "EXTERNAL"
    assert conf.broker_url == "amqps://127.0.0.1:5671/celery"
    assert not conf.broker_password
    assert not (d.credentials_dir / "rabbitmq" / "worker-1").exists()


def test_several_rabbitmq_hosts_give_a_failover_list_checked_by_service_name(
    write_inventory: Any, basic_groups: dict, tmp_path: Path
) -> None:
    basic_groups["rabbitmq"]["rabbitmq-2"] = {"ansible_host": "127.0.0.5"}
    d = _ready(write_inventory(basic_groups))
    conf = _app(d, "worker-1", tmp_path).conf
    password = quote(credentials.password(d, "rabbitmq", "worker-1"), safe="")
    assert conf.broker_url.split(";") == [
        f"amqps://worker-1:{password}@127.0.0.1:5671/celery",
        f"amqps://worker-1:{password}@127.0.0.5:5671/celery",
    ]
    assert conf.broker_use_ssl["server_hostname"] == "rabbitmq"
    for name in ("rabbitmq-1", "rabbitmq-2"):
        cert = x509.load_pem_x509_certificate((d.pki_dir / "hosts" / name / "server.pem").read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "rabbitmq" in sans.get_values_for_type(x509.DNSName)


def test_a_failover_list_carries_the_password_in_each_url_and_not_in_broker_password(
    write_inventory: Any, basic_groups: dict, tmp_path: Path
) -> None:
    """kombu's Connection.switch, moving to the next URL after a failure, keeps only what
    that URL says: a password in broker_password alone is dropped at the first failover."""
    from kombu import Connection

    basic_groups["rabbitmq"]["rabbitmq-2"] = {"ansible_host": "127.0.0.5"}
    d = _ready(write_inventory(basic_groups))
    conf = _app(d, "worker-1", tmp_path).conf
    conn = Connection(conf.broker_url, password=conf.broker_password)
    conn.maybe_switch_next()
    assert (conn.hostname, conn.password) == ("127.0.0.5", credentials.password(d, "rabbitmq", "worker-1"))
    assert not conf.broker_password
    assert credentials.password(d, "rabbitmq", "worker-1") not in render.render(d, d.host("worker-1"))


def _cluster(basic_groups: dict) -> dict:
    basic_groups["rabbitmq"] = {f"rabbitmq-{i}": {"ansible_host": f"127.0.0.{10 + i}", "rabbitmq_cluster": True}
                                for i in (1, 2, 3)}
    return basic_groups


def test_a_cluster_gives_every_node_in_the_url_list_checked_by_service_name(
    write_inventory: Any, basic_groups: dict, tmp_path: Path
) -> None:
    d = _ready(write_inventory(_cluster(basic_groups)))
    conf = _app(d, "worker-1", tmp_path).conf
    password = quote(credentials.password(d, "rabbitmq", "worker-1"), safe="")
    assert conf.broker_url.split(";") == [f"amqps://worker-1:{password}@127.0.0.{10 + i}:5671/celery" for i in (1, 2, 3)]
    assert conf.broker_use_ssl["server_hostname"] == "rabbitmq"
    assert conf.broker_use_ssl["cert_reqs"] == ssl.CERT_REQUIRED


@pytest.mark.parametrize("host", ["worker-1", "client-1"])
def test_a_cluster_declares_the_task_queues_as_durable_quorum_queues(
    write_inventory: Any, basic_groups: dict, tmp_path: Path, host: str
) -> None:
    d = _ready(write_inventory(_cluster(basic_groups)))
    conf = _app(d, host, tmp_path).conf
    for options in conf.task_queues.values():
        assert options["queue_arguments"] == {"x-queue-type": "quorum"} and options["durable"] is True
    assert conf.task_default_queue_type == "quorum"
    assert conf.worker_detect_quorum_queues is True


def test_a_cluster_worker_finds_its_queues_quorum_so_eta_goes_through_native_delayed_delivery(
    write_inventory: Any, basic_groups: dict, tmp_path: Path
) -> None:
    from celery.utils.quorum_queues import detect_quorum_queues

    d = _ready(write_inventory(_cluster(basic_groups)))
    assert detect_quorum_queues(_app(d, "worker-1", tmp_path), "amqp")[0]


def test_independent_brokers_keep_classic_queues(write_inventory: Any, basic_groups: dict, tmp_path: Path) -> None:
    basic_groups["rabbitmq"]["rabbitmq-2"] = {"ansible_host": "127.0.0.5"}
    d = _ready(write_inventory(basic_groups))
    conf = _app(d, "worker-1", tmp_path).conf
    assert all("queue_arguments" not in options for options in conf.task_queues.values())
    assert conf.task_default_queue_type == "classic"


def test_redis_broker_is_rediss_with_explicit_verification(write_inventory: Any, tmp_path: Path) -> None:
    d = _ready(write_inventory(all_vars={"celery_provision_broker": "redis"}))
    conf = _app(d, "worker-1", tmp_path).conf
    assert conf.broker_url == "rediss://worker-1@127.0.0.2:6380/0"
    assert conf.broker_use_ssl["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert conf.broker_transport_options["visibility_timeout"] == 3600


def test_rpc_result_backend(write_inventory: Any, basic_groups: dict, tmp_path: Path) -> None:
    d = _ready(write_inventory(basic_groups, all_vars={"celery_provision_result_backend": "rpc"}))
    conf = _app(d, "worker-1", tmp_path).conf
    assert conf.result_backend == "rpc://"


def test_queues_come_from_the_inventory(write_inventory: Any, tmp_path: Path) -> None:
    d = _ready(write_inventory(all_vars={"celery_provision_queues": ["high", "low"]}))
    conf = _app(d, "worker-1", tmp_path).conf
    assert list(conf.task_queues) == ["high", "low"]
    assert conf.task_default_queue == "high"


def test_host_paths_point_into_the_config_dir(deployment: model.Deployment) -> None:
    text = render.render(deployment, deployment.host("worker-1"))
    assert "_FILES = Path('/etc/celery-provision/worker-1')" in text
    assert "'/etc/celery-provision/worker-1/client.key'" in text
    names = {f.name for f in render.host_files(deployment, deployment.host("worker-1"))}
    for name in names - {"rabbitmq.password", "redis.password"}:
        assert f"/etc/celery-provision/worker-1/{name}" in text
    assert "_secret('rabbitmq.password')" in text and "rabbitmq.password" in names


def test_render_twice_changes_nothing(deployment: model.Deployment, tmp_path: Path) -> None:
    render.write_all(deployment, tmp_path)
    assert not any(changed for _, changed in render.write_all(deployment, tmp_path))


def test_a_hosts_config_does_not_depend_on_where_the_controller_keeps_the_inventory(
    deployment: model.Deployment, tmp_path: Path
) -> None:
    """The same inventory and state elsewhere (another clone, a project using the
    collection) render the same file for each host: nothing to rewrite, no restart."""
    elsewhere = tmp_path / "elsewhere" / deployment.inventory.name
    shutil.copytree(deployment.inventory, elsewhere)
    shutil.copytree(state_dir(deployment.inventory), state_dir(elsewhere))
    moved = model.load(elsewhere)
    for host in ("worker-1", "client-1"):
        assert render.render(moved, moved.host(host)) == render.render(deployment, deployment.host(host))


def test_a_broker_host_has_no_celery_config(deployment: model.Deployment) -> None:
    with pytest.raises(ProvisionError, match="not a worker, client or operator"):
        render.render(deployment, deployment.host("rabbitmq-1"))


@pytest.mark.parametrize("all_vars", [
    {},
    {"celery_provision_auth": "x509"},
    {"celery_provision_broker": "redis"},
    {"celery_provision_signed_results": True},
])
def test_every_rendered_config_audits_clean(write_inventory: Any, tmp_path: Path, all_vars: dict) -> None:
    d = _ready(write_inventory(all_vars=all_vars))
    path = render.write_all(d, tmp_path / "out", hosts=["worker-1"], controller_paths=True)[0][0]
    findings = audit.audit_config(audit.load_config(str(path)))
    assert audit.exit_status(findings, audit.Severity.HIGH) == 0, audit.format_table(findings)


@pytest.mark.parametrize("host", ["worker-1", "client-1"])
def test_rendered_cluster_configs_audit_clean_and_add_no_finding(write_inventory: Any, basic_groups: dict,
                                                                 tmp_path: Path, host: str) -> None:
    def findings(d: model.Deployment, out: str) -> list[Any]:
        path = render.write_all(d, tmp_path / out, hosts=[host], controller_paths=True)[0][0]
        return audit.audit_config(audit.load_config(str(path)), role=d.host(host).role)

    single = findings(_ready(write_inventory(name="single")), "single")
    cluster = findings(_ready(write_inventory(_cluster(basic_groups), name="cluster")), "cluster")
    assert audit.exit_status(cluster, audit.Severity.HIGH) == 0, audit.format_table(cluster)
    assert {f.code for f in cluster} <= {f.code for f in single}, audit.format_table(cluster)


def _signed_results_backend(write_inventory: Any, tmp_path: Path) -> Any:
    d = _ready(write_inventory(all_vars={"celery_provision_signed_results": True}))
    app = _app(d, "worker-1", tmp_path)
    runtime.secure(app)
    return app.backend  # Celery's Redis backend: encode/decode are what it stores and reads


def test_a_signed_result_round_trips_through_the_backend_codec(write_inventory: Any, tmp_path: Path) -> None:
    backend = _signed_results_backend(write_inventory, tmp_path)
    meta = {"status": "SUCCESS", "result": 42, "task_id": "t-1"}
    assert backend.decode(backend.encode(meta)) == meta


def test_a_signed_result_altered_in_the_backend_is_refused(write_inventory: Any, tmp_path: Path) -> None:
    from kombu.exceptions import DecodeError

    backend = _signed_results_backend(write_inventory, tmp_path)
    stored = backend.encode({"status": "SUCCESS", "result": 42, "task_id": "t-1"})
    assert '\\"result\\": 42' in stored  # the signed blob carries the JSON result as a string
    altered = stored.replace('\\"result\\": 42', '\\"result\\": 43')
    # kombu reports the runtime's SecurityError as a DecodeError: assert the refusal.
    with pytest.raises(DecodeError, match="signature does not match"):
        backend.decode(altered)


def test_control_messages_are_signed_when_the_first_use_is_app_control(with_operator: model.Deployment,
                                                                         tmp_path: Path) -> None:
    path = render.write_all(with_operator, tmp_path / "out", hosts=["ops-1"], controller_paths=True)[0][0]
    app = Celery("ops", set_as_current=False)
    app.config_from_object(load_module(path))
    runtime.secure(app)  # as the rendered module says: the configuration is not read yet
    mailbox = app.control.mailbox
    assert (mailbox.serializer, mailbox.accept) == (runtime.SERIALIZER, [runtime.SERIALIZER])


def test_control_messages_are_signed_when_the_configuration_was_read(with_operator: model.Deployment,
                                                                      tmp_path: Path) -> None:
    path = render.write_all(with_operator, tmp_path / "out", hosts=["ops-1"], controller_paths=True)[0][0]
    app = Celery("ops", set_as_current=False)
    app.config_from_object(load_module(path), force=True)
    runtime.secure(app)
    mailbox = app.control.mailbox
    assert (mailbox.serializer, mailbox.accept) == (runtime.SERIALIZER, [runtime.SERIALIZER])


# --------------------------------------------------------------------------- one configuration per role


@pytest.fixture
def with_operator(write_inventory: Any, basic_groups: dict) -> model.Deployment:
    basic_groups["celery_operators"] = {"ops-1": {"ansible_host": "127.0.0.5"}}
    return _ready(write_inventory(basic_groups, name="ops"))


def _settings(d: model.Deployment, host: str) -> dict[str, Any]:
    return {k: v for k, v in vars(load_module(render.write_all(d, None, hosts=[host], controller_paths=True)[0][0])).items()
            if not k.startswith("_")}


def test_every_task_goes_through_the_task_exchange_on_rabbitmq(deployment: model.Deployment, tmp_path: Path) -> None:
    conf = _app(deployment, "client-1", tmp_path).conf
    queue = conf.task_queues["celery"]
    assert (queue["exchange"], queue["exchange_type"], queue["routing_key"]) == ("celery.tasks", "topic", "celery")
    assert (conf.task_default_exchange, conf.task_default_exchange_type) == ("celery.tasks", "topic")


def test_a_producer_declares_nothing(deployment: model.Deployment, tmp_path: Path) -> None:
    queues = _app(deployment, "client-1", tmp_path).conf.task_queues
    assert all(q["no_declare"] for q in queues.values())


def test_a_producer_config_has_no_worker_settings(deployment: model.Deployment) -> None:
    names = _settings(deployment, "client-1")
    assert [n for n in names if n.startswith("worker_") or n in ("task_acks_late", "task_reject_on_worker_lost")] == []


def test_a_worker_declares_only_its_own_queues(write_inventory: Any, basic_groups: dict, tmp_path: Path) -> None:
    basic_groups["celery_workers"]["worker-2"] = {"ansible_host": "127.0.0.6", "celery_provision_queues": ["mail"]}
    d = _ready(write_inventory(basic_groups))
    queues = _app(d, "worker-1", tmp_path).conf.task_queues
    assert {name: bool(q.get("no_declare")) for name, q in queues.items()} == {"celery": False, "mail": True}


def test_without_operators_a_worker_answers_no_remote_control(deployment: model.Deployment, tmp_path: Path) -> None:
    conf = _app(deployment, "worker-1", tmp_path).conf
    assert (conf.worker_enable_remote_control, conf.worker_send_task_events) == (False, False)


def test_with_operators_a_worker_answers_remote_control_and_sends_events(with_operator: model.Deployment,
                                                                         tmp_path: Path) -> None:
    conf = _app(with_operator, "worker-1", tmp_path).conf
    assert (conf.worker_enable_remote_control, conf.worker_send_task_events) == (True, True)


def test_an_operator_config_has_the_broker_and_signing_but_no_results_or_queues(with_operator: model.Deployment) -> None:
    names = _settings(with_operator, "ops-1")
    assert "broker_url" in names and names[runtime.CONFIG]["signer"] == "ops-1"
    assert names["task_serializer"] == "celery-provision-json"
    assert runtime.protect.Runtime(None, names[runtime.CONFIG]).trust.allowed == {}
    assert "result_backend" not in names and "task_queues" not in names and "redis_password" not in names


# --------------------------------------------------------------------------- Redis under Sentinel


def _sentinel_deployment(write_inventory: Any, basic_groups: dict, broker: str = "redis") -> model.Deployment:
    basic_groups["redis"] = {f"redis-{i}": {"ansible_host": f"127.0.1.{i}", "redis_sentinel": True} for i in (1, 2, 3)}
    return _ready(write_inventory(basic_groups, {"celery_provision_broker": broker}))


def test_a_sentinel_broker_names_every_sentinel_with_the_password_in_each_url(write_inventory: Any, basic_groups: dict,
                                                                            tmp_path: Path) -> None:
    d = _sentinel_deployment(write_inventory, basic_groups)
    conf = _app(d, "worker-1", tmp_path).conf
    password = credentials.password(d, "redis", "worker-1")
    assert conf.broker_url.split(";") == [f"sentinel://worker-1:{password}@127.0.1.{i}:26379/0" for i in (1, 2, 3)]
    assert conf.broker_transport_options["master_name"] == "celery"
    assert password not in render.render(d, d.host("worker-1"), controller_paths=True)


def test_a_sentinel_backend_names_every_sentinel(write_inventory: Any, basic_groups: dict, tmp_path: Path) -> None:
    conf = _app(_sentinel_deployment(write_inventory, basic_groups, "rabbitmq"), "worker-1", tmp_path).conf
    assert conf.result_backend == ";".join(f"sentinel://worker-1@127.0.1.{i}:26379/1" for i in (1, 2, 3))
    assert conf.result_backend_transport_options["master_name"] == "celery"
    assert conf.redis_backend_use_ssl["ssl_cert_reqs"] == ssl.CERT_REQUIRED


@pytest.mark.parametrize("setting", ["broker_transport_options", "result_backend_transport_options"])
def test_sentinel_kwargs_carry_tls_the_client_certificate_and_the_sentinel_login(write_inventory: Any,
                                                                                basic_groups: dict, tmp_path: Path,
                                                                                setting: str) -> None:
    d = _sentinel_deployment(write_inventory, basic_groups)
    kwargs = _app(d, "client-1", tmp_path).conf[setting]["sentinel_kwargs"]
    files = d.app_files(d.host("client-1"), controller=True)
    assert (kwargs["ssl"], kwargs["ssl_cert_reqs"]) == (True, ssl.CERT_REQUIRED)
    assert (kwargs["ssl_ca_certs"], kwargs["ssl_certfile"], kwargs["ssl_keyfile"]) == (
        str(files.ca), str(files.client_cert), str(files.client_key))
    assert (kwargs["username"], kwargs["password"]) == ("client-1", credentials.password(d, "redis", "client-1"))


@pytest.mark.parametrize("host", ["worker-1", "client-1"])
def test_a_rendered_sentinel_config_audits_clean(write_inventory: Any, basic_groups: dict, tmp_path: Path,
                                                 host: str) -> None:
    d = _sentinel_deployment(write_inventory, basic_groups)
    path = render.write_all(d, tmp_path / "out", hosts=[host], controller_paths=True)[0][0]
    role = d.host(host).role
    findings = audit.audit_config(audit.load_config(str(path)), role=role)
    assert audit.exit_status(findings, audit.Severity.LOW) == 0, audit.format_table(findings)


# --- the trust policy: once per deployment, named by every configuration -------------------


def test_a_config_names_the_policy_file_and_embeds_no_list_of_hosts(with_operator: model.Deployment) -> None:
    env = _settings(with_operator, "worker-1")[runtime.CONFIG]
    assert Path(env["policy"]) == with_operator.layout.policy and env["role"] == "worker"
    assert not {"allowed", "control", "results"} & set(env)
    assert render.render(with_operator, with_operator.host("worker-1")).count("client-1") == 0


def test_the_policy_file_carries_what_each_config_used_to(with_operator: model.Deployment,
                                                          tmp_path: Path) -> None:
    d = with_operator
    apps = d.apps
    workers = tuple(h.name for h in apps if h.is_worker)
    operators = tuple(h.name for h in apps if h.is_operator)
    # What each rendered configuration embedded before the policy file: per role.
    before = {
        "worker": ({h.name: tuple(h.allowed_tasks) for h in apps}, operators, workers),
        "client": ({}, (), workers),
        "operator": ({}, workers, workers),
    }
    for host in apps:
        rt = runtime.protect.Runtime(None, _app(d, host.name, tmp_path / host.name).conf[runtime.CONFIG])
        assert (dict(rt.trust.allowed), rt.control, rt.results) == before[str(host.role)], host.name
    assert d.layout.policy.read_text() == render.policy_text(d)
    assert d.layout.policy.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("damage", ["missing", "not-json", "no-allow-list", "allow-list-not-names"])
def test_a_worker_whose_policy_file_is_missing_or_malformed_does_not_start(
        deployment: model.Deployment, tmp_path: Path, damage: str) -> None:
    from celery.exceptions import ImproperlyConfigured

    app = _app(deployment, "worker-1", tmp_path)
    policy = Path(app.conf[runtime.CONFIG]["policy"])
    if damage == "missing":
        policy.unlink()
    else:
        policy.write_text({"not-json": "{allowed", "no-allow-list": '{"control": {}, "results": []}',
                           "allow-list-not-names": '{"allowed": {"client-1": "*"}, "control": {}, "results": []}',
                           }[damage])
    with pytest.raises(ImproperlyConfigured, match=f"policy {policy}"):
        runtime.secure(app)
