"""``audit --suggest``: the secure configuration this toolkit renders for a host, as a start."""

from __future__ import annotations

__all__ = ["suggest"]


def suggest(inventory: str, host: str, *, pki_dir: str | None = None) -> str:
    """The rendered ``celeryconfig.py`` of HOST in INVENTORY, headed by how to use it."""
    from .. import model, render  # late: the audit itself never needs the deployment model

    deployment = model.load(inventory, pki_dir=pki_dir)
    source = render.render(deployment, deployment.host(host))
    header = (
        f"# Secure equivalent for {host} (celery-provision audit --suggest -i {inventory}).\n"
        "# A starting point: deploy it with the roles, which also install the files it names.\n"
    )
    return header + source
