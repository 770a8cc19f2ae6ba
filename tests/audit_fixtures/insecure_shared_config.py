"""A deliberately insecure Celery config: one module shared by the workers and the web app.

Never deploy this. Its TLS and signing are in order; what is wrong is who uses it.
`celery-provision audit --role worker` must flag remote control left at Celery's
default (and note that the web app may call every task); `--role client` (the web app, a
producer) must flag the worker settings it carries, the queues it declares and the
task-sent events it publishes; `--role operator` the worker settings. The files it names do not exist here (only noted).
"""

import ssl
from pathlib import Path

_ETC = Path("/nonexistent/audit-fixture/etc-celery")

broker_url = "amqps://worker-1@rabbit-1.example:5671/celery"
broker_password = (_ETC / "rabbitmq.password").read_text().strip()
broker_use_ssl = {
    "ca_certs": str(_ETC / "ca.pem"),
    "certfile": str(_ETC / "client.pem"),
    "keyfile": str(_ETC / "client.key"),
    "cert_reqs": ssl.CERT_REQUIRED,
    "server_hostname": "rabbit-1.example",
}
broker_connection_retry_on_startup = True

# Every message signed in the celery-provision envelope (celery_provision.runtime.secure).
celery_provision_envelope = {
    "signer": "worker-1",
    "key": str(_ETC / "signing.key"),
    "cert": str(_ETC / "signing.pem"),
    "ca": str(_ETC / "ca.pem"),
    "store": str(_ETC / "signers"),
    "max_age": 86400,
    "policy": str(_ETC / "policy.json"),
    "role": "worker",
}
task_serializer = "celery-provision-json"
accept_content = ["celery-provision-json"]

# The worker's settings, which the web app gets too. worker_enable_remote_control is
# left out, so Celery's default (on) applies.
worker_concurrency = 8
worker_prefetch_multiplier = 1
task_acks_late = True
task_reject_on_worker_lost = True

# Queues declared by whoever publishes to them, and task-sent events from the producer.
task_queues = {
    "celery": {"exchange": "celery", "routing_key": "celery"},
    "reports": {"exchange": "reports", "routing_key": "reports"},
}
task_send_sent_event = True
