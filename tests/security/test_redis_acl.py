"""Redis users over mutual TLS (the worker's certificate, so only the ACL is at stake): the
`default` user is off, and the Celery user may run what Celery needs and nothing else."""

from __future__ import annotations

import uuid

import pytest
import redis


def error_of(call) -> str | None:
    """None if the call worked, else the server's error."""
    try:
        call()
    except redis.exceptions.NoPermissionError as exc:  # redis-py strips the NOPERM prefix
        return f"NOPERM {exc}"
    except redis.exceptions.RedisError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture
def celery_user(live, redis_as):
    """The worker's own Redis login (the result backend user)."""
    return redis_as(live.worker, live.password("redis", live.worker))


@pytest.fixture
def admin(live, redis_as):
    name = live.admin("redis")
    return redis_as(name, live.password("redis", name))


@pytest.mark.probe
def test_default_user_without_auth_is_refused(redis_as) -> None:
    why = error_of(redis_as(None).ping)
    assert why is not None and ("NOAUTH" in why or "Authentication" in why), why or "PING answered"


@pytest.mark.probe
def test_auth_as_default_user_is_refused(redis_as) -> None:
    why = error_of(redis_as("default", "x").ping)
    assert why is not None, "AUTH default x worked"


# Commands Celery never sends, as (name, argv). Harmless arguments where the command would
# otherwise do damage if the ACL ever let it through (CONFIG SET to its default value,
# SHUTDOWN ABORT, a disabled throw-away ACL user).
FORBIDDEN = {
    "flushall": ("FLUSHALL",),
    "config-set": ("CONFIG", "SET", "lazyfree-lazy-user-del", "no"),
    "keys": ("KEYS", "*"),
    "acl-setuser": ("ACL", "SETUSER", f"probe-{uuid.uuid4().hex[:8]}", "off"),
    "shutdown": ("SHUTDOWN", "ABORT"),
}
# Redis refuses DEBUG and MODULE before the ACL is consulted (enable-debug-command and
# enable-module-command default to "no"), so the ACL's own verdict is read with ACL DRYRUN.
PROTECTED = {
    "debug": ("DEBUG", "SLEEP", "0"),
    "module-load": ("MODULE", "LOAD", "/nonexistent/probe.so"),
}


@pytest.mark.probe
@pytest.mark.parametrize("command", sorted(FORBIDDEN))
def test_celery_user_gets_noperm_for(celery_user, command: str) -> None:
    why = error_of(lambda: celery_user.execute_command(*FORBIDDEN[command]))
    assert why is not None and "NOPERM" in why, why or f"{command} worked"


@pytest.mark.probe
@pytest.mark.parametrize("command", sorted(PROTECTED))
def test_celery_user_is_denied_by_the_acl(live, celery_user, admin, command: str) -> None:
    argv = PROTECTED[command]
    assert error_of(lambda: celery_user.execute_command(*argv)) is not None, f"{command} worked"
    verdict = admin.execute_command("ACL", "DRYRUN", live.worker, *argv)
    verdict = verdict.decode() if isinstance(verdict, bytes) else str(verdict)
    assert verdict != "OK" and "no permissions" in verdict, f"ACL DRYRUN: {verdict}"


@pytest.mark.probe
def test_celery_user_cannot_touch_keys_outside_celery_names(celery_user) -> None:
    why = error_of(lambda: celery_user.set(f"probe-{uuid.uuid4().hex}", "x", ex=60))
    assert why is not None and "NOPERM" in why, why or "SET on an arbitrary key worked"


def test_control_celery_user_stores_and_reads_a_task_result(celery_user) -> None:
    key = f"celery-task-meta-probe-{uuid.uuid4()}"
    assert celery_user.set(key, '{"status": "SUCCESS"}', ex=60)
    assert celery_user.get(key) == b'{"status": "SUCCESS"}'
    assert celery_user.delete(key) == 1


def test_control_celery_user_publishes_result_notifications(celery_user) -> None:
    celery_user.publish(f"celery-task-meta-probe-{uuid.uuid4()}", "done")


def test_control_the_acl_dryrun_sees_what_celery_needs(live, admin) -> None:
    """The DRYRUN probes above can tell "allowed" from "denied"."""
    verdict = admin.execute_command("ACL", "DRYRUN", live.worker, "GET", "celery-task-meta-x")
    assert verdict in (b"OK", "OK"), verdict


def test_control_celery_user_pushes_and_pops_its_queue_when_redis_is_the_broker(live, redis_as) -> None:
    if live.d.settings.broker != "redis":
        pytest.skip("Redis is only the result backend here: its Celery user has no queue commands")
    r = redis_as(live.worker, live.password("redis", live.worker))
    r.connection_pool.connection_kwargs["db"] = live.d.settings.broker_db
    queue = live.d.task_queues[0]
    assert r.lpush(queue, "probe") >= 1
    assert r.brpop([queue], timeout=1) is not None
