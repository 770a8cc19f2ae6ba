"""The TCP sockets a command listens on while it runs.

RabbitMQ's CLI tools (rabbitmqctl, rabbitmq-diagnostics, rabbitmq-plugins) start an Erlang
node of their own, which listens for distribution (35672-35682 by default) for as long as the
command runs: reachable from the network unless bound to loopback. `listeners` runs a command,
reads `ss -ltnpH` again and again until it exits, and keeps every socket owned by the command
or any of its descendants (Debian's wrapper switches users with `su`, the Erlang VM is a
grandchild). Standard library only: the Molecule verify step runs this file with the test
host's own Python.

    python3 cli_listeners.py COMMAND [ARG...]    one line per socket, then the verdict;
                                                 exit 1 exposed, 3 the command failed,
                                                 2 nothing listened, 0 loopback only
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass

__all__ = ["Listener", "listeners"]

_SS_LINE = re.compile(r"^\S+\s+\d+\s+\d+\s+(?P<local>\S+):(?P<port>\d+)\s+\S+\s*(?P<process>.*)$")


@dataclass(frozen=True, order=True)
class Listener:
    address: str  # as ss prints it, brackets removed: 127.0.0.1, ::1, 0.0.0.0, *, ::
    port: int
    pid: int

    @property
    def loopback(self) -> bool:
        try:
            ip = ipaddress.ip_address(self.address.split("%")[0])
        except ValueError:  # "*": every address
            return False
        mapped = getattr(ip, "ipv4_mapped", None)
        return (mapped or ip).is_loopback

    def __str__(self) -> str:
        return f"{self.address}:{self.port} (pid {self.pid})"


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                stat = fh.read()
        except OSError:  # gone meanwhile
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name, in parentheses, may hold spaces
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _family(pid: int) -> set[int]:
    tree, found, todo = _children(), set(), [pid]
    while todo:
        p = todo.pop()
        if p not in found:
            found.add(p)
            todo.extend(tree.get(p, []))
    return found


def _listening() -> list[Listener]:
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        m = _SS_LINE.match(line.strip())
        if not m:
            continue
        address = m["local"].strip("[]")
        for pid in re.findall(r"pid=(\d+)", m["process"]):
            found.append(Listener(address, int(m["port"]), int(pid)))
    return found


def listeners(argv: list[str], *, timeout: float = 120.0, interval: float = 0.2) -> tuple[list[Listener], int, str]:
    """Run *argv*; return the sockets its process tree listened on, its exit status and its
    output (stdout and stderr). A command still running after *timeout* seconds is killed."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: set[Listener] = set()
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            family = _family(proc.pid)
            seen.update(s for s in _listening() if s.pid in family)
            time.sleep(interval)
    finally:
        if proc.poll() is None:
            proc.kill()
        output, _ = proc.communicate()
    return sorted(seen), proc.returncode, output


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    seen, rc, output = listeners(argv)
    for s in seen:
        print(f"{'loopback' if s.loopback else 'EXPOSED '} {s}")
    exposed = [s for s in seen if not s.loopback]
    if exposed:
        print(f"EXPOSED: {', '.join(map(str, exposed))}")
        return 1
    if rc != 0:
        print(f"COMMAND FAILED (exit {rc}): {output.strip()[-500:]}")
        return 3
    if not seen:
        print("NOTHING LISTENED while the command ran")
        return 2
    print("LOOPBACK ONLY")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
