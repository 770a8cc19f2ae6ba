"""redis_acl_rules: the least-privilege ACL of a Celery user on Redis.

The command, key and channel lists were found with real Celery 5.7 workers and
clients on Redis 7.0 (see roles/redis/README.md); these tests pin the shape of
the rules and the protections, matching patterns the way Redis does.
"""

from __future__ import annotations

import re

import pytest

from celery_provision.acl import redis_acl_rules
from celery_provision.errors import ProvisionError

PRIORITY_SEP = "\x06\x16"  # kombu's separator between a queue name and its priority step
DANGEROUS = (
    "flushall", "flushdb", "config", "config|get", "config|set", "keys", "scan", "debug",
    "shutdown", "acl", "acl|setuser", "module", "module|load", "eval", "script|flush",
    "script|kill", "monitor", "swapdb", "migrate", "save", "bgsave", "bgrewriteaof",
    "replicaof", "slaveof", "sync", "psync", "client", "client|kill", "function", "sort",
    "rename", "restore", "object",
)


def parse(rules: str) -> tuple[list[str], list[str], list[str], list[str]]:
    """Split ACL rules into (commands granted, other command rules, key patterns, channel patterns)."""
    tokens = rules.split(" ")
    granted = [t[1:] for t in tokens if t.startswith("+")]
    other = [t for t in tokens if t[0] not in "+~&"]
    keys = [t[1:] for t in tokens if t.startswith("~")]
    channels = [t[1:] for t in tokens if t.startswith("&")]
    return granted, other, keys, channels


def glob_to_regex(pattern: str) -> re.Pattern[str]:
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


def key_allowed(rules: str, key: str) -> bool:
    return any(glob_to_regex(p).match(key) for p in parse(rules)[2])


def publish_allowed(rules: str, channel: str) -> bool:
    return any(glob_to_regex(p).match(channel) for p in parse(rules)[3])


def psubscribe_allowed(rules: str, pattern: str) -> bool:
    """Redis 7 compares a PSUBSCRIBE pattern literally with the user's channel patterns."""
    return pattern in parse(rules)[3]


BOTH = redis_acl_rules(["celery", "high"], broker=True, backend=True)
BROKER = redis_acl_rules(["celery"], broker=True, backend=False)
BACKEND = redis_acl_rules(["celery"], broker=False, backend=True)
UUID = "0f0c3a2e-9d1b-4c4e-8f55-1a2b3c4d5e6f"


def test_rules_start_by_denying_every_command() -> None:
    assert BOTH.split(" ")[0] == "-@all"


@pytest.mark.parametrize("rules", [BOTH, BROKER, BACKEND], ids=["both", "broker", "backend"])
def test_no_command_category_is_granted(rules: str) -> None:
    granted, other, _, _ = parse(rules)
    assert not [g for g in granted if g.startswith("@")]
    assert other == ["-@all"]


@pytest.mark.parametrize("rules", [BOTH, BROKER, BACKEND], ids=["both", "broker", "backend"])
@pytest.mark.parametrize("command", DANGEROUS)
def test_dangerous_command_is_never_granted(rules: str, command: str) -> None:
    assert command not in parse(rules)[0]


def test_no_key_or_channel_pattern_is_a_bare_wildcard() -> None:
    _, _, keys, channels = parse(BOTH)
    assert not {"*", "?*"} & set(keys + channels)


@pytest.mark.parametrize("queue", ["celery", "high"])
def test_broker_user_may_use_each_queue(queue: str) -> None:
    assert key_allowed(BOTH, queue)


@pytest.mark.parametrize("step", ["3", "6", "9"])
def test_broker_user_may_use_the_priority_lists_of_a_queue(step: str) -> None:
    assert key_allowed(BOTH, f"high{PRIORITY_SEP}{step}")


def test_broker_user_may_not_use_an_undeclared_queue() -> None:
    assert not key_allowed(BOTH, "other")
    assert not key_allowed(BOTH, "celeryx")


def test_queue_name_glob_characters_are_matched_literally() -> None:
    rules = redis_acl_rules(["a*"], broker=True, backend=False)
    assert key_allowed(rules, "a*")
    assert not key_allowed(rules, "ab")


@pytest.mark.parametrize(
    "key",
    [
        "_kombu.binding.celery",
        "_kombu.binding.reply.celery.pidbox",
        "_kombu.binding_permanent.celery",
        "_kombu.binding_deadlines",
        "unacked",
        "unacked_index",
        "unacked_mutex",
        "w1@host.celery.pidbox",
        f"{UUID}.reply.celery.pidbox",
        f"{UUID}.reply.celery.pidbox{PRIORITY_SEP}3",
        f"celeryev.{UUID}",
    ],
)
def test_broker_user_may_use_kombu_bookkeeping_keys(key: str) -> None:
    assert key_allowed(BROKER, key)


@pytest.mark.parametrize("key", [f"celery-task-meta-{UUID}", f"celery-taskset-meta-{UUID}.j"])
def test_broker_only_user_cannot_touch_results(key: str) -> None:
    assert not key_allowed(BROKER, key)


def test_broker_only_user_cannot_read_result_notifications() -> None:
    assert not publish_allowed(BROKER, f"celery-task-meta-{UUID}")


@pytest.mark.parametrize(
    "key",
    [
        f"celery-task-meta-{UUID}",
        f"celery-taskset-meta-{UUID}",
        f"celery-taskset-meta-{UUID}.j",
        f"celery-taskset-meta-{UUID}.t",
        f"celery-taskset-meta-{UUID}.s",
        f"celery-taskset-meta-{UUID}.c",
        f"celery-taskset-meta-{UUID}.d",
    ],
)
def test_backend_user_may_use_result_and_chord_keys(key: str) -> None:
    assert key_allowed(BACKEND, key)


@pytest.mark.parametrize("key", ["celery", "unacked", "_kombu.binding.celery"])
def test_backend_only_user_cannot_touch_broker_keys(key: str) -> None:
    assert not key_allowed(BACKEND, key)


def test_backend_only_user_cannot_block_on_queues() -> None:
    assert "brpop" not in parse(BACKEND)[0]


def test_backend_user_may_subscribe_to_result_notifications() -> None:
    assert publish_allowed(BACKEND, f"celery-task-meta-{UUID}")
    assert "subscribe" in parse(BACKEND)[0]


@pytest.mark.parametrize("pattern", ["/0.celery.pidbox", "/0.celeryev/*", "/0.celeryev/worker.*"])
def test_broker_user_may_psubscribe_to_kombus_fanout_patterns(pattern: str) -> None:
    assert psubscribe_allowed(BROKER, pattern)


@pytest.mark.parametrize("channel", ["/0.celeryev/task.succeeded", "/0.celeryev/worker.heartbeat", "/0.celery.pidbox"])
def test_broker_user_may_publish_events_and_broadcasts(channel: str) -> None:
    assert publish_allowed(BROKER, channel)


def test_fanout_channels_follow_the_broker_database() -> None:
    rules = redis_acl_rules(["celery"], broker=True, backend=False, broker_db=3)
    assert psubscribe_allowed(rules, "/3.celery.pidbox")
    assert not publish_allowed(rules, "/0.celery.pidbox")


def test_rules_hold_no_duplicates() -> None:
    tokens = BOTH.split(" ")
    assert len(tokens) == len(set(tokens))


def test_rules_are_plain_ascii_without_spaces_inside_a_rule() -> None:
    assert BOTH.isascii()
    assert all(token and token.isprintable() for token in BOTH.split(" "))


def test_a_user_without_broker_or_backend_is_refused() -> None:
    with pytest.raises(ProvisionError):
        redis_acl_rules(["celery"], broker=False, backend=False)


@pytest.mark.parametrize("queue", ["two words", "tab\there", "ctl\x06", ""])
def test_queue_name_that_no_acl_pattern_can_hold_is_refused(queue: str) -> None:
    with pytest.raises(ProvisionError):
        redis_acl_rules([queue], broker=True, backend=False)


def test_broker_without_queues_is_refused() -> None:
    with pytest.raises(ProvisionError):
        redis_acl_rules([], broker=True, backend=False)


@pytest.mark.parametrize("db", [-1, True, "0"])
def test_invalid_broker_database_is_refused(db: object) -> None:
    with pytest.raises(ProvisionError):
        redis_acl_rules(["celery"], broker=True, backend=False, broker_db=db)  # type: ignore[arg-type]
