"""A replicated Redis under Sentinel, TLS and ACL everywhere, with real Celery on top.

The group of tests/sentinelgroup.py: a primary, two replicas and three Sentinels configured
from the redis role's templates. A Celery worker and producer use the configuration
rendered for their hosts (sentinel:// URLs, master_name, sentinel_kwargs), unchanged.

The failover test kills the primary and runs last.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from livekit import pem_to_der, served_certificate
from sentinelgroup import ADDRESSES, REPO, Group, Node, platform_vars, sentinel_group, wait

pytestmark = [pytest.mark.live, pytest.mark.slow]

redis = pytest.importorskip("redis")
celery = pytest.importorskip("celery")

TIMEOUT = float(os.environ.get("LIVE_TIMEOUT", "20"))

TASKS = '''
import os
from celery import Celery
from celery_provision.runtime import secure

app = Celery("sentineltasks")
app.config_from_object(os.environ["LIVE_CELERY_CONF"])  # the rendered module itself
secure(app)


@app.task
def add(x, y):
    return x + y
'''


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Group]:
    with sentinel_group(tmp_path_factory.mktemp("sentinel")) as g:
        yield g


def _acl_log(client: Any) -> list[str]:
    return [f"{e['username']}: {e['reason']} {e['object']}" for e in client.acl_log()]


# --------------------------------------------------------------------------- replication and Sentinel


def test_replicas_follow_the_primary_over_tls(group: Group) -> None:
    primary = group.server(group.nodes[0].address).info("replication")
    assert (primary["role"], primary["connected_slaves"]) == ("master", 2)
    for n in group.nodes[1:]:
        info = group.server(n.address).info("replication")
        assert (info["role"], info["master_host"], info["master_link_status"]) == ("slave", ADDRESSES[0], "up")


def test_three_sentinels_agree_on_the_primary(group: Group) -> None:
    assert group.primaries() == {(ADDRESSES[0], group.port)}


def test_sentinels_and_replicas_were_refused_nothing(group: Group) -> None:
    time.sleep(1.5)  # a round of hellos, pings and INFO
    denials = [f"{n.name}: {d}" for n in group.nodes for client in (group.server(n.address), group.sentinel(n.address))
               for d in _acl_log(client)]
    assert not denials, "\n".join(denials)


# One attempt: redis-py retries a refused connection three times by default.
_ONCE = redis.retry.Retry(redis.backoff.NoBackoff(), 0)


def test_sentinel_refuses_a_plaintext_connection(group: Group) -> None:
    plain = redis.Redis(host=ADDRESSES[0], port=group.sentinel_port, socket_timeout=3, retry=_ONCE)
    with pytest.raises(redis.exceptions.ConnectionError):
        plain.ping()


def test_sentinel_refuses_a_tls_client_without_a_certificate(group: Group) -> None:
    anonymous = redis.Redis(host=ADDRESSES[0], port=group.sentinel_port, socket_timeout=3, ssl=True, retry=_ONCE,
                            ssl_ca_certs=group.tls["ssl_ca_certs"], ssl_cert_reqs="required",
                            username=group.admin, password=group.passwords[group.admin])
    with pytest.raises(redis.exceptions.ConnectionError):
        anonymous.ping()


@pytest.mark.parametrize("command", [("SENTINEL", "SET", "celery", "quorum", "1"), ("SENTINEL", "REMOVE", "celery"),
                                     ("SENTINEL", "FAILOVER", "celery"),
                                     ("SENTINEL", "CONFIG", "SET", "resolve-hostnames", "yes"),
                                     ("SENTINEL", "DEBUG"), ("ACL", "LIST"), ("SHUTDOWN",),
                                     ("SENTINEL", "RESET", "*")])
def test_a_celery_user_on_sentinel_cannot_change_it(group: Group, command: tuple[str, ...]) -> None:
    client = group.sentinel(ADDRESSES[0], "client-1")
    assert client.execute_command("SENTINEL", "MASTERS")[0][b"name"] == group.master.encode()
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.execute_command(*command)


def test_the_replication_user_reads_and_writes_no_key(group: Group) -> None:
    replica = group.server(ADDRESSES[0], "replica")
    assert replica.ping()
    for command in (("GET", "celery"), ("KEYS", "*"), ("SET", "x", "1")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            replica.execute_command(*command)


def test_the_sentinel_user_on_the_servers_reads_no_key(group: Group) -> None:
    sentinel = group.server(ADDRESSES[0], "sentinel")
    for command in (("GET", "celery"), ("KEYS", "*"), ("FLUSHALL",)):
        with pytest.raises(redis.exceptions.NoPermissionError):
            sentinel.execute_command(*command)


def test_verify_checks_every_sentinel_and_that_they_agree(group: Group) -> None:
    from celery_provision import verify

    d = group.deployment
    checks = verify.sentinel_checks(d, d.host("client-1"))
    failed = [c for c in checks if not c.ok]
    assert not failed, failed
    assert [c.target for c in checks if c.check == "client without certificate refused"] == [
        f"sentinel redis-{i} {a}:{group.sentinel_port}" for i, a in enumerate(ADDRESSES, 1)]
    assert checks[-1].check == "Sentinels agree on the primary"


def test_verify_fails_when_a_sentinel_names_another_primary(group: Group) -> None:
    from celery_provision import verify

    d = group.deployment
    stray = group.sentinel(ADDRESSES[2])
    stray.execute_command("SENTINEL", "REMOVE", group.master)
    try:
        stray.execute_command("SENTINEL", "MONITOR", group.master, ADDRESSES[1], group.port, 2)
        (agree,) = [c for c in verify.sentinel_checks(d, d.host("client-1")) if c.check.startswith("Sentinels agree")]
        assert not agree.ok and f"{ADDRESSES[1]}:{group.port}" in agree.detail
    finally:
        stray.execute_command("SENTINEL", "REMOVE", group.master)
        stray.execute_command("SENTINEL", "MONITOR", group.master, ADDRESSES[0], group.port, 2)
        for option, value in (("auth-user", "sentinel"), ("auth-pass", group.passwords["sentinel"]),
                              ("down-after-milliseconds", "1000"), ("failover-timeout", "5000")):
            stray.execute_command("SENTINEL", "SET", group.master, option, value)
        wait(lambda: group.primaries() == {(ADDRESSES[0], group.port)} and int(
            stray.execute_command("SENTINEL", "MASTER", group.master)[b"num-slaves"]) == 2, "the Sentinel restored")


# --------------------------------------------------------------------------- rotation


ROTATE = """
- hosts: all
  gather_facts: false
  tasks:
    - name: The role (its handlers; replication.yml changes nothing)
      ansible.builtin.include_role:
        name: redis
        tasks_from: replication
    - name: New TLS files, notified as tls.yml notifies them
      ansible.builtin.copy:
        src: "{{ item.src }}"
        dest: "{{ redis_tls_dir }}/{{ item.dest }}"
        mode: "0600"
      loop:
        - {src: "{{ rotate_cert }}", dest: server.pem}
        - {src: "{{ rotate_key }}", dest: server.key}
      notify: Reload redis TLS
"""


def test_the_roles_tls_handler_makes_each_running_server_serve_a_rotated_certificate(group: Group) -> None:
    """The `Reload redis TLS` handler (CONFIG SET of the TLS files, logged in with the host's
    server certificate): the same process serves the new certificate, nothing restarts (a
    restart would reach no service here: `_redis_service` names none)."""
    from celery_provision import pki

    d = group.deployment
    hosts = [n.name for n in group.nodes]
    pids = {n.name: n.pid("redis") for n in group.nodes}
    assert pki.issue(d, renew_within_days=400, only=hosts).count("renewed") == len(hosts)
    for n in group.nodes:
        out = group.tmp / f"rotate-{n.name}"
        out.mkdir()
        changed = _run_role(group, n, out, ROTATE, rotate_cert=str(d.layout.cert(n.name, "server")),
                            rotate_key=str(d.layout.key(n.name, "server")), _redis_service="no-such-service")
        assert changed == 2  # the files, and the handler's CONFIG SET
        assert _served(group, n) == pem_to_der(d.layout.cert(n.name, "server"))
    assert {n.name: n.pid("redis") for n in group.nodes} == pids


def _served(group: Group, node: Node) -> bytes:
    """The DER certificate *node*'s server presents to a new TLS connection now."""
    tls = group.tls
    return served_certificate(node.address, group.port, Path(tls["ssl_ca_certs"]), Path(tls["ssl_certfile"]),
                              Path(tls["ssl_keyfile"]))


# --------------------------------------------------------------------------- Celery through Sentinel


def test_the_rendered_configs_reach_redis_through_tls_sentinels(group: Group) -> None:
    for name in ("worker-1", "client-1"):
        conf = group.configs[name]
        urls = conf["broker_url"].split(";")
        assert [u.split("@")[1] for u in urls] == [f"{a}:{group.sentinel_port}/0" for a in ADDRESSES]
        assert conf["result_backend"].startswith("sentinel://")
        for options in (conf["broker_transport_options"], conf["result_backend_transport_options"]):
            assert options["master_name"] == group.master
            assert options["sentinel_kwargs"]["ssl"] is True and options["sentinel_kwargs"]["username"] == name


def test_a_failover_keeps_celery_working(group: Group) -> None:
    from celery import Celery

    from celery_provision.runtime import secure

    group.start_worker("sentineltasks", TASKS)
    producer = Celery("sentineltasks", set_as_current=False)
    producer.config_from_object(group.configs["client-1"], force=True)
    secure(producer)
    try:
        before = producer.signature("sentineltasks.add", args=(2, 3)).delay()
        assert before.get(timeout=TIMEOUT) == 5
        old = group.nodes[0]
        assert group.server(old.address).execute_command("WAIT", 2, 5000) == 2  # the result is on both replicas
        start = time.monotonic()
        old.kill("redis")
        survivors = group.nodes[1:]
        new = wait(lambda: group.settled_primary(old), "the Sentinels to promote a replica")
        assert new[0] in ADDRESSES[1:]
        after = producer.signature("sentineltasks.add", args=(3, 4)).delay()
        assert after.get(timeout=TIMEOUT) == 7
        print(f"failover to {new[0]} and a task round trip in {time.monotonic() - start:.1f} s")
        assert producer.AsyncResult(before.id).get(timeout=TIMEOUT) == 5  # the earlier result survived
        assert not [d for n in survivors for d in _acl_log(group.sentinel(n.address))]
    finally:
        producer.close()


# --------------------------------------------------------------------------- the role's tasks after the failover


PLAY = """
- hosts: all
  gather_facts: false
  handlers:
    - name: Restart (test)
      ansible.builtin.debug:
        msg: a restart would run here
  tasks:
    - name: The role's primary lookup
      ansible.builtin.include_role:
        name: redis
        tasks_from: replication
    - name: redis.conf and sentinel.conf through the role's managed-file tasks
      ansible.builtin.include_role:
        name: redis
        tasks_from: managed
      vars:
        _redis_managed_template: "etc/redis/{{ item.template }}"
        _redis_managed_file: "{{ item.file }}"
        _redis_managed_notify: Restart (test)
      loop:
        - {template: redis.conf.j2, file: "{{ _redis_conf_path }}"}
        - {template: sentinel.conf.j2, file: "{{ _redis_sentinel_conf_path }}"}
"""


def _run_role(group: Group, node: Node, out: Path, play: str = PLAY, **extra: Any) -> int:
    """*play* (by default the redis role's replication.yml and managed.yml) for *node*, on
    this machine, writing into *out*, with *extra* host variables; the number of changed
    tasks."""
    host = {**platform_vars(), **group.inputs[node.name], "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable, "redis_tls_dir": str(node.dir / "tls"),
            "redis_openssl_conf_path": str(out / "openssl.cnf"), "_redis_user": "root", "_redis_group": "root",
            "_redis_conf_path": str(out / "redis.conf"), "_redis_sentinel_conf_path": str(out / "sentinel.conf"),
            "_redis_pid_file": str(out / "redis.pid"), "_redis_log_file": str(out / "redis.log"),
            "_redis_sentinel_pid_file": str(out / "sentinel.pid"),
            "_redis_sentinel_log_file": str(out / "sentinel.log"), "_redis_data_dir": str(out),
            "_redis_aclfile_path": str(out / "users.acl"), **extra}
    # JSON is YAML; ansible-core's tagged strings dump as plain ones.
    (out / "inv.yml").write_text(json.dumps({"all": {"hosts": {str(node.name): host}}}, default=str))
    (out / "play.yml").write_text(play)
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(out / "inv.yml"),
                           str(out / "play.yml")], capture_output=True, text=True, cwd=REPO, timeout=120,
                          env=dict(os.environ, ANSIBLE_ROLES_PATH=str(REPO / "roles"), ANSIBLE_NOCOLOR="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    recap = proc.stdout[proc.stdout.rindex("PLAY RECAP"):]
    return int(recap.split("changed=")[1].split()[0])


def test_after_the_failover_the_role_points_the_old_primary_at_the_new_one_and_then_changes_nothing(
        group: Group) -> None:
    old = group.nodes[0]
    (new,) = group.primaries(group.nodes[1:])  # the failover test ran before this one
    assert new[0] != old.address
    out = group.tmp / "role-run"
    out.mkdir()
    assert _run_role(group, old, out) == 4  # both files and their hashes written
    redis_conf, sentinel_conf = (out / "redis.conf").read_text(), (out / "sentinel.conf").read_text()
    assert f"replicaof {new[0]} {group.port}" in redis_conf.splitlines()
    assert f"sentinel monitor {group.master} {new[0]} {group.port} 2" in sentinel_conf.splitlines()
    # Sentinel rewrites its file (and CONFIG REWRITE the server's): the role leaves them.
    with open(out / "sentinel.conf", "a") as f:
        f.write(f"sentinel known-replica {group.master} {ADDRESSES[1]} {group.port}\n")
    assert _run_role(group, old, out) == 0
    assert (out / "sentinel.conf").read_text().endswith(f"{ADDRESSES[1]} {group.port}\n")
