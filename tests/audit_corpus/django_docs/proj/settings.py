"""Shape of a Django settings module using the CELERY_ namespace (Celery's Django docs).

Origin: the CELERY_* block of "First steps with Django", plus the broker TLS dict with
certificate checks off that public Django settings use for managed Redis (the issue's case).
"""

import os
import ssl
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "dev-only")
DEBUG = True
INSTALLED_APPS = ["django.contrib.admin", "django.contrib.auth", "proj"]
ROOT_URLCONF = "proj.urls"
EMAIL_HOST = "smtp.example.com"
REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")

# Celery Configuration Options
CELERY_TIMEZONE = "Australia/Tasmania"
CELERY_TASK_TRACK_STARTED = True
CELERY_TASK_TIME_LIMIT = 30 * 60
CELERY_BROKER_URL = REDIS_URL
CELERY_BROKER_USE_SSL = {"ssl_cert_reqs": ssl.CERT_NONE}
