"""The repair of kombu's Redis QoS that `secure(app)` installs (runtime/transport.py): a
failed ack or reject still frees the message's prefetch slot, so a worker whose acks failed
during a Redis failover consumes again. Pure logic: the Redis calls fail on purpose (the
live proof is the failover in tests/faults/test_sentinel_faults.py)."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery
from kombu.transport import redis as kombu_redis

from celery_provision.runtime import secure
from celery_provision.runtime.transport import repair_redis_ack


class _FailingPipe:
    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: self

    def execute(self) -> None:
        raise kombu_redis.redis.exceptions.ConnectionError("the primary is gone")


def _full_qos() -> Any:
    """A Redis QoS with prefetch 1 and one message delivered: it may not consume."""
    qos = kombu_redis.QoS(object(), prefetch_count=1)
    qos._on_collect.cancel()  # nothing to restore at exit: there is no channel
    qos._delivered["tag-1"] = object()
    qos._remove_from_indices = lambda tag, pipe=None: _FailingPipe()
    qos.restore_by_tag = lambda tag, client=None, leftmost=False: _FailingPipe().execute()
    assert not qos.can_consume()
    return qos


@pytest.mark.parametrize("method", ["ack", "reject"])
def test_a_failed_redis_ack_or_reject_frees_the_prefetch_slot_and_still_raises(method: str) -> None:
    repair_redis_ack()
    qos = _full_qos()
    with pytest.raises(kombu_redis.redis.exceptions.ConnectionError):
        getattr(qos, method)("tag-1", *([True] if method == "reject" else []))
    assert qos.can_consume()


def test_secure_installs_the_repair_once() -> None:
    app = Celery("repair", set_as_current=False)
    secure(app)
    secure(app)
    ack = kombu_redis.QoS.ack
    repair_redis_ack()
    assert kombu_redis.QoS.ack is ack and getattr(ack, "_celery_provision_repaired", False)
