"""Faults in the middle of a run of 1,000 tasks on the live local deployment (durable queue,
acks late, task_reject_on_worker_lost, prefetch 1, signed messages): every task still runs
at least once, none is lost, and the worker comes back by itself. Duplicates are counted and
printed (`pytest -s` shows a line per scenario), not forbidden: delivery is at-least-once."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from harness import (
    SERVICE_TIMEOUT,
    TASKS,
    Counts,
    FaultRun,
    Worker,
    answers_ping,
    tasks_flowing,
    wait_for,
)
from livedeploy import REPO, LocalDeployment, platform_var, run
from livekit import pem_to_der, served_certificate

pytestmark = [pytest.mark.live, pytest.mark.slow]


def _report(r: FaultRun, counts: Counts, at_fault: int) -> None:
    print(f"\n{counts.line(r.keys)} executed-before-fault={at_fault} "
          f"results-missing-from-backend={r.results_missing()}")


def _served_certificate(local_deployment: LocalDeployment, service: str = "rabbitmq") -> bytes:
    """What the *service* server presents to a new connection of the deployment's client now."""
    d = local_deployment.deployment
    client = d.group("celery_clients")[0]
    (endpoint, *_) = d.endpoints(service)
    return served_certificate(endpoint.address, endpoint.port, d.layout.ca_pem,
                              d.layout.cert(client.name, "client"), d.layout.key(client.name, "client"))


def _rotation_play(tmp_path: Path, tier: str) -> Path:
    """The controller play and one tier's play (playbooks/TIER.yml), as a rotation runs them."""
    playbook = tmp_path / f"rotate-{tier}.yml"
    playbook.write_text(
        "---\n"
        f"- name: Controller\n  ansible.builtin.import_playbook: {REPO}/playbooks/controller.yml\n"
        f"- name: {tier}\n  ansible.builtin.import_playbook: {REPO}/playbooks/{tier}.yml\n"
    )
    return playbook


def _run_through(r: FaultRun, worker: Worker, inject) -> tuple[Counts, int]:
    """Send every task, inject the fault while they run, wait until all ran (bounded)."""
    main = worker.main_pid()
    r.send(TASKS)
    at_fault = r.executed()
    assert at_fault < TASKS, "the run ended before the fault: nothing was in flight"
    inject()
    counts = r.wait_all_done()
    _report(r, counts, at_fault)
    assert worker.main_pid() == main, "the worker was restarted instead of reconnecting"
    return counts, at_fault


def test_restarting_rabbitmq_mid_run_loses_no_task(
    local_deployment: LocalDeployment, fault_run, worker: Worker, tmp_path: Path
) -> None:
    r = fault_run("restart-rabbitmq")
    counts, _ = _run_through(r, worker, lambda: local_deployment.service("rabbitmq-server", "restart"))
    assert counts.lost(r.keys) == []
    assert answers_ping(local_deployment, tmp_path / "after")


def test_restarting_redis_mid_run_loses_no_task(
    local_deployment: LocalDeployment, fault_run, worker: Worker, tmp_path: Path
) -> None:
    r = fault_run("restart-redis")
    counts, _ = _run_through(r, worker, lambda: local_deployment.service(platform_var("redis", "_redis_service"), "restart"))
    assert counts.lost(r.keys) == []
    assert answers_ping(local_deployment, tmp_path / "after")


def test_killing_a_worker_child_mid_task_loses_no_task(
    local_deployment: LocalDeployment, fault_run, worker: Worker, tmp_path: Path
) -> None:
    r = fault_run("kill-worker-child")
    before = worker.children()
    assert before, "the worker has no pool processes"
    victim = before[0]
    counts, _ = _run_through(r, worker, lambda: os.kill(victim, signal.SIGKILL))
    assert counts.lost(r.keys) == []
    wait_for(lambda: len(worker.children()) >= len(before) and victim not in worker.children(),
             "the pool to replace the killed process", timeout=SERVICE_TIMEOUT)
    assert answers_ping(local_deployment, tmp_path / "after")


def test_rotating_the_rabbitmq_certificate_mid_run_loses_no_task(
    local_deployment: LocalDeployment, fault_run, worker: Worker, tmp_path: Path
) -> None:
    """Reissue the server certificate and push it with the rabbitmq play (files replaced,
    PEM cache cleared, no restart) while a publisher keeps tasks in flight; then publish the
    rest over a new connection, which must be served the new certificate."""
    from celery_provision import pki

    d = local_deployment.deployment
    broker = d.group("rabbitmq")[0].name
    old = _served_certificate(local_deployment)
    main = worker.main_pid()
    r = fault_run("rotate-rabbitmq-cert")
    playbook = _rotation_play(tmp_path, "rabbitmq")

    with tasks_flowing(r):
        r.wait_executed(200)
        assert pki.issue(d, renew_within_days=400, only=[broker]).count("renewed") == 1
        run("ansible-playbook", "-i", local_deployment.inventory, playbook)
        in_flight_at_swap = len(r.keys) - r.executed()
    at_fault = r.executed()

    new = pem_to_der(d.layout.cert(broker, "server"))
    assert _served_certificate(local_deployment) == new != old
    fresh = local_deployment.client_app(tmp_path / "fresh")  # a new TLS connection: new cert
    try:
        r.send(max(100, TASKS - len(r.keys)), app=fresh)
    finally:
        fresh.close()
    counts = r.wait_all_done()
    _report(r, counts, at_fault)
    print(f"tasks in flight when the play finished: {in_flight_at_swap}")
    assert in_flight_at_swap > 0, "nothing was in flight during the rotation"
    assert counts.lost(r.keys) == []
    assert worker.main_pid() == main, "the worker was restarted"
    assert answers_ping(local_deployment, tmp_path / "after")


def test_rotating_the_redis_certificate_mid_run_loses_no_task(
    local_deployment: LocalDeployment, fault_run, worker: Worker, tmp_path: Path
) -> None:
    """Reissue the (lone) Redis server's certificate and push it with the redis play while
    results are being written: the role restarts the server (its certificate is for serving
    only: nothing on its host can log in to reload it), which then serves the new one; no
    task is lost and the worker rides through."""
    from celery_provision import pki

    d = local_deployment.deployment
    server = d.group("redis")[0].name
    old = _served_certificate(local_deployment, "redis")
    main = worker.main_pid()
    r = fault_run("rotate-redis-cert")
    with tasks_flowing(r):
        r.wait_executed(200)
        assert pki.issue(d, renew_within_days=400, only=[server]).count("renewed") == 1
        run("ansible-playbook", "-i", local_deployment.inventory, _rotation_play(tmp_path, "redis"))
        in_flight = len(r.keys) - r.executed()
    at_fault = r.executed()
    counts = r.wait_all_done()
    _report(r, counts, at_fault)
    assert in_flight > 0, "nothing was in flight during the rotation"
    assert _served_certificate(local_deployment, "redis") == pem_to_der(d.layout.cert(server, "server")) != old
    assert counts.lost(r.keys) == []
    assert worker.main_pid() == main, "the worker was restarted"
    assert answers_ping(local_deployment, tmp_path / "after")
