"""What Celery and kombu need from RabbitMQ, per role: configure/write/read regexes and
topic permissions. Found by running real workers, producers and operators against a real
broker; roles/rabbitmq/README.md gives the reason for each entry and what failed without it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = ["TASK_EXCHANGE", "rabbitmq_permissions"]

#: The topic exchange every task is published to, with its queue's name as routing key: a
#: named exchange (not amq.default) so that topic permissions can narrow who routes where.
TASK_EXCHANGE = "celery.tasks"

# Names Celery 5.7 / kombu 5.7 really use on RabbitMQ (seen on a real broker). RabbitMQ
# matches permission regexes unanchored: `_anchored` anchors every alternative.
_UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_TASK_EXCHANGE = re.escape(TASK_EXCHANGE)
_EVENT_EXCHANGE = r"celeryev"  # topic: events, routing key = event type with '.' (task.succeeded)
_EVENT_QUEUE = r"celeryev\." + _UUID  # an event receiver's queue (celery events, Flower)
_MAILBOX_EXCHANGE = r"celery\.pidbox"  # fanout: remote-control broadcasts
_MAILBOX_NODE_QUEUE = r"[^@]+@[^@]+\.celery\.pidbox"  # a worker's own control queue (NAME@HOST)
_MAILBOX_REPLY_EXCHANGE = r"reply\.celery\.pidbox"  # direct: control replies, routing key = caller oid
_MAILBOX_REPLY_QUEUE = _UUID + r"\.reply\.celery\.pidbox"  # a caller's reply queue
_RPC_REPLY_QUEUE = _UUID  # the RPC result backend's reply queue (app.thread_oid)
_DEFAULT_EXCHANGE = r"amq\.default"  # '' as RabbitMQ names it for permissions
_EVENT_KEYS = r"(task|worker)\.[a-z]+"  # what a worker publishes on celeryev
# Native delayed delivery (kombu.transport.native_delayed_delivery), what an ETA or countdown
# travels through when the task queues are quorum queues: 28 topic exchanges, each with its
# queue (TTL 2^N s, dead-lettered to level N-1), then `celery_delayed_delivery`, bound to each
# task queue's exchange with `#.<routing key>`. A delayed task is published to level 27 with
# the countdown's 28 bits in front of the queue's routing key.
_DELAYED_LEVELS = r"celery_delayed_([0-9]|1[0-9]|2[0-7])"
_DELAYED_ENTRY = r"celery_delayed_27"
_DELAYED_EXCHANGE = r"celery_delayed_delivery"
_DELAYED_PREFIX = r"([01]\.){28}"  # calculate_routing_key: one bit and a dot per level

_ROLES = ("worker", "client", "operator")


def _anchored(names: Sequence[str]) -> str:
    """One regex matching exactly the given (escaped) names; `^$` (nothing) when empty."""
    unique = list(dict.fromkeys(names))
    return "^(" + "|".join(unique) + ")$" if unique else "^$"


def _queue_names(queues: Sequence[str], what: str) -> list[str]:
    if isinstance(queues, str):
        raise ValueError(f"{what} must be a list of queue names, not a string: {queues!r}")
    for queue in queues:
        if not queue or not isinstance(queue, str):
            raise ValueError(f"invalid queue name in {what}: {queue!r}")
        if queue.startswith("amq."):
            raise ValueError(f"queue names starting with 'amq.' are reserved by RabbitMQ: {queue!r}")
    return [re.escape(q) for q in queues]


def rabbitmq_permissions(role: str, queues: Sequence[str], *, task_queues: Sequence[str], rpc_backend: bool,
                         remote_control: bool, quorum: bool = False) -> dict[str, Any]:
    """The least-privilege permissions of one Celery user on the deployment's vhost.

    *role* is `worker`, `client` (a producer) or `operator`; *queues* the host's own (a worker
    consumes them, a producer publishes to them; none for an operator); *task_queues* every
    queue some worker consumes; *rpc_backend* whether results travel back over RabbitMQ
    (`rpc://`); *remote_control* whether operators exist (workers then answer control and
    send events); *quorum* whether the task queues are quorum queues (a cluster), whose ETA and
    countdown tasks go through Celery's native delayed delivery. Returns `configure`, `write`,
    `read` (anchored regexes) and `topic` (a list of `{exchange, write, read}` for RabbitMQ's
    topic permissions).
    """
    if role not in _ROLES:
        raise ValueError(f"unknown role {role!r}: expected one of {', '.join(_ROLES)}")
    own = _queue_names(queues, "queues")
    every = _queue_names(task_queues, "task_queues")
    if role == "operator":
        if own:
            raise ValueError("an operator has no task queues")
        if not remote_control:
            raise ValueError("an operator exists, so remote control must be on")
        return _operator()
    if not own:
        raise ValueError(f"a {role} needs at least one queue")
    if not set(own) <= set(every):
        raise ValueError(f"queues {sorted(set(queues) - set(task_queues))} are consumed by no worker")
    if role == "client":
        return _client(own, rpc_backend=rpc_backend, quorum=quorum)
    return _worker(own, every, rpc_backend=rpc_backend, remote_control=remote_control, quorum=quorum)


def _worker(own: list[str], every: list[str], *, rpc_backend: bool, remote_control: bool,
            quorum: bool) -> dict[str, Any]:
    # Its queues: declared, bound to celery.tasks (write on the queue, read on the exchange),
    # consumed. celery.tasks: declared with them, published to (chains, callbacks, retries,
    # chord_unlock) with any task queue's routing key.
    configure = [*own, _TASK_EXCHANGE]
    write = [*own, _TASK_EXCHANGE]
    read = [*own, _TASK_EXCHANGE]
    topic = [{"exchange": TASK_EXCHANGE, "write": _anchored(every), "read": _anchored(own)}]
    if quorum:
        # At startup (the DelayedDelivery bootstep) it declares the levels, their queues
        # (configure and read on each; write on the next level, their dead-letter exchange),
        # binds them in a chain (write on the destination, read on the source) and binds
        # celery.tasks and its queues to celery_delayed_delivery with `#.<queue>` (so read on
        # celery.tasks covers those keys too). It publishes retries with a countdown to level
        # 27, with any task queue's routing key behind the delay bits.
        configure += [_DELAYED_LEVELS, _DELAYED_EXCHANGE]
        write += [_DELAYED_LEVELS, _DELAYED_EXCHANGE]
        read += [_DELAYED_LEVELS, _DELAYED_EXCHANGE]
        topic = [{"exchange": TASK_EXCHANGE, "write": _anchored(every),
                  "read": _anchored([*own, *(r"\#\." + q for q in own)])},
                 {"exchange": "celery_delayed_27", "write": _anchored([_DELAYED_PREFIX + q for q in every]),
                  "read": _anchored([r"(\*\.){0,27}[01]\.\#"])}]
    if rpc_backend:
        # Results go to the caller's reply queue through the default exchange (a chain's
        # next step keeps the caller's reply_to: the worker declares no reply queue).
        write.append(_DEFAULT_EXCHANGE)
    if remote_control:
        # Its control queue bound to celery.pidbox and consumed; replies published (and the
        # reply exchange declared) on reply.celery.pidbox; events published on celeryev.
        # No write on celery.pidbox: a worker broadcasts nothing (mingle is off).
        configure += [_MAILBOX_NODE_QUEUE, _MAILBOX_EXCHANGE, _MAILBOX_REPLY_EXCHANGE, _EVENT_EXCHANGE]
        write += [_MAILBOX_NODE_QUEUE, _MAILBOX_REPLY_EXCHANGE, _EVENT_EXCHANGE]
        read += [_MAILBOX_NODE_QUEUE, _MAILBOX_EXCHANGE]
        topic.append({"exchange": "celeryev", "write": _anchored([_EVENT_KEYS]), "read": "^$"})
    return {"configure": _anchored(configure), "write": _anchored(write), "read": _anchored(read), "topic": topic}


def _client(own: list[str], *, rpc_backend: bool, quorum: bool) -> dict[str, Any]:
    # Publishes to celery.tasks with its own queues' routing keys; declares nothing (its
    # task_queues have no_declare); with rpc:// it declares and consumes its reply queue.
    # With quorum queues an ETA or countdown task goes to celery_delayed_27 instead, its own
    # queues' routing keys behind the delay bits (the workers declared that exchange).
    rpc = [_RPC_REPLY_QUEUE] if rpc_backend else []
    topic = [{"exchange": TASK_EXCHANGE, "write": _anchored(own), "read": "^$"}]
    if quorum:
        topic.append({"exchange": "celery_delayed_27", "write": _anchored([_DELAYED_PREFIX + q for q in own]),
                      "read": "^$"})
    return {
        "configure": _anchored(rpc),
        "write": _anchored([_TASK_EXCHANGE, *([_DELAYED_ENTRY] if quorum else [])]),
        "read": _anchored(rpc),
        "topic": topic,
    }


def _operator() -> dict[str, Any]:
    # Control: broadcast on celery.pidbox (declared first), replies through its own reply
    # queue bound to reply.celery.pidbox. Events: its own celeryev.<uuid> queue bound to
    # celeryev with '#' (every event), consumed.
    return {
        "configure": _anchored([_MAILBOX_EXCHANGE, _MAILBOX_REPLY_EXCHANGE, _MAILBOX_REPLY_QUEUE,
                                _EVENT_EXCHANGE, _EVENT_QUEUE]),
        "write": _anchored([_MAILBOX_EXCHANGE, _MAILBOX_REPLY_QUEUE, _EVENT_QUEUE]),
        "read": _anchored([_MAILBOX_REPLY_EXCHANGE, _MAILBOX_REPLY_QUEUE, _EVENT_EXCHANGE, _EVENT_QUEUE]),
        "topic": [],
    }
