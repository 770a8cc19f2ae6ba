"""The Celery app of the live RabbitMQ role tests, run as its own process per identity.

It takes one host's rendered configuration (``CP_RENDERED``) as it is, swapping only the
transport: ``CP_BROKER_URL`` (plain AMQP to the private node; ``broker_password`` stays the
rendered one), no ``broker_use_ssl`` (unless ``CP_BROKER_TLS=1``: AMQPS as rendered), and ``CP_BACKEND`` where the rendered backend is Redis.
Routing, queues, remote-control and signing settings stay as rendered, and the app calls
``celery_provision.runtime.secure(app)`` as the rendered module says.

``celery -A rabbitlive_app worker ...`` runs a worker; ``python rabbitlive_app.py ACTION ARG...``
does one thing as that identity and prints one JSON line: ``{"ok": true, "value": ...}`` or
``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from celery import Celery, chain, chord, group
from livekit import rendered_config

from celery_provision import canary
from celery_provision.runtime import secure

TIMEOUT = float(os.environ.get("CP_TIMEOUT", "20"))


app = Celery("rabbitlive")
app.config_from_object(rendered_config(os.environ["CP_RENDERED"], os.environ["CP_BROKER_URL"],
                                       os.environ.get("CP_BACKEND"), os.environ.get("CP_QUEUE_TYPE", "classic"),
                                       os.environ.get("CP_BROKER_TLS") == "1"))
secure(app)


@app.task(name="live.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="live.tsum")
def tsum(values: list[int]) -> int:
    return sum(values)


# The fault tests' task (tests/faults): each execution leaves a file.
app.task(name=canary.MARK)(canary.mark_execution)


def _send() -> Any:
    return add.delay(2, 3).get(timeout=TIMEOUT)


def _countdown() -> Any:
    return add.apply_async((2, 3), countdown=1).get(timeout=TIMEOUT)


def _chain(queue: str) -> Any:
    # The second step goes to *queue*: the worker, not the producer, publishes it.
    return chain(add.s(1, 2), add.s(3).set(queue=queue)).apply_async().get(timeout=TIMEOUT)


def _group() -> Any:
    return group(add.s(i, i) for i in range(3)).apply_async().get(timeout=TIMEOUT)


def _chord() -> Any:
    return chord(add.s(i, i) for i in range(3))(tsum.s()).get(timeout=TIMEOUT)


def _publish(routing_key: str) -> Any:
    # Straight to celery.tasks with a routing key of the caller's choice (outside its config).
    return add.apply_async((1, 1), exchange="celery.tasks", routing_key=routing_key, ignore_result=True).id


def _delayed_publish(queue: str) -> Any:
    # Straight to native delayed delivery's entry (level 27), with a 1 s delay in front of a
    # routing key of the caller's choice: where the message lands when its delay runs out.
    from kombu import Exchange
    from kombu.transport.native_delayed_delivery import calculate_routing_key

    return add.apply_async((1, 1), exchange=Exchange("celery_delayed_27", type="topic"),
                           routing_key=calculate_routing_key(1, queue), ignore_result=True).id


def _consume(queue: str) -> Any:
    with app.connection_for_read() as conn:
        channel = conn.channel()
        channel.basic_consume(queue, callback=lambda message: None)
        return "consuming"


def _events() -> Any:
    seen: list[str] = []
    with app.connection_for_read() as conn:
        recv = app.events.Receiver(conn, handlers={"*": lambda event: seen.append(event["type"])})
        try:
            recv.capture(limit=1, timeout=float(os.environ.get("CP_EVENTS_TIMEOUT", "10")))
        except TimeoutError:  # socket.timeout: nothing came
            pass
    return seen


def _ping() -> Any:
    return app.control.ping(timeout=3)


def _rate_limit(rate: str) -> Any:
    return app.control.rate_limit("live.add", rate, reply=True, timeout=3)


def _broadcast(command: str) -> Any:
    # No reply queue: only the publish to celery.pidbox is tried.
    arguments = {"task_name": "live.add", "rate_limit": "1000/m"} if command == "rate_limit" else {}
    app.control.broadcast(command, arguments=arguments, reply=False)
    return "sent"


ACTIONS = {"send": _send, "countdown": _countdown, "chain": _chain, "group": _group, "chord": _chord, "publish": _publish,
           "delayed_publish": _delayed_publish,
           "consume": _consume, "events": _events, "ping": _ping, "rate_limit": _rate_limit,
           "broadcast": _broadcast}


def main(argv: list[str]) -> int:
    try:
        out = {"ok": True, "value": ACTIONS[argv[0]](*argv[1:])}
    except Exception as exc:  # noqa: BLE001 - the error is the result
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
