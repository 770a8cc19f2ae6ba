"""A private, throw-away RabbitMQ node for live tests: plain AMQP on 127.0.0.1 only.

It leaves the system node alone: its own node name, ports (AMQP 5700-5709, distribution
25700-25709), database, logs, config and Erlang cookie (``HOME``), all under one temporary
directory; started with Debian's ``rabbitmq-server -detached`` and managed with
``rabbitmqctl -n NODE``. ``stop()`` (or leaving the ``with`` block) stops it.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RabbitNode", "unavailable_reason"]

_BIN = Path("/usr/lib/rabbitmq/bin")  # the real scripts: the sbin wrappers `su` and drop our env
_AMQP_PORTS = range(5700, 5710)
_DIST_OFFSET = 20000  # 5700 -> 25700


def unavailable_reason() -> str | None:
    """Why no private node can run here, or None."""
    if not (_BIN / "rabbitmq-server").exists() or shutil.which("erl") is None:
        return "rabbitmq-server (Debian package) is not installed"
    if os.geteuid() != 0:
        return "the private RabbitMQ node runs as root here (Debian's scripts switch users otherwise)"
    return None


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@dataclass
class RabbitNode:
    """One private node under *base*; `url(user, password)` reaches vhost *vhost*."""

    base: Path
    vhost: str = "celery"
    name: str = field(init=False, default="")
    port: int = field(init=False, default=0)
    _lock: Any = field(init=False, default=None, repr=False)

    def _env(self) -> dict[str, str]:
        b = self.base
        return os.environ | {
            "HOME": str(b / "home"),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.port + _DIST_OFFSET),
            "RABBITMQ_MNESIA_BASE": str(b / "mnesia"),
            "RABBITMQ_LOG_BASE": str(b / "log"),
            "RABBITMQ_PID_FILE": str(b / "node.pid"),
            "RABBITMQ_CONFIG_FILE": str(b / "rabbitmq.conf"),
            # Its own (empty) advanced.config: the system's /etc/rabbitmq/advanced.config holds
            # the local deployment's ssl_options, which would replace the node's own.
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(b / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(b / "enabled_plugins"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            # rabbitmqctl's own node too (it listens on 35672-35682 while it runs).
            "RABBITMQ_CTL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def _claim_port(self) -> None:
        """A free port pair, claimed by a lock file held until `stop`: two test processes that
        start a node at the same moment would otherwise both see the first pair free."""
        for port in _AMQP_PORTS:
            lock = open(f"/tmp/celery-provision-rabbitnode-{port}.lock", "w")  # noqa: SIM115 - held
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            if _free(port) and _free(port + _DIST_OFFSET):
                self.port, self._lock = port, lock
                return
            lock.close()
        raise RuntimeError("no free port pair in 5700-5709 / 25700-25709")

    def start(self) -> RabbitNode:
        self._claim_port()
        self.name = f"cp-rmq-test-{os.getpid()}-{self.port}@localhost"
        for d in ("home", "mnesia", "log"):
            (self.base / d).mkdir(parents=True, exist_ok=True)
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "advanced.config").write_text("[].\n")
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\nloopback_users = none\n"
            "log.console = false\nlog.file.level = warning\n")
        try:
            subprocess.run([str(_BIN / "rabbitmq-server"), "-detached"], env=self._env(), check=True,
                           capture_output=True, timeout=60)
            self.ctl("wait", "--timeout", "60", str(self.base / "node.pid"), timeout=90)
        except BaseException:
            self.stop()  # the node, if it came up, and the port's lock
            raise
        return self

    def stop(self) -> None:
        if self.name:
            self.ctl("stop", str(self.base / "node.pid"), check=False, timeout=60)
            self.name = ""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> RabbitNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def ctl(self, *args: str, check: bool = True, timeout: float = 30) -> str:
        """`rabbitmqctl -n NODE ARGS` (no shell, so regexes pass unchanged)."""
        out = subprocess.run([str(_BIN / "rabbitmqctl"), "-n", self.name, "-q", *args], env=self._env(),
                             capture_output=True, text=True, timeout=timeout)
        if check and out.returncode:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {out.stderr or out.stdout}")
        return out.stdout

    def url(self, user: str, vhost: str | None = None) -> str:
        """The plain AMQP URL of *user* (its password is set apart, as in rendered configs)."""
        return f"amqp://{user}@127.0.0.1:{self.port}/{vhost or self.vhost}"

    def load_users(self, users: dict[str, tuple[str, dict[str, Any]]], *, vhost: str | None = None) -> None:
        """Create *vhost* and *users* ({name: (password, perms)}, perms shaped as
        `rabbitmq_permissions()` returns them) in one `import_definitions` (rabbitmqctl is slow)."""
        vhost = vhost or self.vhost
        defs: dict[str, list[dict[str, Any]]] = {"vhosts": [{"name": vhost}], "users": [], "permissions": [],
                                                 "topic_permissions": []}
        for name, (password, perms) in users.items():
            defs["users"].append({"name": name, "password_hash": _hash(password), "tags": [],
                                  "hashing_algorithm": "rabbit_password_hashing_sha256"})
            defs["permissions"].append({"user": name, "vhost": vhost, "configure": perms["configure"],
                                        "write": perms["write"], "read": perms["read"]})
            defs["topic_permissions"] += [{"user": name, "vhost": vhost, **t} for t in perms["topic"]]
        path = self.base / "definitions.json"
        path.write_text(json.dumps(defs))
        self.ctl("import_definitions", str(path))
        path.unlink()

    def grant(self, user: str, perms: dict[str, Any], *, vhost: str | None = None) -> None:
        """Replace *user*'s permissions and topic permissions on *vhost* with *perms*."""
        vhost = vhost or self.vhost
        self.ctl("set_permissions", "-p", vhost, user, perms["configure"], perms["write"], perms["read"])
        self.ctl("clear_topic_permissions", "-p", vhost, user)
        for t in perms["topic"]:
            self.ctl("set_topic_permissions", "-p", vhost, user, t["exchange"], t["write"], t["read"])

    def log(self) -> str:
        """The node's log (where each access_refused is also written)."""
        return "".join(p.read_text(errors="replace") for p in sorted((self.base / "log").glob("*.log")))


def _hash(password: str) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    salt = secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()
