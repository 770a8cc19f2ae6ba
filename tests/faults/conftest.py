"""Fixtures of the fault tests: the deployed worker, and runs that clean up after themselves
and leave the deployment healthy for the other live tests sharing it."""

from __future__ import annotations

import os
import pwd
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import FaultRun, Worker, answers_ping, fault_runs
from livedeploy import BROKER_SERVICES, LocalDeployment, run


@pytest.fixture
def worker(local_deployment: LocalDeployment) -> Worker:
    return Worker(local_deployment)


@pytest.fixture
def fault_run(request: pytest.FixtureRequest, local_deployment: LocalDeployment, worker: Worker,
              tmp_path: Path) -> Iterator[Callable[[str], FaultRun]]:
    """Factory of runs, each recording into its own directory under the worker's state dir.

    After the test the deployment is left healthy for the tests that share it: both brokers
    running, and the worker answering a signed canary task (restarted only if it does not:
    the test itself has already judged whether it came back on its own)."""
    user = pwd.getpwnam(worker.user)
    made: list[Path] = []

    def new(scenario: str) -> FaultRun:
        records = worker.state_dir / "faults" / f"{scenario}-{uuid.uuid4().hex[:8]}"
        records.mkdir(parents=True, mode=0o700)
        made.append(records)
        for path in (records.parent, records):
            os.chown(path, user.pw_uid, user.pw_gid)
        return FaultRun(scenario, local_deployment.client_app(tmp_path / scenario / "client"), records)

    with fault_runs(new) as make:
        yield make
    for name in BROKER_SERVICES:
        if run("service", name, "status", check=False).returncode != 0:
            local_deployment.service(name, "start")
    if not answers_ping(local_deployment, tmp_path / "health", timeout=60):
        local_deployment.service(local_deployment.worker_service, "restart")
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.passed:  # keep the records of a failed run to look at
        for records in made:
            shutil.rmtree(records, ignore_errors=True)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
