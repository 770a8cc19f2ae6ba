"""Broker passwords and the Erlang cookie of a RabbitMQ cluster: generated once on the
controller, kept in 0600 files, never committed."""

from __future__ import annotations

import secrets
import string
from pathlib import Path

from .errors import ProvisionError
from .files import locked, private_dir, read_bytes, write_atomic
from .model import Credential, Deployment, Host

__all__ = ["COOKIE", "wanted", "ensure", "rotate", "password", "path_for", "new_password", "new_cookie",
           "erlang_cookie"]

# Letters and digits only: a password that starts with "-" is read as options by
# rabbitmqctl (which then prints it in its usage error), and URL or shell quoting never
# matters. 43 characters of 62 are 256 bits.
_ALPHABET = string.ascii_letters + string.digits
_LENGTH = 43
#: An Erlang cookie: what the rabbitmq role accepts as generated (64 letters and digits, 381 bits).
_COOKIE_LENGTH = 64


def new_password() -> str:
    """A fresh random password (256 bits, letters and digits)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(_LENGTH))


#: The Erlang cookie of a RabbitMQ cluster, kept like a password (a user name never starts
#: with a dot: no host's password file can be it).
COOKIE = Credential("rabbitmq", ".erlang.cookie")


def new_cookie() -> str:
    """A fresh random Erlang cookie (64 letters and digits)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(_COOKIE_LENGTH))


def wanted(d: Deployment) -> list[Credential]:
    """Every password the deployment needs: the operators' admin users, a replicated Redis's
    own users (replication, Sentinel), then the workers' and clients' (one per service each
    uses, where no x509 login replaces it; on Sentinel they log in with their Redis password)."""
    admins = [c for c in (d.admin("rabbitmq"), d.admin("redis")) if c]
    cookie = [COOKIE] if d.rabbitmq_cluster else []
    return cookie + admins + d.internal_credentials() + [c for app in d.apps for c in d.secrets(app)]


def path_for(d: Deployment, cred: Credential) -> Path:
    """The file holding one password on the controller."""
    return d.layout.password(cred.service, cred.user)


def ensure(d: Deployment) -> list[Credential]:
    """Create the missing password files; return the ones created (an existing one is never changed)."""
    created = []
    private_dir(d.layout.credentials)
    with locked(d.layout.credentials):
        for cred in wanted(d):
            path = path_for(d, cred)
            if path.exists():
                continue
            private_dir(path.parent)
            value = new_cookie() if cred == COOKIE else new_password()
            write_atomic(path, value.encode() + b"\n", 0o600)
            created.append(cred)
    return created


def rotate(d: Deployment, host: Host) -> list[Credential]:
    """Replace every password of *host* with a new one (re-admission after a revocation: the
    old ones may be known to whoever held the host). Each file is replaced atomically."""
    rotated = []
    private_dir(d.layout.credentials)
    with locked(d.layout.credentials):
        for cred in d.secrets(host):
            path = path_for(d, cred)
            private_dir(path.parent)
            old = path.read_bytes().strip() if path.exists() else b""
            value = new_password().encode()
            while value == old:  # 256 bits: never, but a rotation must rotate
                value = new_password().encode()
            write_atomic(path, value + b"\n", 0o600)
            rotated.append(cred)
    return rotated


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


def erlang_cookie(d: Deployment) -> str:
    """The cluster's Erlang cookie; a missing or malformed file is a clear error."""
    path = path_for(d, COOKIE)
    if not path.exists():
        raise ProvisionError("no Erlang cookie for the RabbitMQ cluster (run `celery-provision credentials`)",
                             where=str(path))
    value = read_bytes(path, "Erlang cookie").decode().strip()
    if len(value) != _COOKIE_LENGTH or not all(c in _ALPHABET for c in value):
        raise ProvisionError(f"the Erlang cookie must be {_COOKIE_LENGTH} letters and digits", where=str(path))
    return value
