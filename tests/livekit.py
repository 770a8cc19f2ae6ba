"""Small helpers the tests share: a Celery worker process started and waited for, and the
filter plugins of the roles (as Ansible would load them for a role's templates)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

__all__ = ["role_filters", "start_worker", "stop_worker"]

ROLES_DIR = Path(__file__).resolve().parent.parent / "roles"


def role_filters(*roles: str) -> dict[str, Any]:
    """The filters of `roles/<role>/filter_plugins/<role>.py` for each of *roles*."""
    out: dict[str, Any] = {}
    for role in roles:
        spec = importlib.util.spec_from_file_location(f"{role}_filters", ROLES_DIR / role / "filter_plugins" / f"{role}.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        out.update(module.FilterModule().filters())
    return out


def start_worker(argv: Sequence[str], env: Mapping[str, str], cwd: str | os.PathLike[str], log: Path,
                 timeout: float = 60) -> subprocess.Popen[bytes]:
    """A `celery worker` process (*argv*), once its log says it is ready; the test fails with
    the log's tail if it exits or is not ready within *timeout* seconds."""
    proc = subprocess.Popen(list(argv), env=dict(env), cwd=cwd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while " ready." not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the worker did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)
    return proc


def stop_worker(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """TERM, and KILL if the worker has not exited within *timeout* seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
