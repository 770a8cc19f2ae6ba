"""Django settings of the managed-Redis shape: the URL only comes from the environment.

Origin: same pattern as app/celery.py (public Django projects deployed to a PaaS Redis).
"""

import os

INSTALLED_APPS = ["django.contrib.auth", "app"]
CELERY_BROKER_URL = os.environ.get("REDIS_URL")
CELERY_RESULT_BACKEND = os.environ.get("REDIS_URL")
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
