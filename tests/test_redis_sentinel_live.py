"""A replicated Redis under Sentinel, TLS and ACL everywhere, with real Celery on top.

Three hosts of the inventory's `redis` group (`redis_sentinel: true`) on 127.0.0.1-3 (one
loopback address per host, the same ports on each, as on real hosts): a primary, two
replicas and three Sentinels, private processes on free ports. Their redis.conf,
sentinel.conf, users.acl and openssl.cnf are rendered from the redis role's templates
with the variables `celery-provision export` gives each host (as playbooks/redis.yml maps
them); only paths (TLS files, pid, log, data) are swapped for the test's directory, and
Sentinel's timings shortened (role variables). Certificates and passwords come from the
project's PKI and credentials. A Celery worker and producer use the configuration
rendered for their hosts (sentinel:// URLs, master_name, sentinel_kwargs), unchanged.

The failover test kills the primary and runs last.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import jinja2.nativetypes
import livekit
import pytest
import redislive
import yaml

pytestmark = [pytest.mark.live, pytest.mark.slow]

redis = pytest.importorskip("redis")
celery = pytest.importorskip("celery")

REPO = Path(__file__).resolve().parent.parent
ROLE = REPO / "roles" / "redis"
ADDRESSES = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
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


def _free_port(ports: range) -> int:
    """A port of *ports* free on every address of the test."""
    for port in ports:
        try:
            for address in ADDRESSES:
                with socket.socket() as s:
                    s.bind((address, port))
        except OSError:
            continue
        return port
    pytest.skip(f"no port in {ports.start}-{ports.stop - 1} free on {', '.join(ADDRESSES)}")


# --------------------------------------------------------------------------- the role's templates


def _yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def _filters() -> dict[str, Any]:
    """Ansible's core filters and those of the roles the redis role depends on (tls_policy,
    package_query), as the role's templates and variables use them."""
    from ansible.plugins.filter.core import FilterModule as Core

    filters = {**Core().filters(), **livekit.role_filters("tls_policy", "package_query")}
    filters["hash"] = lambda value, kind="sha1": hashlib.new(kind, str(value).encode()).hexdigest()
    return filters


def _role_context(inputs: dict[str, Any], paths: dict[str, Any]) -> dict[str, Any]:
    """The variables the redis role's templates see on this machine: the tls_policy and redis
    defaults, the platform's and default flavor's names, *inputs* (what the playbook passes),
    the derived vars/main.yml, then *paths* swapped in; templated values resolved."""
    major = Path("/etc/debian_version").read_text().split(".")[0].strip()
    ctx: dict[str, Any] = {**_yaml(REPO / "roles" / "tls_policy" / "defaults" / "main.yml"),
                           **_yaml(ROLE / "defaults" / "main.yml")}
    for name in ("Debian.yml", f"Debian-{major}.yml", f"flavor-{ctx['redis_flavor']}.yml"):
        if (ROLE / "vars" / name).exists():
            ctx.update(_yaml(ROLE / "vars" / name))
    ctx.update(inputs)
    ctx.update(_yaml(ROLE / "vars" / "main.yml"))
    ctx.update(paths)
    env = jinja2.nativetypes.NativeEnvironment(undefined=jinja2.StrictUndefined)
    env.filters.update(_filters())
    from jinja2 import meta

    def resolve(name: str, seen: frozenset[str]) -> None:  # Ansible's lazy templating, depth first
        value = ctx.get(name)
        if name in seen or not (isinstance(value, str) and "{{" in value):
            return
        for dep in meta.find_undeclared_variables(env.parse(value)):
            resolve(dep, seen | {name})
        try:
            ctx[name] = env.from_string(value).render(ctx)
        except Exception:  # noqa: BLE001 - a task's result (the package query): not used here
            pass

    for name in list(ctx):
        resolve(name, frozenset())
    ctx["ansible_managed"] = "Ansible managed"
    return ctx


def _render(template: str, ctx: dict[str, Any]) -> str:
    # Ansible's template module renders with trim_blocks on.
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True)
    env.filters.update(_filters())
    return env.from_string((ROLE / "templates" / "etc" / "redis" / template).read_text()).render(ctx)


def _inputs(model_vars: dict[str, Any], address: str, ports: dict[str, int]) -> dict[str, Any]:
    """The role's inputs for one host, as playbooks/redis.yml maps the export onto them
    (plus the inventory's redis_* variables, which reach the role directly)."""
    r, rep = model_vars["redis"], model_vars["redis"]["replication"]
    return {
        "redis_bind_addresses": [address],
        "redis_users": r["users"],
        "redis_admin_user": r["admin_user"],
        "redis_admin_password": r["admin_password"],
        "redis_broker": r["broker"],
        "redis_backend": r["backend"],
        "redis_replication_primary_address": rep["primary_address"],
        "redis_sentinel_peers": rep["peers"],
        "redis_replication_password": rep["replication"]["password"],
        "redis_replication_rules": rep["replication"]["rules"],
        "redis_sentinel_password": rep["sentinel"]["password"],
        "redis_sentinel_rules": rep["sentinel"]["rules"],
        "redis_sentinel_peer_password": rep["peer"]["password"],
        "redis_sentinel_peer_rules": rep["peer"]["rules"],
        "redis_sentinel_users": rep["sentinel_users"],
        **ports,
    }


# --------------------------------------------------------------------------- the live group


@dataclass
class Node:
    name: str
    address: str
    dir: Path

    def pid(self, kind: str) -> int:
        return int((self.dir / f"{kind}.pid").read_text())


@dataclass
class Group:
    tmp: Path
    nodes: list[Node]
    port: int
    sentinel_port: int
    master: str
    admin: str
    passwords: dict[str, str]
    tls: dict[str, str]  # a client certificate of the deployment (worker-1's)
    inputs: dict[str, dict[str, Any]]  # each host's role inputs, as playbooks/redis.yml passes them
    configs: dict[str, dict[str, Any]]
    sources: dict[str, str]
    deployment: Any = None
    worker: subprocess.Popen | None = None

    def server(self, address: str, user: str | None = None, **extra: Any) -> Any:
        user = user or self.admin
        return redis.Redis(host=address, port=self.port, username=user, password=self.passwords[user],
                           socket_timeout=5, **self.tls, **extra)

    def sentinel(self, address: str, user: str | None = None, **extra: Any) -> Any:
        user = user or self.admin
        return redis.Redis(host=address, port=self.sentinel_port, username=user, password=self.passwords[user],
                           socket_timeout=5, **{**self.tls, **extra})

    def primaries(self, nodes: list[Node] | None = None) -> set[tuple[str, int]]:
        """The primary each Sentinel reports."""
        out = set()
        for n in nodes or self.nodes:
            addr = self.sentinel(n.address).execute_command("SENTINEL", "get-master-addr-by-name", self.master)
            out.add((addr[0].decode(), int(addr[1])))
        return out


def _start(node: Node, conf: str, *args: str, openssl_conf: Path) -> None:
    subprocess.run([shutil.which("redis-server") or "redis-server", conf, *args], check=True,
                   env=dict(os.environ, OPENSSL_CONF=str(openssl_conf)), stdout=subprocess.DEVNULL)


def _wait(predicate: Any, what: str, timeout: float = 30) -> Any:
    """The first truthy value of *predicate*, asked every 0.2 s for *timeout* seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            if value := predicate():
                return value
        except (redis.exceptions.RedisError, OSError, ValueError, KeyError) as exc:
            last = exc
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what} (last error: {last!r})")


def _celery_config(source: str) -> dict[str, Any]:
    ns: dict[str, Any] = {}
    exec(compile(source, "celeryconfig", "exec"), ns)  # noqa: S102 - our own rendered module
    return {k: v for k, v in ns.items() if k.islower() and not k.startswith("_")
            and not callable(v) and not isinstance(v, type(os))}


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Group]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    from celery_provision import export, render

    tmp = tmp_path_factory.mktemp("sentinel")
    port, sentinel_port = _free_port(range(6420, 6440)), _free_port(range(26420, 26440))
    ports = {"redis_tls_port": port, "redis_sentinel_port": sentinel_port,
             # Shortened for the test (role variables): a failover within seconds.
             "redis_sentinel_down_after_ms": 1000, "redis_sentinel_failover_timeout_ms": 5000}
    shared = {"redis_sentinel": True, **ports}
    hosts = {
        "redis": {f"redis-{i}": {"ansible_host": a, **shared} for i, a in enumerate(ADDRESSES, 1)},
        "celery_workers": {"worker-1": {"ansible_host": "127.0.0.1"}},
        "celery_clients": {"client-1": {"ansible_host": "127.0.0.1"}},
    }
    d = redislive.deployment(tmp, hosts, {"celery_provision_broker": "redis", "celery_provision_result_backend": "redis",
                                          "celery_provision_key_type": "ec-p256",
                                          "celery_provision_signing_key_type": "rsa2048"})
    nodes = []
    inputs: dict[str, dict[str, Any]] = {}
    passwords: dict[str, str] = {}
    for h in d.group("redis"):
        node = Node(h.name, h.address, tmp / h.name)
        (node.dir / "tls").mkdir(parents=True)
        (node.dir / "data").mkdir()
        for src, dst in ((d.layout.ca_pem, "ca.pem"), (d.layout.cert(h.name, "server"), "server.pem"),
                         (d.layout.key(h.name, "server"), "server.key")):
            shutil.copy(src, node.dir / "tls" / dst)
        model_vars = export.host_vars(d, h)
        paths = {"redis_tls_dir": str(node.dir / "tls"), "_redis_pid_file": str(node.dir / "redis.pid"),
                 "_redis_log_file": str(node.dir / "redis.log"), "_redis_data_dir": str(node.dir / "data"),
                 "_redis_aclfile_path": str(node.dir / "users.acl"),
                 "_redis_sentinel_pid_file": str(node.dir / "sentinel.pid"),
                 "_redis_sentinel_log_file": str(node.dir / "sentinel.log"),
                 "_redis_openssl_conf_path": str(node.dir / "openssl.cnf"), "inventory_hostname": h.name}
        inputs[h.name] = {**shared, **_inputs(model_vars, h.address, ports)}
        ctx = _role_context(inputs[h.name], paths)
        # replication.yml: on a first deployment no Sentinel answers, the initial primary it is.
        ctx["_redis_primary_address"] = ctx["redis_replication_primary_address"]
        for template, name in (("redis.conf.j2", "redis.conf"), ("users.acl.j2", "users.acl"),
                               ("sentinel.conf.j2", "sentinel.conf"), ("openssl.cnf.j2", "openssl.cnf")):
            (node.dir / name).write_text(_render(template, ctx))
        rep = model_vars["redis"]["replication"]
        passwords |= {u["name"]: u["password"] for u in model_vars["redis"]["users"]}
        passwords |= {rep[k]["user"]: rep[k]["password"] for k in ("replication", "sentinel", "peer")}
        passwords[model_vars["redis"]["admin_user"]] = model_vars["redis"]["admin_password"]
        admin, master = model_vars["redis"]["admin_user"], rep["master_name"]
        nodes.append(node)
    files = d.app_files(d.host("worker-1"), controller=True)
    tls = {"ssl": True, "ssl_ca_certs": str(files.ca), "ssl_certfile": str(files.client_cert),
           "ssl_keyfile": str(files.client_key), "ssl_cert_reqs": "required"}
    sources = {h: render.render(d, d.host(h), controller_paths=True) for h in ("worker-1", "client-1")}
    g = Group(tmp, nodes, port, sentinel_port, master, admin, passwords, tls, inputs,
              {h: _celery_config(source) for h, source in sources.items()}, sources, d)
    try:
        for n in nodes:
            _start(n, str(n.dir / "redis.conf"), openssl_conf=n.dir / "openssl.cnf")
        _wait(lambda: all(g.server(n.address).ping() for n in nodes), "the servers")
        _wait(lambda: all(g.server(n.address).info("replication")["master_link_status"] == "up"
                          for n in nodes[1:]), "the replicas' links")
        for n in nodes:
            _start(n, str(n.dir / "sentinel.conf"), "--sentinel", openssl_conf=n.dir / "openssl.cnf")
        _wait(lambda: all(int(g.sentinel(n.address).execute_command("SENTINEL", "master", master)
                              [b"num-other-sentinels"]) == 2 for n in nodes), "three Sentinels that know each other")
        yield g
    finally:
        if g.worker is not None:
            g.worker.terminate()
            try:
                g.worker.wait(20)
            except subprocess.TimeoutExpired:
                g.worker.kill()
        for n in nodes:
            for kind in ("sentinel", "redis"):
                with _suppress():
                    os.kill(n.pid(kind), signal.SIGKILL)


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> bool:
        return exc[0] is not None and issubclass(exc[0], (OSError, ValueError))


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
        _wait(lambda: group.primaries() == {(ADDRESSES[0], group.port)} and int(
            stray.execute_command("SENTINEL", "MASTER", group.master)[b"num-slaves"]) == 2, "the Sentinel restored")


# --------------------------------------------------------------------------- Celery through Sentinel


def _worker(group: Group) -> subprocess.Popen:
    (group.tmp / "celeryconfig_worker.py").write_text(group.sources["worker-1"])
    (group.tmp / "sentineltasks.py").write_text(TASKS)
    log = open(group.tmp / "worker.log", "w")  # noqa: SIM115 - closed with the process
    env = dict(os.environ, LIVE_CELERY_CONF="celeryconfig_worker", PYTHONPATH=str(group.tmp))
    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "sentineltasks", "worker", "-c", "1",
                             "--loglevel", "info", "--without-mingle", "--without-gossip", "--without-heartbeat"],
                            cwd=group.tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
    _wait(lambda: proc.poll() is None and " ready." in (group.tmp / "worker.log").read_text(), "the worker", 60)
    return proc


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

    group.worker = _worker(group)
    producer = Celery("sentineltasks", set_as_current=False)
    producer.config_from_object(group.configs["client-1"], force=True)
    secure(producer)
    try:
        before = producer.signature("sentineltasks.add", args=(2, 3)).delay()
        assert before.get(timeout=TIMEOUT) == 5
        old = group.nodes[0]
        assert group.server(old.address).execute_command("WAIT", 2, 5000) == 2  # the result is on both replicas
        start = time.monotonic()
        os.kill(old.pid("redis"), signal.SIGKILL)
        survivors = group.nodes[1:]

        def promoted() -> tuple[str, int] | None:
            """The new primary once the failover has settled: both Sentinels name it, neither
            is still failing over (seen on Redis 8.0: agreement, then two answers), and
            it says it is the primary."""
            found = group.primaries(survivors)
            if len(found) != 1 or found == {(old.address, group.port)}:
                return None
            flags = {group.sentinel(n.address).execute_command("SENTINEL", "MASTER", group.master)[b"flags"]
                     for n in survivors}
            (addr,) = found
            if flags == {b"master"} and group.server(addr[0]).info("replication")["role"] == "master":
                return addr
            return None

        new = _wait(promoted, "the Sentinels to promote a replica")
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


def _run_role(group: Group, node: Node, out: Path) -> int:
    """The redis role's replication.yml and managed.yml for *node*, on this machine, writing
    into *out*; the number of changed tasks."""
    major = Path("/etc/debian_version").read_text().split(".")[0].strip()
    platform: dict[str, Any] = {}
    for name in ("Debian.yml", f"Debian-{major}.yml", "flavor-redis.yml"):
        if (ROLE / "vars" / name).exists():
            platform.update(_yaml(ROLE / "vars" / name))
    host = {**platform, **group.inputs[node.name], "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable, "redis_tls_dir": str(node.dir / "tls"),
            "redis_openssl_conf_path": str(out / "openssl.cnf"), "_redis_user": "root", "_redis_group": "root",
            "_redis_conf_path": str(out / "redis.conf"), "_redis_sentinel_conf_path": str(out / "sentinel.conf"),
            "_redis_pid_file": str(out / "redis.pid"), "_redis_log_file": str(out / "redis.log"),
            "_redis_sentinel_pid_file": str(out / "sentinel.pid"),
            "_redis_sentinel_log_file": str(out / "sentinel.log"), "_redis_data_dir": str(out),
            "_redis_aclfile_path": str(out / "users.acl")}
    # JSON is YAML; ansible-core's tagged strings dump as plain ones.
    (out / "inv.yml").write_text(json.dumps({"all": {"hosts": {str(node.name): host}}}, default=str))
    (out / "play.yml").write_text(PLAY)
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
