"""Celery app of the verify step: Redis as broker (db 0) and result backend (db 1), mutual TLS.

Routing and the role's settings come from the host's rendered configuration
(rendered_settings.py: each queue's own direct exchange, no queue made up on the fly; a
worker without remote control and events, as no operator exists). The broker's address and
TLS port (VERIFY_REDIS, `ADDRESS:PORT`) and the Celery user (VERIFY_USER) come from the
environment, set by verify.yml from the model.

    celery -A celery_app worker ...   the worker (on the worker host)
    python celery_app.py round-trip   a task, a delayed task and a chord (producer)
    python celery_app.py control      ping and a broadcast must be refused (no operator)
"""

import os
import ssl
import sys

import redis
from celery import Celery, chord

import rendered_settings


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
    broker_connection_retry_on_startup=True,
    **rendered_settings.load(),
)


@app.task(name="verify.add")
def add(x, y):
    return x + y


@app.task(name="verify.total")
def total(values):
    return sum(values)


def round_trip():
    """A task, a delayed task and a chord; results through the Redis backend."""
    assert add.delay(2, 3).get(timeout=60) == 5
    assert add.apply_async((1, 1), countdown=1).get(timeout=60) == 2
    assert chord(add.s(i, i) for i in range(4))(total.s()).get(timeout=60) == 12
    print("ROUND TRIP OK")
    return 0


def _noperm(exc):
    """Whether Redis's ACL refused it (NOPERM), wherever kombu or Celery wrapped it."""
    while exc is not None:
        if isinstance(exc, redis.exceptions.NoPermissionError) or "no permissions" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def control():
    """No operator host, so no Celery user may control workers: Redis refuses both."""
    attempts = {
        "inspect ping": lambda: app.control.inspect(timeout=5).ping(),
        "rate_limit broadcast": lambda: app.control.rate_limit("verify.add", "1/h", reply=False),
    }
    refused = 0
    for label, action in attempts.items():
        try:
            action()
        except Exception as exc:  # a verdict only for the ACL's refusal
            if _noperm(exc):
                print(f"REFUSED {label}: {exc}")
                refused += 1
            else:
                print(f"ERROR {label}: {type(exc).__name__}: {exc}")
        else:
            print(f"ALLOWED {label}")
    if refused == len(attempts):
        print("CONTROL REFUSED")
        return 0
    return 1


if __name__ == "__main__":
    commands = {"round-trip": round_trip, "control": control}
    if sys.argv[1:2] and sys.argv[1] in commands and not sys.argv[2:]:
        sys.exit(commands[sys.argv[1]]())
    sys.exit(__doc__)
