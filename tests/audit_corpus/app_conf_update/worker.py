"""An app module that configures everything with app.conf.update(...) (the issue's third case).

Origin: the shape the issue reports from public app modules (conf.update with a TLS dict whose
checks are off, pickle accepted for "compatibility"); the env-with-default broker URL is the
common os.getenv("X", "<dev URL>") idiom.
"""

import os
import ssl

from celery import Celery

app = Celery("worker")
app.conf.update(
    broker_url=os.getenv("BROKER_URL", "amqps://app:s3cr3t@rabbit.internal:5671//"),
    broker_use_ssl={"cert_reqs": ssl.CERT_NONE},
    accept_content=["json", "pickle"],
    task_serializer="pickle",
    result_serializer="json",
    broker_connection_retry_on_startup=True,
)
