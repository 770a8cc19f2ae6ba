"""The local all-in-one deployment, brought up once per test session by the README's main
command (`scripts/deploy-local.sh`) on a copy of `inventories/local`, and stopped after.

Live tests (render end to end, the hostile-client suite, faults) take the `local_deployment`
fixture: real RabbitMQ, real Redis and a real Celery worker, configured by the roles."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


def role_default(role: str, name: str, host: str | None = None) -> Any:
    """A role default as the role sees it for *host*: `roles/<role>/defaults/main.yml`, templated
    with the role's other defaults and `inventory_hostname` (an inventory that overrides it is
    not read: the model exports the variables a deployment may override)."""
    import jinja2
    import yaml

    defaults = yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text()) or {}
    context = {**defaults, **({"inventory_hostname": host} if host is not None else {})}
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    value = defaults[name]
    for _ in range(5):  # a default may refer to another templated default
        if not (isinstance(value, str) and "{{" in value):
            break
        value = env.from_string(value).render(context)
    return value


def role_var(role: str, name: str, **context: Any) -> Any:
    """A value the role derives (`roles/<role>/vars/main.yml`), evaluated as Ansible would for
    the role inputs in *context* (e.g. `rabbitmq_auth_x509=False`), as a Python value."""
    import jinja2.nativetypes
    import yaml

    derived = yaml.safe_load((REPO / "roles" / role / "vars" / "main.yml").read_text()) or {}
    env = jinja2.nativetypes.NativeEnvironment(undefined=jinja2.StrictUndefined)
    return env.from_string(derived[name]).render(context)


def platform_var(role: str, name: str) -> Any:
    """A role's platform fact for this machine (`roles/<role>/vars/<os_family>.yml`, then the
    release's override), as the role's `tasks/platform.yml` loads them; for a role with server
    flavors (the redis role), then its default flavor's names (`vars/flavor-<flavor>.yml`), as
    its `tasks/flavor.yml` loads them."""
    import yaml

    major = Path("/etc/debian_version").read_text().split(".")[0].strip()
    vars_dir = REPO / "roles" / role / "vars"
    files = ["Debian.yml", f"Debian-{major}.yml"]
    if any(vars_dir.glob("flavor-*.yml")):
        files.append(f"flavor-{role_default(role, f'{role}_flavor')}.yml")
    values: dict[str, Any] = {}
    for name_ in files:
        path = vars_dir / name_
        if path.exists():
            values.update(yaml.safe_load(path.read_text()) or {})
    return values[name]


# The broker services of the local deployment: the rabbitmq role's and the redis role's (its
# default flavor's) service names.
BROKER_SERVICES = (platform_var("rabbitmq", "_rabbitmq_service"), platform_var("redis", "_redis_service"))


def worker_service_name(host: str) -> str:
    """The worker's service name on *host* (celery_worker_service_name)."""
    return str(role_default("celery_worker", "celery_worker_service_name", host))


def run(*argv: str | Path, check: bool = True, timeout: float = 900, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command from the repository with the project's virtualenv first on PATH."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
           **kwargs.pop("env", {})}
    proc = subprocess.run([str(a) for a in argv], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env, check=False, **kwargs)
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-60:])
        raise AssertionError(f"{' '.join(map(str, argv))} exited {proc.returncode}:\n{tail}")
    return proc


@dataclass
class LocalDeployment:
    """A running all-in-one deployment and the handles tests need."""

    inventory: Path
    output: str
    deployment: Any = field(repr=False)

    @property
    def worker_service(self) -> str:
        return worker_service_name(self.deployment.group("celery_workers")[0].name)

    def service(self, name: str, action: str) -> None:
        run("service", name, action, timeout=180)

    def client_app(self, workdir: Path, host: str | None = None) -> Any:
        """A Celery app configured as a client of this deployment (signing enabled)."""
        from celery_provision import verify

        d = self.deployment
        client = d.host(host) if host else (d.group("celery_clients") or d.group("celery_workers"))[0]
        return verify.client_app(d, client, workdir)


def _stop_all(d: Any) -> None:
    for worker in d.group("celery_workers"):
        subprocess.run(["service", worker_service_name(worker.name), "stop"],
                       capture_output=True, check=False)
    for name in BROKER_SERVICES:
        subprocess.run(["service", name, "stop"], capture_output=True, check=False)


@pytest.fixture(scope="session")
def local_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    """Deploy `inventories/local` (a private copy, with its own PKI) with the main command."""
    if os.geteuid() != 0 or not shutil.which("service"):
        pytest.skip("the local deployment needs root and init scripts (service)")
    from celery_provision import model

    # One live deployment per machine at a time: a second pytest session waits here
    # instead of rewriting the same services' certificates and passwords under the first.
    lock = open("/tmp/celery-provision-live.lock", "w")  # noqa: SIM115 - held for the session
    fcntl.flock(lock, fcntl.LOCK_EX)
    base = tmp_path_factory.mktemp("deploy") / "inventories"
    inventory = base / "local"
    shutil.copytree(REPO / "inventories" / "local", inventory)
    proc = run("bash", "scripts/deploy-local.sh", inventory, check=False, timeout=1800)
    d = model.load(inventory)
    try:
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-80:])
            pytest.fail(f"scripts/deploy-local.sh failed ({proc.returncode}):\n{tail}", pytrace=False)
        yield LocalDeployment(inventory=inventory, output=proc.stdout + proc.stderr, deployment=d)
    finally:
        _stop_all(d)
        lock.close()
