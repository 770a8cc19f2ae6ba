"""celery-provision: secure-by-construction Celery deployments from one Ansible inventory."""

# The one place the version is written: pyproject.toml reads it (dynamic version), the
# collection's galaxy.yml is generated from it (scripts/build-collection.py).
__version__ = "0.1.0"
