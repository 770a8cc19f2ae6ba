"""Local settings of the cookiecutter-django-style layout: everything from base, eager off."""

from .base import *  # noqa: F403
from .base import env

DEBUG = True
SECRET_KEY = env("DJANGO_SECRET_KEY", default="local-only")
CELERY_TASK_EAGER_PROPAGATES = True
