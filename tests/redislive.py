"""A private redis-server for live tests, and a small deployment to point real Celery at it.

Each live module that needs Redis starts its own server on a port of its own range (xdist
runs modules side by side), from a deployment whose PKI and passwords `celery-provision`
issued: the same files the roles would install.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml


def deployment(tmp: Path, hosts: Mapping[str, Any], variables: Mapping[str, Any]) -> Any:
    """The deployment of an inventory `{group: {host: vars}}` + group_vars/all written under
    *tmp*, with its certificates and passwords issued."""
    from celery_provision import cli, model

    inv = tmp / "inv"
    (inv / "group_vars").mkdir(parents=True)
    doc = {"all": {"children": {g: {"hosts": h} for g, h in hosts.items()}}}
    (inv / "hosts.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    (inv / "group_vars" / "all.yml").write_text("---\n" + yaml.safe_dump(dict(variables), sort_keys=False))
    for command in (["certs", "issue"], ["credentials"]):
        assert cli.main([*command, "-i", str(inv / "hosts.yml")]) in (0, None)
    return model.load(str(inv / "hosts.yml"))


def free_port(ports: range) -> int:
    """A port of *ports* nothing listens on (skip the test when there is none)."""
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip(f"no free port in {ports.start}-{ports.stop - 1} for a private redis-server")


@contextmanager
def redis_server(tmp: Path, port: int, *args: str, client: redis.Redis | None = None) -> Iterator[redis.Redis]:
    """A plaintext redis-server on loopback *port* (data in *tmp*, log `tmp/redis.log`), up
    (answering *client*'s ping, by default an anonymous one) until the block ends."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    log = tmp / "redis.log"
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "no", "--save", "",
         "--appendonly", "no", "--dir", str(tmp), "--logfile", str(log), *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    client = client if client is not None else redis.Redis(port=port)
    try:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                if proc.poll() is not None:
                    pytest.fail(f"redis-server exited: {log.read_text()[-2000:] if log.exists() else ''}")
                time.sleep(0.05)
        yield client
    finally:
        proc.terminate()
        proc.wait(10)

