"""A repair to kombu's Redis transport that a worker needs to survive a Redis failover.

kombu's Redis `QoS.ack` (5.7.0 and before) removes the message from the `unacked` hash
first and only then frees the message's prefetch slot. When that Redis call fails (the
primary was just killed, Sentinel has not yet promoted a replica), the slot is never
freed: after `worker_prefetch_multiplier x concurrency` failed acks the channel stops
issuing BRPOP for good, and the worker idles, connected, while tasks queue up (seen in
tests/faults/test_sentinel_faults.py; reports of the symptom: celery #6348, #10096).

`reject` has the same order. The repair frees the slot whatever happens to the Redis call and lets the error through
(Celery logs "Couldn't ack" as before). The message stays in the `unacked` hash, so the
transport gives it out again after `visibility_timeout`: delivery stays at-least-once.
"""

from __future__ import annotations

from typing import Any

__all__ = ["repair_redis_ack"]

_MARK = "_celery_provision_repaired"


def repair_redis_ack() -> None:
    """Make kombu's Redis QoS free a prefetch slot even when its ack or reject fails
    (idempotent)."""
    from kombu.transport import redis, virtual

    qos = redis.QoS
    for name in ("ack", "reject"):
        original = getattr(qos, name)
        if not getattr(original, _MARK, False):
            setattr(qos, name, _freeing_the_slot(original, virtual.QoS.ack))


def _freeing_the_slot(method: Any, free: Any) -> Any:
    def repaired(self: Any, delivery_tag: Any, *args: Any, **kwargs: Any) -> None:
        try:
            method(self, delivery_tag, *args, **kwargs)
        except BaseException:
            free(self, delivery_tag)  # the slot; the message waits in `unacked`
            raise

    setattr(repaired, _MARK, True)
    repaired.__name__, repaired.__doc__ = method.__name__, method.__doc__
    return repaired
