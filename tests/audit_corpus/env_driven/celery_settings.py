"""An env-driven flat config: one Redis URL from the environment, with a local default.

Origin: the shape of public projects' celery_settings.py modules (e.g. the one seen in
gleasonw/gallica-grapher, backend/celery_settings.py): os.environ.get('REDIS_URL', <local>)
for broker and backend, and TLS dicts with ssl_cert_reqs=CERT_OPTIONAL.
"""

import os
import ssl

broker_use_ssl = {"ssl_cert_reqs": ssl.CERT_OPTIONAL}
redis_backend_use_ssl = {"ssl_cert_reqs": ssl.CERT_OPTIONAL}

result_backend = os.environ.get("REDIS_URL", "redis://localhost:6379")
broker_url = os.environ.get("REDIS_URL", "redis://localhost:6379")
