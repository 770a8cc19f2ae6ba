"""A secure app module in the shape this toolkit renders, secrets read from files at import.

Origin: celery-provision's own rendered celeryconfig (roles/celery_worker), folded into an app
module, with the one call the envelope needs (celery_provision.runtime.secure); the password
files and PEMs live on the worker host, not here.
"""

import ssl
from pathlib import Path

from celery import Celery

from celery_provision.runtime import secure

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
    celery_provision_envelope={
        "signer": "worker-1",
        "key": str(ETC / "signing.key"),
        "cert": str(ETC / "signing.pem"),
        "ca": str(ETC / "ca.pem"),
        "store": str(ETC / "signers"),
        "max_age": 86400,
        "policy": str(ETC / "policy.json"),
        "role": "worker",
    },
    task_serializer="celery-provision-json",
    accept_content=["celery-provision-json"],
    worker_enable_remote_control=False,
)
secure(app)
