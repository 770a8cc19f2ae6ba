"""Celery configuration for every worker and client, rendered from the deployment model.

One template (`templates/celeryconfig.py.j2`) and one function that feeds it, so the URL,
port, vhost, user, TLS files and serializers always match what the brokers were given.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2

from . import credentials
from .errors import ProvisionError
from .files import private_dir, write_atomic
from .model import Deployment, Host, is_ip
from .pki import Layout

__all__ = ["CONFIG_NAME", "HostFile", "host_files", "render", "write_all"]

#: The module name of a rendered configuration (`celeryconfig.py`).
CONFIG_NAME = "celeryconfig"


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
    """Every file the configuration of *host* refers to, with its controller source."""
    layout = Layout(d.pki_dir)
    files = [
        HostFile("ca.pem", str(layout.ca_pem), False),
        HostFile("client.pem", str(layout.cert(host.name, "client")), False),
        HostFile("client.key", str(layout.key(host.name, "client")), True),
        HostFile("signing.pem", str(layout.cert(host.name, "signing")), False),
        HostFile("signing.key", str(layout.key(host.name, "signing")), True),
    ]
    for cred in _secrets(d, host):
        files.append(HostFile(f"{cred.service}.password", str(credentials.path_for(d, cred)), True))
    return files


def _secrets(d: Deployment, host: Host) -> list[credentials.Credential]:
    s = d.settings
    out = []
    if s.broker == "rabbitmq" and s.auth == "password":
        out.append(credentials.Credential("rabbitmq", host.name))
    if s.broker == "redis" or s.result_backend == "redis":
        out.append(credentials.Credential("redis", host.name))
    return out


def context(d: Deployment, host: Host, *, controller_paths: bool = False) -> dict[str, Any]:
    """The values the template needs for *host*."""
    if not host.is_app:
        raise ProvisionError(f"host {host.name!r} is neither a worker nor a client", where=str(d.inventory))
    s = d.settings
    layout = Layout(d.pki_dir)
    if controller_paths:  # configuration used in place on the controller (tests, local tools)
        files_dir = d.credentials_dir
        tls = {"ca": str(layout.ca_pem), "cert": str(layout.cert(host.name, "client")),
               "key": str(layout.key(host.name, "client"))}
        signing = {"cert": str(layout.cert(host.name, "signing")), "key": str(layout.key(host.name, "signing")),
                   "store": str(layout.signers_dir / "*.pem")}
        secret = {c.service: f"{c.service}/{c.user}" for c in _secrets(d, host)}
    else:
        files_dir = Path(str(host.var("celery_worker_config_dir")))
        tls = {"ca": str(files_dir / "ca.pem"), "cert": str(files_dir / "client.pem"),
               "key": str(files_dir / "client.key")}
        signing = {"cert": str(files_dir / "signing.pem"), "key": str(files_dir / "signing.key"),
                   "store": str(files_dir / "signers" / "*.pem")}
        secret = {c.service: f"{c.service}.password" for c in _secrets(d, host)}
    signing["result_serializer"] = "auth" if s.signed_results else "json"

    brokers = d.broker_hosts
    if s.broker == "rabbitmq":
        vhost = quote(s.vhost, safe="")
        user = "" if s.auth == "x509" else f"{quote(host.name)}@"
        urls = [f"amqps://{user}{_netloc(b.address, int(b.var('rabbitmq_tls_port')))}/{vhost}" for b in brokers]
    else:
        urls = [f"rediss://{quote(host.name)}@{_netloc(b.address, int(b.var('redis_tls_port')))}/{s.broker_db}"
                for b in brokers]
    broker = {
        "kind": s.broker,
        "urls": urls,
        "failover": len(urls) > 1,
        "server_hostname": d.service_name(s.broker) or brokers[0].address,
        "x509": s.auth == "x509",
        "secret": secret.get(s.broker),
        "visibility_timeout": s.visibility_timeout,
    }
    backend: dict[str, Any] = {"kind": s.result_backend}
    if s.result_backend == "redis":
        b = d.backend_hosts[0]  # Celery's Redis backend takes one server
        backend["url"] = (f"rediss://{quote(host.name)}@{_netloc(b.address, int(b.var('redis_tls_port')))}"
                          f"/{s.backend_db}?ssl_cert_reqs=required")
        backend["secret"] = secret["redis"]
    return {
        "host": host.name,
        "inventory": str(d.inventory),
        "module": CONFIG_NAME,
        "files_dir": str(files_dir),
        "tls": tls,
        "signing": signing,
        "broker": broker,
        "backend": backend,
        "queues": list(s.queues),
        "delivery": s.delivery,
    }


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


def write_all(d: Deployment, out: Path, *, hosts: list[str] | None = None,
              controller_paths: bool = False) -> list[tuple[Path, bool]]:
    """Write `OUT/HOST/celeryconfig.py` for each worker and client; return (path, changed)."""
    targets = [d.host(n) for n in hosts] if hosts else d.apps
    results = []
    for host in targets:
        text = render(d, host, controller_paths=controller_paths).encode()
        path = private_dir(out / host.name, 0o750) / f"{CONFIG_NAME}.py"
        changed = not path.exists() or path.read_bytes() != text
        if changed:
            write_atomic(path, text, 0o640)
        results.append((path, changed))
    return results
