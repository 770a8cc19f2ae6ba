"""The bridge to Ansible: the model turned into each host's role variables (JSON).

A host revoked as a whole (`certs revoke NAME`, in the PKI's state) is exported as gone: its
broker users `state: absent` without password or permissions, out of the brokers' allowed
sources and x509 map, and its `celery` section only says `revoked: true`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from pathlib import Path
from typing import Any

from . import acl, canary, credentials, pki, render, runtime
from .model import Deployment, Host, is_ip

__all__ = ["host_vars", "export"]


def _cidr(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"


def _sources(d: Deployment, host: Host, clients: list[Host]) -> list[str]:  # clients: admitted only
    """Who may connect to a broker: its clients, its peers, and the admin networks (IPs only)."""
    peers = [h for h in d.group("rabbitmq" if host.is_rabbitmq else "redis") if h.name != host.name]
    out: dict[str, None] = {}
    for h in [*clients, *peers]:
        if is_ip(h.address):
            out.setdefault(_cidr(h.address), None)
    for net in d.settings.admin_networks:
        out.setdefault(str(ipaddress.ip_network(net)), None)
    return list(out)


def _tls(d: Deployment, host: Host, revoked: Collection[str]) -> dict[str, str]:
    layout = d.layout
    tls = {"ca": str(layout.ca_pem), "crl": str(layout.crl_pem)}
    if host.is_broker:
        tls |= {"server_cert": str(layout.cert(host.name, "server")), "server_key": str(layout.key(host.name, "server"))}
    if host.is_app and host.name not in revoked:
        files = d.app_files(host, controller=True)
        tls |= {
            "client_cert": str(files.client_cert),
            "client_key": str(files.client_key),
            "signing_cert": str(files.signing_cert),
            "signing_key": str(files.signing_key),
            "cert_store": str(files.signer_store),
        }
    return tls


def _absent(d: Deployment, app: Host, service: str) -> dict[str, Any]:
    """A revoked host's user on *service*: to be removed, with nothing it could log in with."""
    if service == "rabbitmq":
        return {"name": d.user(app, service), "password": None, "tags": [], "permissions": [],
                "topic_permissions": [], "state": "absent"}
    return {"name": d.user(app, service), "password": None, "rules": "", "state": "absent"}


def _rabbitmq(d: Deployment, host: Host, revoked: Collection[str]) -> dict[str, Any]:
    s = d.settings
    apps = d.apps if s.broker == "rabbitmq" else []
    admitted = [a for a in apps if a.name not in revoked]
    admin = str(host.var("rabbitmq_admin_user"))
    users = []
    for app in apps:
        if app.name in revoked:
            users.append(_absent(d, app, "rabbitmq"))
            continue
        perms = acl.rabbitmq_permissions(str(app.role), app.queues, task_queues=d.task_queues,
                                         rpc_backend=s.result_backend == "rpc", remote_control=d.remote_control,
                                         quorum=d.quorum_queues)
        users.append({
            "name": d.user(app, "rabbitmq"),
            "password": _password(d, app, "rabbitmq"),
            "tags": [],
            "permissions": [{"vhost": s.vhost, "configure_priv": perms["configure"], "write_priv": perms["write"],
                             "read_priv": perms["read"]}],
            "topic_permissions": [{"vhost": s.vhost, "exchange": t["exchange"], "write_priv": t["write"],
                                   "read_priv": t["read"]} for t in perms["topic"]],
            "state": "present",
        })
    endpoint = d.endpoint(host, "rabbitmq")
    return {
        "port": endpoint.port,
        "plaintext_port": endpoint.plaintext_port,
        "bind_address": endpoint.bind_address,
        "x509_client_certs": {d.user(a, "rabbitmq"): str(d.app_files(a, controller=True).client_cert)
                              for a in d.apps if a.name not in revoked},
        "vhosts": [s.vhost],
        "users": users,
        "admin_user": admin,
        "admin_password": credentials.password(d, "rabbitmq", admin),
        "auth_x509": s.auth == "x509",
        "verify_depth": s.verify_depth,
        "allowed_sources": _sources(d, host, admitted),
        "cluster": _cluster(d, host),
    }


def _cluster(d: Deployment, host: Host) -> dict[str, Any]:
    """A RabbitMQ host's place in its cluster: its node name, every member (the seed, which
    manages the users, first), who may reach its epmd and distribution port, the cookie."""
    nodename = d.rabbitmq_nodename(host)
    if not d.rabbitmq_cluster:
        return {"enabled": False, "nodename": nodename, "longnames": False, "nodes": [], "peer_sources": [],
                "cookie": None}
    peers = [h for h in d.group("rabbitmq") if h.name != host.name]
    return {
        "enabled": True,
        "nodename": nodename,
        "longnames": d.rabbitmq_longnames,
        "nodes": [d.rabbitmq_nodename(h) for h in d.group("rabbitmq")],
        "peer_sources": list(dict.fromkeys(_cidr(h.address) for h in peers if is_ip(h.address))),
        "cookie": credentials.erlang_cookie(d),
    }


def _password(d: Deployment, app: Host, service: str) -> str | None:
    """The password of *app* on *service*, or None where x509 login replaces it."""
    cred = next((c for c in d.secrets(app) if c.service == service), None)
    return credentials.password(d, cred.service, cred.user) if cred else None


def _redis(d: Deployment, host: Host, revoked: Collection[str]) -> dict[str, Any]:
    s = d.settings
    broker, backend = s.broker == "redis", s.result_backend == "redis"
    apps = [a for a in d.apps if "redis" in d.services(a)]
    admitted = [a for a in apps if a.name not in revoked]

    def rules(app: Host) -> str:
        return acl.redis_acl_rules(str(app.role), app.queues, task_queues=d.task_queues, broker=broker,
                                   backend=backend and "redis" in d.services(app) and not app.is_operator,
                                   broker_db=s.broker_db, remote_control=d.remote_control)

    admin = str(host.var("redis_admin_user"))
    endpoint = d.endpoint(host, "redis")
    return {
        "port": endpoint.port,
        "plaintext_port": endpoint.plaintext_port,
        "bind_address": endpoint.bind_address,
        "users": [_absent(d, a, "redis") if a.name in revoked else
                  {"name": d.user(a, "redis"), "password": _password(d, a, "redis"), "rules": rules(a), "state": "present"}
                  for a in apps],
        "admin_user": admin,
        "admin_password": credentials.password(d, "redis", admin),
        "broker": broker,
        "backend": backend,
        "verify_depth": s.verify_depth,
        "allowed_sources": _sources(d, host, admitted),
        "replication": _replication(d, host, apps, revoked),
    }


def _replication(d: Deployment, host: Host, apps: list[Host], revoked: Collection[str]) -> dict[str, Any] | None:
    """A replicated Redis under Sentinel, as one of its hosts sees it; None for a lone server.

    The Celery users on Sentinel are the apps' Redis users with their Redis passwords (one
    secret per app and service), with the Sentinel client rules."""
    r = d.replication
    if r is None:
        return None
    def internal(user: str, rules: str) -> dict[str, Any]:
        return {"user": user, "password": credentials.password(d, "redis", user), "rules": rules}

    return {
        "master_name": r.master_name,
        "sentinel_port": r.sentinel_port,
        "quorum": r.quorum,
        "primary": r.primary.name,
        "primary_address": r.primary.address,
        "role": "primary" if host == r.primary else "replica",
        "peers": [h.address for h in r.hosts],
        "replication": internal(r.replication_user, acl.REPLICATION_RULES),
        "sentinel": internal(r.sentinel_user, acl.SENTINEL_RULES),
        "peer": internal(r.peer_user, acl.SENTINEL_PEER_RULES),
        "sentinel_users": [_absent(d, a, "redis") if a.name in revoked else
                           {"name": d.user(a, "redis"), "password": _password(d, a, "redis"),
                            "rules": acl.SENTINEL_CLIENT_RULES, "state": "present"}
                           for a in apps],
    }


def host_vars(d: Deployment, host: Host) -> dict[str, Any]:
    """Everything the roles need to know about one host."""
    return _host_vars(d, host, set(pki.revoked_hosts(d)))


def _signers(d: Deployment) -> list[str]:
    """The signer store's certificates on the controller (the same list for every host)."""
    return [str(p) for p in sorted(d.layout.signers_dir.glob("*.pem"))]


def _host_vars(d: Deployment, host: Host, revoked: Collection[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"address": host.address, "groups": sorted(host.groups), "tls": _tls(d, host, revoked)}
    if host.is_rabbitmq:
        out["rabbitmq"] = _rabbitmq(d, host, revoked)
    if host.is_redis:
        out["redis"] = _redis(d, host, revoked)
    if host.is_app:
        out["celery"] = _celery(d, host, revoked)
    return out


def _celery(d: Deployment, host: Host, revoked: Collection[str]) -> dict[str, Any]:
    """A worker's or client's files: each with its controller source and name on the host;
    for a revoked host only that it is revoked (no configuration or files). The signer
    certificates and the trust policy, the same for every host, are the export's top-level
    `signers` and `policy`."""
    if host.name in revoked:
        return {"revoked": True, "worker": host.is_worker, "role": host.role}
    there = d.host_layout(host)
    return {
        "revoked": False,
        "worker": host.is_worker,
        "config_dir": str(there.config_dir),
        "config_name": there.config.name,
        "signer_dir": str(there.signer_store),
        "policy_file": str(there.policy),
        "config": render.render(d, host),
        "files": [{"name": f.name, "src": f.src, "secret": f.secret} for f in render.host_files(d, host)],
        "canary_src": canary.__file__,
        "runtime_files": _runtime_files(),
        "role": host.role,
        "queues": list(host.queues),
        "remote_control": d.remote_control,
    }


def _runtime_files() -> list[dict[str, str]]:
    """The runtime every worker, producer and operator imports (`celery_provision.runtime`),
    as (controller source, path under the host's application directory): the package's
    `__init__.py` and the runtime's modules, never compiled files."""
    package = Path(runtime.__file__).parent.parent
    sources = [package / "__init__.py", *sorted(Path(runtime.__file__).parent.glob("*.py"))]
    return [{"src": str(p), "dest": str(p.relative_to(package.parent))} for p in sources]


def export(d: Deployment) -> dict[str, Any]:
    """The whole deployment as the roles see it."""
    revoked = set(pki.revoked_hosts(d))
    return {
        "inventory": str(d.inventory),
        "pki_dir": str(d.pki_dir),
        "credentials_dir": str(d.credentials_dir),
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(d.settings).items()},
        # Once for the deployment: listed per host, the export grew as workers x signers.
        "signers": _signers(d),
        # The trust policy too (what each signer may call, whose control messages and results
        # a host takes): embedded in each host's configuration, it grew as hosts x hosts.
        "policy": render.policy_text(d),
        "hosts": {name: _host_vars(d, h, revoked) for name, h in d.hosts.items()},
        "revoked_hosts": sorted(revoked),
    }
