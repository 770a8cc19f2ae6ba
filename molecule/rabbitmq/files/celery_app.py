"""Celery app of the verify step: RabbitMQ broker (amqps, mutual TLS), RPC result backend.

Routing and the role's settings come from the host's rendered configuration
(rendered_settings.py: every task through the topic exchange celery.tasks, routing key =
queue, no queue made up on the fly; a worker without remote control and events, as no
operator exists). The broker's name, TLS port and vhost and the Celery user come from the
environment (VERIFY_SERVER, VERIFY_PORT, VERIFY_VHOST, VERIFY_USER), set by verify.yml
from the model.

    celery -A celery_app worker ...           the worker (on the worker host)
    python celery_app.py round-trip QUEUE...  tasks on each queue, results over RPC (producer)
    python celery_app.py control              ping and a broadcast must be refused (no operator)
"""

import os
import ssl
import sys

import amqp
from celery import Celery

import rendered_settings


def setting(name):
    """A value verify.yml passes in the environment; none has a default here."""
    value = os.environ.get(name)
    if not value:
        sys.exit(f"celery_app.py: {name} is not set (verify.yml sets it from the model)")
    return value


HERE = os.path.dirname(os.path.abspath(__file__))  # the verify directory, with tls/ and password
SERVER = setting("VERIFY_SERVER")
PORT = int(setting("VERIFY_PORT"))
VHOST = setting("VERIFY_VHOST")
USER = setting("VERIFY_USER")
with open(f"{HERE}/password", encoding="ascii") as fh:
    PASSWORD = fh.read().strip()

app = Celery("verify")
app.conf.update(
    broker_url=f"amqps://{USER}:{PASSWORD}@{SERVER}:{PORT}/{VHOST}",
    broker_use_ssl={
        "ca_certs": f"{HERE}/tls/ca.pem",
        "certfile": f"{HERE}/tls/client.pem",
        "keyfile": f"{HERE}/tls/client.key",
        "cert_reqs": ssl.CERT_REQUIRED,
        "server_hostname": SERVER,
    },
    result_backend="rpc://",  # as rendered: no redis group in this scenario
    broker_connection_retry_on_startup=True,
    **rendered_settings.load(),
)


@app.task(name="verify.add")
def add(x, y):
    return x + y


def round_trip(queues):
    """A task on each queue and a delayed one, results back over the RPC backend."""
    for n, queue in enumerate(queues):
        assert add.apply_async((n, 1), queue=queue).get(timeout=60) == n + 1, queue
    assert add.apply_async((2, 3), queue=queues[0], countdown=1).get(timeout=60) == 5
    print(f"ROUND TRIP OK on {', '.join(queues)}")
    return 0


def control():
    """No operator host, so no Celery user may control workers: RabbitMQ refuses both."""
    attempts = {
        "inspect ping": lambda: app.control.inspect(timeout=5).ping(),
        "rate_limit broadcast": lambda: app.control.rate_limit("verify.add", "1/h", reply=False),
    }
    refused = 0
    for label, action in attempts.items():
        try:
            action()
        except amqp.exceptions.AccessRefused as exc:
            print(f"REFUSED {label}: {exc}")
            refused += 1
        except Exception as exc:  # a verdict only for the broker's refusal
            print(f"ERROR {label}: {type(exc).__name__}: {exc}")
        else:
            print(f"ALLOWED {label}")
    if refused == len(attempts):
        print("CONTROL REFUSED")
        return 0
    return 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["round-trip"] and sys.argv[2:]:
        sys.exit(round_trip(sys.argv[2:]))
    if sys.argv[1:] == ["control"]:
        sys.exit(control())
    sys.exit(__doc__)
