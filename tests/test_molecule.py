"""Each Molecule scenario converges its roles on real Debian hosts running systemd (Podman
containers on an internal network), proves idempotence and verifies real services from
another host. `molecule/_shared/prepare-host.sh` (run by scripts/test.sh) builds the image.
The Debian release of the hosts is MOLECULE_DEBIAN (bookworm, the default, or trixie), which
every molecule.yml reads for its platforms' image."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = sorted(p.parent.name for p in (REPO / "molecule").glob("*/molecule.yml") if not p.parent.name.startswith("_"))

pytestmark = [pytest.mark.molecule, pytest.mark.slow]


DEBIAN = os.environ.get("MOLECULE_DEBIAN") or "bookworm"


def _podman_ready() -> bool:
    if not shutil.which("podman"):
        return False
    proc = subprocess.run(["podman", "image", "exists", f"localhost/celery-provision-debian:{DEBIAN}"], check=False)
    return proc.returncode == 0


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario_passes(scenario: str) -> None:
    if not _podman_ready():
        pytest.skip(f"no Podman image for {DEBIAN}: run molecule/_shared/prepare-host.sh {DEBIAN}"
                    " (scripts/test.sh does for bookworm)")
    molecule = shutil.which("molecule", path=str(Path(__import__("sys").executable).parent)) or "molecule"
    proc = subprocess.run([molecule, "test", "-s", scenario], cwd=REPO, capture_output=True, text=True,
                          timeout=1800, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, "\n".join(out.splitlines()[-120:])
