"""A Django app module that turns Redis TLS checks off only when the URL is rediss://.

Origin: a pattern found in public <project>/celery.py modules deployed to managed Redis
(redis_url = os.getenv("REDIS_URL"); conf.update(...); `if redis_url.startswith("rediss://")`
then broker_use_ssl / redis_backend_use_ssl = {"ssl_cert_reqs": ssl.CERT_NONE}); reduced.
"""

import os
import ssl

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site.settings")

app = Celery("site")

redis_url = os.getenv("REDIS_URL")

app.conf.update(
    broker_url=redis_url,
    result_backend=redis_url,
    accept_content=["json"],
    task_serializer="json",
    result_serializer="json",
    timezone="UTC",
)

# Add SSL only if using rediss://
if redis_url.startswith("rediss://"):
    ssl_config = {"ssl_cert_reqs": ssl.CERT_NONE}
    app.conf.broker_use_ssl = ssl_config
    app.conf.redis_backend_use_ssl = ssl_config

app.autodiscover_tasks()
