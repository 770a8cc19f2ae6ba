"""celery-provision: secure-by-construction Celery deployments from one Ansible inventory."""

__version__ = "0.1.0"
