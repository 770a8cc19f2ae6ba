"""Shape of Celery's docs, "First steps with Django": proj/celery.py.

Origin: docs.celeryq.dev, django/first-steps-with-django (the celery.py module), as nearly
every Django project on GitHub copies it.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")

app = Celery("proj")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.task(bind=True, ignore_result=True)
def debug_task(self):
    print(f"Request: {self.request!r}")
