"""Each Molecule scenario converges its roles on real Debian hosts running systemd (Podman
containers on an internal network), proves idempotence and verifies real services from
another host, on each Debian release listed. `molecule/_shared/prepare-host.sh` (run by
scripts/test.sh) builds the images.

The releases are CELERY_PROVISION_MOLECULE_RELEASES (space- or comma-separated: bookworm,
trixie; default: MOLECULE_DEBIAN, else bookworm). Each scenario runs once per release with
MOLECULE_DEBIAN set to it, which every molecule.yml reads for its platforms' image (and the
redis scenario for its server flavor: Valkey on trixie). A release whose image is missing is
skipped, naming the command that builds it; an unknown release fails."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = sorted(p.parent.name for p in (REPO / "molecule").glob("*/molecule.yml") if not p.parent.name.startswith("_"))
# The releases prepare-host.sh knows how to build (its known_suites).
KNOWN_RELEASES = ("bookworm", "trixie")
RELEASES = re.split(r"[\s,]+", (os.environ.get("CELERY_PROVISION_MOLECULE_RELEASES")
                                or os.environ.get("MOLECULE_DEBIAN") or "bookworm").strip())
IMAGE = "localhost/celery-provision-debian:{}"
# Scenarios the default suite leaves out, with why; CELERY_PROVISION_MOLECULE_ALL=1 runs them.
BY_HAND = {
    "cluster": "six hosts, three of them RabbitMQ nodes, Redis servers and Sentinels: longer than the"
               " suite's time budget on two cores (molecule test -s cluster)",
}

pytestmark = [pytest.mark.molecule, pytest.mark.slow]


def _image_missing(release: str) -> str | None:
    """Why *release* cannot run here, or None when its image is there."""
    if not shutil.which("podman"):
        return "podman is not installed: run molecule/_shared/prepare-host.sh"
    proc = subprocess.run(["podman", "image", "exists", IMAGE.format(release)], check=False)
    if proc.returncode != 0:
        return (f"no Podman image {IMAGE.format(release)}: run molecule/_shared/prepare-host.sh {release}"
                " (scripts/test.sh does for bookworm)")
    return None


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario_passes(scenario: str, release: str) -> None:
    if release not in KNOWN_RELEASES:  # a typo must not pass as a skipped release
        pytest.fail(f"unknown release {release!r} in CELERY_PROVISION_MOLECULE_RELEASES"
                    f" (known: {', '.join(KNOWN_RELEASES)})", pytrace=False)
    if scenario in BY_HAND and os.environ.get("CELERY_PROVISION_MOLECULE_ALL") != "1":
        pytest.skip(f"run by hand: {BY_HAND[scenario]}")
    missing = _image_missing(release)
    if missing:
        pytest.skip(missing)
    molecule = shutil.which("molecule", path=str(Path(sys.executable).parent)) or "molecule"
    proc = subprocess.run([molecule, "test", "-s", scenario], cwd=REPO, capture_output=True, text=True,
                          timeout=1800, check=False, env={**os.environ, "MOLECULE_DEBIAN": release})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, "\n".join(out.splitlines()[-120:])
