"""The secure app signed the way Celery's security guide shows: the auth serializer.

Origin: Celery's documentation, "Security: Message Signing" (docs/userguide/security.rst):
security_key/certificate/cert_store, task_serializer = accept_content = 'auth', then
app.setup_security(); folded into the TLS app module of secure_app. The auth serializer
signs the body only (task name, id, ETA travel unsigned, no replay refusal): flagged.
"""

import ssl
from pathlib import Path

from celery import Celery

ETC = Path("/etc/celery-provision-corpus")

app = Celery("proj")
app.conf.update(
    broker_url="amqps://worker-1@rabbit-1.example:5671/celery",
    broker_password=(ETC / "rabbitmq.password").read_text().strip(),
    broker_use_ssl={
        "ca_certs": str(ETC / "ca.pem"),
        "certfile": str(ETC / "client.pem"),
        "keyfile": str(ETC / "client.key"),
        "cert_reqs": ssl.CERT_REQUIRED,
        "server_hostname": "rabbit-1.example",
    },
    broker_connection_retry_on_startup=True,
    security_key=str(ETC / "signing.key"),
    security_certificate=str(ETC / "signing.pem"),
    security_cert_store=str(ETC / "signers" / "*.pem"),
    security_digest="sha256",
    task_serializer="auth",
    event_serializer="auth",
    accept_content=["auth"],
    worker_enable_remote_control=False,
)
app.setup_security()
