"""Celery app of the verify step: Redis as broker (db 0) and result backend (db 1), mutual TLS.

The broker's address and TLS port (VERIFY_REDIS, `ADDRESS:PORT`) and the Celery user
(VERIFY_USER) come from the environment, set by verify.yml from the model.
"""

import os
import ssl
import sys

from celery import Celery, chord


def setting(name):
    """A value verify.yml passes in the environment; none has a default here."""
    value = os.environ.get(name)
    if not value:
        sys.exit(f"celery_app.py: {name} is not set (verify.yml sets it from the model)")
    return value


HERE = os.path.dirname(os.path.abspath(__file__))  # the verify directory, with tls/ and password
SERVER = setting("VERIFY_REDIS")
USER = setting("VERIFY_USER")
with open(f"{HERE}/password", encoding="ascii") as fh:
    PASSWORD = fh.read().strip()
TLS = {
    "ssl_cert_reqs": ssl.CERT_REQUIRED,
    "ssl_ca_certs": f"{HERE}/tls/ca.pem",
    "ssl_certfile": f"{HERE}/tls/client.pem",
    "ssl_keyfile": f"{HERE}/tls/client.key",
}

app = Celery("verify")
app.conf.update(
    broker_url=f"rediss://{USER}:{PASSWORD}@{SERVER}/0",
    result_backend=f"rediss://{USER}:{PASSWORD}@{SERVER}/1",
    broker_use_ssl=TLS,
    redis_backend_use_ssl=TLS,
    task_default_queue="celery",
    worker_send_task_events=True,
    broker_connection_retry_on_startup=True,
)


@app.task
def add(x, y):
    return x + y


@app.task
def total(values):
    return sum(values)


def round_trip():
    """A task, a delayed task, a chord and a remote-control ping; prints what came back."""
    assert add.delay(2, 3).get(timeout=60) == 5
    assert add.apply_async((1, 1), countdown=1).get(timeout=60) == 2
    assert chord(add.s(i, i) for i in range(4))(total.s()).get(timeout=60) == 12
    replies = app.control.inspect(timeout=10).ping()
    assert replies, "no worker answered inspect ping"
    print("ROUND TRIP OK")
