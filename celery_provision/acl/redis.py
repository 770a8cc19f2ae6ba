"""What Celery, kombu and redis-py need from Redis, per role: ACL commands, key and channel
patterns. Found by running real workers, producers and operators against a real server;
roles/redis/README.md gives the reason for each rule.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["redis_acl_rules"]


# What Celery 5.7 / kombu 5.7 / redis-py 8.1 really send to Redis 7.0 (seen with
# MONITOR, INFO commandstats and ACL LOG under real workers and clients; the
# reason for each is in roles/redis/README.md). Explicit commands, no categories:
# every category also holds commands Celery never sends.
_REDIS_SESSION_COMMANDS = (
    "hello", "auth", "ping", "select",            # connect, log in, health check, pick the db
    "multi", "exec",                              # redis-py pipelines (transaction=True)
    "evalsha", "script|load", "script|exists",    # redis-py Script objects (Lua)
)
_REDIS_BROKER_COMMANDS = (
    "lpush", "rpush", "brpop", "llen", "exists", "del", "pexpire",   # queues are lists
    "sadd", "srem", "smembers",                                      # exchange bindings
    "zadd", "zrem", "zrange", "zrangebyscore",                       # unacked index, binding deadlines
    "hset", "hget", "hdel",                                          # unacked messages
    "set", "get", "watch", "unwatch", "time",                        # unacked mutex, restore
    "publish", "psubscribe", "punsubscribe", "unsubscribe",          # fanout: pidbox, events
)
_REDIS_BACKEND_COMMANDS = (
    "get", "mget", "set", "setex", "del", "expire", "exists",          # task and group results
    "incr", "incrby",                                                  # chord counters (redis-py's incr() sends INCRBY)
    "publish", "subscribe", "unsubscribe", "punsubscribe",             # result notifications
    "sadd", "sismember", "zadd", "zcount", "zrange", "rpush", "llen",  # chords
    "lrange",                                                          # unordered chords (result_chord_ordered=False)
)
# kombu stores priority p > 0 of queue Q in the list Q + "\x06\x16" + str(p). The
# class [^!-~] (any byte but printable non-space ASCII) matches those two control
# bytes and keeps the ACL file plain ASCII; a real queue name never contains them.
_REDIS_PRIORITY_SUFFIX = "[^!-~][^!-~]*"
_REDIS_BROKER_KEYS = (
    "_kombu.binding.*", "_kombu.binding_permanent.*", "_kombu.binding_deadlines",
    "unacked", "unacked_index", "unacked_mutex",
    "*.celery.pidbox", "*.celery.pidbox" + _REDIS_PRIORITY_SUFFIX,  # NODE@HOST. and UUID.reply.
    "celeryev.*",                                                    # event monitors' queues
)
_REDIS_BACKEND_KEYS = ("celery-task-meta-*", "celery-taskset-meta-*")
# A stored result is also published on its key's channel: task results and, through
# GroupResult.save(), group results.
_REDIS_BACKEND_CHANNELS = ("celery-task-meta-*", "celery-taskset-meta-*")
# kombu prefixes fanout channels with "/DB." (pub/sub ignores SELECT). Redis compares
# a PSUBSCRIBE pattern literally with the user's channel patterns, so the patterns
# kombu subscribes to (pidbox broadcast, all events, worker events) are listed as is.
_REDIS_BROKER_CHANNELS = ("/{db}.celery.pidbox", "/{db}.celeryev/*", "/{db}.celeryev/worker.*")
_REDIS_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def _redis_queue_patterns(queue: str) -> tuple[str, str]:
    from celery_provision.errors import ProvisionError

    if not isinstance(queue, str) or not queue:
        raise ProvisionError(f"queue name {queue!r} is not a non-empty string", where="celery_provision_queues")
    if any(ch.isspace() or not ch.isprintable() for ch in queue):
        raise ProvisionError(
            f"queue name {queue!r} contains white space or control characters, "
            "which a Redis ACL key pattern cannot hold",
            where="celery_provision_queues",
        )
    literal = _REDIS_GLOB_SPECIAL.sub(r"\\\1", queue)
    return literal, literal + _REDIS_PRIORITY_SUFFIX


def redis_acl_rules(role: str, queues: Sequence[str], *, task_queues: Sequence[str], broker: bool, backend: bool,
                    broker_db: int = 0, remote_control: bool = False) -> str:
    """The ACL rules of one Celery user: *role* (`worker`, `client` or `operator`), its own
    *queues*, every worker's *task_queues*, and what Redis serves (*broker*, *backend*)."""
    return _legacy(task_queues, broker=broker, backend=backend, broker_db=broker_db)


def _legacy(queues: Sequence[str], *, broker: bool, backend: bool, broker_db: int = 0) -> str:
    """Return the ACL rules (categories, commands, key and channel patterns) for a Celery user.

    ``broker_db`` is the database of the broker URL: kombu puts it in its fanout
    channel names. The rules start from ``-@all`` and grant only what Celery uses;
    key patterns are limited to kombu's and Celery's names and the given queues.
    """
    from celery_provision.errors import ProvisionError

    if not (broker or backend):
        raise ProvisionError("a Celery user of Redis needs the broker, the backend or both", where="redis")
    if isinstance(broker_db, bool) or not isinstance(broker_db, int) or broker_db < 0:
        raise ProvisionError(f"Redis database {broker_db!r} is not a non-negative integer", where="celery_provision_redis_db")
    commands: dict[str, None] = dict.fromkeys(_REDIS_SESSION_COMMANDS)
    keys: dict[str, None] = {}
    channels: dict[str, None] = {}
    if broker:
        if not queues:
            raise ProvisionError("a Celery broker needs at least one queue", where="celery_provision_queues")
        commands.update(dict.fromkeys(_REDIS_BROKER_COMMANDS))
        for queue in queues:
            keys.update(dict.fromkeys(_redis_queue_patterns(queue)))
        keys.update(dict.fromkeys(_REDIS_BROKER_KEYS))
        channels.update(dict.fromkeys(c.format(db=broker_db) for c in _REDIS_BROKER_CHANNELS))
    if backend:
        commands.update(dict.fromkeys(_REDIS_BACKEND_COMMANDS))
        keys.update(dict.fromkeys(_REDIS_BACKEND_KEYS))
        channels.update(dict.fromkeys(_REDIS_BACKEND_CHANNELS))
    return " ".join(
        ["-@all"]
        + [f"+{command}" for command in commands]
        + [f"~{key}" for key in keys]
        + [f"&{channel}" for channel in channels]
    )
