"""An Airflow-era celeryconfig: pickle for tasks and results, values from airflow.cfg.

Origin: the shape of public Airflow deployments' docker/config/celeryconfig.py (e.g. the one
seen in wongwill86/air-tasks): `from airflow import configuration`, pickle serializers.
"""

from airflow import configuration

# Broker settings.
accept_content = ["json", "pickle"]
event_serializer = "json"
result_serializer = "pickle"
task_serializer = "pickle"
task_time_limit = 7200
worker_prefetch_multiplier = 1
task_acks_late = True
broker_url = configuration.get("celery", "broker_url")
result_backend = configuration.get("celery", "CELERY_RESULT_BACKEND")
worker_concurrency = configuration.getint("celery", "CELERYD_CONCURRENCY")
worker_send_task_events = True
