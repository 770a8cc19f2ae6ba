"""Faults of a replicated Redis under Sentinel in the middle of 1,000 tasks: the group of
tests/sentinelgroup.py (a primary, two replicas, three Sentinels, TLS and ACL everywhere),
Redis the broker and the result backend, a real worker and a signing producer with the
configurations rendered for them (sentinel:// URLs, master_name, sentinel_kwargs).

Each test prints one line (`pytest -s`): sent, completed, duplicates, lost, and the recovery
time, the longest time without an execution from the fault on. The inventory sets
`celery_provision_visibility_timeout` to 20 s, so that messages a worker had taken when the
connection broke are given out again within the run (kombu's Redis transport restores
unacknowledged messages after that timeout; the default is an hour). The rotation runs
first, the failover last: it leaves the old primary down.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import TASKS, FaultRun, fault_runs, tasks_flowing
from livekit import pem_to_der, served_certificate
from sentinelgroup import Group, Node, sentinel_group, wait

pytestmark = [pytest.mark.live, pytest.mark.slow]

VISIBILITY_TIMEOUT = 20

APP = '''
import os

from celery import Celery

from celery_provision import canary
from celery_provision.runtime import secure

app = Celery("sentinelfaults")
app.config_from_object(os.environ["LIVE_CELERY_CONF"])  # the rendered module itself
secure(app)
app.task(name=canary.MARK)(canary.mark_execution)
'''


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Group]:
    variables = {"celery_provision_visibility_timeout": VISIBILITY_TIMEOUT}
    with sentinel_group(tmp_path_factory.mktemp("sentinel-faults"), variables, ports=range(6440, 6460)) as g:
        yield g


@pytest.fixture(scope="module")
def worker(group: Group) -> Any:
    """One worker (two pool processes) through every fault: it must reconnect by itself."""
    return group.start_worker("sentinelfaults", APP, concurrency=2)


@dataclass
class SentinelRun(FaultRun):
    group: Group | None = None

    def queue_depth(self) -> int:
        """Messages waiting in the task list and taken but not acknowledged (kombu's Redis
        transport keeps those in its `unacked` hash until acked or restored), read as the
        admin on the primary the Sentinels name (the producer's user may not: LLEN, HLEN)."""
        assert self.group is not None
        primaries = self.group.primaries()
        if len(primaries) != 1:
            return 1  # mid-failover: not drained
        ((address, _),) = primaries
        admin = self.group.server(address)
        return int(admin.llen(self.app.conf.task_default_queue)) + int(admin.hlen("unacked"))


@pytest.fixture
def fault_run(group: Group, worker: Any, tmp_path: Path) -> Iterator[Callable[[str], FaultRun]]:
    from celery import Celery

    from celery_provision.runtime import secure

    def new(scenario: str) -> FaultRun:
        records = tmp_path / scenario
        records.mkdir()
        app = Celery("sentinelfaults", set_as_current=False)
        app.config_from_object(group.configs["client-1"], force=True)
        secure(app)
        return SentinelRun(scenario, app, records, worker_alive=lambda: worker.poll() is None, group=group)

    with fault_runs(new) as make:
        yield make


def _served(group: Group, node: Node, port: int) -> bytes:
    tls = group.tls
    return served_certificate(node.address, port, Path(tls["ssl_ca_certs"]), Path(tls["ssl_certfile"]),
                              Path(tls["ssl_keyfile"]))


def _sentinels_agree(group: Group, nodes: list[Node]) -> bool:
    return all(int(group.sentinel(n.address).execute_command("SENTINEL", "master", group.master)
                   [b"num-other-sentinels"]) == len(group.nodes) - 1 for n in nodes)


def test_rotating_every_certificate_with_tasks_flowing_loses_no_task(group: Group, worker: Any, fault_run) -> None:
    """As the redis role rotates: each host's new files replace the old ones; each server
    re-reads them (CONFIG SET of the TLS files: same process, no failover); each Sentinel,
    which cannot, is restarted one at a time and back in the quorum before the next."""
    from celery_provision import pki

    d = group.deployment
    hosts = [n.name for n in group.nodes]
    servers = {n.name: n.pid("redis") for n in group.nodes}
    old = {n.name: _served(group, n, group.port) for n in group.nodes}
    r = fault_run("rotate-redis-group")
    with tasks_flowing(r):
        r.wait_executed(100)
        fault_at = time.time()
        assert pki.issue(d, renew_within_days=400, only=hosts).count("renewed") == len(hosts)
        for n in group.nodes:
            for src, dst in ((d.layout.cert(n.name, "server"), "server.pem"), (d.layout.key(n.name, "server"), "server.key")):
                (n.dir / "tls" / dst).write_bytes(src.read_bytes())
            tls = n.dir / "tls"
            assert group.server(n.address).config_set(
                "tls-cert-file", str(tls / "server.pem"), "tls-key-file", str(tls / "server.key"),
                "tls-ca-cert-file", str(tls / "ca.pem")) is True
        for n in group.nodes:
            n.kill("sentinel")
            n.start("sentinel")
            wait(lambda: _sentinels_agree(group, group.nodes), f"{n.name}'s Sentinel back in the quorum", 60)
        in_flight = len(r.keys) - r.executed()
    r.send(max(100, TASKS - len(r.keys)))
    counts = r.wait_all_done()
    print("\n" + r.report(counts, fault_at))
    assert in_flight > 0, "nothing was in flight during the rotation"
    for n in group.nodes:
        new = pem_to_der(d.layout.cert(n.name, "server"))
        assert _served(group, n, group.port) == new != old[n.name]
        assert _served(group, n, group.sentinel_port) == new
    assert {n.name: n.pid("redis") for n in group.nodes} == servers, "a server was restarted"
    assert counts.lost(r.keys) == []
    assert worker.poll() is None, "the worker exited"


def test_killing_the_primary_mid_run_loses_no_task(group: Group, worker: Any, fault_run) -> None:
    """SIGKILL of the primary with the tasks queued and running: the Sentinels promote a
    replica, worker and producer find it through them, and every task runs.

    The tasks are on both replicas before the kill (WAIT): Redis replicates asynchronously,
    and a write the primary acknowledged but had not yet sent on is lost with it; that is
    Redis's promise, not something Celery or this toolkit can change. What the worker
    writes during the run (taking, acknowledging, restoring messages) is what is tested."""
    old = next(n for n in group.nodes if (n.address, group.port) in group.primaries())
    r = fault_run("kill-redis-primary")
    r.send(TASKS)
    assert group.server(old.address).execute_command("WAIT", 2, 5000) == 2
    r.wait_executed(50)
    assert r.executed() < TASKS, "the run ended before the fault: nothing was in flight"
    fault_at = time.time()
    old.kill("redis")
    new = wait(lambda: group.settled_primary(old), "the Sentinels to promote a replica", 60)
    counts = r.wait_all_done()
    print("\n" + r.report(counts, fault_at))
    print(f"promoted {new[0]}; failover and every task done")
    assert new[0] != old.address
    assert counts.lost(r.keys) == []
    assert worker.poll() is None, "the worker exited"
