"""rabbitmq_permissions: what each Celery role may do on RabbitMQ, and nothing more.

Every entry was found against real Celery 5.7 processes (roles/rabbitmq/README.md, and
tests/test_rabbitmq_roles_live.py runs them); these tests pin the specification: a name is
allowed when RabbitMQ's unanchored match (re.search) finds it in the regex.
"""

from __future__ import annotations

import re

import pytest

from celery_provision.acl import TASK_EXCHANGE, rabbitmq_permissions

TASK_QUEUES = ["celery", "hi"]
UUID = "8f2d6b1e-3c4a-4e5f-9a7b-0c1d2e3f4a5b"
NODE_QUEUE = "worker-1@host.example.celery.pidbox"
REPLY_QUEUE = f"{UUID}.reply.celery.pidbox"
EVENT_QUEUE = f"celeryev.{UUID}"
CONTROL = ["celery.pidbox", "reply.celery.pidbox", NODE_QUEUE, REPLY_QUEUE]
EVENTS = ["celeryev", EVENT_QUEUE]
KINDS = ["configure", "write", "read"]


def allows(regex: str, name: str) -> bool:
    return re.search(regex, name) is not None  # RabbitMQ: re:run, unanchored


def worker(*, queues=("celery",), rpc=False, remote_control=True):
    return rabbitmq_permissions("worker", list(queues), task_queues=TASK_QUEUES, rpc_backend=rpc,
                                remote_control=remote_control)


def client(*, queues=("celery",), rpc=False):
    return rabbitmq_permissions("client", list(queues), task_queues=TASK_QUEUES, rpc_backend=rpc,
                                remote_control=True)


def operator(*, rpc=False):
    return rabbitmq_permissions("operator", [], task_queues=TASK_QUEUES, rpc_backend=rpc, remote_control=True)


def topic(perms, exchange):
    [entry] = [t for t in perms["topic"] if t["exchange"] == exchange]
    return entry


ALL = {
    "worker": worker(rpc=True), "worker without remote control": worker(rpc=True, remote_control=False),
    "client": client(rpc=True), "client without rpc": client(), "operator": operator(rpc=True),
}


# --- shape --------------------------------------------------------------------------------

@pytest.mark.parametrize("perms", ALL.values(), ids=ALL.keys())
def test_gives_three_regexes_and_a_list_of_topic_permissions(perms):
    assert set(perms) == {"configure", "write", "read", "topic"}
    assert all(set(t) == {"exchange", "write", "read"} for t in perms["topic"])


@pytest.mark.parametrize("perms", ALL.values(), ids=ALL.keys())
def test_every_regex_is_anchored(perms):
    regexes = [perms[k] for k in KINDS] + [t[k] for t in perms["topic"] for k in ("write", "read")]
    assert all(r == "^$" or (r.startswith("^(") and r.endswith(")$")) for r in regexes)


@pytest.mark.parametrize("perms", ALL.values(), ids=ALL.keys())
@pytest.mark.parametrize("name", ["celery-other", "xcelery", "celery.tasks.x", "amq.topic", "amq.direct",
                                  "amq.gen-JzTY20BRgKO-HjmUJj0wLg", "celeryev.not-a-uuid"])
def test_no_role_gets_names_beyond_celerys_own(perms, name):
    assert not any(allows(perms[k], name) for k in KINDS)


def test_same_input_gives_same_output():
    assert worker(rpc=True) == worker(rpc=True)


# --- worker ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_worker_declares_binds_and_consumes_its_own_queues(kind):
    assert allows(worker(queues=["celery", "hi"])[kind], "hi")


@pytest.mark.parametrize("kind", KINDS)
def test_worker_has_nothing_on_another_workers_queue(kind):
    assert not allows(worker(queues=["celery"])[kind], "hi")


@pytest.mark.parametrize("kind", KINDS)
def test_worker_declares_publishes_to_and_binds_from_the_task_exchange(kind):
    assert allows(worker()[kind], TASK_EXCHANGE)


def test_worker_publishes_to_every_task_queue_for_chains():
    assert topic(worker(queues=["celery"]), TASK_EXCHANGE)["write"] == "^(celery|hi)$"


def test_worker_binds_the_task_exchange_only_with_its_own_queues():
    assert topic(worker(queues=["celery"]), TASK_EXCHANGE)["read"] == "^(celery)$"


def test_worker_answers_control_on_its_own_node_queue():
    perms = worker()
    assert all(allows(perms[k], NODE_QUEUE) for k in KINDS)


def test_worker_node_queue_may_carry_dots_in_the_node_name():
    assert allows(worker()["read"], "worker-1.example.com@host.example.com.celery.pidbox")


def test_worker_binds_to_but_never_broadcasts_on_celery_pidbox():
    perms = worker()
    assert allows(perms["read"], "celery.pidbox") and allows(perms["configure"], "celery.pidbox")
    assert not allows(perms["write"], "celery.pidbox")


def test_worker_publishes_control_replies_but_reads_no_reply_queue():
    perms = worker()
    assert allows(perms["write"], "reply.celery.pidbox")
    assert not any(allows(perms[k], REPLY_QUEUE) for k in KINDS)
    assert not allows(perms["read"], "reply.celery.pidbox")


def test_worker_publishes_events_but_does_not_receive_them():
    perms = worker()
    assert allows(perms["write"], "celeryev")
    assert not allows(perms["read"], "celeryev")
    assert not any(allows(perms[k], EVENT_QUEUE) for k in KINDS)


@pytest.mark.parametrize("key", ["task.succeeded", "task.received", "worker.heartbeat", "worker.online"])
def test_worker_event_routing_keys_are_task_and_worker_events(key):
    assert allows(topic(worker(), "celeryev")["write"], key)


@pytest.mark.parametrize("key", ["task", "other.event", "task.succeeded.x", "#"])
def test_worker_publishes_no_other_event_routing_key(key):
    assert not allows(topic(worker(), "celeryev")["write"], key)


@pytest.mark.parametrize("name", [*CONTROL, *EVENTS])
def test_worker_without_remote_control_has_no_control_or_events(name):
    perms = worker(remote_control=False)
    assert not any(allows(perms[k], name) for k in KINDS)
    assert [t["exchange"] for t in perms["topic"]] == [TASK_EXCHANGE]


def test_worker_with_rpc_publishes_results_through_the_default_exchange():
    assert allows(worker(rpc=True)["write"], "amq.default")


@pytest.mark.parametrize("kind", KINDS)
def test_worker_with_rpc_has_nothing_on_reply_queues(kind):
    assert not allows(worker(rpc=True)[kind], UUID)


@pytest.mark.parametrize("name", ["amq.default", UUID])
def test_worker_without_rpc_has_nothing_for_results(name):
    perms = worker(rpc=False)
    assert not any(allows(perms[k], name) for k in KINDS)


# --- client (producer) ------------------------------------------------------------------------

def test_client_writes_only_to_the_task_exchange():
    assert client()["write"] == "^(celery\\.tasks)$"


def test_client_routes_only_to_its_own_queues():
    assert topic(client(queues=["celery"]), TASK_EXCHANGE) == {"exchange": TASK_EXCHANGE, "write": "^(celery)$",
                                                               "read": "^$"}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", TASK_QUEUES)
def test_client_has_nothing_on_task_queues(kind, name):
    assert not allows(client(queues=TASK_QUEUES, rpc=True)[kind], name)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", [*CONTROL, *EVENTS, "amq.default"])
def test_client_has_nothing_on_control_events_or_the_default_exchange(kind, name):
    assert not allows(client(rpc=True)[kind], name)


def test_client_without_rpc_declares_and_reads_nothing():
    perms = client(rpc=False)
    assert (perms["configure"], perms["read"]) == ("^$", "^$")


@pytest.mark.parametrize("kind", ["configure", "read"])
def test_client_with_rpc_declares_and_consumes_its_reply_queue(kind):
    assert allows(client(rpc=True)[kind], UUID)


def test_client_with_rpc_binds_nothing():
    assert not allows(client(rpc=True)["write"], UUID)


# --- operator ---------------------------------------------------------------------------------

def test_operator_broadcasts_on_celery_pidbox():
    perms = operator()
    assert allows(perms["configure"], "celery.pidbox") and allows(perms["write"], "celery.pidbox")


@pytest.mark.parametrize("kind", KINDS)
def test_operator_receives_replies_on_its_own_reply_queue(kind):
    assert allows(operator()[kind], REPLY_QUEUE)


def test_operator_binds_from_the_reply_exchange_without_publishing_to_it():
    perms = operator()
    assert allows(perms["read"], "reply.celery.pidbox") and not allows(perms["write"], "reply.celery.pidbox")


@pytest.mark.parametrize("kind", KINDS)
def test_operator_receives_events_on_its_own_event_queue(kind):
    assert allows(operator()[kind], EVENT_QUEUE)


def test_operator_binds_from_the_event_exchange_without_publishing_to_it():
    perms = operator()
    assert allows(perms["read"], "celeryev") and not allows(perms["write"], "celeryev")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", [*TASK_QUEUES, TASK_EXCHANGE, "amq.default", NODE_QUEUE, UUID])
def test_operator_has_nothing_on_tasks_results_or_worker_queues(kind, name):
    assert not allows(operator(rpc=True)[kind], name)


def test_operator_needs_no_topic_permissions():
    assert operator()["topic"] == []


# --- input --------------------------------------------------------------------------------------

def test_queue_names_are_matched_literally():
    perms = rabbitmq_permissions("worker", ["tasks.high", "a+b"], task_queues=["tasks.high", "a+b"],
                                 rpc_backend=False, remote_control=False)
    assert allows(perms["configure"], "tasks.high") and not allows(perms["configure"], "tasksXhigh")
    assert allows(perms["configure"], "a+b") and not allows(perms["configure"], "aab")


def test_duplicate_queues_appear_once():
    perms = rabbitmq_permissions("worker", ["celery", "celery"], task_queues=["celery"], rpc_backend=False,
                                 remote_control=False)
    assert perms["configure"] == "^(celery|celery\\.tasks)$"


@pytest.mark.parametrize("role", ["admin", "producer", ""])
def test_unknown_roles_are_refused(role):
    with pytest.raises(ValueError, match="unknown role"):
        rabbitmq_permissions(role, ["celery"], task_queues=TASK_QUEUES, rpc_backend=False, remote_control=True)


@pytest.mark.parametrize("role", ["worker", "client"])
@pytest.mark.parametrize("queues", [[], "celery", [""], ["amq.q"]])
def test_bad_queue_lists_are_refused(role, queues):
    with pytest.raises(ValueError):
        rabbitmq_permissions(role, queues, task_queues=TASK_QUEUES, rpc_backend=False, remote_control=True)


def test_a_queue_no_worker_consumes_is_refused():
    with pytest.raises(ValueError, match="consumed by no worker"):
        client(queues=["elsewhere"])


def test_an_operator_with_queues_is_refused():
    with pytest.raises(ValueError, match="no task queues"):
        rabbitmq_permissions("operator", ["celery"], task_queues=TASK_QUEUES, rpc_backend=False,
                             remote_control=True)


def test_an_operator_without_remote_control_is_refused():
    with pytest.raises(ValueError, match="remote control"):
        rabbitmq_permissions("operator", [], task_queues=TASK_QUEUES, rpc_backend=False, remote_control=False)


# --- quorum queues (a cluster): native delayed delivery --------------------------------------

DELAY = "0." * 27 + "1."  # a 1 s countdown's 28 bits, as kombu's calculate_routing_key writes them


def test_a_quorum_worker_may_set_up_every_delayed_delivery_level_and_nothing_beyond() -> None:
    perms = rabbitmq_permissions("worker", ["celery"], task_queues=TASK_QUEUES, rpc_backend=False,
                                 remote_control=False, quorum=True)
    names = [f"celery_delayed_{i}" for i in range(28)] + ["celery_delayed_delivery"]
    assert all(allows(perms[k], n) for k in KINDS for n in names)
    assert not any(allows(perms[k], n) for k in KINDS for n in ("celery_delayed_28", "celery_delayed_", "celery_delayed_x"))


def test_a_quorum_producer_may_publish_delays_only_to_its_own_queues() -> None:
    perms = rabbitmq_permissions("client", ["celery"], task_queues=TASK_QUEUES, rpc_backend=False,
                                 remote_control=True, quorum=True)
    assert allows(perms["write"], "celery_delayed_27") and not allows(perms["configure"], "celery_delayed_27")
    entry = topic(perms, "celery_delayed_27")
    assert allows(entry["write"], DELAY + "celery")
    assert not allows(entry["write"], DELAY + TASK_QUEUES[-1])
    assert not allows(entry["write"], "celery")  # no delay bits: not a delayed task
    assert not any(allows(perms["write"], f"celery_delayed_{i}") for i in range(27))


def test_classic_queues_grant_nothing_of_delayed_delivery() -> None:
    for perms in ALL.values():
        assert not any(allows(perms[k], "celery_delayed_27") for k in KINDS)
