"""Celery configuration for every worker and client, rendered from the deployment model.

One template (`templates/celeryconfig.py.j2`) and one function that feeds it, so the URL,
port, vhost, user, TLS files and serializers always match what the brokers were given.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2

from .acl import TASK_EXCHANGE
from .errors import ProvisionError
from .files import private_dir, write_atomic
from .model import Deployment, Host, is_ip
from .runtime.protect import CONFIG as ENVELOPE_CONFIG
from .runtime.protect import RESULT_SERIALIZER, TASK_SERIALIZER

__all__ = ["HostFile", "host_files", "policy", "policy_text", "render", "write_all", "write_policy"]


@dataclass(frozen=True)
class HostFile:
    """A file a worker or client host needs: where it comes from on the controller and its
    name inside the host's configuration directory."""

    name: str
    src: str
    secret: bool


def _netloc(address: str, port: int) -> str:
    host = f"[{address}]" if is_ip(address) and ipaddress.ip_address(address).version == 6 else address
    return f"{host}:{port}"


def host_files(d: Deployment, host: Host) -> list[HostFile]:
    """Every file the configuration of *host* refers to, with its controller source: the
    host's files and the controller's, paired by what they are."""
    there, here = d.app_files(host), d.app_files(host, controller=True)
    pairs = [(there.ca, here.ca, False), (there.client_cert, here.client_cert, False),
             (there.client_key, here.client_key, True), (there.signing_cert, here.signing_cert, False),
             (there.signing_key, here.signing_key, True)]
    files = [HostFile(dst.name, str(src), secret) for dst, src, secret in pairs]
    for service, _ in there.secrets:
        files.append(HostFile(there.secret(service), str(here.secrets_dir / here.secret(service)), True))
    return files


def context(d: Deployment, host: Host, *, controller_paths: bool = False) -> dict[str, Any]:
    """The values the template needs for *host*."""
    if not host.is_app:
        raise ProvisionError(f"host {host.name!r} is not a worker, client or operator", where=str(d.inventory))
    s = d.settings
    # In place on the controller (tests, local tools), or as installed on the host.
    files = d.app_files(host, controller=controller_paths)
    tls = {"ca": str(files.ca), "cert": str(files.client_cert), "key": str(files.client_key)}
    signing = {"cert": str(files.signing_cert), "key": str(files.signing_key), "store": str(files.signer_store),
               "ca": str(files.ca), "max_age": s.message_max_age,
               "result_serializer": RESULT_SERIALIZER if s.signed_results else "json",
               # Whom it believes, for what: named, not embedded (every host reads the one file).
               "policy": str(files.policy)}
    if controller_paths:
        write_policy(d)
    secret = dict(files.secrets)

    endpoints = d.endpoints(s.broker)
    r = d.replication
    # A replicated Redis: Sentinel URLs, the master name, and the Sentinels' own TLS and login
    # (kombu and Celery pass sentinel_kwargs unchanged to the Sentinels: celery #6455, #8016).
    sentinel = {"master_name": r.master_name, "user": d.user(host, "redis"), "user_quoted": quote(d.user(host, "redis")),
                "netlocs": [_netloc(h.address, r.sentinel_port) for h in r.hosts]} if r else None
    if s.broker == "rabbitmq":
        scheme, path = "amqps", quote(s.vhost, safe="")
        user = "" if s.auth == "x509" else quote(d.user(host, "rabbitmq"))
        netlocs = [_netloc(e.address, e.port) for e in endpoints]
    elif sentinel is not None:  # every Sentinel: kombu asks them for the primary
        scheme, path, user = "sentinel", str(s.broker_db), str(sentinel["user_quoted"])
        netlocs = list(sentinel["netlocs"])
    else:
        scheme, path, user = "rediss", str(s.broker_db), quote(d.user(host, "redis"))
        netlocs = [_netloc(e.address, e.port) for e in endpoints]
    urls = [f"{scheme}://{user + '@' if user else ''}{n}/{path}" for n in netlocs]
    # kombu, moving to the next URL after a failure, keeps only what that URL says (kombu
    # Connection.switch drops broker_password): with more than one URL, or Sentinel's, each
    # URL carries the password, read from its file at import, as head + password + tail.
    inline = bool(user) and (len(urls) > 1 or (s.broker == "redis" and sentinel is not None))
    broker = {
        "kind": s.broker,
        "urls": urls,
        "failover": len(urls) > 1,
        "url_parts": [(f"{scheme}://{user}:", f"@{n}/{path}") for n in netlocs] if inline else None,
        "server_hostname": d.server_name(s.broker),
        "x509": s.auth == "x509",
        "secret": secret.get(s.broker),
        "visibility_timeout": s.visibility_timeout,
        "sentinel": sentinel if s.broker == "redis" else None,
    }
    # An operator reads no result (its Redis user has no result rule), even where Redis is
    # its broker.
    backend: dict[str, Any] = {"kind": s.result_backend if ("redis" in d.services(host) and not host.is_operator)
                               or host.is_worker
                               or (host.is_client and s.result_backend == "rpc") else None}
    if backend["kind"] == "redis":
        if sentinel is not None:
            backend["url"] = ";".join(f"sentinel://{sentinel['user_quoted']}@{n}/{s.backend_db}" for n in sentinel["netlocs"])
        else:
            e = d.endpoints("redis")[0]  # Celery's Redis backend takes one server
            backend["url"] = (f"rediss://{quote(d.user(host, 'redis'))}@{_netloc(e.address, e.port)}"
                              f"/{s.backend_db}?ssl_cert_reqs=required")
        backend["sentinel"] = sentinel
        backend["secret"] = secret["redis"]
    return {
        "host": host.name,
        # The inventory's name, not its path: a host's file must not depend on where the
        # controller keeps the inventory (another clone, a project using the collection),
        # or every such run would rewrite it and restart the worker.
        "inventory": d.inventory.name,
        "module": Path(d.host_layout(host).config_name).stem,
        "files_dir": str(files.secrets_dir),
        "tls": tls,
        "signing": signing,
        "broker": broker,
        "backend": backend,
        "role": host.role,
        "queues": _queues(d, host),
        "task_exchange": TASK_EXCHANGE if s.broker == "rabbitmq" else None,
        "quorum": d.quorum_queues,
        "remote_control": d.remote_control,
        "delivery": s.delivery,
        "envelope_config": ENVELOPE_CONFIG,
        "task_serializer": TASK_SERIALIZER,
    }


#: Whose control messages a host takes: a worker its operators' commands, an operator the
#: workers' replies; a producer none.
_CONTROL_SENDER = {"worker": "operator", "operator": "worker"}

#: The last deployment whose policy was made (its text, and whether the controller's file is
#: written): one policy per deployment, not one per host.
_LAST: list[tuple[Deployment, str, bool]] = []


def policy(d: Deployment) -> dict[str, Any]:
    """The deployment's trust policy, the same for every host (`celery_provision.runtime`
    reads it at `secure(app)`): what each signer may call (a worker checks task messages
    against it), whose control messages each role takes, whose results a host reads."""
    return {
        "allowed": {h.name: list(h.allowed_tasks) for h in d.apps},
        "control": {role: [h.name for h in d.apps if h.role == sender] for role, sender in _CONTROL_SENDER.items()},
        "results": [h.name for h in d.apps if h.is_worker],
    }


def policy_text(d: Deployment) -> str:
    """The policy file's text: deterministic JSON (sorted keys), made once per deployment."""
    if not _LAST or _LAST[0][0] is not d:
        _LAST[:] = [(d, json.dumps(policy(d), sort_keys=True, indent=1) + "\n", False)]
    return _LAST[0][1]


def write_policy(d: Deployment) -> tuple[Path, bool]:
    """Write the policy where the controller's configurations name it (`Layout.policy`),
    atomically and only when it differs; once per deployment. Return (path, changed)."""
    text, path = policy_text(d), d.layout.policy
    if _LAST[0][2]:
        return path, False
    data = text.encode()
    private_dir(path.parent)
    changed = not path.exists() or path.read_bytes() != data
    if changed:
        write_atomic(path, data, 0o644)
    _LAST[0] = (d, text, True)
    return path, changed


def _queues(d: Deployment, host: Host) -> list[dict[str, Any]]:
    """The `task_queues` of *host*: a worker knows every worker's queue (a chain may route to
    any) but declares only its own; a producer knows its own and declares none (it may not:
    no configure permission), an operator none."""
    if host.is_worker:
        return [{"name": q, "declare": q in host.queues} for q in d.task_queues]
    return [{"name": q, "declare": False} for q in host.queues]


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("celery_provision", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["py"] = repr  # every value becomes a Python literal
    return env.get_template("celeryconfig.py.j2")


def render(d: Deployment, host: Host, *, controller_paths: bool = False) -> str:
    """The configuration module of one worker or client, as Python source."""
    return _template().render(context(d, host, controller_paths=controller_paths))


def write_all(d: Deployment, out: Path | None = None, *, hosts: list[str] | None = None,
              controller_paths: bool = False) -> list[tuple[Path, bool]]:
    """Write each worker's and client's configuration module, under *out* (`OUT/HOST/`) or
    where the layout keeps them; return (path, changed). The policy they name is written
    once, on the controller (`write_policy`); a host gets it from the role."""
    write_policy(d)
    targets = [d.host(n) for n in hosts] if hosts else d.apps
    results = []
    for host in targets:
        text = render(d, host, controller_paths=controller_paths).encode()
        default = d.layout.config(host.name, d.host_layout(host).config_name)
        path = (out / host.name / default.name) if out else default
        private_dir(path.parent, 0o750)
        changed = not path.exists() or path.read_bytes() != text
        if changed:
            write_atomic(path, text, 0o640)
        results.append((path, changed))
    return results
