"""Shape of Celery's docs, "First steps with Celery" > "Configuration": a flat celeryconfig.

Origin: the example configuration module of that page (broker, rpc backend, json), with the
route and rate-limit lines dropped.
"""

broker_url = "pyamqp://"
result_backend = "rpc://"

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
timezone = "Europe/Oslo"
enable_utc = True
