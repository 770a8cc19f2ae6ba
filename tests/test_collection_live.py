"""The collection used from outside: installed from its tarball into a fresh collections
path, called by FQCN from a user's own playbook in a project directory away from the
checkout, run by the wheel's virtualenv, it converges the live local deployment, whose
`celery-provision verify` stays green, and a second run changes nothing.

The project is what the README tells a user to set up: a copy of ``inventories/local``
beside the playbook, its state (``.celery-provision/local``: PKI, passwords) the live
deployment's own, so nothing is reissued and the roles find everything through the model
the collection's controller play reads with the wheel's CLI, none of this repository's
layout."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from distbuild import clean_env, dependencies_path, installed_collection, run, wheel_venv
from livedeploy import LocalDeployment

from celery_provision.layout import state_dir

pytestmark = [pytest.mark.live, pytest.mark.slow]

#: A user's playbook, each way of calling the collection once: its playbooks by FQCN
#: (controller, rabbitmq, workers), a role by ``import_role`` (redis) and by ``roles:``
#: (firewall), with the variables the README says a direct call takes (the model's).
USER_PLAYBOOK = """\
---
- name: Controller (PKI, passwords, the deployment model)
  ansible.builtin.import_playbook: celery_provision.secure.controller

- name: Redis, the user's own play
  hosts: redis
  become: true
  gather_facts: true
  vars:
    my_redis: "{{ hostvars['localhost'].celery_provision_model.hosts[inventory_hostname] }}"
  tasks:
    - name: The redis role by FQCN
      ansible.builtin.import_role:
        name: celery_provision.secure.redis
      vars:
        redis_bind_addresses: ["{{ my_redis.redis.bind_address }}"]
        redis_tls_ca_src: "{{ my_redis.tls.ca }}"
        redis_tls_cert_src: "{{ my_redis.tls.server_cert }}"
        redis_tls_key_src: "{{ my_redis.tls.server_key }}"
        redis_users: "{{ my_redis.redis.users }}"
        redis_admin_user: "{{ my_redis.redis.admin_user }}"
        redis_admin_password: "{{ my_redis.redis.admin_password }}"
        redis_broker: "{{ my_redis.redis.broker }}"
        redis_backend: "{{ my_redis.redis.backend }}"
        redis_firewall_allowed_sources: "{{ my_redis.redis.allowed_sources }}"

- name: RabbitMQ
  ansible.builtin.import_playbook: celery_provision.secure.rabbitmq

- name: The broker firewall, the user's own play
  hosts: rabbitmq:redis
  become: true
  gather_facts: false
  roles:
    - role: celery_provision.secure.firewall
      vars:
        firewall_rules: "{{ (rabbitmq_firewall_rules | default([])) + (redis_firewall_rules | default([])) }}"

- name: Workers, clients and operators
  ansible.builtin.import_playbook: celery_provision.secure.celery_workers
"""


@pytest.fixture(scope="session")
def user_tools(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """The wheel's virtualenv (bin/) and the collections path holding the installed tarball.
    Session-scoped and asked for before `local_deployment`, so a run of this file alone
    builds both before it takes the live lock."""
    base = tmp_path_factory.mktemp("user")
    yield wheel_venv(base / "wheel"), installed_collection(base / "collection")


def _changed(recap: str) -> int:
    return sum(int(n) for n in re.findall(r"\bchanged=(\d+)", recap.split("PLAY RECAP", 1)[-1]))


def test_a_users_playbook_converges_the_local_deployment_by_fqcn(
    user_tools: tuple[Path, Path], local_deployment: LocalDeployment, tmp_path: Path
) -> None:
    venv_bin, collections = user_tools
    project = tmp_path / "project"
    shutil.copytree(local_deployment.inventory, project / "inventories" / "local")
    (project / "inventories" / ".celery-provision").mkdir()
    (project / "inventories" / ".celery-provision" / "local").symlink_to(state_dir(local_deployment.inventory))
    (project / "deploy.yml").write_text(USER_PLAYBOOK)
    env = clean_env(
        ANSIBLE_COLLECTIONS_PATH=os.pathsep.join(map(str, (collections, dependencies_path()))),
        ANSIBLE_ROLES_PATH=str(tmp_path / "no-roles"),  # nothing by short name from anywhere
        PATH=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    playbook = [venv_bin / "ansible-playbook", "-i", "inventories/local", "deploy.yml"]

    run([*playbook, "--syntax-check"], project, env)
    first = run(playbook, project, env, timeout=1800).stdout
    verify = run([venv_bin / "celery-provision", "verify", "-i", "inventories/local"], project, env).stdout
    assert re.search(r"verify: \d+ passed, 0 failed", verify), verify[-3000:]
    # The deployment was converged by the repository's playbooks: the collection's roles
    # are the same roles, so the user's playbook finds nothing to change either.
    assert _changed(first) == 0, first[-6000:]
    second = run(playbook, project, env, timeout=1800).stdout
    assert _changed(second) == 0, second[-6000:]
