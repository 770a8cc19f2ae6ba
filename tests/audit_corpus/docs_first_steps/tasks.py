"""Shape of Celery's docs, "First steps with Celery": the whole app in tasks.py.

Origin: docs.celeryq.dev, getting-started/first-steps-with-celery ("Application"),
reduced to the Celery part.
"""

from celery import Celery

app = Celery("tasks", broker="pyamqp://guest@localhost//")


@app.task
def add(x, y):
    return x + y
