"""Where the deployment's files live, on the controller and on each host: named once, here.

The model builds one `Layout` per deployment (`Deployment.layout`) and one `HostLayout` per
worker or client host (`Deployment.host_layout`); nothing else composes these paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

__all__ = ["KINDS", "AppFiles", "Layout", "HostLayout", "inventory_dir", "state_dir"]

#: The leaf certificates a host can hold: brokers a server one, workers and clients the others.
KINDS = ("server", "client", "signing")


def inventory_dir(inventory: Path) -> Path:
    """The directory relative paths in an inventory are read from (Ansible's `inventory_dir`):
    the inventory itself when it is a directory, else the directory holding the file."""
    inventory = inventory.resolve()
    return inventory if inventory.is_dir() else inventory.parent


def state_dir(inventory: Path) -> Path:
    """Where an inventory's PKI, credentials and rendered configs live: a dot directory beside it."""
    inventory = inventory.resolve()
    name = inventory.name if inventory.is_dir() else inventory.stem
    return inventory.parent / ".celery-provision" / name


@dataclass(frozen=True)
class AppFiles:
    """The files of one worker or client, as seen from one place (controller or host)."""

    ca: Path
    client_cert: Path
    client_key: Path
    signing_cert: Path
    signing_key: Path
    signer_store: Path
    #: The deployment's trust policy (`render.policy`): whom the host believes, for what.
    policy: Path
    #: The directory a rendered configuration reads its password files from.
    secrets_dir: Path
    #: Password file of each service, relative to `secrets_dir`.
    secrets: tuple[tuple[str, str], ...] = ()

    def secret(self, service: str) -> str:
        """The password file of *service*, relative to `secrets_dir`."""
        return dict(self.secrets)[service]


@dataclass(frozen=True)
class Layout:
    """Every path the controller keeps for one deployment: PKI, credentials, rendered configs."""

    root: Path
    credentials: Path
    configs: Path

    @classmethod
    def beside(cls, inventory: Path, *, pki: Path | None = None, credentials: Path | None = None) -> Layout:
        """The layout of an inventory's state directory, with the PKI or credentials moved
        where the inventory (or the command line) says."""
        state = state_dir(inventory)
        return cls(pki or state / "pki", credentials or state / "credentials", state / "configs")

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    @property
    def root_cert(self) -> Path:
        return self.ca_dir / "root.pem"

    @property
    def root_key(self) -> Path:
        return self.ca_dir / "root.key"

    @property
    def intermediate_cert(self) -> Path:
        return self.ca_dir / "intermediate.pem"

    @property
    def intermediate_key(self) -> Path:
        return self.ca_dir / "intermediate.key"

    @property
    def ca_pem(self) -> Path:
        """The trust anchor every server and client verifies against."""
        return self.root / "ca.pem"

    @property
    def crl_pem(self) -> Path:
        return self.root / "crl.pem"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @cached_property
    def hosts_dir(self) -> Path:
        return self.root / "hosts"

    @property
    def policy(self) -> Path:
        """The trust policy (`render.policy`), once for the deployment, beside the signer store."""
        return self.root / "policy.json"

    @property
    def signers_dir(self) -> Path:
        """Celery's cert store: every trusted message signer."""
        return self.root / "signers"

    # One join per path (a judged PKI of 10,000 workers asks for 60,000 of them).
    def cert(self, host: str, kind: str) -> Path:
        return self.hosts_dir.joinpath(host, f"{kind}.pem")

    def key(self, host: str, kind: str) -> Path:
        return self.hosts_dir.joinpath(host, f"{kind}.key")

    def signer(self, host: str) -> Path:
        return self.signers_dir / f"{host}.pem"

    def password(self, service: str, user: str) -> Path:
        """The file holding one password of one service."""
        return self.credentials / service / user

    def config(self, host: str, name: str) -> Path:
        """Where `render` writes a host's configuration module (file *name*) by default."""
        return self.configs / host / name

    def app_files(self, host: str, users: dict[str, str]) -> AppFiles:
        """A worker's or client's files in place on the controller (*users*: service -> user
        of each password the host needs)."""
        return AppFiles(
            ca=self.ca_pem,
            client_cert=self.cert(host, "client"),
            client_key=self.key(host, "client"),
            signing_cert=self.cert(host, "signing"),
            signing_key=self.key(host, "signing"),
            signer_store=self.signers_dir,
            policy=self.policy,
            secrets_dir=self.credentials,
            secrets=tuple((s, str(self.password(s, u).relative_to(self.credentials))) for s, u in users.items()),
        )


@dataclass(frozen=True)
class HostLayout:
    """The paths on one worker or client host: its configuration directory and what is in it."""

    config_dir: Path
    config_name: str
    signer_store: Path
    policy: Path

    @property
    def config(self) -> Path:
        """The configuration module (`celeryconfig.py`): its stem is the module name."""
        return self.config_dir / self.config_name

    def app_files(self, services: list[str] | tuple[str, ...]) -> AppFiles:
        """The host's files, with one password file per service in *services*."""
        return AppFiles(
            ca=self.config_dir / "ca.pem",
            client_cert=self.config_dir / "client.pem",
            client_key=self.config_dir / "client.key",
            signing_cert=self.config_dir / "signing.pem",
            signing_key=self.config_dir / "signing.key",
            signer_store=self.signer_store,
            policy=self.policy,
            secrets_dir=self.config_dir,
            secrets=tuple((s, f"{s}.password") for s in services),
        )
