"""Small helpers the tests share: a Celery worker process started and waited for, the
filter plugins of the roles (as Ansible would load them for a role's templates), and a
rendered configuration read as settings, its transport swapped for a private server's."""

from __future__ import annotations

import importlib.util
import os
import socket
import ssl
import subprocess
import time
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

__all__ = ["pem_to_der", "rendered_config", "role_filters", "served_certificate", "start_worker", "stop_worker"]

ROLES_DIR = Path(__file__).resolve().parent.parent / "roles"


def role_filters(*roles: str) -> dict[str, Any]:
    """The filters of `roles/<role>/filter_plugins/<role>.py` for each of *roles*."""
    out: dict[str, Any] = {}
    for role in roles:
        spec = importlib.util.spec_from_file_location(f"{role}_filters", ROLES_DIR / role / "filter_plugins" / f"{role}.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        out.update(module.FilterModule().filters())
    return out


def start_worker(argv: Sequence[str], env: Mapping[str, str], cwd: str | os.PathLike[str], log: Path,
                 timeout: float = 60) -> subprocess.Popen[bytes]:
    """A `celery worker` process (*argv*), once its log says it is ready; the test fails with
    the log's tail if it exits or is not ready within *timeout* seconds."""
    proc = subprocess.Popen(list(argv), env=dict(env), cwd=cwd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while " ready." not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the worker did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)
    return proc


def stop_worker(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """TERM, and KILL if the worker has not exited within *timeout* seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rendered_config(path: str, broker_url: str | None, backend: str | None, queue_type: str = "classic",
                    broker_tls: bool = False) -> dict[str, Any]:
    """A rendered configuration file as a dict, with the transport swapped (*broker_url*
    None keeps the rendered one); with *queue_type*
    "quorum", every task queue is declared as a quorum queue (durable, `x-queue-type`); with
    *broker_tls*, the rendered broker TLS settings stay (only the URL's ports change)."""
    ns: dict[str, Any] = {"__name__": "celeryconfig"}
    exec(compile(Path(path).read_text(), path, "exec"), ns)  # noqa: S102 - our own rendered file
    cfg = {k: v for k, v in ns.items()
           if k.islower() and not k.startswith("_") and not isinstance(v, (types.ModuleType, type, types.FunctionType))}
    if broker_url is not None:
        cfg["broker_url"] = broker_url
    if not broker_tls:
        cfg["broker_use_ssl"] = False
    if backend and cfg.get("result_backend", "").startswith("redis"):
        cfg["result_backend"] = backend
        cfg.pop("redis_backend_use_ssl", None)
        cfg.pop("redis_password", None)
    if queue_type != "classic":
        cfg["task_queues"] = {name: {**options, "durable": True, "queue_arguments": {"x-queue-type": queue_type}}
                              for name, options in cfg["task_queues"].items()}
    return cfg


def served_certificate(address: str, port: int, ca: Path, cert: Path, key: Path) -> bytes:
    """The DER certificate the TLS server at *address*:*port* presents to a new connection
    now, seen by a client with *cert* (verified against *ca*)."""
    from celery_provision import verify

    ctx = verify.tls_client_context(ca, cert, key)
    with socket.create_connection((address, port), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname=address) as tls:
            return tls.getpeercert(binary_form=True)


def pem_to_der(path: Path) -> bytes:
    """The first certificate of the PEM file *path*, as DER (what `served_certificate` returns)."""
    return ssl.PEM_cert_to_DER_cert(path.read_text().split("-----END CERTIFICATE-----")[0]
                                    + "-----END CERTIFICATE-----\n")
