"""Broker passwords: generated once on the controller, kept in 0600 files, never committed."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from .errors import ProvisionError
from .files import locked, private_dir, read_bytes, write_atomic
from .model import Deployment

__all__ = ["Credential", "wanted", "ensure", "password", "path_for"]


@dataclass(frozen=True)
class Credential:
    """One password user of one service (`rabbitmq` or `redis`)."""

    service: str
    user: str


def wanted(d: Deployment) -> list[Credential]:
    """Every password the deployment needs: operators' admin users and, unless x509 login
    replaces them, one user per worker and client on each broker they use."""
    out: list[Credential] = []
    rabbit, redis = d.group("rabbitmq"), d.group("redis")
    if rabbit:
        out.append(Credential("rabbitmq", str(rabbit[0].var("rabbitmq_admin_user"))))
    if redis:
        out.append(Credential("redis", str(redis[0].var("redis_admin_user"))))
    for app in d.apps:
        if d.settings.broker == "rabbitmq" and d.settings.auth == "password":
            out.append(Credential("rabbitmq", app.name))
        if d.settings.broker == "redis" or d.settings.result_backend == "redis":
            out.append(Credential("redis", app.name))
    return out


def path_for(d: Deployment, cred: Credential) -> Path:
    """The file holding one password on the controller."""
    return d.credentials_dir / cred.service / cred.user


def ensure(d: Deployment) -> list[Credential]:
    """Create the missing password files; return the ones created (an existing one is never changed)."""
    created = []
    private_dir(d.credentials_dir)
    with locked(d.credentials_dir):
        for cred in wanted(d):
            path = path_for(d, cred)
            if path.exists():
                continue
            private_dir(path.parent)
            write_atomic(path, secrets.token_urlsafe(32).encode() + b"\n", 0o600)
            created.append(cred)
    return created


def password(d: Deployment, service: str, user: str) -> str:
    """Read one password; a missing file is a clear error that says how to create it."""
    path = path_for(d, Credential(service, user))
    if not path.exists():
        raise ProvisionError(
            f"no {service} password for {user!r} (run `celery-provision credentials`)", where=str(path)
        )
    value = read_bytes(path, "password file").decode().strip()
    if not value:
        raise ProvisionError("password file is empty", where=str(path))
    return value
