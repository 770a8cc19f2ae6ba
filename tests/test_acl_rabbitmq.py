"""rabbitmq_permissions: the least-privilege regexes a Celery 5.7 user needs on RabbitMQ.

The names were found by running a real worker and client against a real broker
(roles/rabbitmq/README.md); these tests pin what the function grants and refuses.
"""

from __future__ import annotations

import re

import pytest

from celery_provision.acl import rabbitmq_permissions

QUEUES = ["celery", "high"]
UUID = "8f2d6b1e-3c4a-4e5f-9a7b-0c1d2e3f4a5b"  # fixed, so parallel test collection agrees


def allows(regex: str, name: str) -> bool:
    # RabbitMQ matches permission regexes unanchored (re:run), like re.search.
    return re.search(regex, name) is not None


@pytest.fixture
def perms() -> dict[str, str]:
    return rabbitmq_permissions(QUEUES, rpc_backend=True)


def test_returns_configure_write_and_read(perms):
    assert set(perms) == {"configure", "write", "read"}


@pytest.mark.parametrize("kind", ["configure", "write", "read"])
def test_every_regex_is_anchored(perms, kind):
    assert perms[kind].startswith("^(") and perms[kind].endswith(")$")


@pytest.mark.parametrize("kind", ["configure", "write", "read"])
@pytest.mark.parametrize("queue", QUEUES)
def test_task_queues_and_their_exchanges_are_allowed(perms, kind, queue):
    assert allows(perms[kind], queue)


@pytest.mark.parametrize("kind", ["configure", "write", "read"])
@pytest.mark.parametrize("name", ["celeryev", "celery.pidbox", "reply.celery.pidbox"])
def test_event_and_mailbox_exchanges_are_allowed(perms, kind, name):
    assert allows(perms[kind], name)


@pytest.mark.parametrize("kind", ["configure", "write", "read"])
@pytest.mark.parametrize(
    "name",
    [f"celeryev.{UUID}", "worker-1@host.example.celery.pidbox", f"{UUID}.reply.celery.pidbox"],
)
def test_event_and_mailbox_queues_are_allowed(perms, kind, name):
    assert allows(perms[kind], name)


def test_task_publishing_needs_write_on_the_default_exchange():
    for rpc in (True, False):
        assert allows(rabbitmq_permissions(QUEUES, rpc_backend=rpc)["write"], "amq.default")


@pytest.mark.parametrize("kind", ["configure", "read"])
def test_the_default_exchange_is_only_written_to(perms, kind):
    assert not allows(perms[kind], "amq.default")


@pytest.mark.parametrize("kind", ["configure", "read"])
def test_rpc_backend_reply_queue_is_allowed_with_rpc(perms, kind):
    assert allows(perms[kind], UUID)


@pytest.mark.parametrize("kind", ["configure", "write", "read"])
def test_rpc_reply_queue_is_refused_without_rpc(kind):
    assert not allows(rabbitmq_permissions(QUEUES, rpc_backend=False)[kind], UUID)


@pytest.mark.parametrize("kind", ["configure", "write", "read"])
@pytest.mark.parametrize(
    "name",
    [
        "not-celery",
        "celery-other",  # a prefix match would allow this
        "xcelery",  # a suffix match would allow this
        "amq.topic",
        "amq.direct",
        "amq.gen-JzTY20BRgKO-HjmUJj0wLg",  # server-named queues: Celery does not use them
        "celeryev.not-a-uuid",
        f"{UUID}.reply.other.pidbox",
        "",
    ],
)
def test_other_names_are_refused(perms, kind, name):
    assert not allows(perms[kind], name)


def test_queue_names_are_matched_literally():
    perms = rabbitmq_permissions(["tasks.high", "a+b"], rpc_backend=False)
    assert allows(perms["configure"], "tasks.high")
    assert not allows(perms["configure"], "tasksXhigh")
    assert allows(perms["configure"], "a+b")
    assert not allows(perms["configure"], "aab")


def test_duplicate_queues_appear_once():
    perms = rabbitmq_permissions(["celery", "celery"], rpc_backend=False)
    assert perms["configure"].count("celery|") == 1


@pytest.mark.parametrize("queues", [[], "celery", [""], ["amq.q"]])
def test_bad_queue_lists_are_refused(queues):
    with pytest.raises(ValueError):
        rabbitmq_permissions(queues, rpc_backend=False)


def test_same_input_gives_same_output():
    assert rabbitmq_permissions(QUEUES, rpc_backend=True) == rabbitmq_permissions(QUEUES, rpc_backend=True)
