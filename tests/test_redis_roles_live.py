"""Least privilege by role on Redis (broker and result backend), against real Celery 5.7.

A private redis-server (plain TCP on 127.0.0.1, a free port in 6400-6409) loads the ACL
file that roles/redis writes (its template), with the users and rules that
`celery-provision export` gives a temporary inventory: two workers, a producer and an
operator. Each app uses the configuration rendered for its host, with only the transport
swapped (plain URLs to this server; routing, queues, signing and remote control as
rendered; every app calls `celery_provision.runtime.secure(app)`, as the rendered module
says). The workers are real `celery worker` processes (prefork, the role's
`--without-mingle --without-gossip`); `worker-2` keeps unordered chords
(`result_chord_ordered=False`). Tasks are sent and results read with the producer's
rules; control and events use the operator's.

Feature tests assert that the ACL log stayed empty: nothing Celery did was refused.
Refusal tests assert that Redis answered NOPERM (each was seen to fail once its
protection was removed: roles/redis/README.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import pytest
import redislive
import yaml

pytestmark = [pytest.mark.live, pytest.mark.slow]

redis = pytest.importorskip("redis")
celery = pytest.importorskip("celery")

from celery import Celery, chain, chord, group  # noqa: E402
from celery.exceptions import TaskRevokedError  # noqa: E402
from celery.result import GroupResult  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ACL_TEMPLATE = REPO / "roles" / "redis" / "templates" / "etc" / "redis" / "users.acl.j2"
PORTS = range(6400, 6410)
PRI = "\x06\x16"  # kombu's separator between a queue and its priority list
TIMEOUT = float(os.environ.get("LIVE_TIMEOUT", "20"))

HOSTS = {
    "redis": {"redis-1": {"ansible_host": "127.0.0.1", "celery_provision_extra_sans": ["localhost"]}},
    "celery_workers": {
        "worker-1": {"ansible_host": "127.0.0.1", "celery_provision_queues": ["celery"]},
        "worker-2": {"ansible_host": "127.0.0.1", "celery_provision_queues": ["high", "low"]},
    },
    "celery_clients": {"client-1": {"ansible_host": "127.0.0.1", "celery_provision_queues": ["celery", "high"]}},
    "celery_operators": {"ops-1": {"ansible_host": "127.0.0.1"}},
}
VARS = {
    "celery_provision_broker": "redis",
    "celery_provision_result_backend": "redis",
    "celery_provision_auth": "password",
    "celery_provision_queues": ["celery"],
    "celery_provision_key_type": "ec-p256",
    "celery_provision_signing_key_type": "rsa2048",
}

TASKS = '''
import os, runpy
from celery import Celery, group
from celery_provision.runtime import secure

app = Celery("livetasks")
app.config_from_object(runpy.run_path(os.environ["LIVE_CELERY_CONF"])["CONFIG"])
secure(app)


@app.task
def add(x, y):
    return x + y


@app.task
def tsum(numbers):
    return sum(numbers)


@app.task
def collect(values):
    return values


@app.task
def fail():
    raise ValueError("expected failure")


@app.task(bind=True, max_retries=3)
def retry_once(self):
    if self.request.retries < 1:
        raise self.retry(countdown=0.2)
    return self.request.retries


@app.task(bind=True)
def grow_chord(self, x):
    self.add_to_chord(add.si(x, 100))
    return x


@app.task(bind=True)
def replace_with(self, x):
    raise self.replace(add.si(x, 1000))


@app.task(bind=True)
def replace_with_group(self, x):
    raise self.replace(group(add.si(x, 1), add.si(x, 2)))

'''


def _tokens(rules: str) -> list[str]:
    """The rules, a selector `( ... )` as one token."""
    out: list[str] = []
    for part in rules.split(" "):
        if out and out[-1].startswith("(") and not out[-1].endswith(")"):
            out[-1] += " " + part
        else:
            out.append(part)
    return out


def _acl_file(users: list[dict[str, Any]], admin: str, admin_password: str) -> str:
    """The role's users.acl.j2, rendered as Ansible would (its `hash` and `regex_replace`: the
    latter only runs where the release has connect commands, Debian 13)."""
    from ansible.plugins.filter.core import regex_replace
    from livedeploy import platform_var

    # Ansible's template module renders with trim_blocks on.
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True)
    env.filters["hash"] = lambda value, kind: hashlib.new(kind, value.encode()).hexdigest()
    env.filters["regex_replace"] = regex_replace
    return env.from_string(ACL_TEMPLATE.read_text()).render(
        redis_users=users, redis_admin_user=admin, redis_admin_password=admin_password,
        redis_sentinel=yaml.safe_load((ACL_TEMPLATE.parents[3] / "defaults" / "main.yml").read_text())["redis_sentinel"],
        _redis_acl_connect_commands=platform_var("redis", "_redis_acl_connect_commands"))


def _config(source: str, port: int, user: str) -> dict[str, Any]:
    """The rendered configuration as a dict, its transport swapped for the plain server."""
    ns: dict[str, Any] = {}
    exec(compile(source, "celeryconfig", "exec"), ns)  # noqa: S102 - our own rendered module
    conf = {k: v for k, v in ns.items() if k.islower() and not k.startswith("_")
            and not callable(v) and not isinstance(v, type(os))}
    assert conf["broker_url"].startswith("rediss://")
    conf["broker_url"] = f"redis://{user}@127.0.0.1:{port}/0"
    conf.pop("broker_use_ssl")
    if "result_backend" in conf:  # operators read no results: they have no backend
        assert conf["result_backend"].startswith("rediss://")
        conf["result_backend"] = f"redis://{user}@127.0.0.1:{port}/1"
        conf.pop("redis_backend_use_ssl")
    return conf


@dataclass
class Live:
    port: int
    tmp: Path
    admin: Any
    passwords: dict[str, str]
    rules: dict[str, str]
    configs: dict[str, dict[str, Any]]
    apps: dict[str, Celery] = field(default_factory=dict)

    def client(self, user: str, db: int = 0) -> Any:
        return redis.Redis(port=self.port, db=db, username=user, password=self.passwords[user],
                           socket_timeout=5)

    def results(self) -> Any:
        """The admin's view of the result database."""
        return redis.Redis(port=self.port, db=1, username="admin", password=self.passwords["admin"])

    def acl_log(self) -> list[dict[str, Any]]:
        return [{k: (v.decode() if isinstance(v, bytes) else v) for k, v in e.items()}
                for e in self.admin.acl_log()]

    def denials(self) -> list[str]:
        return [f"{e['username']}: {e['reason']} {e['object']} ({e['context']})" for e in self.acl_log()]


def _start_worker(live: Live, name: str, queues: list[str], extra: dict[str, Any] | None = None) -> subprocess.Popen:
    conf = dict(live.configs[name], **(extra or {}))
    path = live.tmp / f"conf_{name.replace('-', '_')}.py"
    path.write_text(f"CONFIG = {conf!r}\n")
    log = open(live.tmp / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
    args = [sys.executable, "-m", "celery", "-A", "livetasks", "worker", "-Q", ",".join(queues),
            "--hostname", f"{name}@%h", "-c", "2", "--loglevel", "info", "--without-mingle", "--without-gossip"]
    if not conf["worker_enable_remote_control"]:
        args.append("--without-heartbeat")
    env = dict(os.environ, LIVE_CELERY_CONF=str(path), PYTHONPATH=str(live.tmp))
    return subprocess.Popen(args, cwd=live.tmp, env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait_ready(live: Live, name: str, proc: subprocess.Popen) -> None:
    log = live.tmp / f"{name}.log"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{name} exited: {log.read_text()[-3000:]}")
        if " ready." in log.read_text():
            return
        time.sleep(0.2)
    pytest.fail(f"{name} not ready: {log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    from celery_provision import export, render
    from celery_provision.runtime import secure

    tmp = tmp_path_factory.mktemp("redis-roles")
    d = redislive.deployment(tmp, HOSTS, VARS)
    spec = export.host_vars(d, d.host("redis-1"))["redis"]
    users = spec["users"]
    drop = os.environ.get("LIVE_ACL_DROP")  # "USER:N": leave out rule N of USER (removal evidence)
    if drop:
        name, index = drop.rsplit(":", 1)
        user = next(u for u in users if u["name"] == name)
        rules = _tokens(user["rules"])
        print(f"LIVE_ACL_DROP {name}: {rules.pop(int(index))}")
        user["rules"] = " ".join(rules)
    add = os.environ.get("LIVE_ACL_ADD")  # "USER:RULE": grant RULE too (a refusal test must then fail)
    if add:
        name, extra = add.split(":", 1)
        next(u for u in users if u["name"] == name)["rules"] += " " + extra
    passwords = {u["name"]: u["password"] for u in users} | {spec["admin_user"]: spec["admin_password"]}
    aclfile = tmp / "users.acl"
    aclfile.write_text(_acl_file(users, spec["admin_user"], spec["admin_password"]))
    port = redislive.free_port(PORTS)
    admin = redis.Redis(port=port, username=spec["admin_user"], password=spec["admin_password"])
    with redislive.redis_server(tmp, port, "--aclfile", str(aclfile), "--acllog-max-len", "1024", client=admin):
        configs = {h: _config(render.render(d, d.host(h), controller_paths=True), port, h)
                   for h in ("worker-1", "worker-2", "client-1", "ops-1")}
        (tmp / "livetasks.py").write_text(TASKS)
        live = Live(port, tmp, admin, passwords, {u["name"]: u["rules"] for u in users}, configs)
        workers = {"worker-1": _start_worker(live, "worker-1", ["celery"]),
                   "worker-2": _start_worker(live, "worker-2", ["high", "low"],
                                             {"result_backend_transport_options": {"result_chord_ordered": False}})}
        try:
            for name, wproc in workers.items():
                _wait_ready(live, name, wproc)
            time.sleep(0.5)
            # Start-up (declares, the first restore and binding sweep) was refused nothing.
            assert not live.denials(), "\n".join(live.denials())
            producer = Celery("livetasks", set_as_current=False)
            producer.config_from_object(configs["client-1"], force=True)
            secure(producer)  # signs its task messages as client-1 (installed now, before the operator)
            operator = Celery("ops", set_as_current=False)
            operator.config_from_object(configs["ops-1"], force=True)
            # Last: kombu's serializer registry is per process, and the control messages of
            # this process must be signed as ops-1 (the producer sends none).
            secure(operator)
            live.apps.update(client=producer, operator=operator)
            yield live
            live.admin.acl_log_reset()
        finally:
            for wproc in workers.values():
                wproc.terminate()
            for wproc in workers.values():
                try:
                    wproc.wait(20)
                except subprocess.TimeoutExpired:
                    wproc.kill()
                    wproc.wait()
            for app in live.apps.values():
                app.close()
        # A warm shutdown (SIGTERM) was refused nothing either.
        assert not live.denials(), "\n".join(live.denials())


@pytest.fixture
def quiet(live: Live) -> Iterator[Live]:
    """A feature test: nothing in it may be refused (ACL LOG stays empty)."""
    live.admin.acl_log_reset()
    yield live
    time.sleep(0.2)
    assert not live.denials(), "\n".join(live.denials())


def sig(live: Live, name: str, *args: Any, **options: Any) -> Any:
    return live.apps["client"].signature(f"livetasks.{name}", args=args, **options)


@contextmanager
def refused(live: Live, user: str) -> Iterator[None]:
    """Redis answers NOPERM (kombu re-raises it as OperationalError) and logs *user*."""
    from kombu.exceptions import OperationalError

    live.admin.acl_log_reset()
    with pytest.raises((redis.exceptions.NoPermissionError, OperationalError)) as info:
        yield
    # Redis 7.0: "this user has no permissions to access one of the keys used as arguments";
    # Redis 8.0 and Valkey 8.1: "No permissions to access a key" (or "a channel").
    assert "no permissions" in str(info.value).lower()
    assert any(e["username"] == user for e in live.acl_log())


# --- features, sent with the producer's rules, run on the workers' ------------------------


def test_task_round_trip(quiet: Live) -> None:
    assert sig(quiet, "add", 2, 3).delay().get(timeout=TIMEOUT) == 5


def test_priority_lists(quiet: Live) -> None:
    res = sig(quiet, "add", 1, 1).apply_async(priority=9)
    assert res.get(timeout=TIMEOUT) == 2


def test_countdown_and_eta(quiet: Live) -> None:
    start = time.monotonic()
    assert sig(quiet, "add", 1, 2).apply_async(countdown=1).get(timeout=TIMEOUT) == 3
    assert time.monotonic() - start >= 1


def test_retry(quiet: Live) -> None:
    assert sig(quiet, "retry_once").delay().get(timeout=TIMEOUT) == 1


def test_failure_is_reported(quiet: Live) -> None:
    with pytest.raises(ValueError, match="expected failure"):
        sig(quiet, "fail").delay().get(timeout=TIMEOUT)


def test_chain_across_queues(quiet: Live) -> None:
    res = chain(sig(quiet, "add", 1, 1), sig(quiet, "add", 2, queue="low"), sig(quiet, "add", 3)).delay()
    assert res.get(timeout=TIMEOUT) == 7


def test_group(quiet: Live) -> None:
    assert group(sig(quiet, "add", i, i) for i in range(4)).delay().get(timeout=TIMEOUT) == [0, 2, 4, 6]


def test_group_result_save_restore_delete(quiet: Live) -> None:
    app = quiet.apps["client"]
    res = group(sig(quiet, "add", i, 1) for i in range(3)).delay()
    res.save()
    restored = GroupResult.restore(res.id, app=app)
    assert restored is not None and restored.get(timeout=TIMEOUT) == [1, 2, 3]
    restored.delete()
    assert GroupResult.restore(res.id, app=app) is None


def test_chord_ordered(quiet: Live) -> None:
    res = chord([sig(quiet, "add", i, i) for i in range(4)])(sig(quiet, "collect"))
    assert res.get(timeout=TIMEOUT) == [0, 2, 4, 6]


def test_chord_unordered(quiet: Live) -> None:
    """On worker-2 (result_chord_ordered=False: RPUSH/LLEN/LRANGE instead of the zset)."""
    header = [sig(quiet, "add", i, i, queue="high") for i in range(4)]
    res = chord(header)(sig(quiet, "tsum", queue="high"))
    assert res.get(timeout=TIMEOUT) == 12


def test_chord_with_a_nested_group_header(quiet: Live) -> None:
    """Celery 5.7 unrolls a group in a chord header into the header (its chord size counts both)."""
    header = [group(sig(quiet, "add", 1, 1), sig(quiet, "add", 2, 2)), sig(quiet, "add", 3, 3)]
    res = chord(header)(sig(quiet, "collect"))
    assert sorted(res.get(timeout=TIMEOUT)) == [2, 4, 6]


def test_chord_error(quiet: Live) -> None:
    res = chord([sig(quiet, "add", 1, 1), sig(quiet, "fail")])(sig(quiet, "collect"))
    with pytest.raises(Exception, match="expected failure|Dependency"):
        res.get(timeout=TIMEOUT)


def test_add_to_chord(quiet: Live) -> None:
    res = chord([sig(quiet, "grow_chord", 1), sig(quiet, "add", 2, 2)])(sig(quiet, "tsum"))
    assert res.get(timeout=TIMEOUT) == 1 + 4 + 101


def test_replace(quiet: Live) -> None:
    assert sig(quiet, "replace_with", 1).delay().get(timeout=TIMEOUT) == 1001


def test_replace_inside_a_chord(quiet: Live) -> None:
    res = chord([sig(quiet, "replace_with", 1), sig(quiet, "replace_with_group", 5)])(sig(quiet, "collect"))
    assert res.get(timeout=TIMEOUT) == [1001, [6, 7]]


def test_forget(quiet: Live) -> None:
    res = sig(quiet, "add", 4, 4).delay()
    assert res.get(timeout=TIMEOUT) == 8
    res.forget()
    assert not quiet.results().exists(f"celery-task-meta-{res.id}")


def _done(live: Live, task_id: str) -> bool:
    """Whether the worker recorded *task_id* as completed (the runtime's replay record)."""
    from celery_provision.runtime import DONE_PREFIX

    deadline = time.monotonic() + TIMEOUT  # recorded after the result is stored (task_postrun)
    while not live.results().exists(DONE_PREFIX + task_id):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_completed_task_is_recorded_for_as_long_as_its_message_is_accepted(quiet: Live) -> None:
    from celery_provision.runtime import CONFIG, DONE_PREFIX

    res = sig(quiet, "add", 6, 6).delay()
    assert res.get(timeout=TIMEOUT) == 12 and _done(quiet, res.id)
    max_age = quiet.configs["worker-1"][CONFIG]["max_age"]
    assert max_age - 5 < quiet.results().ttl(DONE_PREFIX + res.id) <= max_age + 60


def test_a_replayed_task_message_is_refused(quiet: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of a signed message pushed again after its task ran (here by the admin: anyone
    who could push to the queue) is acknowledged and dropped: the worker checks the record
    with its own rules (EXISTS), nothing is refused by Redis."""
    import json

    from kombu.transport import redis as kombu_redis

    sent: list[tuple[str, dict[str, Any]]] = []
    put = kombu_redis.Channel._put

    def capture(self: Any, queue: str, message: dict[str, Any], **kwargs: Any) -> Any:
        sent.append((queue, json.loads(json.dumps(message))))
        return put(self, queue, message, **kwargs)

    monkeypatch.setattr(kombu_redis.Channel, "_put", capture)
    res = sig(quiet, "add", 8, 8).delay()
    assert res.get(timeout=TIMEOUT) == 16 and _done(quiet, res.id)
    monkeypatch.undo()
    ((queue, message),) = [(q, m) for q, m in sent if m["headers"].get("id") == res.id]
    log = quiet.tmp / "worker-1.log"
    quiet.admin.lpush(queue, json.dumps(message))
    deadline = time.monotonic() + TIMEOUT
    while "replay" not in log.read_text()[-5000:] and time.monotonic() < deadline:
        time.sleep(0.1)
    text = log.read_text()
    assert f"refused task livetasks.add[{res.id}] from client-1: replay: task {res.id} already completed" in text
    assert text.count(f"Task livetasks.add[{res.id}] succeeded") == 1, text[-3000:]
    assert quiet.admin.llen(queue) == 0  # acknowledged, not left for another worker


def test_result_expiry(quiet: Live) -> None:
    res = sig(quiet, "add", 5, 5).delay()
    assert res.get(timeout=TIMEOUT) == 10
    ttl = quiet.results().ttl(f"celery-task-meta-{res.id}")
    assert 0 < ttl <= quiet.configs["worker-1"]["result_expires"]


def test_message_expiry_revokes_without_remote_control(quiet: Live) -> None:
    """`expires` needs no operator: the worker drops the expired message and stores REVOKED."""
    res = sig(quiet, "add", 1, 1).apply_async(countdown=2, expires=1)
    with pytest.raises(TaskRevokedError):
        res.get(timeout=TIMEOUT)


def test_operator_revokes_a_task(quiet: Live) -> None:
    res = sig(quiet, "add", 1, 1).apply_async(countdown=3)
    replies = quiet.apps["operator"].control.revoke(res.id, reply=True, timeout=2)
    assert len(replies) == 2
    with pytest.raises(TaskRevokedError):
        res.get(timeout=TIMEOUT)


def test_operator_ping_is_answered(quiet: Live) -> None:
    replies = quiet.apps["operator"].control.ping(timeout=2)
    assert sorted(next(iter(r)).split("@")[0] for r in replies) == ["worker-1", "worker-2"]


def test_operator_inspect_and_control(quiet: Live) -> None:
    ops = quiet.apps["operator"]
    assert len(ops.control.inspect(timeout=2).stats() or {}) == 2
    replies = ops.control.rate_limit("livetasks.add", "1000/s", reply=True, timeout=2)
    assert len(replies) == 2


def test_operator_reads_events(quiet: Live) -> None:
    import threading

    ops = quiet.apps["operator"]
    seen: list[str] = []
    with ops.connection_for_read() as conn:
        recv = ops.events.Receiver(conn, handlers={"task-succeeded": lambda e: seen.append(e["uuid"])})

        def watch() -> None:
            with contextlib.suppress(socket.timeout):
                recv.capture(limit=None, timeout=TIMEOUT, wakeup=False)

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        time.sleep(1)  # the receiver subscribes
        res = sig(quiet, "add", 7, 7).delay()
        assert res.get(timeout=TIMEOUT) == 14
        deadline = time.monotonic() + TIMEOUT
        while res.id not in seen and time.monotonic() < deadline:
            time.sleep(0.1)
        recv.should_stop = True
        thread.join(5)
    assert res.id in seen


@pytest.mark.parametrize("user", ["worker-1", "ops-1"])
def test_binding_sweep(quiet: Live, user: str) -> None:
    """kombu's sweep (a script each channel with an expiring queue runs once a minute)
    deletes binding tables past their deadline, as an hour after an operator's last command."""
    exchanges = ["reply.celery.pidbox", "celeryev", "celery.pidbox"]
    quiet.admin.zadd("_kombu.binding_deadlines", dict.fromkeys(exchanges, 1))
    quiet.admin.sadd("_kombu.binding.reply.celery.pidbox", "x")
    app = Celery("sweep", set_as_current=False)
    app.config_from_object(quiet.configs[user])
    with app.connection_for_write() as conn:
        assert conn.default_channel.sweep_bindings() == 3
    assert not quiet.admin.exists("_kombu.binding.reply.celery.pidbox")
    assert not any(quiet.admin.zscore("_kombu.binding_deadlines", e) for e in exchanges)


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [("BRPOP", "celery", 1), ("RPOP", "celery"), ("LRANGE", "celery", 0, -1),
                                     ("LPOP", f"celery{PRI}9"), ("DEL", "celery"), ("LTRIM", "celery", 1, 0)])
def test_producer_cannot_take_read_or_drop_tasks(live: Live, command: tuple[Any, ...]) -> None:
    with refused(live, "client-1"):
        live.client("client-1").execute_command(*command)


def test_producer_cannot_push_to_a_queue_it_does_not_use(live: Live) -> None:
    with refused(live, "client-1"):
        live.client("client-1").lpush("low", "x")


@pytest.mark.parametrize("command", [("PUBLISH", "/0.celery.pidbox", "x"), ("PSUBSCRIBE", "/0.celery.pidbox"),
                                     ("PSUBSCRIBE", "/0.celeryev/*"), ("SUBSCRIBE", "/0.celeryev/task.succeeded"),
                                     ("PUBLISH", "/0.celeryev/task.succeeded", "x")])
def test_producer_reaches_no_control_or_event_channel(live: Live, command: tuple[Any, ...]) -> None:
    with refused(live, "client-1"):
        live.client("client-1").execute_command(*command)


@pytest.mark.parametrize("key", ["ops-1@h.celery.pidbox", "8f2d6b1e-3c4a-4e5f-9a7b-0c1d2e3f4a5b.reply.celery.pidbox",
                                 "celeryev.0c1d2e3f-4a5b-4e5f-9a7b-8f2d6b1e3c4a", "_kombu.binding.celery.pidbox"])
def test_producer_reaches_no_control_or_event_key(live: Live, key: str) -> None:
    with refused(live, "client-1"):
        live.client("client-1").execute_command("LLEN", key)


def test_producer_cannot_ping_or_revoke(live: Live) -> None:
    app = live.apps["client"]
    with refused(live, "client-1"):
        app.control.ping(timeout=0.5)
    with refused(live, "client-1"):
        app.AsyncResult(str(uuid.uuid4())).revoke()


@pytest.mark.parametrize("command", [("SET", "celery-task-meta-{id}", "{}"), ("PUBLISH", "celery-task-meta-{id}", "{}"),
                                     ("ZADD", "celery-taskset-meta-{id}.j", 1, "x"),
                                     ("INCRBY", "celery-taskset-meta-{id}.t", 1)])
def test_producer_cannot_forge_results_or_chord_state(live: Live, command: tuple[Any, ...]) -> None:
    tid = str(uuid.uuid4())
    with refused(live, "client-1"):
        live.client("client-1", db=1).execute_command(*(str(a).replace("{id}", tid) for a in command))


@pytest.mark.parametrize("command", [("BRPOP", "celery", 1), ("LRANGE", "celery", 0, -1), ("LPUSH", "celery", "x")])
def test_operator_cannot_touch_a_task_queue(live: Live, command: tuple[Any, ...]) -> None:
    with refused(live, "ops-1"):
        live.client("ops-1").execute_command(*command)


def test_operator_config_has_no_result_backend(live: Live) -> None:
    assert "result_backend" not in live.configs["ops-1"]


def test_operator_cannot_read_a_result(live: Live) -> None:
    res = sig(live, "add", 1, 2).delay()
    assert res.get(timeout=TIMEOUT) == 3
    with refused(live, "ops-1"):
        live.client("ops-1", db=1).get(f"celery-task-meta-{res.id}")


@pytest.mark.parametrize("command", [("PUBLISH", "/0.celery.pidbox", "x"), ("PSUBSCRIBE", "/0.celeryev/*")])
def test_worker_cannot_control_other_workers_or_read_events(live: Live, command: tuple[Any, ...]) -> None:
    with refused(live, "worker-1"):
        live.client("worker-1").execute_command(*command)


def test_worker_cannot_consume_another_workers_queue(live: Live) -> None:
    with refused(live, "worker-1"):
        live.client("worker-1").brpop(["low"], timeout=1)


# --- roles/redis: a revoked host's user (state absent) ------------------------------------


def test_absent_user_leaves_the_acl_and_its_connections_are_closed(tmp_path: Path) -> None:
    """The role's ACL file drops a user in state absent; a server reading it (the restart the
    changed file notifies, or ACL LOAD) refuses that user and closes its open connections."""
    from celery_provision.acl import redis_acl_rules

    rules = redis_acl_rules("client", ["celery"], task_queues=["celery"], broker=True, backend=True)
    users = [{"name": "client-9", "password": "p" * 20, "rules": rules, "state": "present"}]
    admin_password = uuid.uuid4().hex
    aclfile = tmp_path / "users.acl"
    aclfile.write_text(_acl_file(users, "admin", admin_password))
    port = redislive.free_port(PORTS)
    admin = redis.Redis(port=port, username="admin", password=admin_password)
    with redislive.redis_server(tmp_path, port, "--aclfile", str(aclfile), client=admin):
        revoked = redis.Redis(port=port, username="client-9", password="p" * 20, single_connection_client=True)
        assert revoked.ping()
        users[0]["state"] = "absent"
        text = _acl_file(users, "admin", admin_password)
        assert "client-9" not in text
        aclfile.write_text(text)
        assert admin.execute_command("ACL", "LOAD")
        assert "client-9" not in {u.decode() if isinstance(u, bytes) else u for u in admin.acl_users()}
        assert not [c for c in admin.client_list() if c["user"] == "client-9"]
        with pytest.raises((redis.exceptions.ConnectionError, redis.exceptions.AuthenticationError)):
            revoked.ping()
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=port, username="client-9", password="p" * 20).ping()
