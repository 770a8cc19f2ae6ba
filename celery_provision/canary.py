"""The canary app: a Celery app whose tasks prove a deployment works end to end.

Workers deployed by the celery_worker role run it unless the inventory names another app;
`celery-provision verify` sends it a signed task and waits for the answer.
"""

from __future__ import annotations

import os
import socket
import time
import uuid

from celery import Celery

__all__ = ["app", "ping", "touch", "mark", "PING", "TOUCH", "MARK"]

PING = "celery_provision.canary.ping"
TOUCH = "celery_provision.canary.touch"
MARK = "celery_provision.canary.mark"

app = Celery("celery_provision_canary")
app.config_from_object(os.environ.get("CELERY_CONFIG_MODULE", "celeryconfig"))  # lazy: read on first use


@app.on_after_configure.connect
def _enable_signing(sender: Celery, **_: object) -> None:
    """Sign and check every message as soon as the configuration is read: a worker checks
    `accept_content` (which names the `auth` serializer) before `worker_init` fires."""
    sender.setup_security()


@app.task(name=PING)
def ping(nonce: str) -> dict[str, str]:
    """Answer with the nonce and who answered."""
    return {"nonce": nonce, "host": socket.gethostname(), "pid": str(os.getpid())}


@app.task(name=TOUCH)
def touch(path: str) -> str:
    """Leave a side effect (create *path*): the proof that a task ran, for tests of refusal."""
    with open(path, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    return path


@app.task(name=MARK)
def mark(directory: str, key: str, seconds: float = 0.0) -> str:
    """Work for *seconds*, then record one execution of *key* as a new file in *directory*
    (`KEY.PID.RANDOM`): tests count executions without trusting the result backend."""
    time.sleep(seconds)
    with open(os.path.join(directory, f"{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"), "x"):
        pass
    return key
