"""The fast inventory loading path gives exactly what ansible-core's per-host `get_vars` gives.

`model.load` reads every host's variables through `_vars_reader` (group levels computed once
per set of groups) and compiles each templated role default once. The reference is the old
path: `VariableManager.get_vars(host=h, include_hostvars=False)` for every host (`_host_vars`)
and a fresh jinja compilation per host and value. Each tricky inventory below is loaded both
ways; the Deployments (hosts, addresses, role variables, settings, state paths), each host's
raw variables, and the errors (message and file:line) must be equal.
"""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import pytest

from celery_provision import model
from celery_provision.errors import ProvisionError


def _reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """Switch `model.load` to the old path: get_vars per host, a jinja compile per value."""
    monkeypatch.setattr(model, "_vars_reader",
                        lambda variables, path: lambda host: model._host_vars(variables, host, path))
    monkeypatch.setattr(model, "_template",
                        lambda source: jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(source))


def _outcome(load: Callable[[], model.Deployment]) -> Any:
    """What a load gives: the Deployment with each host's role variables, or the error."""
    try:
        d = load()
    except ProvisionError as exc:
        return ("error", exc.message, exc.where)
    return ("ok", d, {name: dict(h.role_vars) for name, h in d.hosts.items()})


def _both(inventory: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    fast = _outcome(lambda: model.load(inventory))
    with monkeypatch.context() as m:
        _reference(m)
        slow = _outcome(lambda: model.load(inventory))
    return fast, slow


def _raw_vars_equal(inventory: Path) -> None:
    """Every host's variables, as the reader returns them and as get_vars does."""
    inv, variables = model._load_inventory(inventory)
    read = model._vars_reader(variables, inventory)
    for host in inv.get_hosts():
        assert read(host) == model._host_vars(variables, host, inventory), host.name


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


# Nested groups, priorities, INI group vars, a group_vars directory and files, host_vars
# file and directory, a host in several groups, host vars overriding group vars.
INI_NESTED = {
    "hosts.ini": """
        [rabbitmq]
        mq-1 ansible_host=192.0.2.11
        mq-2 ansible_host=192.0.2.12 rabbitmq_admin_user=ops

        [redis]
        cache-1 ansible_host=192.0.2.21

        [celery_workers]
        worker-1 ansible_host=192.0.2.31
        worker-2 ansible_host=192.0.2.32 celery_worker_config_name=two.py
        worker-3 ansible_host=192.0.2.33
        cache-1

        [celery_clients]
        web-1 ansible_host=192.0.2.41

        [zone_a]
        worker-1
        worker-3
        web-1

        [zone_b:children]
        zone_a

        [fast:children]
        celery_workers

        [celery_workers:vars]
        celery_worker_config_name=from_ini.py
        celery_worker_config_dir=/from/workers

        [zone_a:vars]
        ansible_group_priority=10
        celery_worker_config_name=zone_a.py
        celery_worker_config_dir=/srv/{{ inventory_hostname }}/{{ group_names | join('-') }}

        [zone_b:vars]
        celery_worker_config_name=zone_b.py

        [all:vars]
        celery_provision_vhost=fromini
        """,
    "group_vars/all.yml": """
        celery_provision_queues: [celery, mail]
        celery_provision_key_type: ec-p384
        celery_provision_vhost: fromfile
        celery_provision_extra_sans: []
        celery_provision_num: 5
        celery_provision_flag: true
        nothing: null
        """,
    "group_vars/celery_workers/main.yml": """
        celery_worker_signer_dir: "{{ celery_worker_config_dir }}/trusted"
        """,
    "group_vars/celery_workers/more.yaml": """
        celery_provision_extra_sans: [workers.example.org]
        """,
    "group_vars/fast.yml": """
        celery_worker_config_name: fast.py
        """,
    "group_vars/rabbitmq.yml": """
        rabbitmq_tls_port: 15671
        """,
    "host_vars/worker-3.yml": """
        celery_worker_config_dir: /opt/three
        celery_worker_config_name: "w{{ celery_provision_num }}-{{ celery_provision_flag }}{{ nothing }}.py"
        celery_provision_extra_sans: [worker-3.example.org, 198.51.100.7]
        """,
    "host_vars/web-1/main.yml": """
        celery_provision_address: 192.0.2.99
        """,
}

YAML_INLINE = {
    "prod.yml": """
        all:
          vars:
            celery_provision_vhost: jobs
            celery_provision_broker: redis
          children:
            redis:
              vars: {redis_tls_port: 7000}
              hosts:
                r1: {ansible_host: 192.0.2.1}
                r2: {ansible_host: 192.0.2.2, redis_tls_port: 7000}
            celery_workers:
              vars:
                ansible_group_priority: 3
                celery_worker_config_dir: "/w/{{ inventory_hostname_short }}"
              hosts:
                w1.example.org: {ansible_host: 192.0.2.3}
                w2: {ansible_host: 192.0.2.4, celery_worker_config_dir: /custom}
              children:
                gpu:
                  vars: {celery_worker_config_name: gpu.py, ansible_group_priority: 1}
                  hosts:
                    w3: {ansible_host: 192.0.2.5}
            celery_clients:
              hosts:
                c1: {ansible_host: 192.0.2.6}
        """,
    "group_vars/gpu.yml": """
        celery_worker_config_name: gpu-from-file.py
        """,
}

# Two sources in one directory, the same host in both; group_vars beside them.
TWO_SOURCES = {
    "a.ini": """
        [rabbitmq]
        mq-1 ansible_host=192.0.2.11
        [celery_workers]
        w1 ansible_host=192.0.2.31
        """,
    "b.yml": """
        celery_workers:
          hosts:
            w1: {celery_worker_config_name: b.py}
            w2: {ansible_host: 192.0.2.32}
        """,
    "group_vars/celery_workers.yml": """
        celery_worker_config_dir: /from/group_vars
        """,
}

CASES = {"ini_nested": INI_NESTED, "yaml_inline": YAML_INLINE, "two_sources": TWO_SOURCES}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fast_path_equals_get_vars_per_host(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inv = _tree(tmp_path / case, CASES[case])
    target = inv / "prod.yml" if case == "yaml_inline" else inv
    fast, slow = _both(target, monkeypatch)
    assert fast[0] == "ok", fast
    assert fast == slow
    _raw_vars_equal(target)


def test_the_nested_case_exercises_what_it_claims(tmp_path: Path) -> None:
    """Guard against a fixture that tests nothing: each precedence rule shows in the result."""
    d = model.load(_tree(tmp_path / "inv", INI_NESTED))
    assert d.host("mq-1").var("rabbitmq_tls_port") == 15671                      # group_vars file
    assert d.host("mq-2").var("rabbitmq_admin_user") == "ops"                    # inventory host var
    assert d.host("worker-2").var("celery_worker_config_name") == "two.py"       # host over group
    # group_vars files (plugins) over the inventory's group vars, whatever the priority
    assert d.host("worker-1").var("celery_worker_config_name") == "fast.py"
    # same depth: zone_a's ansible_group_priority 10 over celery_workers' 1
    assert d.host("worker-1").var("celery_worker_config_dir") == "/srv/worker-1/celery_workers-fast-zone_a-zone_b"
    assert d.host("worker-2").var("celery_worker_config_dir") == "/from/workers"
    assert d.host("worker-3").var("celery_worker_config_dir") == "/opt/three"    # host_vars file
    assert d.host("worker-3").var("celery_worker_signer_dir") == "/opt/three/trusted"
    assert d.host("worker-3").var("celery_worker_config_name") == "w5-TrueNone.py"  # str() of each value
    assert d.host("web-1").address == "192.0.2.99"                               # host_vars directory
    assert d.host("worker-1").extra_sans == ("workers.example.org",)
    assert d.settings.vhost == "fromfile"                                        # group_vars/all over [all:vars]


def test_playbook_adjacent_vars_from_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ansible-core also reads group_vars/ and host_vars/ beside the 'playbook' (the cwd)."""
    inv = _tree(tmp_path / "inv", INI_NESTED)
    cwd = _tree(tmp_path / "cwd", {
        "group_vars/zone_a.yml": "celery_worker_config_name: from_cwd.py\n",
        "host_vars/worker-2.yml": "celery_worker_config_dir: /cwd/two\n",
    })
    monkeypatch.chdir(cwd)
    # host_group_vars caches the realpath of the 'playbook' dir ('.') for the process.
    from ansible.plugins.loader import vars_loader

    plugin_module = sys.modules[type(vars_loader.get("host_group_vars")).__module__]
    monkeypatch.setattr(plugin_module, "CANONICAL_PATHS", {})
    fast, slow = _both(inv, monkeypatch)
    assert fast[0] == "ok" and fast == slow
    assert fast[1].host("worker-2").var("celery_worker_config_dir") == "/cwd/two"
    _raw_vars_equal(inv)


def test_merge_hash_behaviour_and_reordered_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader follows ansible-core's configuration: hash_behaviour and VARIABLE_PRECEDENCE."""
    from ansible import constants as C

    inv = _tree(tmp_path / "inv", {**INI_NESTED,
                                   "group_vars/zone_a.yml": "celery_provision_extra: {a: 1, b: {c: 2}}\n",
                                   "group_vars/celery_workers/x.yml": "celery_provision_extra: {b: {d: 3}}\n"})
    monkeypatch.setattr(C, "DEFAULT_HASH_BEHAVIOUR", "merge")
    monkeypatch.setattr(C, "VARIABLE_PRECEDENCE", list(reversed(C.VARIABLE_PRECEDENCE)))
    fast, slow = _both(inv, monkeypatch)
    assert fast[0] == "ok" and fast == slow
    _raw_vars_equal(inv)


def test_a_host_with_cached_facts_reads_them_as_ansible_core_does(tmp_path: Path) -> None:
    inv = _tree(tmp_path / "inv", INI_NESTED)
    inventory, variables = model._load_inventory(inv)
    variables._fact_cache.set("worker-1", {"ansible_local": {"x": 1}, "distribution": "Debian"})
    read = model._vars_reader(variables, inv)
    for host in inventory.get_hosts():
        assert read(host) == model._host_vars(variables, host, inv), host.name


BROKEN = {
    "group_vars_syntax": {"group_vars/zone_a.yml": "celery_worker_config_name: [unclosed\n"},
    "host_vars_syntax": {"host_vars/worker-3.yml": "a: b: c\n"},
    "bad_type_in_group_vars": {"group_vars/zone_a.yml": "celery_worker_config_dir: /x\ncelery_provision_extra_sans: 7\n"},
    "bad_type_in_host_vars": {"host_vars/worker-3.yml": "celery_provision_address: [1]\n"},
    "bad_template": {"group_vars/fast.yml": "celery_worker_config_name: \"{{ nope }}\"\n"},
    "bad_template_syntax": {"host_vars/worker-1.yml": "celery_worker_config_dir: \"{{ oops\"\n"},
    "self_reference": {"host_vars/worker-1.yml": "celery_worker_config_dir: \"{{ celery_worker_signer_dir }}\"\n"},
    "bad_setting": {"group_vars/all.yml": "celery_provision_key_type: rsa1024\n"},
    "bad_port": {"group_vars/rabbitmq.yml": "rabbitmq_tls_port: \"{{ 70000 }}\"\n"},
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_errors_are_the_same_with_their_file_and_line(case: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    inv = _tree(tmp_path / case, {**INI_NESTED, **BROKEN[case]})
    fast, slow = _both(inv, monkeypatch)
    assert fast[0] == "error", fast
    assert fast == slow
    if case.startswith("bad_type") or case == "bad_setting":
        assert os.fspath(inv) in str(fast[2]) and ":" in str(fast[2])  # file:line from the tag


def test_many_hosts_share_group_levels_but_keep_their_own_vars(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A generated inventory like the benchmark's, with a few host_vars among many hosts."""
    lines = ["[rabbitmq]", "mq-1 ansible_host=10.255.0.1", "", "[celery_workers]"]
    lines += [f"worker-{i} ansible_host=10.0.{i // 256}.{i % 256}" for i in range(300)]
    lines += ["", "[zone_a]", *[f"worker-{i}" for i in range(0, 300, 7)]]
    files = {"hosts.ini": "\n".join(lines) + "\n",
             "group_vars/all.yml": "celery_provision_key_type: ec-p384\n",
             "group_vars/zone_a.yml": "celery_worker_config_name: zone.py\n"}
    files |= {f"host_vars/worker-{i}.yml": f"celery_worker_config_dir: /opt/w{i}\n" for i in (1, 7, 42, 299)}
    inv = _tree(tmp_path / "many", files)
    fast, slow = _both(inv, monkeypatch)
    assert fast[0] == "ok" and fast == slow
    role_vars = fast[2]
    assert role_vars["worker-7"]["celery_worker_config_dir"] == "/opt/w7"
    assert role_vars["worker-7"]["celery_worker_config_name"] == "zone.py"
    assert role_vars["worker-8"]["celery_worker_config_dir"] == "/etc/celery-provision/worker-8"


def test_the_fast_path_is_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No per-host get_vars on an ordinary inventory (else the tests above compare the
    reference with itself)."""
    from ansible.vars.manager import VariableManager

    calls: list[str] = []
    real = VariableManager.get_vars

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(getattr(kwargs.get("host"), "name", "?"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(VariableManager, "get_vars", counting)
    model.load(_tree(tmp_path / "inv", INI_NESTED))
    assert calls == []
