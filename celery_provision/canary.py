"""The canary app: a Celery app whose tasks prove a deployment works end to end.

Workers deployed by the celery_worker role run it unless the inventory names another app;
`celery-provision verify` sends it a signed task and waits for the answer.
"""

from __future__ import annotations

import os
import socket
import time
import uuid

from celery import Celery, Task

from celery_provision.runtime import secure

__all__ = ["app", "ping", "touch", "admin_touch", "mark", "mark_execution", "add", "total", "grow_chord",
           "PING", "TOUCH", "ADMIN_TOUCH", "MARK", "ADD", "TOTAL", "GROW_CHORD"]

PING = "celery_provision.canary.ping"
TOUCH = "celery_provision.canary.touch"
#: Outside `celery_provision.canary.*`: the task a restricted producer may not call.
ADMIN_TOUCH = "celery_provision.admin.touch"
MARK = "celery_provision.canary.mark"
ADD = "celery_provision.canary.add"
TOTAL = "celery_provision.canary.total"
GROW_CHORD = "celery_provision.canary.grow_chord"

app = Celery("celery_provision_canary")
app.config_from_object(os.environ.get("CELERY_CONFIG_MODULE", "celeryconfig"))  # lazy: read on first use


secure(app)  # the signed envelope, installed when the configuration is first read


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


@app.task(name=ADMIN_TOUCH)
def admin_touch(path: str) -> str:
    """`touch` under a name outside the canary's namespace: the local inventory's producer
    may call `celery_provision.canary.*` only, so this proves its allow-list."""
    return str(touch(path))


def mark_execution(directory: str, key: str, seconds: float = 0.0) -> str:
    """Work for *seconds*, then record one execution of *key* as a new file in *directory*
    (`KEY.PID.RANDOM`): tests count executions without trusting the result backend."""
    time.sleep(seconds)
    with open(os.path.join(directory, f"{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"), "x"):
        pass
    return key


#: The fault tests' task; other apps register `mark_execution` under the same name.
mark = app.task(name=MARK)(mark_execution)


# Canvas: small tasks that chains, groups and chords are built from, so the live tests can
# prove that every canvas feature works under the brokers' least-privilege rules.


@app.task(name=ADD)
def add(x: int, y: int) -> int:
    """x + y."""
    return x + y


@app.task(name=TOTAL)
def total(values: list[int]) -> int:
    """The sum of a chord header's results."""
    return sum(values)


@app.task(name=GROW_CHORD, bind=True)
def grow_chord(self: Task, x: int) -> int:
    """Add one more `add(x, x)` to the chord this task runs in (`Task.add_to_chord`)."""
    self.add_to_chord(add.s(x, x))
    return x
