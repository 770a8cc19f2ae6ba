"""A replicated Redis under Sentinel, TLS and ACL everywhere, as the redis role configures it,
for live tests (tests/test_redis_sentinel_live.py, tests/faults/test_sentinel_faults.py).

Three hosts of an inventory's `redis` group (`redis_sentinel: true`) on 127.0.0.1-3 (one
loopback address per host, the same ports on each, as on real hosts): a primary, two
replicas and three Sentinels, private processes on free ports. Their redis.conf,
sentinel.conf, users.acl and openssl.cnf are rendered from the redis role's templates
with the variables `celery-provision export` gives each host (as playbooks/redis.yml maps
them); only paths (TLS files, pid, log, data) are swapped for the test's directory, and
Sentinel's timings shortened (role variables). Certificates and passwords come from the
project's PKI and credentials; each Celery host's configuration is rendered for it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import jinja2.nativetypes
import livekit
import pytest
import redis
import redislive
import yaml

__all__ = ["ADDRESSES", "REPO", "ROLE", "Group", "Node", "celery_config", "platform_vars", "sentinel_group", "wait"]

REPO = Path(__file__).resolve().parent.parent
ROLE = REPO / "roles" / "redis"
ADDRESSES = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


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


def platform_vars(flavor: str = "redis") -> dict[str, Any]:
    """The redis role's OS, release and flavor variables on this machine (vars/*.yml)."""
    major = Path("/etc/debian_version").read_text().split(".")[0].strip()
    out: dict[str, Any] = {}
    for name in ("Debian.yml", f"Debian-{major}.yml", f"flavor-{flavor}.yml"):
        if (ROLE / "vars" / name).exists():
            out.update(_yaml(ROLE / "vars" / name))
    return out


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
    ctx: dict[str, Any] = {**_yaml(REPO / "roles" / "tls_policy" / "defaults" / "main.yml"),
                           **_yaml(ROLE / "defaults" / "main.yml")}
    ctx.update(platform_vars(ctx["redis_flavor"]))
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

    def start(self, kind: str) -> None:
        """Start this host's redis-server or Sentinel (*kind* "redis" or "sentinel") from
        the configuration written for it (which each rewrites as it runs)."""
        args = ["redis.conf"] if kind == "redis" else ["sentinel.conf", "--sentinel"]
        subprocess.run([shutil.which("redis-server") or "redis-server", str(self.dir / args[0]), *args[1:]],
                       check=True, env=dict(os.environ, OPENSSL_CONF=str(self.dir / "openssl.cnf")),
                       stdout=subprocess.DEVNULL)

    def kill(self, kind: str) -> None:
        """SIGKILL this host's *kind* process (no shutdown, no save), if it runs."""
        with suppress(OSError, ValueError):
            os.kill(self.pid(kind), signal.SIGKILL)


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
    configs: dict[str, dict[str, Any]]  # each Celery host's rendered configuration, as settings
    sources: dict[str, str]  # ... and as the module rendered for it
    deployment: Any
    worker: subprocess.Popen | None = None  # a worker a test started: stopped with the group

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

    def start_worker(self, module: str, source: str, concurrency: int = 1) -> subprocess.Popen[bytes]:
        """worker-1 with its rendered configuration (LIVE_CELERY_CONF names the module), its
        app the module *module* written from *source*; stopped with the group."""
        (self.tmp / "celeryconfig_worker.py").write_text(self.sources["worker-1"])
        (self.tmp / f"{module}.py").write_text(source)
        env = dict(os.environ, LIVE_CELERY_CONF="celeryconfig_worker", PYTHONPATH=str(self.tmp))
        self.worker = livekit.start_worker(
            [sys.executable, "-m", "celery", "-A", module, "worker", "-c", str(concurrency), "--loglevel", "info",
             "--without-mingle", "--without-gossip", "--without-heartbeat"], env, self.tmp, self.tmp / "worker.log")
        return self.worker

    def settled_primary(self, old: Node) -> tuple[str, int] | None:
        """The new primary once a failover away from *old* has settled (else None): the
        other Sentinels all name it, none is still failing over (seen on Redis 8.0:
        agreement, then two answers), and it says it is the primary."""
        survivors = [n for n in self.nodes if n is not old]
        found = self.primaries(survivors)
        if len(found) != 1 or found == {(old.address, self.port)}:
            return None
        flags = {self.sentinel(n.address).execute_command("SENTINEL", "MASTER", self.master)[b"flags"]
                 for n in survivors}
        (addr,) = found
        if flags == {b"master"} and self.server(addr[0]).info("replication")["role"] == "master":
            return addr
        return None


def wait(predicate: Any, what: str, timeout: float = 30) -> Any:
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


def celery_config(source: str) -> dict[str, Any]:
    """A rendered configuration module's settings, as a dict."""
    ns: dict[str, Any] = {}
    exec(compile(source, "celeryconfig", "exec"), ns)  # noqa: S102 - our own rendered module
    return {k: v for k, v in ns.items() if k.islower() and not k.startswith("_")
            and not callable(v) and not isinstance(v, type(os))}



@contextmanager
def sentinel_group(tmp: Path, variables: Mapping[str, Any] | None = None, ports: range = range(6420, 6440)
                   ) -> Iterator[Group]:
    """The three-host group of this module's docstring under *tmp*, started (servers, replicas
    linked, three Sentinels that know each other), with a worker (worker-1) and a producer
    (client-1) in the inventory; *variables* add to its group_vars/all. The servers take a
    port of *ports*, the Sentinels the same one plus 20000: each module its own range, as
    xdist runs modules side by side. Killed on exit."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    from celery_provision import export, render

    port, sentinel_port = _free_port(ports), _free_port(range(ports.start + 20000, ports.stop + 20000))
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
                                          "celery_provision_signing_key_type": "rsa2048", **(variables or {})})
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
              {h: celery_config(source) for h, source in sources.items()}, sources, d)
    try:
        for n in nodes:
            n.start("redis")
        wait(lambda: all(g.server(n.address).ping() for n in nodes), "the servers")
        wait(lambda: all(g.server(n.address).info("replication")["master_link_status"] == "up"
                         for n in nodes[1:]), "the replicas' links")
        for n in nodes:
            n.start("sentinel")
        wait(lambda: all(int(g.sentinel(n.address).execute_command("SENTINEL", "master", master)
                             [b"num-other-sentinels"]) == 2 for n in nodes), "three Sentinels that know each other")
        yield g
    finally:
        if g.worker is not None:
            livekit.stop_worker(g.worker)
        for n in nodes:
            n.kill("sentinel")
            n.kill("redis")
