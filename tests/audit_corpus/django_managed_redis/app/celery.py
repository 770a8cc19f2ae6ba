"""Shape of a Django project on a managed Redis: TLS options given to Celery(), checks off.

Origin: a pattern found in many public repositories' <project>/celery.py (Celery() called
with broker_use_ssl / redis_backend_use_ssl = {'ssl_cert_reqs': ssl.CERT_NONE}, then the
Django settings read with namespace CELERY); reduced, names changed.
"""

import os
import ssl

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "app.settings")

app = Celery(
    "app",
    broker_use_ssl={"ssl_cert_reqs": ssl.CERT_NONE},
    redis_backend_use_ssl={"ssl_cert_reqs": ssl.CERT_NONE},
)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
