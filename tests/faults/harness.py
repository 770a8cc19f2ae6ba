"""The fault harness: runs of canary `mark` tasks (`celery_provision.canary.MARK`) whose
executions are counted from files the worker writes (not from the result backend, which some
faults restart), and probes of the worker and the broker. A run needs only a signing client
app: the local deployment's (conftest.py) or a cluster's (test_cluster_faults.py).
"""

from __future__ import annotations

import os
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livedeploy import LocalDeployment, role_default

#: Tasks per scenario; each sleeps 5-20 ms before recording its execution.
TASKS = 1000
#: Generous bounds (never expectations of speed): a run that does not finish in this time
#: has lost tasks or a worker that did not come back.
RUN_TIMEOUT = float(os.environ.get("FAULTS_RUN_TIMEOUT", "600"))
SERVICE_TIMEOUT = 180.0


def task_seconds(i: int) -> float:
    """5 to 20 ms: short, but long enough for a fault to land in the middle of a task."""
    return 0.005 + (i % 16) / 1000


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = RUN_TIMEOUT,
             interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Counts:
    """What one scenario sent and what the worker executed, per task key."""

    scenario: str
    sent: int
    executions: Counter[str]

    @property
    def completed(self) -> int:
        return len(self.executions)

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.executions.values())

    def lost(self, keys: list[str]) -> list[str]:
        return [k for k in keys if k not in self.executions]

    def line(self, keys: list[str]) -> str:
        return (f"fault {self.scenario}: sent={self.sent} completed={self.completed} "
                f"duplicates={self.duplicates} lost={len(self.lost(keys))}")


@dataclass
class FaultRun:
    """Canary `mark` tasks sent by *app*, a signing client; each execution leaves one file in
    `records`."""

    scenario: str
    app: Any
    records: Path
    #: Whether the worker still runs, where the test owns it: a run gives up at once when not.
    worker_alive: Callable[[], bool] | None = None
    #: Send without asking for results (no rpc reply queue is declared for them).
    ignore_result: bool = False
    #: Errors of a send that the producer retries (the same key, after a second), as an
    #: application would where the broker refused the publish; counted in `republished`.
    retry_on: tuple[type[BaseException], ...] = ()
    republished: int = 0
    keys: list[str] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)

    # -- sending
    def send(self, count: int, app: Any = None) -> None:
        from celery_provision import canary

        app = app or self.app
        for _ in range(count):
            i = len(self.keys)
            key = f"{self.scenario}-{i:05d}"
            self.keys.append(key)
            for attempt in range(5):
                try:
                    self.results.append(app.send_task(canary.MARK, args=[str(self.records), key, task_seconds(i)],
                                                      ignore_result=self.ignore_result))
                    break
                except self.retry_on:
                    if attempt == 4:
                        raise
                    self.republished += 1
                    time.sleep(1)

    # -- counting
    def counts(self) -> Counts:
        executions: Counter[str] = Counter(name.split(".", 1)[0] for name in os.listdir(self.records))
        return Counts(self.scenario, len(self.keys), executions)

    def executed(self) -> int:
        return len(os.listdir(self.records))

    def _alive(self) -> None:
        if self.worker_alive is not None and not self.worker_alive():
            raise AssertionError(f"the worker exited during {self.scenario}")

    def wait_executed(self, n: int) -> None:
        wait_for(lambda: self._alive() or self.executed() >= n, f"{n} executions in {self.scenario}")

    def wait_all_done(self) -> Counts:
        """Every key executed at least once, then the queue drained and the count settled."""
        wait_for(lambda: self._alive() or not self.counts().lost(self.keys), f"every task of {self.scenario} to run")
        stable = {"last": -1, "quiet": 0}

        def settled() -> bool:
            now = self.executed()
            stable["quiet"] = stable["quiet"] + 1 if now == stable["last"] and self.queue_depth() == 0 else 0
            stable["last"] = now
            return stable["quiet"] >= 5

        wait_for(settled, f"the queue of {self.scenario} to drain", interval=0.5)
        return self.counts()

    def longest_pause(self, since: float) -> float:
        """The longest time without a task's first execution from *since* (a `time.time()`)
        to the last one: how long the fault stopped the work (each file's mtime is its
        execution; a duplicate run later, such as a message restored after its visibility
        timeout, is not work that waited)."""
        first: dict[str, float] = {}
        for name in os.listdir(self.records):
            key, mtime = name.split(".", 1)[0], os.stat(self.records / name).st_mtime
            first[key] = min(mtime, first.get(key, mtime))
        times = sorted(t for t in first.values() if t >= since)
        return max((b - a for a, b in zip([since, *times], times, strict=False)), default=0.0)

    def report(self, counts: Counts, fault_at: float) -> str:
        """The scenario's line: sent, completed, duplicates, lost, the recovery time from
        *fault_at* (a `time.time()`), and the publishes the producer had to repeat."""
        return (f"{counts.line(self.keys)} recovery={self.longest_pause(fault_at):.1f}s"
                f" republished={self.republished}")

    def queue_depth(self) -> int:
        """Messages ready in the task queue (redelivered ones included)."""
        with self.app.connection_for_write() as conn:
            queue = self.app.conf.task_default_queue
            return conn.default_channel.queue_declare(queue, passive=True).message_count

    def results_missing(self) -> int:
        """Tasks whose result the backend does not have (informational: Redis restarts)."""
        return sum(1 for r in self.results if r.state != "SUCCESS")

    def close(self) -> None:
        try:
            self.app.close()
        except Exception:
            pass


class Worker:
    """The deployed worker service, seen from outside: its main process and pool children."""

    def __init__(self, deployment: LocalDeployment) -> None:
        host = deployment.deployment.group("celery_workers")[0].name
        self.service = deployment.worker_service
        run_dir = Path(role_default("celery_worker", "celery_worker_run_dir", host))
        self.pidfile = run_dir / f"{self.service}.pid"
        self.state_dir = Path(role_default("celery_worker", "celery_worker_state_dir", host))
        self.user = str(role_default("celery_worker", "celery_worker_user", host))

    def main_pid(self) -> int:
        pid = int(self.pidfile.read_text().strip())
        os.kill(pid, 0)  # raises if it is gone
        return pid

    def children(self) -> list[int]:
        main = self.main_pid()
        out = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == main:
                    out.append(int(entry.name))
        return sorted(out)


def answers_ping(deployment: LocalDeployment, workdir: Path, timeout: float = 30.0) -> bool:
    """A signed canary task makes the round trip through the worker."""
    from celery_provision import canary

    app = deployment.client_app(workdir)
    try:
        nonce = uuid.uuid4().hex
        return app.send_task(canary.PING, args=[nonce]).get(timeout=timeout)["nonce"] == nonce
    except Exception:
        return False
    finally:
        app.close()


@contextmanager
def fault_runs(new: Callable[[str], FaultRun]) -> Iterator[Callable[[str], FaultRun]]:
    """The fixtures' factory of runs: `make(scenario)` returns *new*(scenario), and every run
    made is closed on exit."""
    runs: list[FaultRun] = []

    def make(scenario: str) -> FaultRun:
        runs.append(new(scenario))
        return runs[-1]

    try:
        yield make
    finally:
        for r in runs:
            r.close()


class Publisher(threading.Thread):
    """Keeps tasks flowing while something else happens: sends batches whenever fewer than
    *backlog* tasks are waiting, until told to stop (then sends nothing more)."""

    def __init__(self, fault_run: FaultRun, *, batch: int = 25, backlog: int = 150) -> None:
        super().__init__(daemon=True)
        self.run_ = fault_run
        self.batch = batch
        self.backlog = backlog
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.trace = ""

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                if len(self.run_.keys) - self.run_.executed() < self.backlog:
                    self.run_.send(self.batch)
                else:
                    time.sleep(0.05)
        except BaseException as exc:  # reported by the test
            self.error = exc
            self.trace = traceback.format_exc()


@contextmanager
def tasks_flowing(fault_run: FaultRun) -> Iterator[None]:
    """A `Publisher` keeping *fault_run*'s tasks flowing for the duration of the block; it
    stops sending at the block's end, and the block fails if a send failed."""
    publisher = Publisher(fault_run)
    publisher.start()
    try:
        yield
    finally:
        publisher.stop.set()
        publisher.join()
    assert publisher.error is None, publisher.trace
