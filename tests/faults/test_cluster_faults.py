"""Faults of a three-node RabbitMQ cluster in the middle of 1,000 tasks: the cluster of
tests/rabbitcluster.py (Erlang distribution over mutual TLS with the role's ssl_dist_optfile,
the task queue a quorum queue with a member on every node), a real worker and a signing
producer with the configurations rendered for them (AMQPS to every node, in order).

Each test prints one line (`pytest -s`): sent, completed, duplicates, lost, and the recovery
time, the longest time without an execution from the fault on. Every task must run at least
once and the worker must ride through without a restart; duplicates are counted, not
forbidden (at-least-once delivery). The tests run in order and leave three running nodes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import amqp.exceptions
import pytest
from harness import TASKS, FaultRun, fault_runs, tasks_flowing
from livekit import pem_to_der, served_certificate, stop_worker
from rabbitcluster import NODES, ClusterNode, Live, install_tls, live_cluster, start_worker

pytestmark = [pytest.mark.live, pytest.mark.slow, pytest.mark.alone]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with live_cluster(tmp_path_factory.mktemp("cluster-faults")) as live:
        yield live


@pytest.fixture(scope="module")
def worker(live: Live) -> Iterator[Any]:
    """One worker (two pool processes) through every fault: it must reconnect by itself."""
    proc = start_worker(live, concurrency=2)
    yield proc
    stop_worker(proc)


@pytest.fixture
def fault_run(live: Live, worker: Any, tmp_path: Path) -> Iterator[Callable[[str], FaultRun]]:
    def new(scenario: str) -> FaultRun:
        records = tmp_path / scenario
        records.mkdir()
        # Results ignored: the rpc backend's reply queue is a transient classic queue on the
        # one node the producer is connected to, and a send after that node restarted fails
        # (404, "process is stopped by supervisor"); executions are counted from files.
        # A publish into a node that is stopping may be refused with a connection error
        # kombu does not retry (541 INTERNAL_ERROR): the producer sends that task again.
        return FaultRun(scenario, live.app("client-1"), records, worker_alive=lambda: worker.poll() is None,
                        ignore_result=True, retry_on=(amqp.exceptions.ConnectionError,))

    with fault_runs(new) as make:
        yield make


def _restart(node: ClusterNode) -> None:
    node.launch()
    node.await_boot()


def _three_running(live: Live) -> bool:
    return set(live.cluster.status()["running_nodes"]) == {n.name for n in live.nodes}


def _served(live: Live, node: ClusterNode) -> bytes:
    files = live.d.app_files(live.d.host("client-1"), controller=True)
    return served_certificate("127.0.0.1", node.port, files.ca, files.client_cert, files.client_key)


def test_stopping_the_task_queues_leader_mid_run_loses_no_task(live: Live, worker: Any, fault_run) -> None:
    """The node that leads the quorum queue (where worker and producer are connected first)
    stops: another member leads, the worker fails over to the next node and goes on."""
    leader = live.cluster.node(live.cluster.queue("celery")["leader"])
    r = fault_run("stop-quorum-leader")
    r.send(TASKS)
    r.wait_executed(50)
    assert r.executed() < TASKS, "the run ended before the fault: nothing was in flight"
    fault_at = time.time()
    leader.halt()
    try:
        counts = r.wait_all_done()
        survivor = next(n for n in live.nodes if n is not leader)
        new_leader = live.cluster.queue("celery", node=survivor)["leader"]
    finally:
        _restart(leader)
    print("\n" + r.report(counts, fault_at))
    assert new_leader != leader.name
    assert counts.lost(r.keys) == []
    assert worker.poll() is None, "the worker exited"
    assert _three_running(live)


def test_rotating_every_nodes_certificate_with_tasks_flowing_loses_no_task(live: Live, worker: Any,
                                                                          fault_run) -> None:
    """As the role rotates: each node's new server certificate and key replace the files, then
    its PEM cache is cleared (no restart), node by node, while a publisher keeps tasks in
    flight. New connections to every node are then served the new certificate."""
    from celery_provision import pki

    old = {n.name: _served(live, n) for n in live.nodes}
    r = fault_run("rotate-cluster-certs")
    with tasks_flowing(r):
        r.wait_executed(100)
        fault_at = time.time()
        assert pki.issue(live.d, renew_within_days=400, only=list(NODES)).count("renewed") == len(NODES)
        for host, node in zip(NODES, live.nodes, strict=True):
            install_tls(live.d, host, node.tls_dir)
            node.ctl("eval", "ssl:clear_pem_cache().")
        in_flight = len(r.keys) - r.executed()
    r.send(max(100, TASKS - len(r.keys)))
    counts = r.wait_all_done()
    print("\n" + r.report(counts, fault_at))
    assert in_flight > 0, "nothing was in flight during the rotation"
    for host, node in zip(NODES, live.nodes, strict=True):
        assert _served(live, node) == pem_to_der(live.d.layout.cert(host, "server")) != old[node.name]
    assert counts.lost(r.keys) == []
    assert worker.poll() is None, "the worker exited"


def test_a_rolling_restart_of_every_node_loses_no_task(live: Live, worker: Any, fault_run) -> None:
    """One node at a time, each after `await_online_quorum_plus_one` and booted again before
    the next (the nodes rejoin over TLS distribution with the rotated certificates), while a
    publisher keeps tasks in flight."""
    r = fault_run("rolling-restart")
    with tasks_flowing(r):
        r.wait_executed(50)
        fault_at = time.time()
        for node in live.nodes:
            node.await_quorum_plus_one()
            node.halt()
            _restart(node)
    if len(r.keys) < TASKS:
        r.send(TASKS - len(r.keys))
    counts = r.wait_all_done()
    print("\n" + r.report(counts, fault_at))
    assert counts.lost(r.keys) == []
    assert worker.poll() is None, "the worker exited"
    assert _three_running(live)
    assert set(live.cluster.queue("celery")["members"]) == {n.name for n in live.nodes}
