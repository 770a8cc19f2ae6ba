"""Build the two distributions as a user gets them, away from the checkout: the wheel
installed into a fresh virtualenv, the collection tarball installed into a fresh
collections path. Shared by tests/test_distribution.py and tests/test_collection_live.py."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
FQ = "celery_provision.secure"


def build_collection_module() -> ModuleType:
    """scripts/build_collection.py, imported."""
    spec = importlib.util.spec_from_file_location("build_collection", REPO / "scripts" / "build_collection.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the project's and Ansible's settings (a user's shell), plus EXTRA."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CELERY_PROVISION_", "ANSIBLE_", "PYTHON", "VIRTUAL_ENV"))}
    return {**env, **extra}


def run(argv: list[str | Path], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ARGV in CWD; fail the test with the output's tail unless it exits 0."""
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, f"{argv}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


WHEEL_MUST_CARRY = ("celery_provision/canary.py", "celery_provision/templates/celeryconfig.py.j2",
                    "celery_provision/pki/__init__.py", "celery_provision/audit/__init__.py",
                    "celery_provision/py.typed", "celery_provision/roles/rabbitmq/defaults/main.yml")


def wheel_venv(base: Path) -> Path:
    """Build the wheel (from a copy of the checkout) and install it into a fresh virtualenv
    under BASE; that virtualenv's bin/."""
    env = clean_env()
    # Build from a copy: an in-tree build would leave build/ and *.egg-info in the checkout.
    src = base / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".celery-provision", ".*cache"))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", base / "dist", src],
        cwd=base, env=env)
    wheels = list((base / "dist").glob("celery_provision-*.whl"))
    assert len(wheels) == 1
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    for must in WHEEL_MUST_CARRY:
        assert must in names, f"{must} missing from the wheel"
    venv = base / "venv"
    run([sys.executable, "-m", "venv", venv], cwd=base, env=env)
    run([venv / "bin" / "python", "-m", "pip", "install", "-q", wheels[0]], cwd=base, env=env, timeout=600)
    return venv / "bin"


def installed_collection(base: Path) -> Path:
    """Build the collection tarball and ``ansible-galaxy collection install`` it into a fresh
    collections path under BASE; that path. Its dependencies (galaxy.yml) are found installed
    already: the dev extra's `ansible` bundle carries them (there is no Galaxy here)."""
    bc = build_collection_module()
    tarball = bc.build(bc.assemble(base / "tree"), base / "dist")
    with tarfile.open(tarball) as tar:
        members = set(tar.getnames())
    assert {"MANIFEST.json", "meta/runtime.yml", "plugins/filter/tls_policy.py",
            "playbooks/site.yml", "roles/redis/tasks/main.yml"} <= members
    path = base / "collections"
    galaxy = shutil.which("ansible-galaxy", path=str(VENV_BIN)) or "ansible-galaxy"
    run([galaxy, "collection", "install", "--offline", "-p", path, tarball], cwd=base, env=clean_env())
    assert (path / "ansible_collections" / "celery_provision" / "secure" / "MANIFEST.json").is_file()
    return path


def dependencies_path() -> Path:
    """The collections path holding the collection's dependencies here (the dev venv's
    site-packages, where the `ansible` bundle installs ``ansible_collections/``): what a
    user's ``ansible-galaxy collection install`` fetches from Galaxy."""
    import ansible_collections.community.rabbitmq as dep

    return Path(dep.__file__ or next(iter(dep.__path__))).resolve().parents[2]
