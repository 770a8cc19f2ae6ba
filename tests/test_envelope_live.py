"""The signed envelope (celery_provision.runtime) with real Celery workers (issue #12).

Real parts: a private redis-server (broker and result backend; plain TCP on 127.0.0.1, a
free port in 6410-6419: TLS is proven elsewhere), the PKI and passwords that
`celery-provision certs issue` and `credentials` make for a temporary inventory, and the
configuration rendered for each host (`render` with controller paths) with only the
transport swapped. `worker-1` (queue `celery`) and `worker-2` (queue `second`) are real
`celery worker` processes (prefork, -c 2, acks late, reject on worker lost, as rendered).
The producers live in this process: `client-1` (may call `envlive.*` only), `worker-1`'s
identity as a producer, `client-1` with its next signing key (rotation) and the operator
`ops-1`, secured last because kombu's serializer registry is per process: control
messages are signed by the last identity secured.

Tasks note each run in files under `runs/` (one line per run, the pool process id), so
that a test counts executions instead of trusting results. Each security test was seen
to fail with its protection removed (the test's docstring names the protection).
"""

from __future__ import annotations

import copy
import gc
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redislive

pytestmark = [pytest.mark.live, pytest.mark.slow]

redis = pytest.importorskip("redis")
celery = pytest.importorskip("celery")

from celery import Celery, chain, chord, group  # noqa: E402
from celery.exceptions import SecurityError, TaskRevokedError  # noqa: E402

PORTS = range(6410, 6420)
TIMEOUT = float(os.environ.get("LIVE_TIMEOUT", "20"))

HOSTS = {
    "redis": {"redis-1": {"ansible_host": "127.0.0.1"}},
    "celery_workers": {
        "worker-1": {"ansible_host": "127.0.0.1", "celery_provision_queues": ["celery"]},
        "worker-2": {"ansible_host": "127.0.0.1", "celery_provision_queues": ["second"]},
    },
    "celery_clients": {"client-1": {"ansible_host": "127.0.0.1", "celery_provision_queues": ["celery", "second"],
                                    "celery_provision_allowed_tasks": ["envlive.*"]}},
    "celery_operators": {"ops-1": {"ansible_host": "127.0.0.1"}},
}
VARS = {
    "celery_provision_broker": "redis",
    "celery_provision_result_backend": "redis",
    "celery_provision_auth": "password",
    "celery_provision_key_type": "ec-p256",
    "celery_provision_signing_key_type": "rsa2048",
}

TASKS = '''
import os, runpy, time
from pathlib import Path

from celery import Celery
from celery_provision.runtime import secure

app = Celery("envlive")
app.config_from_object(runpy.run_path(os.environ["ENVLIVE_CONF"])["CONFIG"])
secure(app)
RUNS = Path(os.environ["ENVLIVE_RUNS"])


def note(tag, what):
    with open(RUNS / f"{tag}.{what}", "a") as f:
        f.write(f"{os.getpid()}\\n")


@app.task(name="envlive.add")
def add(x, y):
    return x + y


@app.task(name="envlive.tsum")
def tsum(numbers):
    return sum(numbers)


@app.task(name="envlive.count")
def count(tag):
    note(tag, "run")
    return tag


@app.task(name="envlive.slow")
def slow(tag, seconds):
    note(tag, "start")
    time.sleep(seconds)
    note(tag, "done")
    return tag


@app.task(name="envlive.retry_once", bind=True, max_retries=3)
def retry_once(self, tag):
    note(tag, "run")
    if self.request.retries < 1:
        raise self.retry(countdown=0.2)
    return self.request.retries


@app.task(name="envadmin.purge")
def purge(tag):
    note(tag, "run")
    return "purged"
'''


def _config(source: str, port: int) -> dict[str, Any]:
    """The rendered configuration as a dict, its transport swapped for the plain server."""
    ns: dict[str, Any] = {}
    exec(compile(source, "celeryconfig", "exec"), ns)  # noqa: S102 - our own rendered module
    conf = {k: v for k, v in ns.items() if k.islower() and not k.startswith("_")
            and not callable(v) and not isinstance(v, type(os))}
    assert conf["broker_url"].startswith("rediss://")
    conf["broker_url"] = f"redis://127.0.0.1:{port}/0"
    for key in ("broker_use_ssl", "broker_password", "redis_backend_use_ssl", "redis_password"):
        conf.pop(key, None)
    if "result_backend" in conf:  # operators read no results: they have no backend
        conf["result_backend"] = f"redis://127.0.0.1:{port}/1"
    return conf


@dataclass
class Worker:
    name: str
    queue: str
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    starts: int = 0


@dataclass
class Live:
    tmp: Path
    port: int
    configs: dict[str, dict[str, Any]]
    store: Path
    runs: Path
    workers: dict[str, Worker] = field(default_factory=dict)
    apps: dict[str, Celery] = field(default_factory=dict)

    # -- workers
    def start(self, name: str) -> None:
        w = self.workers[name]
        w.starts += 1
        conf_file = self.tmp / f"conf_{name.replace('-', '_')}.py"
        conf_file.write_text(f"CONFIG = {self.configs[name]!r}\n")
        w.log = self.tmp / f"{name}.{w.starts}.log"
        args = [sys.executable, "-m", "celery", "-A", "envlive", "worker", "-Q", w.queue,
                "--hostname", f"{name}@%h", "-c", "2", "--loglevel", "info", "--without-mingle",
                "--without-gossip"]
        env = dict(os.environ, ENVLIVE_CONF=str(conf_file), ENVLIVE_RUNS=str(self.runs), PYTHONPATH=str(self.tmp))
        with open(w.log, "w") as out:
            w.proc = subprocess.Popen(args, cwd=self.tmp, env=env, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, name: str) -> None:
        self.wait_log(name, " ready.", timeout=60)

    def stop(self, name: str) -> None:
        proc = self.workers[name].proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self, name: str) -> None:
        self.stop(name)
        self.start(name)
        self.wait_ready(name)

    def log_text(self, name: str) -> str:
        log = self.workers[name].log
        return log.read_text() if log and log.exists() else ""

    def wait_log(self, name: str, needle: str, *, timeout: float = TIMEOUT) -> str:
        """The line of *name*'s current log that holds *needle*, once it appears."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_text(name).splitlines():
                if needle in line:
                    return line
            proc = self.workers[name].proc
            if proc is not None and proc.poll() is not None:
                pytest.fail(f"{name} exited: {self.log_text(name)[-1500:]}")
            time.sleep(0.1)
        pytest.fail(f"{name} never logged {needle!r}: {self.log_text(name)[-1500:]}")

    # -- what ran
    def runs_of(self, tag: str, what: str = "run") -> list[str]:
        path = self.runs / f"{tag}.{what}"
        return path.read_text().split() if path.exists() else []

    def wait_runs(self, tag: str, what: str, count: int) -> list[str]:
        deadline = time.monotonic() + TIMEOUT
        while len(self.runs_of(tag, what)) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.runs_of(tag, what)

    # -- producers
    def sig(self, app: str, name: str, *args: Any, **options: Any) -> Any:
        return self.apps[app].signature(name, args=args, **options)


def _tag() -> str:
    return uuid.uuid4().hex


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    from celery_provision import render
    from celery_provision.runtime import secure

    tmp = tmp_path_factory.mktemp("envelope")
    d = redislive.deployment(tmp, HOSTS, VARS)
    port = redislive.free_port(PORTS)
    with redislive.redis_server(tmp, port):
        configs = {h: _config(render.render(d, d.host(h), controller_paths=True), port)
                   for h in ("worker-1", "worker-2", "client-1", "ops-1")}
        configs["client-1-next"] = _next_signing_key(d, configs["client-1"], tmp)
        (tmp / "envlive.py").write_text(TASKS)
        runs = tmp / "runs"
        runs.mkdir()
        live = Live(tmp, port, configs, Path(configs["worker-1"]["celery_provision_envelope"]["store"]), runs)
        live.workers = {"worker-1": Worker("worker-1", "celery"), "worker-2": Worker("worker-2", "second")}
        try:
            for name in live.workers:
                live.start(name)
            for name in live.workers:
                live.wait_ready(name)
            # The operator last: it signs this process's control messages (see the docstring).
            for key, host in (("worker", "worker-1"), ("client", "client-1"), ("client-next", "client-1-next"),
                              ("operator", "ops-1")):
                app = Celery("envlive", set_as_current=False)
                app.config_from_object(configs[host])
                secure(app)
                # Configured now, so secured in this order.
                assert app.conf.task_serializer == configs[host]["task_serializer"]
                live.apps[key] = app
            yield live
        finally:
            for name in live.workers:
                live.stop(name)
            gc.collect()  # results never fulfilled (a refused chain's steps) unsubscribe while Redis runs
            for app in live.apps.values():
                app.close()


def _next_signing_key(d: Any, conf: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """client-1's configuration with a second signing key and certificate, issued by the
    deployment's CA as `certs issue` issues signing certificates (EKU codeSigning)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from celery_provision.pki.certs import cert_pem
    from celery_provision.pki.keys import generate_key, key_pem
    from celery_provision.pki.leaves import build_leaf, leaf_specs

    spec = next(s for s in leaf_specs(d) if s.host == "client-1" and s.kind == "signing")
    ca_cert = x509.load_pem_x509_certificate(d.layout.root_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(d.layout.root_key.read_bytes(), password=None)
    key = generate_key(spec.key_type)
    cert = build_leaf(spec, key, ca_cert, ca_key)
    (tmp / "next-signing.key").write_bytes(key_pem(key))
    (tmp / "next-signing.pem").write_bytes(cert_pem(cert))
    conf = copy.deepcopy(conf)
    conf["celery_provision_envelope"].update(key=str(tmp / "next-signing.key"), cert=str(tmp / "next-signing.pem"))
    return conf


@pytest.fixture
def store(live: Live) -> Iterator[Callable[..., None]]:
    """`store(name, *pem_files)`: set the signer store's `<name>.pem` to those certificates
    (none: remove it); every file is put back as it was after the test."""
    saved = {p.name: p.read_bytes() for p in live.store.glob("*.pem")}

    def put(name: str, *pems: Path) -> None:
        target = live.store / f"{name}.pem"
        if not pems:
            target.unlink(missing_ok=True)
            return
        part = target.with_suffix(".part")
        part.write_bytes(b"".join(p.read_bytes() for p in pems))
        part.replace(target)

    yield put
    for path in live.store.glob("*.pem"):
        if path.name not in saved:
            path.unlink()
    for name, data in saved.items():
        path = live.store / name
        if not path.exists() or path.read_bytes() != data:
            part = path.with_suffix(".part")
            part.write_bytes(data)
            part.replace(path)


@contextmanager
def captured() -> Iterator[list[dict[str, Any]]]:
    """The task messages this process publishes meanwhile, as sent (envelope included)."""
    from celery import signals

    seen: list[dict[str, Any]] = []

    def keep(sender: Any = None, body: Any = None, headers: Any = None, exchange: Any = None,
             routing_key: Any = None, **_: Any) -> None:
        seen.append({"body": copy.deepcopy(body), "headers": copy.deepcopy(headers),
                     "exchange": getattr(exchange, "name", exchange), "routing_key": routing_key})

    signals.after_task_publish.connect(keep, weak=False)
    try:
        yield seen
    finally:
        signals.after_task_publish.disconnect(keep)


def republish(live: Live, message: dict[str, Any], queue: str) -> None:
    """Publish a captured task message again with kombu, envelope as it was (no new
    signature) and body serialized by the same serializer: the same bytes."""
    app = live.apps["client"]
    with app.producer_or_acquire() as producer:
        producer.publish(message["body"], exchange=queue, routing_key=queue, headers=message["headers"],
                         serializer=app.conf.task_serializer)


def verdict(live: Live, worker: str, task_id: str, tag: str, *, runs: int = 0) -> str:
    """Once *worker* has handled the count task *task_id* (tag *tag*, which ran *runs* times
    before): its refusal line, or what ran instead."""
    needle = f"celery-provision refused task envlive.count[{task_id}] from "
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        line = next((line for line in live.log_text(worker).splitlines() if needle in line), None)
        if line is not None:
            return line.split(needle, 1)[1]
        if len(live.runs_of(tag)) > runs:
            return f"not refused: it ran ({len(live.runs_of(tag))} runs in all)"
        time.sleep(0.05)
    return f"{worker} neither refused nor ran it in {TIMEOUT:.0f} s"


# --- the canvas and Celery's own features, under the envelope ------------------------------


def test_chain_across_workers(live: Live) -> None:
    res = chain(live.sig("client", "envlive.add", 1, 1), live.sig("client", "envlive.add", 2, queue="second"),
                live.sig("client", "envlive.add", 3)).delay()
    assert res.get(timeout=TIMEOUT) == 7


def test_group(live: Live) -> None:
    res = group(live.sig("client", "envlive.add", i, i) for i in range(4)).delay()
    assert res.get(timeout=TIMEOUT) == [0, 2, 4, 6]


def test_chord(live: Live) -> None:
    res = chord([live.sig("client", "envlive.add", i, i) for i in range(4)])(live.sig("client", "envlive.tsum"))
    assert res.get(timeout=TIMEOUT) == 12


def test_retry_completes(live: Live) -> None:
    """The retry is a new message, signed by the worker that retries."""
    tag = _tag()
    assert live.sig("client", "envlive.retry_once", tag).delay().get(timeout=TIMEOUT) == 1
    assert len(live.runs_of(tag)) == 2


def test_countdown_runs(live: Live) -> None:
    tag = _tag()
    assert live.sig("client", "envlive.count", tag).apply_async(countdown=1).get(timeout=TIMEOUT) == tag
    assert len(live.runs_of(tag)) == 1


def test_expired_message_is_revoked_not_run(live: Live) -> None:
    import datetime as dt

    tag = _tag()
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    res = live.sig("client", "envlive.count", tag).apply_async(expires=past)
    with pytest.raises(TaskRevokedError):
        res.get(timeout=TIMEOUT)
    assert live.runs_of(tag) == []


def test_revoked_by_id_before_its_eta_is_not_run(live: Live) -> None:
    """The operator's revoke travels in the signed `celery-provision` serializer."""
    tag = _tag()
    res = live.sig("client", "envlive.count", tag).apply_async(countdown=3)
    live.apps["operator"].control.revoke(res.id)
    with pytest.raises(TaskRevokedError):
        res.get(timeout=TIMEOUT)
    live.wait_log("worker-1", f"Tasks flagged as revoked: {res.id}")  # by the signed revoke, not the ETA
    assert live.runs_of(tag) == []


def test_unsigned_revoke_is_not_obeyed(live: Live) -> None:
    """The operator's configuration without `secure`: its revoke is plain JSON, which a
    worker's mailbox does not accept, so the task runs at its ETA. Protection: the
    mailbox's `celery-provision` serializer."""
    tag = _tag()
    res = live.sig("client", "envlive.count", tag).apply_async(countdown=2)
    plain = Celery("envlive", set_as_current=False)
    plain.config_from_object(live.configs["ops-1"])
    try:
        plain.control.revoke(res.id)
    finally:
        plain.close()
    assert res.get(timeout=TIMEOUT) == tag
    assert f"Tasks flagged as revoked: {res.id}" not in live.log_text("worker-1")


def test_a_producers_signed_revoke_is_not_obeyed(live: Live) -> None:
    """client-1 signs a revoke well, but a worker takes control messages from operators only:
    the task runs at its ETA. Protection: the control decoder's `signers` (the rendered
    `control`)."""
    from celery_provision.runtime.protect import _register_serializers

    tag = _tag()
    res = live.sig("client", "envlive.count", tag).apply_async(countdown=2)
    _register_serializers(live.apps["client"]._celery_provision)  # this process signs as client-1
    try:
        live.apps["client"].control.revoke(res.id)
    finally:
        _register_serializers(live.apps["operator"]._celery_provision)
    assert res.get(timeout=TIMEOUT) == tag
    live.wait_log("worker-1", "from client-1: may not send this kind of message")
    assert f"Tasks flagged as revoked: {res.id}" not in live.log_text("worker-1")


def test_unsigned_task_message_is_refused(live: Live) -> None:
    """client-1's configuration without `secure` (this process has the task serializer
    registered, so the app can send): the message carries no envelope. Protection: the
    worker's envelope check (`Trust.verify_task`)."""
    tag = _tag()
    plain = Celery("envlive", set_as_current=False)
    plain.config_from_object(live.configs["client-1"])
    try:
        res = plain.send_task("envlive.count", args=[tag])
    finally:
        plain.close()
    assert verdict(live, "worker-1", res.id, tag) == "?: unsigned (no envelope)"


# --- replays: the record of completed tasks is in Redis --------------------------------------


def _completed_message(live: Live) -> tuple[str, dict[str, Any]]:
    """A count task that ran once on worker-1, and its message as it was sent."""
    tag = _tag()
    with captured() as seen:
        assert live.sig("client", "envlive.count", tag).delay().get(timeout=TIMEOUT) == tag
    (message,) = seen
    assert len(live.runs_of(tag)) == 1
    return tag, message


def test_replay_after_a_worker_restart_is_refused(live: Live) -> None:
    """Protection: `Runtime.completed` (the replay record)."""
    tag, message = _completed_message(live)
    live.restart("worker-1")
    republish(live, message, "celery")
    assert "client-1: replay" in verdict(live, "worker-1", message["headers"]["id"], tag, runs=1)
    assert len(live.runs_of(tag)) == 1


def test_replay_of_a_revoked_task_after_a_worker_restart_is_refused(live: Live) -> None:
    """Celery keeps revoked ids in the worker's memory only: the record of done tasks covers
    revoked ones too. Protection: the `task_revoked` handler of `secure`."""
    tag = _tag()
    with captured() as seen:
        res = live.sig("client", "envlive.count", tag).apply_async(countdown=2)
    live.apps["operator"].control.revoke(res.id)
    with pytest.raises(TaskRevokedError):
        res.get(timeout=TIMEOUT)
    (message,) = seen
    live.restart("worker-1")
    republish(live, message, "celery")
    assert "client-1: replay" in verdict(live, "worker-1", res.id, tag)
    assert live.runs_of(tag) == []


def test_replay_on_another_worker_is_refused(live: Live) -> None:
    """worker-2 refuses what worker-1 completed. Protection: `Runtime.completed`."""
    tag, message = _completed_message(live)
    republish(live, message, "second")
    assert "client-1: replay" in verdict(live, "worker-2", message["headers"]["id"], tag, runs=1)
    assert len(live.runs_of(tag)) == 1


# --- at-least-once delivery is kept -----------------------------------------------------------


def test_redelivery_after_a_lost_pool_process_runs_once_more(live: Live) -> None:
    """The pool process running the task is killed (SIGKILL); the worker requeues the message
    (acks late, reject on worker lost), Redis redelivers it (header `redelivered`), and the
    envelope still holds: the task completes exactly once."""
    tag = _tag()
    res = live.sig("client", "envlive.slow", tag, 3).delay()
    (first,) = live.wait_runs(tag, "start", 1)
    os.kill(int(first), signal.SIGKILL)
    assert res.get(timeout=TIMEOUT) == tag
    starts = live.runs_of(tag, "start")
    assert len(starts) == 2 and starts[1] != first
    assert len(live.runs_of(tag, "done")) == 1


# --- who may call what --------------------------------------------------------------------------


def test_disallowed_task_of_a_restricted_producer_is_refused(live: Live) -> None:
    """client-1 may call `envlive.*` only; its caller is told. Protection: the allow-list
    (`may_call`)."""
    tag = _tag()
    res = live.apps["client"].send_task("envadmin.purge", args=[tag])
    with pytest.raises(SecurityError, match="may not call envadmin.purge"):
        res.get(timeout=TIMEOUT)
    assert live.runs_of(tag) == []


def test_disallowed_task_later_in_a_chain_is_refused_before_any_step_runs(live: Live) -> None:
    """The first message's body names every later step; the caller holds the last step's
    result. Protection: the allow-list applies to the body's signatures (`signatures`)."""
    tag = _tag()
    res = chain(live.sig("client", "envlive.count", tag), live.sig("client", "envadmin.purge")).delay()
    with pytest.raises(SecurityError, match="may not call envadmin.purge"):
        res.get(timeout=TIMEOUT)
    assert live.runs_of(tag) == []


def test_the_same_task_from_the_worker_identity_runs(live: Live) -> None:
    tag = _tag()
    assert live.apps["worker"].send_task("envadmin.purge", args=[tag]).get(timeout=TIMEOUT) == "purged"
    assert len(live.runs_of(tag)) == 1


# --- the signer store: removal and key rotation ----------------------------------------------


def _runs_once(live: Live, app: str) -> None:
    tag = _tag()
    assert live.sig(app, "envlive.count", tag).delay().get(timeout=TIMEOUT) == tag
    assert len(live.runs_of(tag)) == 1


def _is_refused(live: Live, app: str) -> str:
    """`signer: reason` of worker-1's refusal of a count task from *app* (or what happened instead)."""
    tag = _tag()
    res = live.sig(app, "envlive.count", tag).delay()
    return verdict(live, "worker-1", res.id, tag)


def test_signer_removed_from_the_store_is_refused(live: Live, store: Callable[..., None]) -> None:
    """client-1 was trusted (its task runs), then its store file goes. Protection: the store is
    read again when it changes (`Trust._certs`)."""
    _runs_once(live, "client")
    store("client-1")
    assert _is_refused(live, "client") == "client-1: unknown signer (not in the signer store)"


@pytest.mark.parametrize("key", ["client", "client-next"], ids=["old-key", "new-key"])
def test_rotation_overlap_accepts_either_signing_key(live: Live, store: Callable[..., None], key: str) -> None:
    """The store file holds client-1's current and next signing certificate."""
    store("client-1", Path(live.configs["client-1"]["celery_provision_envelope"]["cert"]),
          live.tmp / "next-signing.pem")
    _runs_once(live, key)


def test_rotation_done_refuses_the_old_signing_key(live: Live, store: Callable[..., None]) -> None:
    """The old certificate leaves the store after the overlap. Protection: the store is read
    again when it changes, and a key is trusted only while its certificate is there."""
    store("client-1", Path(live.configs["client-1"]["celery_provision_envelope"]["cert"]),
          live.tmp / "next-signing.pem")
    _runs_once(live, "client")
    store("client-1", live.tmp / "next-signing.pem")
    assert _is_refused(live, "client").split(" (")[0] == "client-1: certificate not trusted"


def test_rotation_done_accepts_the_new_signing_key(live: Live, store: Callable[..., None]) -> None:
    store("client-1", live.tmp / "next-signing.pem")
    _runs_once(live, "client-next")
