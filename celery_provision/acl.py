"""What Celery and kombu need from a broker: RabbitMQ permissions and Redis ACL rules.

Found by running real workers against real brokers; see roles/rabbitmq/README.md
and roles/redis/README.md for the reason behind each permission.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["rabbitmq_permissions", "redis_acl_rules"]


def rabbitmq_permissions(queues: Sequence[str], *, rpc_backend: bool) -> dict[str, str]:
    """Return the least-privilege configure/write/read regexes for a Celery user."""
    raise NotImplementedError  # owned by the rabbitmq role work


def redis_acl_rules(queues: Sequence[str], *, broker: bool, backend: bool) -> str:
    """Return the ACL rules (categories, commands, key and channel patterns) for a Celery user."""
    raise NotImplementedError  # owned by the redis role work
