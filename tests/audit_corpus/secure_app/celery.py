"""A secure app module in the shape this toolkit renders, secrets read from files at import.

Origin: celery-provision's own rendered celeryconfig (roles/celery_worker), folded into an app
module; the password files and PEMs live on the worker host, not here.
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
    task_serializer="auth",
    accept_content=["auth"],
    security_key=str(ETC / "signing.key"),
    security_certificate=str(ETC / "signing.pem"),
    security_cert_store=str(ETC / "signers" / "*.pem"),
    worker_enable_remote_control=False,
)
