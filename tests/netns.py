"""Throw-away network namespaces for tests: a LAN that never touches the host.

A :class:`Lan` is a bridge inside its first namespace (the "server") and one
veth link from it to each other namespace; every interface is created
directly inside the namespaces, nothing appears in the root namespace, and
every address is in the documentation ranges 192.0.2.0/24 and 2001:db8::/64.
``close()`` (or leaving the ``with`` block) deletes the namespaces and with
them every interface, listener socket and nftables table they held.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

__all__ = ["Lan", "Listener", "Namespace", "unavailable_reason"]

_PROBE = r"""
import socket, sys
host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
try:
    socket.create_connection((host, port), timeout=timeout).close()
    print("connected")
except socket.timeout:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
"""

_LISTENER = r"""
import socket, sys, threading
def serve(sock):
    while True:
        conn, _ = sock.accept()
        conn.close()
socks = []
for port in map(int, sys.argv[1:]):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
    s.listen(16)
    socks.append(s)
for s in socks:
    threading.Thread(target=serve, args=(s,), daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    if shutil.which("nft") is None and not os.path.exists("/usr/sbin/nft"):
        return "nft is not installed"
    name = "cpprobe-" + secrets.token_hex(3)
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        return "ip netns add failed: " + made.stderr.strip()
    subprocess.run(["ip", "netns", "delete", name], capture_output=True)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class Namespace:
    """One network namespace and its addresses on the LAN."""

    name: str
    ipv4: str
    ipv6: str

    def run(self, *argv: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        """Run ``argv`` inside the namespace (text mode, output captured)."""
        kwargs.setdefault("capture_output", True)
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *argv], check=check, text=True, **kwargs
        )

    def connect(self, host: str, port: int, *, timeout: float = 1.0) -> str:
        """Open a TCP connection from here: "connected", "refused" or "timeout".

        "timeout" is what a silent drop looks like; "refused" means the packet
        got through but nothing listened.
        """
        return self.run(sys.executable, "-c", _PROBE, host, str(port), str(timeout)).stdout.strip()


@dataclass
class Listener:
    """TCP listeners (IPv4 and IPv6) on some ports of a namespace."""

    namespace: Namespace
    ports: tuple[int, ...]
    _process: subprocess.Popen | None = field(default=None, repr=False)

    def __enter__(self) -> "Listener":
        self._process = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace.name, sys.executable, "-c", _LISTENER,
             *map(str, self.ports)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        ready = self._process.stdout.readline().strip()
        if ready != "ready":
            self.close()
            raise RuntimeError(f"listener on {self.ports} in {self.namespace.name} did not start")
        return self

    def close(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def __exit__(self, *exc) -> None:
        self.close()


class Lan:
    """A server namespace with a bridge and one client namespace per name.

    ``Lan(["allowed", "outsider"])`` gives ``lan.server`` (192.0.2.1,
    2001:db8::1) and ``lan.clients["allowed"]`` (192.0.2.11, 2001:db8::11),
    ``lan.clients["outsider"]`` (192.0.2.12, 2001:db8::12), all on one
    subnet: only their addresses tell them apart.
    """

    def __init__(self, clients: list[str], *, prefix: str | None = None) -> None:
        self.prefix = prefix or "cpfw-" + secrets.token_hex(3)
        self.server = Namespace(f"{self.prefix}-server", "192.0.2.1", "2001:db8::1")
        self.clients: dict[str, Namespace] = {}
        self._made: list[str] = []
        try:
            self._build(clients)
        except BaseException:
            self.close()
            raise

    def _add_namespace(self, ns: Namespace) -> None:
        _ip("netns", "add", ns.name)
        self._made.append(ns.name)
        _ip("-n", ns.name, "link", "set", "lo", "up")

    def _build(self, clients: list[str]) -> None:
        server = self.server.name
        self._add_namespace(self.server)
        _ip("-n", server, "link", "add", "br0", "type", "bridge")
        _ip("-n", server, "addr", "add", f"{self.server.ipv4}/24", "dev", "br0")
        _ip("-n", server, "addr", "add", f"{self.server.ipv6}/64", "dev", "br0", "nodad")
        _ip("-n", server, "link", "set", "br0", "up")
        for index, label in enumerate(clients, start=1):
            ns = Namespace(f"{self.prefix}-{index}", f"192.0.2.{10 + index}",
                           f"2001:db8::{10 + index}")
            self._add_namespace(ns)
            port = f"p{index}"
            _ip("-n", server, "link", "add", port, "type", "veth",
                "peer", "name", "eth0", "netns", ns.name)
            _ip("-n", server, "link", "set", port, "master", "br0")
            _ip("-n", server, "link", "set", port, "up")
            _ip("-n", ns.name, "addr", "add", f"{ns.ipv4}/24", "dev", "eth0")
            _ip("-n", ns.name, "addr", "add", f"{ns.ipv6}/64", "dev", "eth0", "nodad")
            _ip("-n", ns.name, "link", "set", "eth0", "up")
            self.clients[label] = ns

    def close(self) -> None:
        """Delete every namespace made (idempotent, never raises)."""
        while self._made:
            subprocess.run(["ip", "netns", "delete", self._made.pop()], capture_output=True)

    def __enter__(self) -> "Lan":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
