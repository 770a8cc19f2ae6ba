"""redis_acl_rules: the least-privilege ACL of a Celery worker, producer or operator on Redis.

The rules were found with real Celery 5.7 processes on Redis 7.0
(tests/test_redis_roles_live.py; roles/redis/README.md gives each rule's reason). These
tests state what each role may and may not do, judged the way Redis 7.0 judges a command:
it runs when the root permissions or one selector grant it together with every key (with
the read/write access the command needs: `%R~`, `%W~`, `~`) and every channel it names;
a PSUBSCRIBE pattern is compared literally with the channel patterns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from celery_provision.acl import redis_acl_rules
from celery_provision.errors import ProvisionError
from celery_provision.runtime import DONE_PREFIX

PRI = "\x06\x16"  # kombu's separator between a queue name and its priority step
UUID = "0f0c3a2e-9d1b-4c4e-8f55-1a2b3c4d5e6f"
TASK = f"celery-task-meta-{UUID}"
GROUP = f"celery-taskset-meta-{UUID}"
DONE = f"{DONE_PREFIX}{UUID}"  # the runtime's record of a completed task (replay refusal)
TASK_QUEUES = ("celery", "high", "low")
DANGEROUS = (
    "flushall", "flushdb", "config", "keys", "scan", "debug", "shutdown", "acl", "module", "eval",
    "script|flush", "script|kill", "monitor", "swapdb", "migrate", "save", "bgsave", "replicaof",
    "slaveof", "sync", "psync", "client", "client|kill", "function", "sort", "rename", "restore", "object",
)


def glob(pattern: str) -> re.Pattern[str]:
    """Redis' stringmatchlen(): *, ?, [..] with ranges and ^, backslash escapes."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            negate = body.startswith("^")
            body = body[1:] if negate else body
            out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


@dataclass
class Selector:
    commands: set[str]
    keys: list[tuple[str, str]]  # (access "R", "W" or "RW", pattern)
    channels: list[str]


def parse(rules: str) -> tuple[list[str], Selector, list[Selector]]:
    """(every token, the root permissions, the selectors)."""
    tokens: list[str] = []
    for part in rules.split(" "):
        if tokens and tokens[-1].startswith("(") and not tokens[-1].endswith(")"):
            tokens[-1] += " " + part
        else:
            tokens.append(part)

    def selector(parts: list[str]) -> Selector:
        s = Selector(set(), [], [])
        for t in parts:
            if t.startswith("+"):
                s.commands.add(t[1:])
            elif t.startswith("%"):
                access, pattern = t[1:].split("~", 1)
                s.keys.append((access, pattern))
            elif t.startswith("~"):
                s.keys.append(("RW", t[1:]))
            elif t.startswith("&"):
                s.channels.append(t[1:])
        return s

    root = selector([t for t in tokens if not t.startswith("(")])
    selectors = [selector(t[1:-1].split(" ")) for t in tokens if t.startswith("(")]
    return tokens, root, selectors


def allowed(rules: str, command: str, keys: dict[str, str] | None = None, channels: tuple[str, ...] = (),
            patterns: tuple[str, ...] = ()) -> bool:
    """Whether Redis runs *command* with *keys* ({key: access needed}), *channels* (PUBLISH,
    SUBSCRIBE) and *patterns* (PSUBSCRIBE)."""
    _, root, selectors = parse(rules)
    for s in [root, *selectors]:
        if command not in s.commands:
            continue
        if not all(any(set(need) <= set(access) and glob(p).match(key) for access, p in s.keys)
                   for key, need in (keys or {}).items()):
            continue
        if not all(any(glob(p).match(ch) for p in s.channels) for ch in channels):
            continue
        if not all(p in s.channels for p in patterns):
            continue
        return True
    return False


def rules(role: str, queues: tuple[str, ...] = ("celery",), *, broker: bool = True, backend: bool = True,
          remote_control: bool = True, broker_db: int = 0) -> str:
    return redis_acl_rules(role, list(queues), task_queues=list(TASK_QUEUES), broker=broker, backend=backend,
                           broker_db=broker_db, remote_control=remote_control)


WORKER = rules("worker")
WORKER_QUIET = rules("worker", remote_control=False)
CLIENT = rules("client", ("celery", "high"))
OPERATOR = rules("operator", ())
ALL = {"worker": WORKER, "worker-quiet": WORKER_QUIET, "client": CLIENT, "operator": OPERATOR}


# --- shape --------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ALL)
def test_rules_start_by_denying_every_command(role: str) -> None:
    assert ALL[role].split(" ")[0] == "-@all"


@pytest.mark.parametrize("role", ALL)
def test_no_command_category_is_granted(role: str) -> None:
    assert "+@" not in ALL[role]


@pytest.mark.parametrize("role", ALL)
@pytest.mark.parametrize("command", DANGEROUS)
def test_dangerous_command_is_never_granted(role: str, command: str) -> None:
    _, root, selectors = parse(ALL[role])
    assert all(command not in s.commands for s in [root, *selectors])


@pytest.mark.parametrize("role", ALL)
def test_root_permissions_hold_no_key_or_channel(role: str) -> None:
    _, root, _ = parse(ALL[role])
    assert root.keys == [] and root.channels == []


@pytest.mark.parametrize("role", ALL)
def test_no_key_or_channel_pattern_is_a_bare_wildcard(role: str) -> None:
    _, _, selectors = parse(ALL[role])
    patterns = {p for s in selectors for _, p in s.keys} | {c for s in selectors for c in s.channels}
    assert not {"*", "?*"} & patterns


@pytest.mark.parametrize("role", ALL)
def test_rules_are_plain_ascii_single_line(role: str) -> None:
    assert ALL[role].isascii() and ALL[role].isprintable()


# --- producer (client) ---------------------------------------------------------------------


@pytest.mark.parametrize("key", ["celery", "high", f"celery{PRI}9", f"high{PRI}3"])
def test_producer_pushes_to_its_queues_and_their_priority_lists(key: str) -> None:
    assert allowed(CLIENT, "lpush", {key: "W"})


@pytest.mark.parametrize("command, need", [("brpop", "RW"), ("rpop", "RW"), ("lpop", "RW"), ("lrange", "R"),
                                           ("del", "W"), ("ltrim", "W"), ("lrem", "W"), ("rpush", "W")])
def test_producer_cannot_take_read_drop_or_restore_tasks(command: str, need: str) -> None:
    assert not allowed(CLIENT, command, {"celery": need})


def test_producer_cannot_push_to_a_queue_it_does_not_use() -> None:
    assert not allowed(CLIENT, "lpush", {"low": "W"})


def test_producer_declares_no_queue() -> None:
    assert not allowed(CLIENT, "sadd", {"_kombu.binding.celery": "W"})


@pytest.mark.parametrize("channel", ["/0.celery.pidbox", "/0.celeryev/task.succeeded"])
def test_producer_reaches_no_control_or_event_channel(channel: str) -> None:
    assert not allowed(CLIENT, "publish", channels=(channel,))
    assert not allowed(CLIENT, "subscribe", channels=(channel,))
    assert not allowed(CLIENT, "psubscribe", patterns=(channel,))


@pytest.mark.parametrize("key", ["w@h.celery.pidbox", f"{UUID}.reply.celery.pidbox", f"celeryev.{UUID}",
                                 "_kombu.binding.celery.pidbox", "unacked", "unacked_index"])
def test_producer_reaches_no_control_event_or_delivery_key(key: str) -> None:
    assert not any(allowed(CLIENT, c, {key: ""}) for c in ("lpush", "llen", "get", "del", "brpop"))


@pytest.mark.parametrize("key", [TASK, GROUP])
def test_producer_reads_results_and_saved_groups(key: str) -> None:
    assert allowed(CLIENT, "get", {key: "R"})


def test_producer_waits_for_a_result_on_its_channel() -> None:
    assert allowed(CLIENT, "subscribe", channels=(TASK,))


def test_producer_saves_a_group() -> None:
    assert allowed(CLIENT, "setex", {GROUP: "W"}) and allowed(CLIENT, "publish", channels=(GROUP,))


def test_producer_sets_up_a_chord() -> None:
    assert allowed(CLIENT, "set", {f"{GROUP}.s": "W"}) and allowed(CLIENT, "del", {f"{GROUP}.c": "W"})


def test_producer_forgets_results_and_deletes_groups() -> None:
    assert allowed(CLIENT, "del", {TASK: "W"}) and allowed(CLIENT, "del", {GROUP: "W"})


def test_producer_cannot_forge_a_task_result() -> None:
    assert not allowed(CLIENT, "setex", {TASK: "W"})
    assert not allowed(CLIENT, "publish", channels=(TASK,))


@pytest.mark.parametrize("command, suffix", [("zadd", ".j"), ("rpush", ".j"), ("incrby", ".t"), ("set", ".j"),
                                             ("set", ".t"), ("sadd", ".d"), ("del", ".j")])
def test_producer_cannot_touch_a_chords_join_state(command: str, suffix: str) -> None:
    assert not allowed(CLIENT, command, {GROUP + suffix: "W"})


def test_producer_cannot_run_scripts() -> None:
    assert not allowed(CLIENT, "evalsha", {GROUP: "RW"})


# --- worker --------------------------------------------------------------------------------


def test_worker_consumes_its_queues_and_priority_lists_in_one_brpop() -> None:
    assert allowed(WORKER, "brpop", {"celery": "RW", f"celery{PRI}3": "RW", f"celery{PRI}9": "RW"})


def test_worker_cannot_consume_another_workers_queue() -> None:
    assert not allowed(WORKER, "brpop", {"low": "RW"})


@pytest.mark.parametrize("queue", TASK_QUEUES)
def test_worker_publishes_to_every_task_queue(queue: str) -> None:
    assert allowed(WORKER, "lpush", {queue: "W"}) and allowed(WORKER, "rpush", {f"{queue}{PRI}6": "W"})


def test_worker_binds_only_its_own_queues() -> None:
    assert allowed(WORKER, "sadd", {"_kombu.binding.celery": "W"})
    assert not allowed(WORKER, "sadd", {"_kombu.binding.low": "W"})


@pytest.mark.parametrize("command, key", [("hset", "unacked"), ("hdel", "unacked"), ("zadd", "unacked_index"),
                                          ("zrange", "unacked_index"), ("set", "unacked_mutex")])
def test_worker_keeps_unacknowledged_messages(command: str, key: str) -> None:
    assert allowed(WORKER, command, {key: "RW"})


def test_worker_stores_results_with_expiry_and_publishes_them() -> None:
    assert allowed(WORKER, "setex", {TASK: "W"}) and allowed(WORKER, "publish", channels=(TASK,))


@pytest.mark.parametrize("command", ["evalsha", "zadd", "zcount", "zrange", "rpush", "llen", "lrange", "sismember"])
def test_worker_keeps_chords_ordered_and_unordered(command: str) -> None:
    assert allowed(WORKER, command, {f"{GROUP}.j": "RW"})


def test_worker_adds_to_a_chord_with_incrby() -> None:
    assert allowed(WORKER, "incrby", {f"{GROUP}.t": "RW"})


def test_worker_checks_the_record_with_the_tasks_result_in_one_mget_and_records_completed_tasks() -> None:
    meta = "celery-task-meta-0f0c3a2e-9d1b-4c4e-8f55-1a2b3c4d5e6f"
    assert allowed(WORKER, "mget", {DONE: "R", meta: "R"}) and allowed(WORKER, "set", {DONE: "W"})


@pytest.mark.parametrize("command", ["del", "expire"])
def test_worker_cannot_erase_the_record_of_completed_tasks(command: str) -> None:
    assert not allowed(WORKER, command, {DONE: "RW"})


@pytest.mark.parametrize("role", ["client", "operator"])
@pytest.mark.parametrize("command", ["set", "del", "get"])
def test_only_workers_touch_the_record_of_completed_tasks(role: str, command: str) -> None:
    """A producer could otherwise mark a task id as done before it runs, or erase the record
    so that a replay runs again."""
    assert not allowed(ALL[role], command, {DONE: "RW"})


def test_worker_with_remote_control_receives_broadcasts_and_replies() -> None:
    assert allowed(WORKER, "psubscribe", patterns=("/0.celery.pidbox",))
    assert allowed(WORKER, "smembers", {"_kombu.binding.reply.celery.pidbox": "R"})
    assert allowed(WORKER, "lpush", {f"{UUID}.reply.celery.pidbox": "W"})


def test_worker_with_remote_control_sends_events() -> None:
    assert allowed(WORKER, "publish", channels=("/0.celeryev/worker.heartbeat",))


def test_worker_cannot_broadcast_control_to_other_workers() -> None:
    assert not allowed(WORKER, "publish", channels=("/0.celery.pidbox",))


def test_worker_cannot_read_events_or_replies() -> None:
    assert not allowed(WORKER, "psubscribe", patterns=("/0.celeryev/*",))
    assert not allowed(WORKER, "brpop", {f"{UUID}.reply.celery.pidbox": "RW"})


def test_worker_without_remote_control_reaches_no_control_or_event_channel() -> None:
    assert "pidbox" not in WORKER_QUIET and "celeryev" not in WORKER_QUIET


# --- operator ------------------------------------------------------------------------------


def test_operator_broadcasts_control_commands() -> None:
    assert allowed(OPERATOR, "publish", channels=("/0.celery.pidbox",))


def test_operator_collects_replies() -> None:
    assert allowed(OPERATOR, "brpop", {f"{UUID}.reply.celery.pidbox": "RW", f"{UUID}.reply.celery.pidbox{PRI}9": "RW"})
    assert allowed(OPERATOR, "evalsha", {"_kombu.binding.reply.celery.pidbox": "RW", "_kombu.binding_deadlines": "RW"})


def test_operator_reads_the_event_stream() -> None:
    assert allowed(OPERATOR, "psubscribe", patterns=("/0.celeryev/*",))


def test_operator_cannot_publish_events() -> None:
    assert not allowed(OPERATOR, "publish", channels=("/0.celeryev/task.succeeded",))


@pytest.mark.parametrize("command, need", [("brpop", "RW"), ("lrange", "R"), ("lpush", "W"), ("llen", "")])
def test_operator_cannot_touch_a_task_queue(command: str, need: str) -> None:
    assert not allowed(OPERATOR, command, {"celery": need})


def test_operator_gets_no_result_rule_even_with_a_redis_backend() -> None:
    assert "celery-task" not in OPERATOR


def test_operator_on_a_backend_only_redis_gets_no_user() -> None:
    with pytest.raises(ProvisionError):
        rules("operator", (), broker=False, backend=True)


# --- parts and parameters ------------------------------------------------------------------


@pytest.mark.parametrize("role", ["worker", "client"])
def test_backend_only_rules_touch_no_broker_key(role: str) -> None:
    only = rules(role, broker=False)
    assert "celery-task-meta-*" in only and "_kombu" not in only and "unacked" not in only
    assert not allowed(only, "lpush", {"celery": "W"})


@pytest.mark.parametrize("role", ["worker", "client"])
def test_broker_only_rules_touch_no_result(role: str) -> None:
    assert "celery-task" not in rules(role, backend=False) and DONE_PREFIX not in rules(role, backend=False)


def test_fanout_channels_follow_the_broker_database() -> None:
    worker = rules("worker", broker_db=3)
    assert allowed(worker, "psubscribe", patterns=("/3.celery.pidbox",))
    assert not allowed(worker, "psubscribe", patterns=("/0.celery.pidbox",))


def test_queue_name_glob_characters_are_matched_literally() -> None:
    client = rules("client", ("a*",))
    assert allowed(client, "lpush", {"a*": "W"}) and not allowed(client, "lpush", {"ab": "W"})


@pytest.mark.parametrize("queue", ["two words", "tab\there", "ctl\x06", ""])
def test_queue_name_that_no_acl_pattern_can_hold_is_refused(queue: str) -> None:
    with pytest.raises(ProvisionError):
        rules("client", (queue,))


@pytest.mark.parametrize("role", ["worker", "client"])
def test_a_broker_user_without_queues_is_refused(role: str) -> None:
    with pytest.raises(ProvisionError):
        rules(role, ())


def test_a_user_without_broker_or_backend_is_refused() -> None:
    with pytest.raises(ProvisionError):
        rules("worker", broker=False, backend=False)


def test_an_unknown_role_is_refused() -> None:
    with pytest.raises(ProvisionError):
        rules("admin")


@pytest.mark.parametrize("db", [-1, True, "0"])
def test_invalid_broker_database_is_refused(db: object) -> None:
    with pytest.raises(ProvisionError):
        rules("worker", broker_db=db)  # type: ignore[arg-type]


@pytest.mark.parametrize("role", ALL)
def test_rules_hold_no_duplicate_token(role: str) -> None:
    tokens, _, _ = parse(ALL[role])
    assert len(tokens) == len(set(tokens))


def test_worker_with_remote_control_removes_its_pidbox_queue_at_shutdown() -> None:
    assert allowed(WORKER, "srem", {"_kombu.binding.celery.pidbox": "W"})
    assert allowed(WORKER, "del", {"w@h.celery.pidbox": "W"})


def test_select_is_granted_only_where_a_database_other_than_0_is_used() -> None:
    _, root, _ = parse(OPERATOR)
    assert "select" not in root.commands
    assert "select" in parse(rules("operator", (), broker_db=2))[1].commands
    assert "select" in parse(CLIENT)[1].commands


# --- a replicated Redis under Sentinel (the live proof: tests/test_redis_sentinel_live.py)


def test_the_replication_user_reaches_no_key_and_no_channel() -> None:
    from celery_provision.acl import REPLICATION_RULES

    assert REPLICATION_RULES.split() == ["-@all", "+psync", "+replconf", "+ping"]


def test_sentinels_users_on_the_servers_and_on_each_other_reach_only_the_hello_channel() -> None:
    from celery_provision.acl import SENTINEL_PEER_RULES, SENTINEL_RULES

    for rules in (SENTINEL_RULES, SENTINEL_PEER_RULES):
        tokens = rules.split()
        assert tokens[0] == "-@all" and [t for t in tokens if t[0] in "~&%"] == ["&__sentinel__:hello"]
        assert not [t for t in tokens[1:] if not t.startswith(("+", "&"))]


def test_a_celery_user_on_sentinel_may_only_ask_for_the_masters() -> None:
    from celery_provision.acl import SENTINEL_CLIENT_RULES

    assert SENTINEL_CLIENT_RULES == "-@all +sentinel|masters"
