"""What applications, workers and producers run: the signed envelope (celery-provision's task
authorization). It needs only Celery, kombu and cryptography, and is installed on every
worker, producer and operator host next to the rendered configuration:

    app.config_from_object("celeryconfig")
    celery_provision.runtime.secure(app)

The format and the threat model are in docs/task-authorization.md.
"""

from .envelope import HEADER, Refused, Signer, Trust
from .protect import CONFIG, DONE_PREFIX, RESULT_SERIALIZER, SERIALIZER, TASK_SERIALIZER, secure

__all__ = ["CONFIG", "DONE_PREFIX", "HEADER", "RESULT_SERIALIZER", "SERIALIZER", "TASK_SERIALIZER", "Refused",
           "Signer", "Trust", "secure"]
