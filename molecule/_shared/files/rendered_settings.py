"""The routing and role settings of a host's rendered Celery configuration, for verify programs.

converge.yml copies the host's rendered configuration (the model export's
`hosts[HOST].celery.config`) beside this module as `rendered_config.py`. It is parsed, not
imported: importing it would read password files and signing keys from the host's
configuration directory, which the role scenarios do not install (their programs connect
with their own TLS files and password, and send unsigned JSON). Only top-level assignments
of Python literals named in SETTINGS are taken, so a verify program routes and behaves
exactly as the deployment's own configuration of that host does.
"""

import ast
import os
import sys

__all__ = ["SETTINGS", "load"]

HERE = os.path.dirname(os.path.abspath(__file__))

#: Routing (exchange, exchange type and routing key of each queue; no queue made up on the
#: fly) and what the host's role does: remote control and events, delivery, results.
SETTINGS = (
    "task_queues", "task_default_queue", "task_default_exchange", "task_default_exchange_type",
    "task_default_routing_key", "task_create_missing_queues",
    "worker_enable_remote_control", "worker_send_task_events",
    "task_acks_late", "task_reject_on_worker_lost", "worker_prefetch_multiplier",
    "result_persistent", "result_expires",
)
# Every rendered worker and producer configuration sets these.
_REQUIRED = ("task_queues", "task_default_queue", "task_create_missing_queues")


def load(path=None):
    """The SETTINGS the rendered configuration sets, as a dict for `app.conf.update`."""
    path = path or os.path.join(HERE, "rendered_config.py")
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), path)
    out = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id in SETTINGS):
            out[node.targets[0].id] = ast.literal_eval(node.value)
    missing = [name for name in _REQUIRED if name not in out]
    if missing:
        sys.exit(f"rendered_settings.py: {path} sets no {', '.join(missing)}")
    return out
