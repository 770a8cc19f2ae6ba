"""Celery's canvas and result API work under the brokers' least-privilege rules: the real
worker of the local deployment runs the canary's canvas tasks, the client sends them with
its own rendered configuration, and Redis's ACL must allow every command they need."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celery_provision import canary
from livedeploy import LocalDeployment

pytestmark = [pytest.mark.live, pytest.mark.slow]

TIMEOUT = 30


@pytest.fixture(scope="module")
def app(local_deployment: LocalDeployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The producer's app, configured as it is deployed (signing on)."""
    app = local_deployment.client_app(tmp_path_factory.mktemp("canvas"))
    yield app
    app.close()


def _add(app: Any, *args: int) -> Any:
    return app.signature(canary.ADD, args)


def test_a_chain_passes_each_result_on(app: Any) -> None:
    from celery import chain

    assert chain(_add(app, 1, 2), _add(app, 3)).apply_async().get(timeout=TIMEOUT) == 6


def test_a_group_returns_every_result(app: Any) -> None:
    from celery import group

    assert group(_add(app, i, i) for i in range(3)).apply_async().get(timeout=TIMEOUT) == [0, 2, 4]


def test_a_saved_group_result_can_be_restored(app: Any) -> None:
    """GroupResult.save() publishes on `celery-taskset-meta-*`."""
    from celery import group

    result = group(_add(app, i, i) for i in range(3)).apply_async()
    result.save()
    assert app.GroupResult.restore(result.id).get(timeout=TIMEOUT) == [0, 2, 4]


def test_a_chord_joins_its_header_into_the_callback(app: Any) -> None:
    from celery import chord

    header = [_add(app, i, i) for i in range(3)]
    assert chord(header, app.signature(canary.TOTAL)).apply_async().get(timeout=TIMEOUT) == 6


def test_a_task_can_add_to_its_own_chord(app: Any) -> None:
    """Task.add_to_chord increments the chord's counter (redis-py's incr() sends INCRBY)."""
    from celery import chord

    result = chord([app.signature(canary.GROW_CHORD, (5,))], app.signature(canary.TOTAL)).apply_async()
    assert result.get(timeout=TIMEOUT) == 5 + 10


def _sum_of_two(x: int, y: int) -> int:
    return x + y


def _sum_of_all(values: list[int]) -> int:
    return sum(values)


def test_an_unordered_chord_joins_under_the_worker_acl(local_deployment: LocalDeployment,
                                                      tmp_path: Path) -> None:
    """Unordered (result_chord_ordered=False) the worker that runs the last header task reads
    the results with LRANGE. The chord join runs in a worker, so this test stops the deployed
    worker and runs one in process with the deployed worker's own rendered configuration."""
    from celery import chord
    from celery.contrib.testing.worker import start_worker

    from celery_provision import verify

    d = local_deployment.deployment
    worker_host = d.group("celery_workers")[0]
    wapp = verify.client_app(d, worker_host, tmp_path / "worker")
    # Celery's Redis backend reads this from its transport options, not from the setting of
    # the same name.
    wapp.conf.result_backend_transport_options = {"result_chord_ordered": False}
    wapp.task(name=canary.ADD)(_sum_of_two)
    wapp.task(name=canary.TOTAL)(_sum_of_all)
    capp = local_deployment.client_app(tmp_path / "client")
    capp.conf.result_backend_transport_options = {"result_chord_ordered": False}
    local_deployment.service(local_deployment.worker_service, "stop")
    try:
        with start_worker(wapp, pool="solo", perform_ping_check=False, shutdown_timeout=10,
                          queues=list(worker_host.queues)):
            header = [capp.signature(canary.ADD, (i, i)) for i in range(3)]
            result = chord(header, capp.signature(canary.TOTAL)).apply_async()
            assert result.get(timeout=TIMEOUT) == 6
    finally:
        capp.close()
        wapp.close()
        local_deployment.service(local_deployment.worker_service, "start")
