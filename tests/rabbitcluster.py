"""A private, throw-away three-node RabbitMQ cluster on 127.0.0.1, its Erlang distribution over
mutual TLS as the rabbitmq role configures it.

Each node is a `rabbitnode.RabbitNode` (its own name, ports, database, logs and HOME) that
listens for AMQPS only (mutual TLS, on its AMQP port of the pair) and talks to its peers and
its CLI tools with `-proto_dist inet_tls -ssl_dist_optfile FILE`: FILE is the role's own
template (roles/rabbitmq/templates/etc/rabbitmq/inter_node_tls.config.j2), rendered by a small
ansible-playbook run with the role's defaults, variables and the TLS policy; the certificates
come from the project's PKI. Peer discovery is the role's too (classic_config with every node):
the first node boots, then the two others find it and join, in parallel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import livekit
import pytest
import yaml
from rabbitnode import _BIN, _DIST_OFFSET, RabbitNode, unavailable_reason

from celery_provision import acl, cli, credentials, model, render

__all__ = ["ClusterNode", "Live", "RabbitCluster", "live_cluster", "render_dist_optfiles", "start_worker",
           "DIST_TEMPLATE", "NODES"]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BIN = Path(sys.executable).parent
#: The inventory's three RabbitMQ hosts, one cluster.
NODES = ("rabbitmq-1", "rabbitmq-2", "rabbitmq-3")
ROLE = REPO / "roles" / "rabbitmq"
DIST_TEMPLATE = ROLE / "templates" / "etc" / "rabbitmq" / "inter_node_tls.config.j2"


def render_dist_optfiles(tls_dirs: list[Path], work: Path) -> list[Path]:
    """The role's ssl_dist_optfile for each node whose TLS files (ca.pem, server.pem,
    server.key) are in *tls_dirs*, rendered by Ansible's template module with the values the
    role computes (defaults, vars/main.yml, this release's platform vars, the TLS policy)."""
    major = Path("/etc/debian_version").read_text().split(".")[0].strip()
    vars_files = [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "Debian.yml")]
    if (ROLE / "vars" / f"Debian-{major}.yml").exists():
        vars_files.append(str(ROLE / "vars" / f"Debian-{major}.yml"))
    vars_files.append(str(ROLE / "vars" / "main.yml"))
    dests = [work / f"inter_node_tls-{i}.config" for i in range(len(tls_dirs))]
    play = [{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars_files": vars_files,
        "roles": [{"role": "tls_policy"}],  # its defaults and filters, as the role's dependency
        "tasks": [{
            "name": "Render the role's ssl_dist_optfile",
            "ansible.builtin.template": {"src": str(DIST_TEMPLATE), "dest": "{{ item.dest }}", "mode": "0644"},
            "vars": {"rabbitmq_tls_dir": "{{ item.tls_dir }}"},
            "loop": [{"tls_dir": str(t), "dest": str(d)} for t, d in zip(tls_dirs, dests, strict=True)],
        }],
    }]
    playbook = work / "render-dist-optfile.yml"
    playbook.write_text(yaml.safe_dump(play, sort_keys=False))
    env = os.environ | {"ANSIBLE_ROLES_PATH": str(REPO / "roles"), "ANSIBLE_LOCALHOST_WARNING": "False",
                        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False", "ANSIBLE_NOCOLOR": "1"}
    out = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,",
                          "-e", "ansible_python_interpreter=" + sys.executable, str(playbook)],
                         env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    if out.returncode:
        raise RuntimeError(f"rendering {DIST_TEMPLATE.name} failed:\n{out.stdout[-3000:]}{out.stderr[-2000:]}")
    return dests


@dataclass
class ClusterNode(RabbitNode):
    """A private node of the cluster: AMQPS only, Erlang distribution over TLS."""

    tls_dir: Path = field(default=Path("/nonexistent"))
    optfile: Path = field(default=Path("/nonexistent"))
    cookie: str = ""
    index: int = 0

    @property
    def dist_port(self) -> int:
        return self.port + _DIST_OFFSET

    def _env(self) -> dict[str, str]:
        env = super()._env()
        # No plain AMQP listener: these would add one on top of the configuration's.
        env.pop("RABBITMQ_NODE_IP_ADDRESS")
        env.pop("RABBITMQ_NODE_PORT")
        dist = f"-proto_dist inet_tls -ssl_dist_optfile {self.optfile} -kernel inet_dist_use_interface {{127,0,0,1}}"
        # As rabbitmq-env.conf does: the node and its CLI tools speak TLS distribution.
        env["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"] = dist
        env["RABBITMQ_CTL_ERL_ARGS"] = dist
        return env

    def prepare(self, peers: list[str]) -> None:
        """The node's files: config (AMQPS with mutual TLS, classic_config peers), cookie."""
        for d in ("home", "mnesia", "log"):
            (self.base / d).mkdir(parents=True, exist_ok=True)
        cookie = self.base / "home" / ".erlang.cookie"
        cookie.write_text(self.cookie)
        cookie.chmod(0o400)
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "advanced.config").write_text("[].\n")
        t = self.tls_dir
        lines = [
            "listeners.tcp = none",
            f"listeners.ssl.1 = 127.0.0.1:{self.port}",
            f"ssl_options.cacertfile = {t / 'ca.pem'}",
            f"ssl_options.certfile = {t / 'server.pem'}",
            f"ssl_options.keyfile = {t / 'server.key'}",
            "ssl_options.verify = verify_peer",
            "ssl_options.fail_if_no_peer_cert = true",
            "loopback_users = none",
            "log.console = false",
            "log.file.level = warning",
            "cluster_formation.peer_discovery_backend = classic_config",
            # The seed boots first, alone: it need not wait long for peers that are not up yet.
            "cluster_formation.discovery_retry_limit = 2",
            "cluster_formation.discovery_retry_interval = 250",
            *(f"cluster_formation.classic_config.nodes.{i} = {p}" for i, p in enumerate(peers, 1)),
        ]
        (self.base / "rabbitmq.conf").write_text("\n".join(lines) + "\n")

    def launch(self) -> None:
        subprocess.run([str(_BIN / "rabbitmq-server"), "-detached"], env=self._env(), check=True,
                       capture_output=True, timeout=60)

    def await_boot(self) -> None:
        pid_file = self.base / "node.pid"
        # `rabbitmqctl wait` waits for the file, but fails on one created and not yet written.
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.2)
        self.ctl("wait", "--timeout", "40", str(pid_file), timeout=120)
        self.ctl("await_startup", "--timeout", "40", timeout=60)

    def halt(self) -> None:
        """Stop the node (`rabbitmqctl stop`), keeping its name, port and data: `launch` and
        `await_boot` bring it back as the same cluster member."""
        self.ctl("stop", str(self.base / "node.pid"), timeout=90)

    def await_quorum_plus_one(self) -> None:
        """Return once every quorum queue would keep its majority without this node
        (`rabbitmq-upgrade await_online_quorum_plus_one`): the check before a rolling restart
        stops a node."""
        subprocess.run([str(_BIN / "rabbitmq-upgrade"), "-n", self.name, "-q", "-t", "120",
                        "await_online_quorum_plus_one"], env=self._env(), check=True, capture_output=True,
                       timeout=150)


@dataclass
class RabbitCluster:
    """Three `ClusterNode`s under *base*, their TLS files in *tls_dirs* (one per node)."""

    base: Path
    tls_dirs: list[Path]
    cookie: str
    nodes: list[ClusterNode] = field(init=False, default_factory=list)

    def start(self) -> RabbitCluster:
        work = self.base / "work"
        work.mkdir(parents=True, exist_ok=True)
        optfiles = render_dist_optfiles(self.tls_dirs, work)
        try:
            for i, (tls, opt) in enumerate(zip(self.tls_dirs, optfiles, strict=True)):
                node = ClusterNode(self.base / f"node{i + 1}", tls_dir=tls, optfile=opt, cookie=self.cookie,
                                   index=i)
                node._claim_port()
                node.name = f"cp-cluster-{os.getpid()}-{node.port}@localhost"
                self.nodes.append(node)
            names = [n.name for n in self.nodes]
            for n in self.nodes:
                n.prepare(names)
            # The seed first (classic_config: a blank node joins a running peer, else boots
            # alone), then the others at once.
            self.nodes[0].launch()
            self.nodes[0].await_boot()
            with ThreadPoolExecutor(len(self.nodes) - 1) as pool:
                for n in self.nodes[1:]:
                    n.launch()
                list(pool.map(lambda n: n.await_boot(), self.nodes[1:]))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        with ThreadPoolExecutor(max(1, len(self.nodes))) as pool:
            list(pool.map(lambda n: n.stop(), self.nodes))

    def __enter__(self) -> RabbitCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def status(self, node: ClusterNode | None = None) -> dict[str, Any]:
        """`rabbitmqctl cluster_status` as JSON, asked through *node* (the first by default)."""
        result: dict[str, Any] = json.loads((node or self.nodes[0]).ctl("cluster_status", "--formatter", "json"))
        return result

    def queue(self, name: str, vhost: str = "celery", node: ClusterNode | None = None) -> dict[str, Any]:
        """Queue *name*'s type, leader and members, asked through *node* (the first by default)."""
        rows = json.loads((node or self.nodes[0]).ctl("list_queues", "-p", vhost, "name", "type", "leader",
                                                      "members", "--formatter", "json"))
        [row] = [r for r in rows if r["name"] == name]
        result: dict[str, Any] = row
        return result

    def node(self, name: str) -> ClusterNode:
        """The node called *name* (as RabbitMQ names it: `cp-cluster-...@localhost`)."""
        [node] = [n for n in self.nodes if n.name == name]
        return node


# --- a deployment on the cluster: the inventory, its PKI, rendered configs and a worker ---------

@dataclass
class Live:
    """A deployment of the inventory `cluster_inventory` writes, on a running `RabbitCluster`;
    each host's rendered configuration is in *dir* as HOST.py."""

    d: model.Deployment
    cluster: RabbitCluster
    dir: Path

    @property
    def nodes(self) -> list[ClusterNode]:
        return self.cluster.nodes

    def env(self, host: str) -> dict[str, str]:
        """The environment of tests/rabbitlive_app.py as *host*: its rendered configuration,
        with the rendered URLs (AMQPS to every node, in order, each with the password: kombu's
        failover keeps only what the next URL says) pointed at the private nodes' ports."""
        rendered = livekit.rendered_config(str(self.dir / f"{host}.py"), None, None, broker_tls=True)["broker_url"]
        port = f":{self.d.endpoints('rabbitmq')[0].port}/"
        urls = ";".join(url.replace(port, f":{n.port}/") for url, n in zip(rendered.split(";"), self.nodes, strict=True))
        return os.environ | {"CP_RENDERED": str(self.dir / f"{host}.py"), "CP_BROKER_URL": urls,
                             "CP_BROKER_TLS": "1", "PYTHONPATH": str(HERE), "CP_TIMEOUT": "20"}

    def act(self, host: str, *args: str) -> dict[str, Any]:
        """One action of tests/rabbitlive_app.py as *host*, in its own process."""
        out = subprocess.run([sys.executable, str(HERE / "rabbitlive_app.py"), *args], env=self.env(host),
                             capture_output=True, text=True, timeout=90)
        assert out.returncode == 0, out.stderr
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        return result

    def app(self, host: str) -> Any:
        """A Celery app in this process configured as *host* (as `act` is), signing enabled."""
        from celery import Celery

        from celery_provision.runtime import secure

        env = self.env(host)
        app = Celery(f"cluster-{host}", set_as_current=False)
        app.config_from_object(livekit.rendered_config(env["CP_RENDERED"], env["CP_BROKER_URL"], None,
                                                       broker_tls=True))
        secure(app)
        return app


def cluster_inventory(base: Path) -> Path:
    """An inventory of one three-node RabbitMQ cluster (rpc results), a worker and a producer,
    its PKI, passwords and Erlang cookie made offline by the CLI."""
    inv = base / "inv"
    (inv / "group_vars").mkdir(parents=True)
    # Three nodes on one loopback address: each certificate names it and localhost, the host
    # part of the private nodes' names.
    hosts = {
        "rabbitmq": {n: {"ansible_host": "127.0.0.1", "celery_provision_extra_sans": ["localhost"]} for n in NODES},
        "redis": {"redis-1": {"ansible_host": "127.0.0.2"}},
        "celery_workers": {"worker-1": {"ansible_host": "127.0.0.3"}},
        "celery_clients": {"client-1": {"ansible_host": "127.0.0.4"}},
    }
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": {g: {"hosts": h} for g, h in hosts.items()}}}))
    (inv / "group_vars" / "all.yml").write_text(yaml.safe_dump({
        "celery_provision_result_backend": "rpc", "celery_provision_key_type": "ec-p256",
        "celery_provision_signing_key_type": "rsa2048"}))
    (inv / "group_vars" / "rabbitmq.yml").write_text(yaml.safe_dump({"rabbitmq_cluster": True}))
    for command in ("certs issue", "credentials"):
        assert cli.main([*command.split(), "-i", str(inv)]) == 0
    return inv


def install_tls(d: model.Deployment, host: str, tls_dir: Path) -> Path:
    """Copy a node's TLS files into *tls_dir* as the role deploys them (ca.pem, server.pem,
    server.key); a rotation calls it again with the reissued files."""
    tls_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(d.layout.ca_pem, tls_dir / "ca.pem")
    shutil.copy(d.layout.cert(host, "server"), tls_dir / "server.pem")
    shutil.copy(d.layout.key(host, "server"), tls_dir / "server.key")
    return tls_dir


def start_worker(live: Live, concurrency: int = 1) -> Any:
    """worker-1 on the cluster (tests/rabbitlive_app.py), consuming `celery`, once it is ready."""
    return livekit.start_worker(
        [str(BIN / "celery"), "-A", "rabbitlive_app", "worker", "-Q", "celery", "--hostname", "worker-1@%h",
         # As the celery_worker role starts it (remote control off: no events, no heartbeats).
         "-c", str(concurrency), "--without-mingle", "--without-gossip", "--without-heartbeat", "--loglevel", "info"],
        live.env("worker-1"), live.dir, live.dir / "worker.log")


@contextmanager
def live_cluster(base: Path) -> Iterator[Live]:
    """The cluster inventory's deployment on a fresh three-node cluster under *base*: every
    identity's RabbitMQ user with the permissions `acl.rabbitmq_permissions` gives it (loaded
    on the seed, as the role does), and each host's configuration rendered. Stopped on exit;
    the test is skipped where RabbitMQ cannot run."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    d = model.load(cluster_inventory(base))
    assert d.quorum_queues
    tls_dirs = [install_tls(d, h, base / "tls" / h) for h in NODES]
    with RabbitCluster(base / "nodes", tls_dirs, credentials.erlang_cookie(d)) as c:
        users = {}
        for host in d.apps:
            user = d.user(host, "rabbitmq")
            perms = acl.rabbitmq_permissions(str(host.role), host.queues, task_queues=d.task_queues,
                                             rpc_backend=True, remote_control=d.remote_control,
                                             quorum=d.quorum_queues)
            users[user] = (credentials.password(d, "rabbitmq", user), perms)
            (base / f"{host.name}.py").write_text(render.render(d, host, controller_paths=True))
        c.nodes[0].load_users(users)
        yield Live(d, c, base)
