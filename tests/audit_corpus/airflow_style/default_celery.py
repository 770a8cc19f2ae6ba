"""Shape of Airflow's Celery provider config: a dict of values from airflow.cfg -> config_source.

Origin: the DEFAULT_CELERY_CONFIG pattern of Airflow's default_celery.py (settings read with
conf.get("celery", ...), a TLS block only when SSL_ACTIVE), as also copied into public
repositories (e.g. seung-lab/seuron, config/celeryconfig.py); reduced, Airflow's own
option names kept, the Celery(config_source=...) call of the executor folded in.
"""

import ssl

from airflow.configuration import conf
from celery import Celery

broker_url = conf.get("celery", "BROKER_URL")
broker_transport_options = {"visibility_timeout": 21600}

DEFAULT_CELERY_CONFIG = {
    "accept_content": ["json"],
    "event_serializer": "json",
    "worker_prefetch_multiplier": 1,
    "task_acks_late": True,
    "task_default_queue": "default",
    "task_default_exchange": "default",
    "task_track_started": True,
    "broker_url": broker_url,
    "broker_transport_options": broker_transport_options,
    "result_backend": conf.get("celery", "RESULT_BACKEND"),
    "worker_concurrency": 16,
}

celery_ssl_active = conf.getboolean("celery", "SSL_ACTIVE")
if celery_ssl_active:
    broker_use_ssl = {
        "keyfile": conf.get("celery", "SSL_KEY"),
        "certfile": conf.get("celery", "SSL_CERT"),
        "ca_certs": conf.get("celery", "SSL_CACERT"),
        "cert_reqs": ssl.CERT_REQUIRED,
    }
    DEFAULT_CELERY_CONFIG["broker_use_ssl"] = broker_use_ssl

app = Celery("airflow.executors.celery_executor", config_source=DEFAULT_CELERY_CONFIG)
