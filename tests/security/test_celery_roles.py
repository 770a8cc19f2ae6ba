"""Each identity can do its own job and nothing more, tried with its own rendered configuration
and credentials: the producer (client) publishes tasks and reads results, the operator inspects
and controls workers, the worker consumes. Every probe is what a taken-over identity would try
next; the controls show the same identity doing its real job."""

from __future__ import annotations

import contextlib
import socket
import ssl
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from celery_provision import acl, canary

# What RabbitMQ and Redis answer when permissions refuse an operation, as py-amqp, kombu
# and redis-py pass it on.
REFUSALS = ("ACCESS_REFUSED", "access_refused", "AccessRefused", "NOPERM", "NoPermission")


def refusal(attempt: Callable[[], object]) -> str | None:
    """The broker's refusal of *attempt*, or None if it was allowed."""
    try:
        attempt()
    except Exception as exc:  # which exception depends on the transport; its text names the refusal
        text = f"{type(exc).__name__}: {exc}"
        assert any(mark in text for mark in REFUSALS), f"failed, but not as a refusal: {text}"
        return text
    return None


@pytest.fixture(scope="module")
def apps(live) -> Iterator[Callable[[str], Any]]:
    """`apps(host)`: a Celery app configured exactly as *host* (its rendered config, signing on)."""
    made: dict[str, Any] = {}

    def app_of(host: str) -> Any:
        if host not in made:
            workdir = live.tmp / f"role-{host}"
            workdir.mkdir(exist_ok=True)
            made[host] = live.handle.client_app(workdir, host)
        return made[host]

    yield app_of
    for app in made.values():
        with contextlib.suppress(Exception):
            app.close()


@pytest.fixture(scope="module")
def operator(live) -> str:
    operators = live.d.group("celery_operators")
    if not operators:
        pytest.skip("the deployment has no operator host")
    return operators[0].name


@pytest.fixture(scope="module")
def producer(live) -> str:
    clients = live.d.group("celery_clients")
    if not clients:
        pytest.skip("the deployment has no client host")
    return clients[0].name


def consume(app: Any, queue: str) -> None:
    """Start a consumer on *queue*, declaring nothing, and wait a moment for a message."""
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1)
        known = app.amqp.queues.get(queue) or app.amqp.queues.new_missing(queue)
        bare = type(known)(known.name, known.exchange, known.routing_key, no_declare=True)
        consumer = app.amqp.Consumer(conn.default_channel, queues=[bare], accept=["json"],
                                     callbacks=[lambda body, message: message.requeue()])
        with consumer, contextlib.suppress(socket.timeout, TimeoutError):
            conn.drain_events(timeout=1)


def read_events(app: Any) -> None:
    """Read the event stream as `celery events` and Flower do."""
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1)
        receiver = app.events.Receiver(conn, handlers={"*": lambda event: None})
        with contextlib.suppress(socket.timeout, TimeoutError):
            receiver.capture(limit=1, timeout=1, wakeup=False)


def amqp_channel(live, host: str) -> Any:
    """A raw py-amqp channel logged in as *host* over mutual TLS (its certificate, its password)."""
    import amqp

    e = live.endpoint("rabbitmq")
    cert, key = live.tls_pair(host)
    conn = amqp.Connection(f"{e.address}:{e.port}", userid=host, password=live.password("rabbitmq", host),
                           virtual_host=live.d.settings.vhost, connect_timeout=10,
                           ssl={"ca_certs": str(live.layout.ca_pem), "certfile": str(cert), "keyfile": str(key),
                                "cert_reqs": ssl.CERT_REQUIRED, "server_hostname": e.address})
    conn.connect()
    return conn.channel()


def publish_confirmed(channel: Any, exchange: str, routing_key: str, body: bytes = b"{}") -> None:
    """Publish with confirms, so a refusal comes back before this returns."""
    import amqp

    channel.confirm_select()
    channel.basic_publish_confirm(amqp.Message(body, content_type="application/json"), exchange=exchange,
                                  routing_key=routing_key, timeout=10)


def needs_rabbitmq(live) -> None:
    if live.d.settings.broker != "rabbitmq":
        pytest.skip("RabbitMQ is not the broker of this deployment")


# --------------------------------------------------------------------------- the producer


@pytest.mark.probe
def test_producer_cannot_consume_a_task_queue(live, apps, producer) -> None:
    queue = live.d.host(producer).queues[0]
    assert refusal(lambda: consume(apps(producer), queue)) is not None, f"{producer} consumed {queue!r}"


@pytest.mark.probe
def test_producer_cannot_read_the_event_stream(apps, producer) -> None:
    assert refusal(lambda: read_events(apps(producer))) is not None, f"{producer} read task events"


@pytest.mark.probe
def test_producer_cannot_broadcast_remote_control(apps, producer) -> None:
    # An unknown task: had the broadcast got through, it would still change nothing.
    attempt = lambda: apps(producer).control.rate_limit("security.probe.no_such_task", "1/h", reply=False)  # noqa: E731
    assert refusal(attempt) is not None, f"{producer}'s rate_limit broadcast was published"


@pytest.mark.probe
def test_producer_cannot_ping_the_workers(apps, producer) -> None:
    assert refusal(lambda: apps(producer).control.ping(timeout=2)) is not None, f"{producer}'s ping went out"


@pytest.mark.probe
def test_producer_cannot_publish_to_a_worker_control_queue_directly(live, producer) -> None:
    """Past the broadcast exchange: straight to a worker's own pidbox queue by name, through
    the default exchange."""
    needs_rabbitmq(live)
    worker = live.d.group("celery_workers")[0].name
    channel = amqp_channel(live, producer)
    try:
        why = refusal(lambda: publish_confirmed(channel, "", f"{worker}@{socket.gethostname()}.celery.pidbox"))
    finally:
        with contextlib.suppress(Exception):
            channel.connection.close()
    assert why is not None, f"{producer} published to {worker}'s control queue"


@pytest.mark.probe
def test_producer_cannot_route_a_task_outside_its_own_queues(live, producer) -> None:
    needs_rabbitmq(live)
    channel = amqp_channel(live, producer)
    try:
        why = refusal(lambda: publish_confirmed(channel, acl.TASK_EXCHANGE, f"not-its-queue-{uuid.uuid4().hex[:6]}"))
    finally:
        with contextlib.suppress(Exception):
            channel.connection.close()
    assert why is not None, f"{producer} routed a task to a queue it was not given"


def test_control_the_producer_sends_a_task_that_runs_and_reads_its_result(apps, producer) -> None:
    nonce = uuid.uuid4().hex
    answer = apps(producer).send_task(canary.PING, args=[nonce]).get(timeout=60)
    assert answer["nonce"] == nonce


# --------------------------------------------------------------------------- the operator


def test_control_the_operator_ping_is_answered_by_every_worker(live, apps, operator) -> None:
    replies = apps(operator).control.ping(timeout=5)
    answered = {name.split("@", 1)[0] for reply in replies for name in reply}
    assert answered == {w.name for w in live.d.group("celery_workers")}, replies


def test_control_the_operator_reads_the_event_stream(apps, operator) -> None:
    assert refusal(lambda: read_events(apps(operator))) is None


@pytest.mark.probe
def test_operator_cannot_consume_a_task_queue(live, apps, operator) -> None:
    queue = live.d.task_queues[0]
    assert refusal(lambda: consume(apps(operator), queue)) is not None, f"{operator} consumed {queue!r}"


@pytest.mark.probe
def test_operator_cannot_publish_a_task(live, operator) -> None:
    needs_rabbitmq(live)
    channel = amqp_channel(live, operator)
    try:
        why = refusal(lambda: publish_confirmed(channel, acl.TASK_EXCHANGE, live.d.task_queues[0]))
    finally:
        with contextlib.suppress(Exception):
            channel.connection.close()
    assert why is not None, f"{operator} published to a task queue"


# --------------------------------------------------------------------------- the worker


@pytest.mark.probe
def test_worker_cannot_broadcast_control_to_other_workers(live, apps) -> None:
    worker = live.d.group("celery_workers")[0].name
    attempt = lambda: apps(worker).control.rate_limit("security.probe.no_such_task", "1/h", reply=False)  # noqa: E731
    assert refusal(attempt) is not None, f"{worker}'s broadcast was published"
