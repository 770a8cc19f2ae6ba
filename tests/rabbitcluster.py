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
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rabbitnode import _BIN, _DIST_OFFSET, RabbitNode

__all__ = ["ClusterNode", "RabbitCluster", "render_dist_optfiles", "DIST_TEMPLATE"]

REPO = Path(__file__).resolve().parent.parent
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
        self.ctl("wait", "--timeout", "40", str(self.base / "node.pid"), timeout=120)
        self.ctl("await_startup", "--timeout", "40", timeout=60)


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
