"""Shape of Flask's older "Celery Background Tasks" pattern: make_celery(app) from Flask config.

Origin: the make_celery() factory of Flask's docs (1.x "Patterns: Celery"), which many public
Flask apps still carry: Celery(app.import_name, backend=..., broker=...) from app.config,
then celery.conf.update(app.config).
"""

from celery import Celery
from flask import Flask


def make_celery(app):
    celery = Celery(
        app.import_name,
        backend=app.config["CELERY_RESULT_BACKEND"],
        broker=app.config["CELERY_BROKER_URL"],
    )
    celery.conf.update(app.config)
    return celery


flask_app = Flask(__name__)
flask_app.config.update(
    CELERY_BROKER_URL="redis://localhost:6379",
    CELERY_RESULT_BACKEND="redis://localhost:6379",
)
celery = make_celery(flask_app)
