"""Fixtures of the hostile-client suite, and its summary line.

Every attack is one test marked `probe`; it passes when the deployment refuses the attacker.
The run ends with `N probes, N refused, N got in` (a failed probe is an attacker who got in).
Controls (not probes) show that each probe could see success: the same client, minus the
hostile part, gets in.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import secprobe
from livedeploy import role_default
from secprobe import WAIT, Endpoint, Issuer

from celery_provision.runtime import HEADER, Signer
from celery_provision.runtime.protect import TASK_CONTENT_TYPE

REPO = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Revocation next to last (it takes the client out of the deployment), host hygiene last:
    the logs it reads then hold every probe's traffic and the re-run's output."""
    order = ("tests/security/test_revocation.py", "tests/security/test_host_hygiene.py")
    late = [[i for i in items if i.nodeid.startswith(prefix)] for prefix in order]
    moved = {id(i) for group in late for i in group}
    items[:] = [i for i in items if id(i) not in moved] + [i for group in late for i in group]


# --------------------------------------------------------------------------- the deployment


@dataclass
class Live:
    """The running deployment, seen from the controller, with the handles the probes need."""

    handle: Any  # tests/livedeploy.LocalDeployment
    tmp: Path

    @property
    def d(self) -> Any:
        return self.handle.deployment

    @property
    def layout(self) -> Any:
        return self.d.layout

    @property
    def worker(self) -> str:
        return self.d.group("celery_workers")[0].name

    @property
    def client(self) -> str:
        return (self.d.group("celery_clients") or self.d.group("celery_workers"))[0].name

    def endpoint(self, kind: str) -> Endpoint:
        host = self.d.group(kind)[0]
        e = self.d.endpoint(host, kind)
        return Endpoint(kind, e.address, e.port, e.plaintext_port)

    def tls_pair(self, host: str) -> tuple[Path, Path]:
        return self.layout.cert(host, "client"), self.layout.key(host, "client")

    def password(self, service: str, user: str) -> str:
        from celery_provision import credentials

        return credentials.password(self.d, service, user)

    def admin(self, service: str) -> str:
        return str(self.d.group(service)[0].var(f"{service}_admin_user"))

    def issuer(self) -> Issuer:
        """The CA that signs the deployment's leaves, private key included (controller only)."""
        from celery_provision import pki

        layout, passphrase = self.layout, pki.passphrase_for(self.d)
        if layout.intermediate_cert.exists():
            cert, key = layout.intermediate_cert, layout.intermediate_key
        else:
            cert, key = layout.root_cert, layout.root_key
        from cryptography import x509

        return Issuer(x509.load_pem_x509_certificate(cert.read_bytes()), secprobe.load_pem_key(key, passphrase))

    def chain(self) -> bytes:
        """The intermediate certificate to send after a leaf (empty without one)."""
        path = self.layout.intermediate_cert
        return path.read_bytes() if path.exists() else b""


@pytest.fixture(scope="session")
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Live:
    """The local all-in-one deployment (tests/livedeploy.py), brought up once per session.

    To probe a deployment that is already up instead, set SECURITY_SUITE_INVENTORY to its
    inventory (and, where they differ from the role defaults, SECURITY_SUITE_RABBITMQ_NODE,
    SECURITY_SUITE_RABBITMQCTL, SECURITY_SUITE_WORKER_LOG, SECURITY_SUITE_PROBE_PARENT)."""
    existing = os.environ.get("SECURITY_SUITE_INVENTORY")
    if existing:
        from livedeploy import LocalDeployment

        from celery_provision import model

        handle = LocalDeployment(inventory=Path(existing), output="", deployment=model.load(existing))
    else:
        handle = request.getfixturevalue("local_deployment")
    return Live(handle, tmp_path_factory.mktemp("security"))


@pytest.fixture(scope="session")
def rabbitmq(live: Live) -> Endpoint:
    return live.endpoint("rabbitmq")


@pytest.fixture(scope="session")
def redis_ep(live: Live) -> Endpoint:
    return live.endpoint("redis")


@pytest.fixture(params=["rabbitmq", "redis"])
def broker(request: pytest.FixtureRequest, live: Live) -> Endpoint:
    """Each broker in turn: transport probes must be refused by both."""
    return live.endpoint(request.param)


# --------------------------------------------------------------------------- clients


@pytest.fixture
def amqp_login(live: Live, rabbitmq: Endpoint) -> Callable[..., Any]:
    """`amqp_login(user, password, vhost=...)`: an open py-amqp connection over mutual TLS
    (as the worker's certificate) or the exception the broker answered with."""
    import ssl

    import amqp

    opened: list[Any] = []

    def login(user: str, password: str, vhost: str | None = None) -> Any:
        cert, key = live.tls_pair(live.worker)
        # py-amqp takes TLS settings as a dict (an SSLContext passed as `ssl` is silently
        # replaced by default settings without the client certificate).
        sslopts = {"ca_certs": str(live.layout.ca_pem), "certfile": str(cert), "keyfile": str(key),
                   "cert_reqs": ssl.CERT_REQUIRED, "server_hostname": rabbitmq.address}
        conn = amqp.Connection(f"{rabbitmq.address}:{rabbitmq.port}", userid=user, password=password,
                               virtual_host=vhost or live.d.settings.vhost, ssl=sslopts,
                               connect_timeout=secprobe.TIMEOUT)
        opened.append(conn)
        conn.connect()
        conn.channel()  # vhost access is checked at connection.open; a channel proves we are in
        return conn

    yield login
    for conn in opened:
        try:
            conn.close()
        except Exception:
            pass


@pytest.fixture
def redis_as(live: Live, redis_ep: Endpoint) -> Callable[..., Any]:
    """`redis_as(user, password)`: a redis-py client over mutual TLS (worker's certificate);
    with user None it sends no AUTH at all."""
    import redis

    opened: list[Any] = []

    def connect(user: str | None, password: str | None = None) -> Any:
        cert, key = live.tls_pair(live.worker)
        r = redis.Redis(host=redis_ep.address, port=redis_ep.port, username=user, password=password,
                        ssl=True, ssl_ca_certs=str(live.layout.ca_pem), ssl_certfile=str(cert),
                        ssl_keyfile=str(key), socket_timeout=secprobe.TIMEOUT,
                        db=live.d.settings.backend_db)
        opened.append(r)
        return r

    yield connect
    for r in opened:
        r.close()


# --------------------------------------------------------------------------- the worker side


def rabbitmq_cli(live: Live, tool: str, *args: str) -> list[str]:
    """The argv of a RabbitMQ CLI tool (`rabbitmqctl`, `rabbitmq-diagnostics`, ...) talking to
    the deployment's node, quietly; the tools sit beside SECURITY_SUITE_RABBITMQCTL if set."""
    node = os.environ.get("SECURITY_SUITE_RABBITMQ_NODE") or \
        role_default("rabbitmq", "rabbitmq_nodename", live.d.group("rabbitmq")[0].name)
    ctl = os.environ.get("SECURITY_SUITE_RABBITMQCTL")
    return [str(Path(ctl).with_name(tool)) if ctl else tool, "-n", node, "-q", *args]


@pytest.fixture
def rabbitmq_cli_argv(live: Live) -> Callable[..., list[str]]:
    """`rabbitmq_cli_argv(tool, *args)`: the argv of *tool* talking to the deployment's node."""
    return lambda tool, *args: rabbitmq_cli(live, tool, *args)


def rabbitmqctl(live: Live, *args: str) -> str:
    proc = subprocess.run(rabbitmq_cli(live, "rabbitmqctl", *args), capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, f"rabbitmqctl {' '.join(args)}: {proc.stderr or proc.stdout}"
    return proc.stdout


def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll until *condition* holds; give up (fail) after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.3)


@pytest.fixture(scope="session")
def probe_dir(live: Live) -> Iterator[Path]:
    """A directory the worker (user `celery`) can write, for the canary `touch` task: under the
    worker's own state directory, which even the sandboxed systemd unit may write."""
    state = Path(os.environ.get("SECURITY_SUITE_PROBE_PARENT")
                 or role_default("celery_worker", "celery_worker_state_dir", live.worker))
    user = role_default("celery_worker", "celery_worker_user", live.worker)
    path = state / f"security-probes-{uuid.uuid4().hex[:8]}"
    path.mkdir(mode=0o700)
    pw = pwd.getpwnam(user)
    os.chown(path, pw.pw_uid, pw.pw_gid)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def worker_log(live: Live) -> Path:
    if os.environ.get("SECURITY_SUITE_WORKER_LOG"):
        return Path(os.environ["SECURITY_SUITE_WORKER_LOG"])
    log_dir = role_default("celery_worker", "celery_worker_log_dir", live.worker)
    return Path(log_dir) / f"{live.handle.worker_service}.log"


@dataclass(frozen=True)
class Wire:
    """One task message as it goes on the wire: headers (the envelope among them, once
    signed), the body's bytes and their content type and encoding."""

    task_id: str
    headers: dict[str, Any]
    body: bytes
    content_type: str = TASK_CONTENT_TYPE
    content_encoding: str = "utf-8"

    def relabelled(self, **headers: Any) -> Wire:
        """The same message (envelope and body untouched) with *headers* changed."""
        return dataclasses.replace(self, headers={**self.headers, **headers})

    def with_body(self, body: bytes, content_type: str | None = None, content_encoding: str | None = None) -> Wire:
        """The same message (envelope and headers untouched) with another body."""
        return dataclasses.replace(self, body=body, content_type=content_type or self.content_type,
                                   content_encoding=content_encoding or self.content_encoding)


@dataclass
class TaskSender:
    """Publishes Celery task messages straight to the queue with kombu, over mutual TLS as the
    deployment's client (its broker account) — the way an attacker holding a legitimate
    broker login would. Messages are built and signed by hand (`forge`, `sign`), so a probe
    can change any part of one after signing."""

    live: Live
    probe_dir: Path
    app: Any  # the client's Celery app (its rendered configuration, `secure`d)
    conn: Any
    queue: str

    def forge(self, task: str, *args: Any, embed: dict[str, Any] | None = None, **headers: Any) -> Wire:
        """An unsigned protocol-2 message asking for *task*(*args*), JSON as Celery sends it."""
        task_id = str(uuid.uuid4())
        base = {
            "lang": "py", "task": task, "id": task_id, "shadow": None, "eta": None,
            "expires": None, "group": None, "group_index": None, "retries": 0, "timelimit": [None, None],
            "root_id": task_id, "parent_id": None, "argsrepr": repr(args), "kwargsrepr": "{}",
            "origin": "security-probe", "ignore_result": True,
        }
        canvas = {"callbacks": None, "errbacks": None, "chain": None, "chord": None, **(embed or {})}
        return Wire(task_id, {**base, **headers}, json.dumps([list(args), {}, canvas]).encode())

    def signer(self, host: str | None = None, kind: str = "signing") -> Signer:
        """*host*'s signer (default: the client) from its *kind* key and certificate."""
        host = host or self.live.client
        return Signer.load(host, self.live.layout.key(host, kind), self.live.layout.cert(host, kind))

    def sign(self, wire: Wire, signer: Signer | None = None, *, at: float | None = None) -> Wire:
        """*wire* with an envelope signed by *signer* (default: the client's signing key)."""
        signer = signer or self.signer()
        headers = {k: v for k, v in wire.headers.items() if k != HEADER}
        envelope = signer.sign_task(headers, wire.content_type, wire.content_encoding, wire.body, at=at)
        return dataclasses.replace(wire, headers={**headers, HEADER: envelope})

    def publish(self, wire: Wire) -> str:
        from celery_provision.acl import TASK_EXCHANGE

        # Where the rendered configuration sends tasks: the task exchange on RabbitMQ (the
        # client may not write to the default one), the queue's list on Redis.
        exchange = TASK_EXCHANGE if self.live.d.settings.broker == "rabbitmq" else ""
        producer = self.conn.Producer()
        producer.publish(wire.body, exchange=exchange, routing_key=self.queue, headers=dict(wire.headers),
                         content_type=wire.content_type, content_encoding=wire.content_encoding,
                         correlation_id=wire.task_id, delivery_mode=2, retry=False)
        return wire.task_id

    def send_signed(self, path: Path) -> str:
        """A correctly signed `touch` (the deployment client's signing key)."""
        from celery_provision import canary

        return self.publish(self.sign(self.forge(canary.TOUCH, str(path))))

    def queue_settled(self) -> bool:
        vhost = self.live.d.settings.vhost
        out = rabbitmqctl(self.live, "list_queues", "-p", vhost, "--no-table-headers",
                          "name", "messages_ready", "messages_unacknowledged")
        for line in out.splitlines():
            parts = line.split()
            if parts and parts[0] == self.queue:
                return parts[1:] == ["0", "0"]
        return True

    def settle(self) -> None:
        """Wait until the worker has dealt with everything sent so far: a signed sentinel
        sent last has run, and the queue holds no ready or unacknowledged message (tasks are
        acknowledged late, after running or failing)."""
        sentinel = self.probe_dir / f"sentinel-{uuid.uuid4().hex}"
        self.send_signed(sentinel)
        wait_for(sentinel.exists, "the signed sentinel task to run")
        wait_for(self.queue_settled, f"queue {self.queue!r} to drain")

    def executions(self, key: str) -> int:
        """How often the canary's `mark(probe_dir, key)` ran (one file per execution)."""
        return len(list(self.probe_dir.glob(f"{key}.*")))

    def log_lines(self, task_id: str) -> str:
        try:
            lines = worker_log(self.live).read_text(errors="replace").splitlines()
        except OSError as exc:
            return f"(no worker log: {exc})"
        return "\n".join(line for line in lines if task_id in line)[-2000:] or "(task id not in the worker log)"


@pytest.fixture(scope="session")
def sender(live: Live, probe_dir: Path) -> Iterator[TaskSender]:
    workdir = live.tmp / "client-app"
    workdir.mkdir(exist_ok=True)
    app = live.handle.client_app(workdir)
    conn = app.connection_for_write()
    conn.ensure_connection(max_retries=3)
    try:
        yield TaskSender(live, probe_dir, app, conn, live.d.host(live.client).queues[0])
    finally:
        conn.release()
        app.close()


# --------------------------------------------------------------------------- re-running the deployment


@dataclass
class Rerun:
    """`ansible-playbook -v playbooks/site.yml` run once more, after revoking the client host as
    a whole (its certificate, key and passwords saved first, so probes can present them)."""

    output: str
    returncode: int
    revoked_cert: Path
    revoked_key: Path
    passwords: dict[str, str]  # service -> the revoked host's old password


@pytest.fixture(scope="session")
def rerun(live: Live) -> Rerun:
    """`certs revoke CLIENT` through `celery_provision.pki`, then the whole site playbook again:
    the controller play publishes the CRL and reissues nothing to the revoked host, the roles
    remove its RabbitMQ and Redis users. The deployment keeps working for everyone else.
    Destructive for the client: the tests that use it run last (see the ordering hook)."""
    from celery_provision import pki

    saved = live.tmp / "revoked"
    saved.mkdir(exist_ok=True)
    cert, key = live.tls_pair(live.client)
    revoked_cert, revoked_key = saved / "client.pem", saved / "client.key"
    shutil.copyfile(cert, revoked_cert)
    shutil.copyfile(key, revoked_key)
    os.chmod(revoked_key, 0o600)
    passwords = {c.service: live.password(c.service, c.user) for c in live.d.secrets(live.d.host(live.client))}
    report = pki.revoke(live.d, live.client, reason="security suite: revoked-host probes")
    assert report.count("revoked") >= 1, report.summary()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
           "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run(["ansible-playbook", "-v", "-i", str(live.handle.inventory), "playbooks/site.yml"],
                          cwd=REPO, capture_output=True, text=True, timeout=1800, env=env, check=False)
    output = proc.stdout + proc.stderr
    (live.tmp / "site-rerun.log").write_text(output)
    return Rerun(output, proc.returncode, revoked_cert, revoked_key, passwords)


@pytest.fixture(scope="session")
def secrets(live: Live) -> dict[str, str]:
    """Every secret the controller holds for this deployment: the passwords and the private key
    bodies, by a printable name."""
    out: dict[str, str] = {}
    for path in sorted(live.d.credentials_dir.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            value = path.read_text().strip()
            if value:
                out[f"password {path.relative_to(live.d.credentials_dir)}"] = value
    for path in sorted(live.d.pki_dir.rglob("*.key")):
        out[f"key {path.relative_to(live.d.pki_dir)}"] = secprobe.key_body(path.read_text())
    assert out, "no secrets found on the controller: wrong state directory?"
    return out
