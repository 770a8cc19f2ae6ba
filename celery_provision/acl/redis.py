"""What Celery, kombu and redis-py need from Redis, per role: ACL commands, key and channel
patterns. Found by running real workers, producers and operators against a real server;
roles/redis/README.md gives the reason for each rule.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..runtime.envelope import DONE_PREFIX

__all__ = ["redis_acl_rules", "REPLICATION_RULES", "SENTINEL_RULES", "SENTINEL_PEER_RULES", "SENTINEL_CLIENT_RULES"]


# What Celery 5.7 / kombu 5.7 / redis-py 8.1 really send to Redis 7.0, per role (seen with
# MONITOR and ACL LOG under real workers, producers and operators: tests/test_redis_roles_live.py;
# the reason for each rule and the denial seen without it are in roles/redis/README.md).
# Explicit commands, no categories: every category also holds commands Celery never sends.
#
# A rule set is the root permissions (commands without keys or channels) plus selectors
# `(commands keys channels)`. Redis 7 runs a command when the root or one selector allows it
# together with every key and channel it names, so a selector pairs each command with the
# keys it may touch: a producer's LPUSH reaches the task queues, its DEL only results.
# `%R~` keys may only be read, `%W~` only written, `~` both (Redis 7 key permissions).

_Selector = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]  # commands, keys, channels
_ROLES = ("worker", "client", "operator")

# Every connection: redis-py health-checks with PING and selects the db (sent only for a
# database other than 0). AUTH and HELLO need no grant: Redis allows them to every user.
_SESSION = ("ping", "select")
# kombu stores priority p > 0 of queue Q in the list Q + "\x06\x16" + str(p). The
# class [^!-~] (any byte but printable non-space ASCII) matches those two control
# bytes and keeps the ACL file plain ASCII; a real queue name never contains them.
_REDIS_PRIORITY_SUFFIX = "[^!-~][^!-~]*"
# A group's own key (GroupResult.save) but not its chord keys `.j .t .s .d .c`: the last
# but one character is not a dot (group ids are UUIDs unless an application names them).
_GROUP_KEY = "celery-taskset-meta-*[^.]?"
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


def _keys(mode: str, patterns: Sequence[str]) -> tuple[str, ...]:
    return tuple(f"{mode}~{p}" for p in patterns)


def _queue_keys(mode: str, queues: Sequence[str]) -> tuple[str, ...]:
    return _keys(mode, [p for q in queues for p in _redis_queue_patterns(q)])


def _worker_broker(own: Sequence[str], every: Sequence[str], fanout: str, remote_control: bool) -> list[_Selector]:
    literal = [_redis_queue_patterns(q)[0] for q in own]
    out: list[_Selector] = [
        # Consume its own queues (and their priority lists) in one BRPOP; LLEN: queue_declare.
        (("brpop", "llen"), _queue_keys("", own), ()),
        # Publish to every task queue: chains, callbacks, chord bodies, retries, and the
        # restore of unacknowledged messages past their visibility timeout.
        (("lpush", "rpush"), _queue_keys("%W", every), ()),
        # Declare its own queues: bind each to its exchange (the queue's own direct exchange).
        (("sadd",), _keys("%W", [f"_kombu.binding.{q}" for q in literal]
                          + [f"_kombu.binding_permanent.{q}" for q in literal]), ()),
        # At-least-once delivery: messages delivered but not acknowledged, their index by
        # delivery time and the mutex of the restore; the lock's release is a redis-py script.
        (("hset", "hget", "hdel", "zadd", "zrem", "zrange", "set", "get", "del", "watch", "evalsha"),
         _keys("", ["unacked", "unacked_index", "unacked_mutex"]), ()),
    ]
    if remote_control:
        out += [
            # Remote control: receive broadcasts (PSUBSCRIBE only: it may not broadcast).
            (("psubscribe",), (), (f"{fanout}celery.pidbox",)),
            # Its own pidbox queue NODE@HOST.celery.pidbox (declared: LLEN; an expiring queue:
            # PEXPIRE; auto-delete: DEL at shutdown), consumed through the broadcast channel.
            (("llen", "pexpire", "del"),
             _keys("%W", ["*@*.celery.pidbox", "*@*.celery.pidbox" + _REDIS_PRIORITY_SUFFIX]), ()),
            # ... and its binding, removed at shutdown.
            (("srem",), _keys("%W", ["_kombu.binding.celery.pidbox", "_kombu.binding_permanent.celery.pidbox"]), ()),
            # Its pidbox queue's binding (an expiring queue: kombu's binding-deadline script).
            (("evalsha", "sadd", "zadd", "zrangebyscore", "zrem"),
             _keys("", ["_kombu.binding.celery.pidbox", "_kombu.binding_deadlines"]), ()),
            # Reply to the operator: look its reply queue up and push the reply there.
            (("smembers",), _keys("%R", ["_kombu.binding.reply.celery.pidbox"]), ()),
            (("lpush",), _keys("%W", ["*.reply.celery.pidbox", "*.reply.celery.pidbox" + _REDIS_PRIORITY_SUFFIX]), ()),
            # Task and worker events (heartbeats) for monitors: publish only.
            (("publish",), (), (f"{fanout}celeryev/*",)),
            *_SWEEP,
        ]
    return out


def _client_broker(own: Sequence[str], every: Sequence[str], fanout: str, remote_control: bool) -> list[_Selector]:
    # Push tasks to its own queues (and their priority lists): no pop, no read, no delete.
    return [(("lpush",), _queue_keys("%W", own), ())]


def _operator_broker(own: Sequence[str], every: Sequence[str], fanout: str, remote_control: bool) -> list[_Selector]:
    reply = ["*.reply.celery.pidbox", "*.reply.celery.pidbox" + _REDIS_PRIORITY_SUFFIX]
    return [
        # Broadcast control commands (inspect, control, revoke): publish only.
        (("publish",), (), (f"{fanout}celery.pidbox",)),
        # Its reply queues and event queues are expiring queues: bind them (kombu's
        # binding-deadline script), read and expire them, delete them when done.
        (("evalsha", "sadd", "zadd", "zrangebyscore", "zrem"),
         _keys("", ["_kombu.binding.reply.celery.pidbox", "_kombu.binding.celeryev", "_kombu.binding_deadlines"]), ()),
        (("srem",), _keys("%W", ["_kombu.binding.reply.celery.pidbox", "_kombu.binding_permanent.reply.celery.pidbox",
                                 "_kombu.binding.celeryev", "_kombu.binding_permanent.celeryev"]), ()),
        (("brpop", "llen", "del", "pexpire"), _keys("", [*reply, "celeryev.*"]), ()),
        # Read the event stream (celery events, Flower): subscribe only.
        (("psubscribe",), (), (f"{fanout}celeryev/*",)),
        *_SWEEP,
    ]


# kombu's sweep of binding tables past their deadline (a script every channel with an
# expiring queue runs once a minute): those of the expiring queues' exchanges, kept while a
# permanent binding set exists.
_SWEEP: list[_Selector] = [
    (("exists",), _keys("%R", ["_kombu.binding_permanent.*"]), ()),
    (("del",), _keys("%W", ["_kombu.binding.celery.pidbox", "_kombu.binding.reply.celery.pidbox",
                            "_kombu.binding.celeryev"]), ()),
]

_BROKER = {"worker": _worker_broker, "client": _client_broker, "operator": _operator_broker}

_BACKEND: dict[str, list[_Selector]] = {
    "worker": [
        # Store task results (SETEX: result_expires), read them, forget them.
        (("get", "mget", "set", "setex", "del", "expire"), _keys("", ["celery-task-meta-*"]), ()),
        # Groups and chords: the group result, the chord's join (.j), size (.s), added
        # tasks (.t, Task.add_to_chord: INCRBY), dedup (.d) and dispatch claim (.c), kept by
        # Celery's Lua scripts (EVALSHA) with the commands they call.
        (("get", "set", "setex", "del", "expire", "incrby", "evalsha", "exists", "sismember", "sadd",
          "zadd", "zcount", "zrange", "rpush", "llen", "lrange"), _keys("", ["celery-taskset-meta-*"]), ()),
        # The record of completed tasks (celery_provision.runtime): checked before a task
        # runs (one MGET with the task's result, to see a revocation: both patterns in one
        # selector, as Redis 7 wants every key of a command in the same one), written when
        # it completed, so that a replayed message does not run again.
        (("get", "mget", "set"), _keys("", [f"{DONE_PREFIX}*", "celery-task-meta-*"]), ()),
        # A stored result is published on its key's channel; joins inside a task subscribe.
        (("publish", "subscribe"), (), ("celery-task-meta-*", "celery-taskset-meta-*")),
    ],
    "client": [
        # Read task results and restore saved groups (GroupResult.restore).
        (("get", "mget"), _keys("%R", ["celery-task-meta-*", "celery-taskset-meta-*"]), ()),
        # Wait for a result: its key's channel (AsyncResult.get).
        (("subscribe",), (), ("celery-task-meta-*",)),
        # GroupResult.save and a chord's set-up (the group key of a nested header, the
        # chord size .s): write only, and not the chord's join data.
        (("set", "setex"), _keys("%W", [_GROUP_KEY, "celery-taskset-meta-*.s"]), ()),
        (("publish",), (), ("celery-taskset-meta-*",)),
        # forget() and GroupResult.delete(); a chord's set-up clears its dispatch claim .c.
        (("del",), _keys("%W", ["celery-task-meta-*", _GROUP_KEY, "celery-taskset-meta-*.c"]), ()),
    ],
    "operator": [],
}

# Commands without keys or channels, in the root permissions, per part.
_ROOT_BROKER = {"worker": ("multi", "exec", "punsubscribe", "script|load", "script|exists", "time"),
                "client": (),
                "operator": ("multi", "exec", "punsubscribe", "script|load", "script|exists", "time")}
_ROOT_BACKEND = {"worker": ("multi", "exec", "script|load"),
                 "client": ("multi", "exec", "unsubscribe"),
                 "operator": ()}


def _render(selector: _Selector) -> str:
    commands, keys, channels = selector
    return "(" + " ".join([*(f"+{c}" for c in commands), *keys, *(f"&{c}" for c in channels)]) + ")"


def redis_acl_rules(role: str, queues: Sequence[str], *, task_queues: Sequence[str], broker: bool, backend: bool,
                    broker_db: int = 0, remote_control: bool = False) -> str:
    """The ACL rules of one Celery user: *role* (`worker`, `client` or `operator`), its own
    *queues*, every worker's *task_queues*, and what Redis serves (*broker*, *backend*).

    Root permissions hold the commands without keys; each use of keys or channels is a
    selector. Workers get remote control and events only with *remote_control*; operators
    get them always (remote control is on whenever operators exist) and never a result.
    """
    from celery_provision.errors import ProvisionError

    if role not in _ROLES:
        raise ProvisionError(f"Celery role {role!r} is not one of {', '.join(_ROLES)}", where="redis")
    if isinstance(broker_db, bool) or not isinstance(broker_db, int) or broker_db < 0:
        raise ProvisionError(f"Redis database {broker_db!r} is not a non-negative integer",
                             where="celery_provision_redis_db")
    backend = backend and role != "operator"
    if not (broker or backend):
        raise ProvisionError(f"a Celery {role} needs nothing from this Redis: it gets no user", where="redis")
    # SELECT only where a database other than 0 is used (the result backend's, or a broker db).
    root: dict[str, None] = dict.fromkeys(c for c in _SESSION if c != "select" or backend or broker_db)
    selectors: list[_Selector] = []
    if broker:
        if role != "operator" and not queues:
            raise ProvisionError(f"a Celery {role} on a Redis broker needs at least one queue",
                                 where="celery_provision_queues")
        if role == "worker" and not task_queues:
            raise ProvisionError("a Celery worker needs the task queues", where="celery_provision_queues")
        root.update(dict.fromkeys(_ROOT_BROKER[role]))
        selectors += _BROKER[role](list(queues), list(task_queues), f"/{broker_db}.", remote_control)
    if backend:
        root.update(dict.fromkeys(_ROOT_BACKEND[role]))
        selectors += _BACKEND[role]
    return " ".join(["-@all", *(f"+{c}" for c in root), *(_render(s) for s in selectors)])


# --- a replicated Redis under Sentinel (redis_sentinel): its own users, on the servers and on
# Sentinel. Seen with real replicas and Sentinels over TLS (tests/test_redis_sentinel_live.py),
# whose ACL logs stay empty; roles/redis/README.md gives the reasons.

#: A replica on its primary (masteruser): the replication handshake and stream, nothing else:
#: no key may be read or written through it (Redis's ACL docs).
REPLICATION_RULES = "-@all +psync +replconf +ping"
#: Sentinel on the servers (sentinel auth-user): Redis's documented least-privilege set, with
#: the one channel Sentinels announce themselves on (channels are reset since Redis 7.0).
SENTINEL_RULES = ("-@all +multi +slaveof +ping +exec +subscribe +config|rewrite +role +publish +info"
                  " +client|setname +client|kill +script|kill &__sentinel__:hello")
#: A Sentinel on its peers (sentinel sentinel-user): pings, hello messages and the votes of a
#: failover (SENTINEL IS-MASTER-DOWN-BY-ADDR).
SENTINEL_PEER_RULES = ("-@all +ping +publish +client|setname +sentinel|is-master-down-by-addr"
                       " &__sentinel__:hello")
#: A Celery worker, producer or operator on Sentinel: where is the primary. redis-py asks
#: SENTINEL MASTERS only (kombu's transport and Celery's backend through it; seen through a
#: failover with an empty ACL log): no PING, no SET, REMOVE, RESET, FAILOVER or CONFIG.
SENTINEL_CLIENT_RULES = "-@all +sentinel|masters"
