"""The Ansible content passes ansible-lint (production profile); every YAML file passes yamllint."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if not path:
        pytest.skip(f"{name} is not installed")
    return path


def test_yamllint_passes_on_every_yaml_file() -> None:
    """Every YAML file of the repository (the collection's sources and tests' inventories
    too); .yamllint ignores only the virtualenv and the state directories."""
    proc = subprocess.run([_tool("yamllint"), "-s", "."], cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ansible_lint_production_profile_passes() -> None:
    proc = subprocess.run([_tool("ansible-lint"), "--profile", "production", "--offline", "roles", "playbooks"],
                          cwd=REPO, capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
