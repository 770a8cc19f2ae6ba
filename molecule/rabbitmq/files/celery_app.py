"""Celery app of the verify step: RabbitMQ broker (amqps, mutual TLS), RPC result backend.

The broker's name, TLS port and vhost and the Celery user come from the environment
(VERIFY_SERVER, VERIFY_PORT, VERIFY_VHOST, VERIFY_USER), set by verify.yml from the model.
"""

import os
import ssl
import sys

from celery import Celery


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
    result_backend="rpc://",
    task_default_queue="celery",
    worker_send_task_events=True,
    task_send_sent_event=True,
    broker_connection_retry_on_startup=True,
)


@app.task(name="verify.add")
def add(x, y):
    return x + y


def round_trip():
    """Tasks on both queues, results over RPC, a remote-control ping."""
    assert add.apply_async((2, 3), queue="celery").get(timeout=60) == 5
    assert add.apply_async((1, 1), queue="high").get(timeout=60) == 2
    replies = app.control.inspect(timeout=10).ping()
    assert replies, "no worker answered inspect ping"
    print("ROUND TRIP OK")


if __name__ == "__main__":
    round_trip()
