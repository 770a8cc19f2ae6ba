"""Checks of a live deployment from the controller: what must connect does, what must not
is refused, and a signed canary task makes the round trip through the running workers."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import socket
import ssl
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from . import render
from .errors import ProvisionError
from .layout import AppFiles
from .model import Deployment, Endpoint, Host

__all__ = ["Check", "run", "format_table", "to_json", "tls_client_context", "load_module"]

_TIMEOUT = 5.0


@dataclass
class Check:
    """One verified property of one endpoint."""

    check: str
    target: str
    ok: bool
    detail: str


def tls_client_context(ca: Path | str, cert: Path | str | None = None, key: Path | str | None = None,
                       *, check_hostname: bool = True) -> ssl.SSLContext:
    """A verifying TLS client context, optionally presenting a client certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(str(ca))
    ctx.check_hostname = check_hostname
    if cert:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx


def _handshake(address: str, port: int, ctx: ssl.SSLContext, server_name: str) -> ssl.SSLSocket:
    sock = socket.create_connection((address, port), timeout=_TIMEOUT)
    try:
        return ctx.wrap_socket(sock, server_hostname=server_name)
    except BaseException:
        sock.close()
        raise


def _refused_after_handshake(tls: ssl.SSLSocket, probe: bytes) -> tuple[bool, str]:
    """TLS 1.3 servers reject a missing client certificate after the client's handshake ends:
    the refusal shows up on the first read."""
    try:
        tls.sendall(probe)
        data = tls.recv(64)
    except (ssl.SSLError, OSError) as exc:
        return True, f"refused: {getattr(exc, 'reason', None) or type(exc).__name__}"
    finally:
        tls.close()
    return (not data), ("closed by server" if not data else f"server answered {data[:16]!r}")


def _probe(address: str, port: int, ctx: ssl.SSLContext, server_name: str, probe: bytes) -> tuple[bool, str]:
    """True if the server refuses this client (during or right after the handshake)."""
    try:
        tls = _handshake(address, port, ctx, server_name)
    except (ssl.SSLError, OSError) as exc:
        return True, f"refused: {getattr(exc, 'reason', None) or exc}"
    return _refused_after_handshake(tls, probe)


def _plaintext_refused(address: str, port: int, probe: bytes) -> tuple[bool, str]:
    """True if nothing speaks the broker protocol in plaintext on *port*."""
    try:
        sock = socket.create_connection((address, port), timeout=_TIMEOUT)
    except OSError as exc:
        return True, f"no plaintext listener ({exc.strerror or exc})"
    try:
        sock.sendall(probe)
        data = sock.recv(64)
    except OSError as exc:
        return True, f"connection dropped ({exc.strerror or exc})"
    finally:
        sock.close()
    speaks = data.startswith(b"AMQP") or data.startswith(b"\x01") or data.startswith((b"+", b"-", b"$"))
    return (not speaks), ("no protocol answer in plaintext" if not speaks else f"answered {data[:16]!r}")


_AMQP_HEADER = b"AMQP\x00\x00\x09\x01"
_REDIS_PING = b"PING\r\n"


def _endpoint_checks(d: Deployment, endpoint: Endpoint, client: Host) -> list[Check]:
    broker, kind, port = endpoint.host, endpoint.service, endpoint.port
    files = d.app_files(client, controller=True)
    target = f"{kind} {broker.name} {broker.address}:{port}"
    probe = _AMQP_HEADER if kind == "rabbitmq" else _REDIS_PING
    out: list[Check] = []
    good = tls_client_context(files.ca, files.client_cert, files.client_key)
    try:
        tls = _handshake(broker.address, port, good, broker.address)
        cert = tls.getpeercert() or {}
        expires = cert.get("notAfter", "?")
        days = int((ssl.cert_time_to_seconds(expires) - time.time()) // 86400) if expires != "?" else -1
        out.append(Check("tls handshake (worker cert)", target, True,
                         f"{tls.version()} {tls.cipher()[0]}; server cert expires in {days} days"))
        out.append(Check("chain verifies against the CA", target, True, "verified with hostname check"))
        tls.close()
    except (ssl.SSLError, OSError) as exc:
        out.append(Check("tls handshake (worker cert)", target, False, str(exc)))
    refused, why = _probe(broker.address, port, tls_client_context(files.ca), broker.address, probe)
    out.append(Check("client without certificate refused", target, refused, why))
    refused, why = _plaintext_refused(broker.address, port, probe)
    out.append(Check("plaintext on the TLS port refused", target, refused, why))
    plain_port = endpoint.plaintext_port
    refused, why = _plaintext_refused(broker.address, plain_port, probe)
    out.append(Check(f"plaintext port {plain_port} refused", f"{kind} {broker.name} {broker.address}:{plain_port}",
                     refused, why))
    if kind == "rabbitmq":
        tls = {"ca_certs": str(files.ca), "certfile": str(files.client_cert),
               "keyfile": str(files.client_key), "cert_reqs": ssl.CERT_REQUIRED,
               "server_hostname": broker.address}
        out.append(_guest_refused(broker, port, tls, target))
    else:
        out.append(_redis_default_refused(broker, port, files, target))
    return out


def _guest_refused(broker: Host, port: int, tls: dict[str, Any], target: str) -> Check:
    """Log in as guest over mutual TLS (py-amqp honours TLS options only as a dict): the
    handshake succeeds, so only the login itself can be refused."""
    import amqp

    conn = amqp.Connection(f"{broker.address}:{port}", userid="guest", password="guest",
                           ssl=tls, connect_timeout=_TIMEOUT)
    try:
        conn.connect()
    except amqp.exceptions.AccessRefused as exc:
        return Check("user guest refused", target, True, f"refused: {exc.reply_text or type(exc).__name__}")
    except Exception as exc:  # anything else means the probe never reached the login
        return Check("user guest refused", target, False, f"could not test the login: {type(exc).__name__}: {exc}")
    finally:
        with contextlib.suppress(Exception):
            conn.collect()
    return Check("user guest refused", target, False, "guest logged in")


def _redis_default_refused(broker: Host, port: int, files: AppFiles, target: str) -> Check:
    import redis

    r = redis.Redis(host=broker.address, port=port, ssl=True, ssl_ca_certs=str(files.ca),
                    ssl_certfile=str(files.client_cert), ssl_keyfile=str(files.client_key),
                    socket_timeout=_TIMEOUT)
    try:
        r.ping()
    except redis.exceptions.AuthenticationError as exc:
        return Check("user default refused", target, True, f"refused: {exc}")
    except redis.exceptions.ResponseError as exc:
        return Check("user default refused", target, "NOAUTH" in str(exc) or "NOPERM" in str(exc), str(exc))
    except redis.exceptions.ConnectionError as exc:
        return Check("user default refused", target, False, f"cannot connect: {exc}")
    finally:
        r.close()
    return Check("user default refused", target, False, "PING answered without authentication")


def load_module(path: Path) -> ModuleType:
    """Import a rendered configuration module from its file (under a unique name)."""
    spec = importlib.util.spec_from_file_location(f"{path.stem}_{uuid.uuid4().hex[:8]}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def client_app(d: Deployment, host: Host, workdir: Path) -> Any:
    """A Celery app configured exactly as *host* would be, with the controller's files."""
    from celery import Celery

    path = render.write_all(d, workdir, hosts=[host.name], controller_paths=True)[0][0]
    app = Celery(f"verify-{host.name}", set_as_current=False)
    app.config_from_object(load_module(path))
    app.setup_security()
    return app


def _canary(d: Deployment, client: Host, timeout: float) -> Check:
    from . import canary

    target = f"{d.settings.broker} -> workers -> {d.settings.result_backend}"
    app = None
    with tempfile.TemporaryDirectory(prefix="celery-provision-verify-") as tmp:
        try:
            app = client_app(d, client, Path(tmp))
            nonce = uuid.uuid4().hex
            started = time.monotonic()
            answer = app.send_task(canary.PING, args=[nonce]).get(timeout=timeout)
            elapsed = time.monotonic() - started
        except Exception as exc:  # any failure of the round trip is the finding
            return Check("signed canary task answered", target, False, f"{type(exc).__name__}: {exc}")
        finally:
            if app is not None:  # a failure to configure the app is the finding, not a NameError
                with contextlib.suppress(Exception):
                    app.close()
    ok = isinstance(answer, dict) and answer.get("nonce") == nonce
    return Check("signed canary task answered", target, ok,
                 f"answered by {answer.get('host')} in {elapsed:.2f}s" if ok else f"bad answer {answer!r}")


# --------------------------------------------------------------------------- role checks

# What a broker says when it refuses an operation on permission grounds (RabbitMQ's
# ACCESS_REFUSED reply, Redis's NOPERM error), as Celery and kombu pass it on.
_REFUSALS = ("ACCESS_REFUSED", "access_refused", "AccessRefused", "NOPERM", "NoPermission", "no permissions")
_NO_SUCH_TASK = "celery_provision.verify.no_such_task"  # a broadcast that got through would change nothing


def _refused(check: str, target: str, attempt: Callable[..., object], *args: Any) -> Check:
    """Run *attempt*; the check passes only if the broker refused it as a permission matter."""
    try:
        attempt(*args)
    except Exception as exc:  # the refusal is an exception; which one depends on the transport
        text = f"{type(exc).__name__}: {exc}"
        if any(mark in text for mark in _REFUSALS):
            return Check(check, target, True, f"refused: {text[:160]}")
        return Check(check, target, False, f"could not test: {text[:160]}")
    return Check(check, target, False, "allowed")


def _consume(app: Any, queue: str) -> None:
    """Start a consumer on *queue* (declaring nothing) and wait a moment for a message."""
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1)
        # The queue as the app itself knows it (its task_queues), minus any declaration.
        known = app.amqp.queues.get(queue) or app.amqp.queues.new_missing(queue)
        bare = type(known)(known.name, known.exchange, known.routing_key, no_declare=True)
        consumer = app.amqp.Consumer(conn.default_channel, queues=[bare],
                                     accept=["auth"], callbacks=[lambda body, message: message.requeue()])
        with consumer, contextlib.suppress(socket.timeout, TimeoutError):
            conn.drain_events(timeout=1)


def _events(app: Any) -> None:
    """Read the event stream as `celery events` and Flower do."""
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1)
        receiver = app.events.Receiver(conn, handlers={"*": lambda event: None})
        with contextlib.suppress(socket.timeout, TimeoutError):
            receiver.capture(limit=1, timeout=1, wakeup=False)


def _broadcast(app: Any) -> None:
    """A remote-control broadcast that would change nothing if it got through."""
    app.control.rate_limit(_NO_SUCH_TASK, "1/h", reply=False)


def _ping(app: Any) -> object:
    return app.control.ping(timeout=2)


def _role_checks(d: Deployment, workdir: Path) -> list[Check]:
    """Each role may do its job and nothing more: a producer may not consume tasks, read
    events or control workers; an operator may control workers but not consume tasks."""
    target = f"{d.settings.broker} {', '.join(h.name for h in d.broker_hosts)}"
    out: list[Check] = []
    clients, operators = d.group("celery_clients"), d.group("celery_operators")
    if clients:
        client = clients[0]
        who, queue = f"producer {client.name}", client.queues[0]
        with _app(d, client, workdir) as app:
            out.append(_refused(f"{who}: consuming task queue {queue!r} refused", target, _consume, app, queue))
            out.append(_refused(f"{who}: reading events refused", target, _events, app))
            out.append(_refused(f"{who}: broadcast control refused", target, _broadcast, app))
            out.append(_refused(f"{who}: ping of the workers refused", target, _ping, app))
    if operators:
        operator = operators[0]
        who, queue = f"operator {operator.name}", d.task_queues[0]
        with _app(d, operator, workdir) as app:
            out.append(_ping_answered(d, app, who, target))
            out.append(_refused(f"{who}: consuming task queue {queue!r} refused", target, _consume, app, queue))
    return out


@contextlib.contextmanager
def _app(d: Deployment, host: Host, workdir: Path) -> Iterator[Any]:
    app = client_app(d, host, workdir / host.name)
    try:
        yield app
    finally:
        with contextlib.suppress(Exception):
            app.close()


def _ping_answered(d: Deployment, app: Any, who: str, target: str) -> Check:
    """Every worker answers the operator's ping (remote control works where it is meant to)."""
    check = f"{who}: ping answered by every worker"
    workers = {w.name for w in d.group("celery_workers")}
    try:
        replies = app.control.ping(timeout=3)
    except Exception as exc:
        return Check(check, target, False, f"{type(exc).__name__}: {exc}"[:200])
    answered = {name.split("@", 1)[0] for reply in replies for name in reply}
    missing = sorted(workers - answered)
    return Check(check, target, not missing,
                 f"answered by {', '.join(sorted(answered))}" if not missing else f"no answer from {', '.join(missing)}")


def run(d: Deployment, *, canary: bool = True, timeout: float = 30.0,
        progress: Callable[[Check], None] | None = None) -> list[Check]:
    """Every check against the live deployment, in a stable order."""
    if not d.apps:
        raise ProvisionError("no worker or client to verify with", where=str(d.inventory))
    client = (d.group("celery_clients") or d.group("celery_workers"))[0]
    checks: list[Check] = []
    for kind in ("rabbitmq", "redis"):
        for endpoint in d.endpoints(kind):
            for c in _endpoint_checks(d, endpoint, client):
                checks.append(c)
                if progress:
                    progress(c)
    if canary:
        c = _canary(d, client, timeout)
        checks.append(c)
        if progress:
            progress(c)
        with tempfile.TemporaryDirectory(prefix="celery-provision-verify-") as tmp:
            for c in _role_checks(d, Path(tmp)):
                checks.append(c)
                if progress:
                    progress(c)
    return checks


def format_table(checks: list[Check]) -> str:
    """A readable table and a summary line."""
    rows = [("RESULT", "CHECK", "TARGET", "DETAIL")] + [
        ("PASS" if c.ok else "FAIL", c.check, c.target, c.detail) for c in checks
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join([r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2].ljust(widths[2]), r[3]]) for r in rows]
    failed = sum(not c.ok for c in checks)
    lines.append(f"verify: {len(checks) - failed} passed, {failed} failed")
    return "\n".join(lines)


def to_json(checks: list[Check]) -> str:
    return json.dumps([asdict(c) for c in checks], indent=2)


