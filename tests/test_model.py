"""The deployment model: an Ansible inventory read through ansible-core, typed and validated."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from celery_provision import model, pki
from celery_provision.errors import ProvisionError

FIXTURES = Path(__file__).parent / "inventories"
EXAMPLE = Path(__file__).resolve().parent.parent / "inventories" / "example"


@pytest.fixture
def ini_inventory(tmp_path: Path) -> Path:
    """tests/inventories/ini copied to tmp (its state dir must not land in the repo)."""
    return Path(shutil.copytree(FIXTURES / "ini", tmp_path / "ini"))


@pytest.fixture
def ini(ini_inventory: Path) -> model.Deployment:
    return model.load(ini_inventory)


# --------------------------------------------------------------------------- formats and sources


def test_ini_inventory_puts_every_host_in_its_role_groups(ini: model.Deployment) -> None:
    assert [h.name for h in ini.group("rabbitmq")] == ["mq-1"]
    assert [h.name for h in ini.group("redis")] == ["cache-1"]
    assert [h.name for h in ini.group("celery_workers")] == ["worker-1", "worker-2"]
    assert [h.name for h in ini.group("celery_clients")] == ["web-1"]


def test_ansible_host_is_the_address(ini: model.Deployment) -> None:
    assert ini.host("worker-2").address == "192.0.2.32"


def test_groups_outside_the_four_role_groups_are_ignored(ini: model.Deployment) -> None:
    assert ini.host("worker-1").groups == frozenset({"celery_workers"})


def test_group_vars_all_sets_the_deployment_settings(ini: model.Deployment) -> None:
    s = ini.settings
    assert (s.key_type, s.signing_key_type, s.leaf_days) == ("ec-p384", "rsa2048", 90)
    assert all(w.queues == ("celery", "mail") for w in ini.group("celery_workers"))
    assert s.admin_networks == ("198.51.100.0/24",)


def test_signing_defaults_are_ed25519_keys_and_a_day_of_rotation_overlap(write_inventory) -> None:  # noqa: ANN001
    s = model.load(write_inventory(fast=False)).settings
    assert (s.signing_key_type, s.signing_overlap_hours) == ("ec-p256", 24)


def test_a_signing_overlap_of_zero_hours_is_accepted(write_inventory) -> None:  # noqa: ANN001
    inv = write_inventory(all_vars={"celery_provision_signing_overlap_hours": 0})
    assert model.load(inv).settings.signing_overlap_hours == 0


def test_group_vars_of_a_group_override_a_role_default(ini: model.Deployment) -> None:
    assert ini.host("mq-1").var("rabbitmq_tls_port") == 15671


def test_role_default_applies_where_the_inventory_sets_nothing(ini: model.Deployment) -> None:
    assert ini.host("cache-1").var("redis_tls_port") == 6380
    assert ini.host("mq-1").var("rabbitmq_admin_user") == "admin"


def test_group_vars_value_is_templated_per_host(ini: model.Deployment) -> None:
    assert ini.host("worker-1").var("celery_worker_config_dir") == "/srv/celery/worker-1"


def test_host_vars_override_group_vars(ini: model.Deployment) -> None:
    assert ini.host("worker-2").var("celery_worker_config_dir") == "/opt/worker-two"


def test_role_default_template_is_rendered_with_the_host_name(inventory: Path) -> None:
    d = model.load(inventory)
    assert d.host("client-1").var("celery_worker_config_dir") == "/etc/celery-provision/client-1"


def test_yaml_inventory_file_with_inline_vars_works(tmp_path: Path) -> None:
    path = tmp_path / "prod.yml"
    path.write_text(yaml.safe_dump({"all": {
        "vars": {"celery_provision_vhost": "jobs"},
        "children": {
            "redis": {"hosts": {"r1": {"ansible_host": "192.0.2.1"}}},
            "celery_workers": {"hosts": {"w1": {"ansible_host": "192.0.2.2"}}},
        },
    }}))
    d = model.load(path)
    assert d.settings.vhost == "jobs"
    assert sorted(d.hosts) == ["r1", "w1"]


# --------------------------------------------------------------------------- derived values


def test_sans_are_name_address_and_extra_sans_once_each(ini: model.Deployment) -> None:
    assert ini.host("worker-2").sans == ("worker-2", "192.0.2.32", "worker-2.example.org", "198.51.100.7")


def test_repeated_san_appears_once(write_inventory, basic_groups) -> None:  # noqa: ANN001
    basic_groups["redis"]["redis-1"]["celery_provision_extra_sans"] = ["redis-1", "127.0.0.2", "localhost"]
    d = model.load(write_inventory(basic_groups))
    assert d.host("redis-1").sans == ("redis-1", "127.0.0.2", "localhost")


def test_address_defaults_to_the_inventory_name(write_inventory, basic_groups) -> None:  # noqa: ANN001
    del basic_groups["celery_workers"]["worker-1"]["ansible_host"]
    d = model.load(write_inventory(basic_groups))
    assert d.host("worker-1").address == "worker-1"


def test_broker_defaults_to_rabbitmq_when_the_group_has_hosts(inventory: Path) -> None:
    assert model.load(inventory).settings.broker == "rabbitmq"


def test_broker_defaults_to_redis_without_rabbitmq_hosts(write_inventory, basic_groups) -> None:  # noqa: ANN001
    del basic_groups["rabbitmq"]
    assert model.load(write_inventory(basic_groups)).settings.broker == "redis"


def test_result_backend_defaults_to_rpc_without_redis_hosts(write_inventory, basic_groups) -> None:  # noqa: ANN001
    del basic_groups["redis"]
    assert model.load(write_inventory(basic_groups)).settings.result_backend == "rpc"


def test_one_host_may_hold_several_roles(write_inventory, basic_groups) -> None:  # noqa: ANN001
    basic_groups["celery_workers"]["redis-1"] = {}
    d = model.load(write_inventory(basic_groups))
    assert d.host("redis-1").groups == frozenset({"redis", "celery_workers"})
    assert {s.kind for s in pki.leaf_specs(d) if s.host == "redis-1"} == {"server", "client", "signing"}


def test_state_lives_beside_a_directory_inventory(inventory: Path) -> None:
    d = model.load(inventory)
    assert d.pki_dir == inventory.parent / ".celery-provision" / "inv" / "pki"
    assert d.credentials_dir == inventory.parent / ".celery-provision" / "inv" / "credentials"


def test_state_of_a_file_inventory_is_named_after_its_stem(tmp_path: Path, inventory: Path) -> None:
    single = tmp_path / "staging.yml"
    shutil.copy(inventory / "hosts.yml", single)
    assert model.load(single).pki_dir == tmp_path / ".celery-provision" / "staging" / "pki"


def test_pki_dir_setting_is_relative_to_the_inventory(write_inventory) -> None:  # noqa: ANN001
    inv = write_inventory(all_vars={"celery_provision_pki_dir": "../elsewhere/pki"})
    assert model.load(inv).pki_dir == (inv.parent / "elsewhere" / "pki").resolve()


def test_explicit_pki_dir_wins_over_the_inventory(inventory: Path, tmp_path: Path) -> None:
    assert model.load(inventory, pki_dir=tmp_path / "p").pki_dir == tmp_path / "p"


# --------------------------------------------------------------------------- the example inventory


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> model.Deployment:
    monkeypatch.setenv("CELERY_PROVISION_EXAMPLE_CA_PASSPHRASE", "unused")
    return model.load(EXAMPLE)


def test_example_inventory_has_a_three_node_cluster_a_replicated_redis_workers_and_a_client(
        example: model.Deployment) -> None:
    assert len(example.group("rabbitmq")) == 3 and example.rabbitmq_cluster
    assert len(example.group("redis")) == 3 and example.replication is not None
    assert len(example.group("celery_workers")) >= 3
    assert len(example.group("celery_clients")) >= 1


def test_example_inventory_uses_private_addresses(example: model.Deployment) -> None:
    import ipaddress

    assert all(ipaddress.ip_address(h.address).is_private for h in example.hosts.values())


def test_example_inventory_asks_for_clustered_rabbitmq_certificates(example: model.Deployment) -> None:
    specs = {s.name: s for s in pki.leaf_specs(example)}
    assert specs["mq-1/server"].eku == ("serverAuth", "clientAuth")
    assert "mq.internal.example.org" in specs["mq-2/server"].sans


def test_example_inventory_replicates_its_redis_under_sentinel(example: model.Deployment) -> None:
    r = example.replication
    assert (r.primary.name, [h.name for h in r.replicas], r.quorum) == ("redis-1", ["redis-2", "redis-3"], 2)
    specs = {s.name: s for s in pki.leaf_specs(example)}
    assert specs["redis-1/server"].eku == ("serverAuth", "clientAuth")


def test_hosts_outside_the_four_groups_are_not_part_of_the_deployment(write_inventory, basic_groups) -> None:
    from celery_provision import model

    basic_groups["monitoring"] = {"grafana-1": {"ansible_host": "127.0.0.9"}}
    d = model.load(write_inventory(basic_groups))
    assert "grafana-1" not in d.hosts
    assert set(d.hosts) == {"rabbitmq-1", "redis-1", "worker-1", "client-1"}


# --------------------------------------------------------------------------- Celery roles


def _with_operator(groups: dict) -> dict:
    groups["celery_operators"] = {"ops-1": {"ansible_host": "127.0.0.5"}}
    return groups


def test_each_celery_group_is_a_role(write_inventory, basic_groups) -> None:
    d = model.load(write_inventory(_with_operator(basic_groups)))
    assert [(h.name, h.role) for h in d.apps] == [("worker-1", "worker"), ("client-1", "client"),
                                                  ("ops-1", "operator")]


def test_a_broker_host_has_no_celery_role(inventory) -> None:
    assert model.load(inventory).host("rabbitmq-1").role is None


def test_a_host_in_two_celery_groups_is_refused(write_inventory, basic_groups) -> None:
    basic_groups["celery_clients"]["worker-1"] = {"ansible_host": "127.0.0.3"}
    with pytest.raises(ProvisionError, match="exactly one Celery role"):
        model.load(write_inventory(basic_groups))


def test_queues_are_per_host_with_the_deployment_wide_list_as_default(write_inventory, basic_groups) -> None:
    basic_groups["celery_workers"]["worker-2"] = {"ansible_host": "127.0.0.6", "celery_provision_queues": ["mail"]}
    d = model.load(write_inventory(basic_groups, {"celery_provision_queues": ["celery", "mail"]}))
    assert (d.host("worker-1").queues, d.host("worker-2").queues) == (("celery", "mail"), ("mail",))


def test_task_queues_are_every_queue_some_worker_consumes_once(write_inventory, basic_groups) -> None:
    basic_groups["celery_workers"]["worker-2"] = {"ansible_host": "127.0.0.6", "celery_provision_queues": ["mail", "celery"]}
    assert model.load(write_inventory(basic_groups)).task_queues == ("celery", "mail")


def test_an_operator_has_no_queues(write_inventory, basic_groups) -> None:
    assert model.load(write_inventory(_with_operator(basic_groups))).host("ops-1").queues == ()


def test_a_client_queue_no_worker_consumes_is_refused(write_inventory, basic_groups) -> None:
    basic_groups["celery_clients"]["client-1"]["celery_provision_queues"] = ["celery", "nobody"]
    with pytest.raises(ProvisionError, match="no worker consumes 'nobody'"):
        model.load(write_inventory(basic_groups))


def test_remote_control_is_on_only_when_operators_exist(write_inventory, basic_groups, inventory) -> None:
    assert model.load(inventory).remote_control is False
    assert model.load(write_inventory(_with_operator(basic_groups), name="ops")).remote_control is True


def test_an_operator_talks_to_the_broker_only(write_inventory, basic_groups) -> None:
    d = model.load(write_inventory(_with_operator(basic_groups)))
    assert (d.services(d.host("ops-1")), d.services(d.host("client-1"))) == (["rabbitmq"], ["rabbitmq", "redis"])


def test_workers_and_producers_may_call_every_task_by_default_operators_none(write_inventory, basic_groups) -> None:
    basic_groups["celery_operators"] = {"ops-1": {"ansible_host": "127.0.0.9"}}
    d = model.load(write_inventory(basic_groups))
    assert {h.role: h.allowed_tasks for h in d.apps} == {"worker": ("*",), "client": ("*",), "operator": ()}


def test_a_hosts_allowed_tasks_are_its_own_patterns_once_each(write_inventory, basic_groups) -> None:
    basic_groups["celery_clients"]["client-1"]["celery_provision_allowed_tasks"] = ["app.*", "billing.charge", "app.*"]
    d = model.load(write_inventory(basic_groups))
    assert d.host("client-1").allowed_tasks == ("app.*", "billing.charge")


# --------------------------------------------------------------------------- RabbitMQ cluster


def _three_rabbitmq(basic_groups, **group_vars):  # noqa: ANN001, ANN202
    basic_groups["rabbitmq"] = {f"rabbitmq-{i}": {"ansible_host": f"10.0.0.{i}", **group_vars} for i in (1, 2, 3)}
    return basic_groups


def test_several_rabbitmq_hosts_are_independent_brokers_unless_marked_as_a_cluster(
        write_inventory, basic_groups) -> None:  # noqa: ANN001
    d = model.load(write_inventory(_three_rabbitmq(basic_groups)))
    assert not d.rabbitmq_cluster
    assert {d.rabbitmq_nodename(h) for h in d.group("rabbitmq")} == {"rabbit@localhost"}


def test_a_cluster_names_each_node_after_its_address_with_long_names(write_inventory, basic_groups) -> None:  # noqa: ANN001
    d = model.load(write_inventory(_three_rabbitmq(basic_groups, rabbitmq_cluster=True)))
    assert d.rabbitmq_cluster and d.rabbitmq_longnames
    assert [d.rabbitmq_nodename(h) for h in d.group("rabbitmq")] == ["rabbit@10.0.0.1", "rabbit@10.0.0.2",
                                                                     "rabbit@10.0.0.3"]


def test_a_cluster_of_short_host_names_keeps_short_node_names(write_inventory, basic_groups) -> None:  # noqa: ANN001
    basic_groups["rabbitmq"] = {f"mq-{i}": {"rabbitmq_cluster": True} for i in (1, 2)}
    d = model.load(write_inventory(basic_groups))
    assert not d.rabbitmq_longnames
    assert [d.rabbitmq_nodename(h) for h in d.group("rabbitmq")] == ["rabbit@mq-1", "rabbit@mq-2"]


def test_a_cluster_mixing_short_names_and_addresses_is_refused(write_inventory, basic_groups) -> None:  # noqa: ANN001
    basic_groups["rabbitmq"] = {"mq-1": {"rabbitmq_cluster": True},
                                "mq-2": {"ansible_host": "10.0.0.2", "rabbitmq_cluster": True}}
    with pytest.raises(ProvisionError, match="all long or all short"):
        model.load(write_inventory(basic_groups))


def test_cluster_nodes_certificates_serve_and_authenticate_with_per_host_names(write_inventory, basic_groups) -> None:  # noqa: ANN001
    d = model.load(write_inventory(_three_rabbitmq(basic_groups, rabbitmq_cluster=True)))
    specs = {s.name: s for s in pki.leaf_specs(d)}
    for i in (1, 2, 3):
        spec = specs[f"rabbitmq-{i}/server"]
        assert spec.eku == ("serverAuth", "clientAuth")
        # The node's own name and address (what the CLI tools and peers check), then the
        # cluster's service name; never a wildcard. The address also as a DNS name: the host
        # part of rabbit@<address>, which Erlang's TLS distribution checks as one.
        assert spec.sans == (f"rabbitmq-{i}", f"10.0.0.{i}", "rabbitmq", f"dns:10.0.0.{i}")


def test_a_cluster_nodes_certificate_names_its_address_as_ip_and_as_dns_name_and_stays_issued(
        write_inventory, basic_groups) -> None:  # noqa: ANN001
    from cryptography import x509

    d = model.load(write_inventory(_three_rabbitmq(basic_groups, rabbitmq_cluster=True)))
    pki.issue(d)
    cert = x509.load_pem_x509_certificate(d.layout.cert("rabbitmq-1", "server").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "10.0.0.1" in sans.get_values_for_type(x509.DNSName)
    assert "10.0.0.1" in [str(a) for a in sans.get_values_for_type(x509.IPAddress)]
    assert not pki.issue(d).changed  # the re-run judges it as what the spec asks


def test_independent_brokers_get_server_auth_only(write_inventory, basic_groups) -> None:  # noqa: ANN001
    d = model.load(write_inventory(_three_rabbitmq(basic_groups)))
    assert {s.eku for s in pki.leaf_specs(d) if s.host.startswith("rabbitmq-")} == {("serverAuth",)}


# --------------------------------------------------------------------------- Redis replication + Sentinel


def _replicated(groups: dict, n: int = 3, **extra: object) -> dict:
    """The `redis` group as *n* hosts of one replicated Redis under Sentinel."""
    groups["redis"] = {f"redis-{i}": {"ansible_host": f"127.0.1.{i}", "redis_sentinel": True, **extra}
                       for i in range(1, n + 1)}
    return groups


def test_without_redis_sentinel_the_redis_hosts_are_not_replicated(inventory) -> None:
    assert model.load(inventory).replication is None


def test_the_first_redis_host_is_the_initial_primary_the_others_its_replicas(write_inventory, basic_groups) -> None:
    r = model.load(write_inventory(_replicated(basic_groups))).replication
    assert (r.primary.name, [h.name for h in r.replicas]) == ("redis-1", ["redis-2", "redis-3"])


def test_a_host_var_names_another_initial_primary(write_inventory, basic_groups) -> None:
    r = model.load(write_inventory(_replicated(basic_groups, redis_replication_primary="redis-3"))).replication
    assert (r.primary.name, [h.name for h in r.hosts]) == ("redis-3", ["redis-3", "redis-1", "redis-2"])


def test_sentinel_defaults_come_from_the_role(write_inventory, basic_groups) -> None:
    r = model.load(write_inventory(_replicated(basic_groups))).replication
    assert (r.master_name, r.sentinel_port, r.users) == ("celery", 26379, ("replica", "sentinel", "sentinel-peer"))


@pytest.mark.parametrize(("hosts", "quorum"), [(3, 2), (4, 3), (5, 3)])
def test_the_default_quorum_is_a_majority_of_the_sentinels(write_inventory, basic_groups, hosts, quorum) -> None:
    assert model.load(write_inventory(_replicated(basic_groups, hosts))).replication.quorum == quorum


def test_an_explicit_quorum_is_kept(write_inventory, basic_groups) -> None:
    assert model.load(write_inventory(_replicated(basic_groups, 5, redis_sentinel_quorum=4))).replication.quorum == 4


@pytest.mark.parametrize("hosts", [1, 2])
def test_sentinel_with_fewer_than_three_hosts_is_refused(write_inventory, basic_groups, hosts) -> None:
    with pytest.raises(ProvisionError, match="at least 3 hosts in the group 'redis'"):
        model.load(write_inventory(_replicated(basic_groups, hosts)))


def test_a_quorum_above_the_number_of_sentinels_is_refused(write_inventory, basic_groups) -> None:
    with pytest.raises(ProvisionError, match="redis_sentinel_quorum: expected 0 .* to 3, got 4"):
        model.load(write_inventory(_replicated(basic_groups, redis_sentinel_quorum=4)))


@pytest.mark.parametrize(("name", "value"), [("redis_sentinel", False), ("redis_sentinel_port", 26380),
                                             ("redis_sentinel_master_name", "other")])
def test_redis_hosts_disagreeing_on_a_replication_setting_are_refused(write_inventory, basic_groups, name,
                                                                       value) -> None:
    groups = _replicated(basic_groups)
    groups["redis"]["redis-2"][name] = value
    with pytest.raises(ProvisionError, match=f"redis hosts disagree on {name} .*set it once for the group"):
        model.load(write_inventory(groups))


def test_an_initial_primary_outside_the_group_is_refused(write_inventory, basic_groups) -> None:
    with pytest.raises(ProvisionError, match="redis_replication_primary: 'worker-1' is not a host of the group"):
        model.load(write_inventory(_replicated(basic_groups, redis_replication_primary="worker-1")))


def test_an_internal_redis_user_named_like_an_app_host_is_refused(write_inventory, basic_groups) -> None:
    with pytest.raises(ProvisionError, match="Redis user 'worker-1' .* is also the host 'worker-1'"):
        model.load(write_inventory(_replicated(basic_groups, redis_replication_user="worker-1")))


def test_two_internal_redis_users_of_one_name_are_refused(write_inventory, basic_groups) -> None:
    with pytest.raises(ProvisionError, match="Redis user 'sentinel' .* is also the Redis user 'sentinel'"):
        model.load(write_inventory(_replicated(basic_groups, redis_sentinel_peer_user="sentinel")))


def test_sentinel_on_the_redis_tls_port_is_refused(write_inventory, basic_groups) -> None:
    with pytest.raises(ProvisionError, match="Sentinel needs a port of its own"):
        model.load(write_inventory(_replicated(basic_groups, redis_sentinel_port=6380)))


def test_replicated_redis_servers_get_client_auth_too(write_inventory, basic_groups) -> None:
    d = model.load(write_inventory(_replicated(basic_groups)))
    ekus = {s.host: s.eku for s in pki.leaves.leaf_specs(d) if s.kind == "server"}
    assert ekus == {"rabbitmq-1": ("serverAuth",), **{f"redis-{i}": ("serverAuth", "clientAuth") for i in (1, 2, 3)}}


def test_a_lone_redis_server_keeps_server_auth_only(inventory) -> None:
    ekus = {s.host: s.eku for s in pki.leaves.leaf_specs(model.load(inventory)) if s.kind == "server"}
    assert ekus["redis-1"] == ("serverAuth",)


def test_a_replicated_redis_host_without_an_ip_address_is_refused(write_inventory, basic_groups) -> None:
    groups = _replicated(basic_groups)
    groups["redis"]["redis-2"]["ansible_host"] = "cache-2.example.com"
    with pytest.raises(ProvisionError, match="'redis-2' have no IP address"):
        model.load(write_inventory(groups))
