"""The main job: `scripts/deploy-local.sh` deploys everything on this machine, verified end
to end; run again it changes nothing and passes again."""

from __future__ import annotations

import json
import re

import pytest

from livedeploy import LocalDeployment, run

pytestmark = [pytest.mark.live, pytest.mark.slow]


def test_main_job_ends_with_every_verify_check_passing(local_deployment: LocalDeployment) -> None:
    out = local_deployment.output
    assert re.search(r"verify: \d+ passed, 0 failed", out), out[-3000:]
    assert "deploy: OK" in out


def test_verify_reports_a_signed_canary_answered_by_the_worker(local_deployment: LocalDeployment) -> None:
    proc = run("celery-provision", "verify", "-i", local_deployment.inventory, "--json")
    checks = {c["check"]: c for c in json.loads(proc.stdout)}
    assert checks["signed canary task answered"]["ok"], checks["signed canary task answered"]
    assert all(c["ok"] for c in checks.values())


@pytest.mark.parametrize("check", ["re-labelled canary (signed ping sent as touch) not run",
                                   "replayed canary (completed ping sent again) not run"])
def test_verify_reports_a_forged_canary_not_run(local_deployment: LocalDeployment, check: str) -> None:
    """The main command's verify sends a signed ping re-labelled as `touch`, and a completed
    ping again: the workers run neither."""
    rows = [line for line in local_deployment.output.splitlines() if check in line]
    assert rows and rows[0].startswith("PASS"), rows or local_deployment.output[-3000:]


def test_second_run_changes_nothing_and_passes_again(local_deployment: LocalDeployment) -> None:
    proc = run("bash", "scripts/deploy-local.sh", local_deployment.inventory, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "site.yml made 0 change(s)" in proc.stdout, proc.stdout[-3000:]


def test_site_playbook_check_mode_runs_without_errors(local_deployment: LocalDeployment) -> None:
    proc = run("ansible-playbook", "-i", local_deployment.inventory, "playbooks/site.yml", "--check",
               check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert re.search(r"failed=0", proc.stdout)
