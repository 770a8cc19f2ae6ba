"""Where the deployment's files live: one object per PKI directory, built from the model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["Layout"]


@dataclass(frozen=True)
class Layout:
    """Every path of one PKI directory, from one place."""

    root: Path

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

    @property
    def hosts_dir(self) -> Path:
        return self.root / "hosts"

    @property
    def signers_dir(self) -> Path:
        """Celery's cert store: every trusted message signer."""
        return self.root / "signers"

    def cert(self, host: str, kind: str) -> Path:
        return self.hosts_dir / host / f"{kind}.pem"

    def key(self, host: str, kind: str) -> Path:
        return self.hosts_dir / host / f"{kind}.key"

    def signer(self, host: str) -> Path:
        return self.signers_dir / f"{host}.pem"
