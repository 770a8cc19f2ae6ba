"""What Celery needs from each broker, per role (worker, client, operator).

`rabbitmq` gives the configure/write/read regexes and topic permissions, `redis` the ACL
rules. Both are pure functions of the role, its queues and the deployment's choices; the
reason behind every entry is in roles/rabbitmq/README.md and roles/redis/README.md.
"""

from .rabbitmq import TASK_EXCHANGE, rabbitmq_permissions
from .redis import (
                    REPLICATION_RULES,
                    SENTINEL_CLIENT_RULES,
                    SENTINEL_PEER_RULES,
                    SENTINEL_RULES,
                    redis_acl_rules,
)

__all__ = ["TASK_EXCHANGE", "rabbitmq_permissions", "redis_acl_rules", "REPLICATION_RULES", "SENTINEL_RULES",
           "SENTINEL_PEER_RULES", "SENTINEL_CLIENT_RULES"]
