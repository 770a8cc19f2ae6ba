"""A deliberately insecure Celery config: `celery-provision audit` must flag all of it.

Never deploy this. Certificates and keys are not checked in: the signing
settings point into $AUDIT_FIXTURE_FILES, which tests/test_audit.py fills at
test time with an expired, a duplicate and a non-RSA certificate and a
world-readable key. Rules that exclude each other (e.g. "signing disabled" vs
"signing on but unsigned content accepted") are covered by tests/test_audit.py.
"""

import os

_FILES = os.environ.get("AUDIT_FIXTURE_FILES", "/nonexistent/audit-fixture")

# Plaintext AMQP as guest (password in the file), and a failover URL with no user at all.
broker_url = "amqp://guest:guest@broker-a.example:5672//;amqp://broker-b.example:5672//"
# rediss:// with no TLS options (kombu falls back to CERT_NONE), then one that names its
# verification in the URL with a spelling kombu rejects, and turns off the host name check.
broker_read_url = "rediss://r1.example:6379/0;rediss://r2.example:6379/0?ssl_cert_reqs=required"
broker_write_url = "rediss://writer:hunter22@w.example:6379/0?ssl_cert_reqs=ssl.CERT_OPTIONAL&ssl_check_hostname=false"
broker_use_ssl = False

# rediss:// result backend without ssl_cert_reqs anywhere: Celery refuses to start.
result_backend = "rediss://:hunter22@results.example:6380/1"

# Signing "on", but pickle, yaml and a home-made serializer still accepted.
task_serializer = "auth"
accept_content = ["auth", "pickle", "application/x-yaml", "application/x-homemade"]
result_serializer = "pickle"
result_accept_content = ["pickle", "json"]
event_serializer = "yaml"
security_digest = "sha1"
security_key = os.path.join(_FILES, "signing.key")
security_certificate = os.path.join(_FILES, "signing.pem")
security_cert_store = os.path.join(_FILES, "signers", "*.pem")
security_key_password = "literal-key-passphrase"

# Settings that look like protection and are not.
worker_port = 5555
task_create_missing_queues = False
worker_hijack_root_logger = False
CELERY_ALWAYS_EAGER_TYPO = True
worker_pool_restarts = True
CELERYD_POOL_RESTARTS = True  # a left-over old name next to its new one (Celery allows that pair)

worker_enable_remote_control = True
result_extended = True
task_protocol = 1
