"""Least privilege by role on a real RabbitMQ, with real Celery 5.7 processes.

A private node (tests/rabbitnode.py: its own name, ports and database; plain AMQP on
127.0.0.1) gets the users of a temporary inventory with exactly the permissions
`rabbitmq_permissions` gives them: worker-1 (queues celery and hi), client-1 (a producer of
celery) and ops-1 (an operator). Each identity runs as its own process with its rendered
configuration, only the transport swapped (tests/rabbitlive_app.py). Round trips run with
the RPC backend and with results elsewhere (the rendered Redis backend, swapped for a file
backend); refusals run against the RPC permissions, the wider ones. A third stack declares
every task queue as a quorum queue, with the same permissions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import livekit
import pytest
import rabbitnode
import yaml

from celery_provision import acl, cli, credentials, model, render

pytestmark = [pytest.mark.live, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
QUEUES = {"worker-1": ["celery", "hi"], "client-1": ["celery"]}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[rabbitnode.RabbitNode]:
    reason = rabbitnode.unavailable_reason()
    if reason:
        pytest.skip(reason)
    with rabbitnode.RabbitNode(tmp_path_factory.mktemp("rabbit")) as n:
        yield n


@dataclass
class Stack:
    """One deployment's identities on the node, with its worker running."""

    node: rabbitnode.RabbitNode
    vhost: str
    dir: Path
    backend: str
    perms: dict[str, dict[str, Any]]
    queue_type: str = "classic"

    @property
    def label(self) -> str:
        """The stack's name on the node (its vhost and user suffix)."""
        return self.backend if self.queue_type == "classic" else f"{self.backend}-{self.queue_type}"

    def env(self, host: str) -> dict[str, str]:
        return os.environ | {"CP_RENDERED": str(self.dir / f"{host}.py"), "CP_BROKER_URL": self.node.url(self.user(host), self.vhost),
                             "CP_BACKEND": f"file://{self.dir / 'results'}", "PYTHONPATH": str(HERE),
                             "CP_TIMEOUT": "15", "CP_EVENTS_TIMEOUT": "10", "CP_QUEUE_TYPE": self.queue_type}

    def user(self, host: str) -> str:
        """*host*'s user on the node: the rendered name, per stack (each has its own passwords)."""
        return f"{host}-{self.label}"

    def act(self, host: str, *args: str) -> dict[str, Any]:
        """One action of tests/rabbitlive_app.py as *host*: {"ok": True, "value"} or {"ok": False, "error"}."""
        out = subprocess.run([sys.executable, str(HERE / "rabbitlive_app.py"), *args], env=self.env(host),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])

    def celery(self, host: str, *args: str) -> subprocess.CompletedProcess[str]:
        """The `celery` command line as *host* (as an operator runs it)."""
        return subprocess.run([str(BIN / "celery"), "-A", "rabbitlive_app", *args], env=self.env(host),
                              capture_output=True, text=True, timeout=60, cwd=self.dir)


def _inventory(base: Path, backend: str) -> Path:
    inv = base / "inv"
    (inv / "group_vars").mkdir(parents=True)
    hosts = {
        "rabbitmq": {"rabbitmq-1": {"ansible_host": "127.0.0.1", "celery_provision_extra_sans": ["localhost"]}},
        "redis": {"redis-1": {"ansible_host": "127.0.0.1"}},
        "celery_workers": {"worker-1": {"ansible_host": "127.0.0.1", "celery_provision_queues": QUEUES["worker-1"]}},
        "celery_clients": {"client-1": {"ansible_host": "127.0.0.1", "celery_provision_queues": QUEUES["client-1"]}},
        "celery_operators": {"ops-1": {"ansible_host": "127.0.0.1"}},
    }
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": {g: {"hosts": h} for g, h in hosts.items()}}}))
    (inv / "group_vars" / "all.yml").write_text(yaml.safe_dump({
        "celery_provision_broker": "rabbitmq", "celery_provision_result_backend": backend,
        "celery_provision_vhost": "celery", "celery_provision_key_type": "ec-p256",
        "celery_provision_signing_key_type": "rsa2048"}))
    for command in ("certs issue", "credentials"):  # offline: a CA, certificates, password files
        assert cli.main([*command.split(), "-i", str(inv)]) == 0
    return inv


def _start_worker(stack: Stack) -> subprocess.Popen[bytes]:
    # The worker's command line as roles/celery_worker renders it (remote control is on here).
    return livekit.start_worker(
        [str(BIN / "celery"), "-A", "rabbitlive_app", "worker", "-Q", ",".join(QUEUES["worker-1"]),
         "--hostname", "worker-1@%h", "-c", "1", "--without-mingle", "--without-gossip", "--loglevel", "info"],
        stack.env("worker-1"), stack.dir, stack.dir / "worker.log", timeout=40)


def _stack(node: rabbitnode.RabbitNode, base: Path, backend: str, queue_type: str = "classic") -> Iterator[Stack]:
    d = model.load(_inventory(base, backend))
    s = Stack(node, "", base, backend, {}, queue_type)
    s.vhost = f"celery-{s.label}"  # the stacks share the node, not a vhost or a user
    users = {}
    for host in d.apps:
        s.perms[host.name] = acl.rabbitmq_permissions(
            str(host.role), host.queues, task_queues=d.task_queues, rpc_backend=d.settings.result_backend == "rpc",
            remote_control=d.remote_control, quorum=queue_type == "quorum")
        user = d.user(host, "rabbitmq")
        users[s.user(user)] = (credentials.password(d, "rabbitmq", user), s.perms[host.name])
        (base / f"{host.name}.py").write_text(render.render(d, host, controller_paths=True))
    (base / "results").mkdir()
    node.load_users(users, vhost=s.vhost)
    worker = _start_worker(s)
    yield s
    livekit.stop_worker(worker)


@pytest.fixture(scope="module")
def rpc_stack(node: rabbitnode.RabbitNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Results over RabbitMQ (`rpc://`): the wider permissions, so the refusals run here."""
    yield from _stack(node, tmp_path_factory.mktemp("rpc"), "rpc")


@pytest.fixture(scope="module")
def elsewhere_stack(node: rabbitnode.RabbitNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Results in another backend (rendered for Redis, swapped for a file backend)."""
    yield from _stack(node, tmp_path_factory.mktemp("elsewhere"), "redis")


@pytest.fixture(scope="module")
def quorum_stack(node: rabbitnode.RabbitNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The RPC stack with every task queue a quorum queue (the worker declares them so, with the
    same permissions): not the rendered queue type, a proof that the permissions carry it."""
    yield from _stack(node, tmp_path_factory.mktemp("quorum"), "rpc", "quorum")


@pytest.fixture(params=["rpc_stack", "elsewhere_stack"], ids=["rpc-backend", "results-elsewhere"])
def stack(request: pytest.FixtureRequest) -> Stack:
    return request.getfixturevalue(request.param)


def refused(result: dict[str, Any], name: str) -> bool:
    return not result["ok"] and "ACCESS_REFUSED" in result["error"] and f"'{name}'" in result["error"]


# --- what each role must be able to do ---------------------------------------------------------

def test_producer_task_runs_on_the_worker_and_its_result_is_read(stack: Stack) -> None:
    assert stack.act("client-1", "send") == {"ok": True, "value": 5}


def test_producer_chain_continues_through_the_worker_to_another_queue(stack: Stack) -> None:
    # The producer sends the first step; the worker publishes the second to `hi`.
    assert stack.act("client-1", "chain", "hi") == {"ok": True, "value": 6}


def test_producer_group_results_are_read(stack: Stack) -> None:
    assert stack.act("client-1", "group") == {"ok": True, "value": [0, 2, 4]}


def test_producer_chord_runs(elsewhere_stack: Stack) -> None:
    # Not with rpc://: Celery's RPC backend has no chords (results reach only the caller).
    assert elsewhere_stack.act("client-1", "chord") == {"ok": True, "value": 6}


def test_operator_inspect_ping_is_answered(stack: Stack) -> None:
    out = stack.celery("ops-1", "inspect", "ping", "--timeout", "3")
    assert out.returncode == 0 and "pong" in out.stdout, out.stdout + out.stderr


def test_operator_control_rate_limit_is_obeyed(stack: Stack) -> None:
    out = stack.celery("ops-1", "control", "rate_limit", "live.add", "1000/m", "--timeout", "3")
    assert out.returncode == 0 and "new rate limit set successfully" in out.stdout, out.stdout + out.stderr


def test_operator_receives_events_as_flower_does(stack: Stack) -> None:
    result = stack.act("ops-1", "events")
    assert result["ok"] and result["value"], result


def test_quorum_worker_declares_its_queues_as_quorum_queues(quorum_stack: Stack) -> None:
    out = quorum_stack.node.ctl("list_queues", "-p", quorum_stack.vhost, "--no-table-headers", "name", "type")
    types = dict(line.split() for line in out.splitlines() if line.strip())
    assert {q: types.get(q) for q in QUEUES["worker-1"]} == {q: "quorum" for q in QUEUES["worker-1"]}, out


def test_quorum_producer_task_runs_on_the_worker_and_its_result_is_read(quorum_stack: Stack) -> None:
    assert quorum_stack.act("client-1", "send") == {"ok": True, "value": 5}


def test_quorum_producer_chain_continues_through_the_worker_to_another_queue(quorum_stack: Stack) -> None:
    assert quorum_stack.act("client-1", "chain", "hi") == {"ok": True, "value": 6}


def test_quorum_countdown_runs_through_native_delayed_delivery(quorum_stack: Stack) -> None:
    """With quorum queues Celery sends an ETA or countdown task through its native delayed
    delivery (exchanges and queues `celery_delayed_0..27`, declared by the worker at startup)."""
    assert quorum_stack.act("client-1", "countdown") == {"ok": True, "value": 5}


def test_quorum_worker_set_up_native_delayed_delivery_without_a_refusal(quorum_stack: Stack) -> None:
    out = quorum_stack.node.ctl("list_exchanges", "-p", quorum_stack.vhost, "--no-table-headers", "name")
    assert {f"celery_delayed_{i}" for i in range(28)} | {"celery_delayed_delivery"} <= set(out.split())
    assert "ACCESS_REFUSED" not in (quorum_stack.dir / "worker.log").read_text(errors="replace")


def test_quorum_producer_cannot_route_a_delayed_task_to_a_queue_it_does_not_own(quorum_stack: Stack) -> None:
    assert quorum_stack.act("client-1", "delayed_publish", "celery")["ok"]  # its own: allowed
    assert refused(quorum_stack.act("client-1", "delayed_publish", "hi"), "celery_delayed_27")


# --- what each role must not be able to do -------------------------------------------------------

def test_producer_cannot_route_to_a_queue_it_does_not_own(rpc_stack: Stack) -> None:
    assert refused(rpc_stack.act("client-1", "publish", "hi"), "hi")


def test_producer_cannot_consume_a_task_queue(rpc_stack: Stack) -> None:
    assert refused(rpc_stack.act("client-1", "consume", "celery"), "celery")


def test_producer_cannot_bind_to_the_event_stream(rpc_stack: Stack) -> None:
    assert refused(rpc_stack.act("client-1", "events"), "celeryev")


def test_producer_ping_is_refused(rpc_stack: Stack) -> None:
    result = rpc_stack.act("client-1", "ping")
    assert not result["ok"] and "ACCESS_REFUSED" in result["error"], result


def test_producer_rate_limit_broadcast_is_refused(rpc_stack: Stack) -> None:
    assert refused(rpc_stack.act("client-1", "broadcast", "rate_limit"), "celery.pidbox")


def test_operator_cannot_consume_a_task_queue(rpc_stack: Stack) -> None:
    assert refused(rpc_stack.act("ops-1", "consume", "celery"), "celery")


def test_worker_cannot_broadcast_to_other_workers(rpc_stack: Stack) -> None:
    assert refused(rpc_stack.act("worker-1", "broadcast", "ping"), "celery.pidbox")
