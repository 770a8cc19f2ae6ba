"""Checks of a live deployment from the controller: what must connect does, what must not
is refused (a revoked host's old certificate, key and passwords too), a signed canary task
makes the round trip through the running workers, and the workers run neither a signed
canary message re-labelled as another task nor a replay of a completed one."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import socket
import ssl
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from . import credentials, pki, render
from .errors import ProvisionError
from .layout import AppFiles
from .model import Deployment, Endpoint, Host
from .runtime import secure

__all__ = ["Check", "Door", "run", "format_table", "to_json", "tls_client_context", "load_module", "doors",
           "revoked_listing", "refusal"]

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
        expires = (tls.getpeercert() or {}).get("notAfter")
        days = int((ssl.cert_time_to_seconds(expires) - time.time()) // 86400) if isinstance(expires, str) else -1
        cipher = tls.cipher()
        out.append(Check("tls handshake (worker cert)", target, True,
                         f"{tls.version()} {cipher[0] if cipher else '?'}; server cert expires in {days} days"))
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
        amqp_tls: dict[str, Any] = {"ca_certs": str(files.ca), "certfile": str(files.client_cert),
                                    "keyfile": str(files.client_key), "cert_reqs": ssl.CERT_REQUIRED,
                                    "server_hostname": broker.address}
        out.append(_guest_refused(broker, port, amqp_tls, target))
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


def sentinel_checks(d: Deployment, client: Host) -> list[Check]:
    """A replicated Redis: every Sentinel speaks mutual TLS only, answers *client*'s Sentinel
    login (the one Celery uses), and all of them name the same primary."""
    import redis

    r = d.replication
    if r is None:
        return []
    files = d.app_files(client, controller=True)
    password = next((credentials.password(d, c.service, c.user) for c in d.secrets(client) if c.service == "redis"),
                    None)
    out: list[Check] = []
    primaries: dict[str, str] = {}
    for host in r.hosts:
        target = f"sentinel {host.name} {host.address}:{r.sentinel_port}"
        try:
            _handshake(host.address, r.sentinel_port, tls_client_context(files.ca, files.client_cert, files.client_key),
                       host.address).close()
            out.append(Check("tls handshake (worker cert)", target, True, "verified with hostname check"))
        except (ssl.SSLError, OSError) as exc:
            out.append(Check("tls handshake (worker cert)", target, False, str(exc)))
        refused, why = _probe(host.address, r.sentinel_port, tls_client_context(files.ca), host.address, _REDIS_PING)
        out.append(Check("client without certificate refused", target, refused, why))
        refused, why = _plaintext_refused(host.address, r.sentinel_port, _REDIS_PING)
        out.append(Check("plaintext on the TLS port refused", target, refused, why))
        conn = redis.Redis(host=host.address, port=r.sentinel_port, ssl=True, ssl_ca_certs=str(files.ca),
                           ssl_certfile=str(files.client_cert), ssl_keyfile=str(files.client_key),
                           ssl_cert_reqs="required", username=d.user(client, "redis"), password=password,
                           socket_timeout=_TIMEOUT)
        try:
            masters: Any = conn.sentinel_masters()  # SENTINEL MASTERS: all Celery's user may ask
            m = masters[r.master_name]
            primaries[host.name] = f"{m['ip']}:{m['port']}"
            state = "down" if m.get("is_odown") or m.get("is_sdown") else "up"
            out.append(Check(f"names the primary of {r.master_name}", target, state == "up",
                             f"{primaries[host.name]} ({state}, {m.get('num-slaves', '?')} replicas)"))
        except (redis.exceptions.RedisError, OSError, KeyError) as exc:
            out.append(Check(f"names the primary of {r.master_name}", target, False, f"{type(exc).__name__}: {exc}"))
        finally:
            conn.close()
    agreed = len(set(primaries.values())) == 1 and len(primaries) == len(r.hosts)
    out.append(Check("Sentinels agree on the primary", f"sentinel {r.master_name}", agreed,
                     ", ".join(f"{h}: {p}" for h, p in primaries.items()) or "no Sentinel answered"))
    return out


# --------------------------------------------------------------------------- revoked hosts


@dataclass(frozen=True)
class Door:
    """One way in a revoked host's old files could still open: one broker endpoint, a client
    certificate (the host's old one, or a valid one to test the password alone), its user name
    and its old password (None: a certificate login, or no password on that service)."""

    host: str
    endpoint: Endpoint
    cert: Path
    key: Path
    user: str
    password: str | None
    own_cert: bool

    @property
    def check(self) -> str:
        if self.own_cert:
            return f"revoked {self.host}: old certificate, key and password refused"
        return f"revoked {self.host}: old password refused (valid certificate)"

    @property
    def target(self) -> str:
        e = self.endpoint
        return f"{e.service} {e.host.name} {e.host.address}:{e.port}"


def _old_password(d: Deployment, host: Host, service: str) -> str | None:
    """The password file *host* had on *service* (left in place while it is revoked), if any."""
    cred = next((c for c in d.secrets(host) if c.service == service), None)
    path = d.layout.password(service, cred.user) if cred else None
    if path is None or not path.is_file():
        return None
    return path.read_text().strip() or None


def doors(d: Deployment, revoked: Mapping[str, object], client: Host) -> list[Door]:
    """Every door to test for the revoked hosts: on every broker endpoint (RabbitMQ and Redis,
    used by the host or not), its old certificate + key + password; and, where it had a
    password there, that password presented with *client*'s valid certificate (so the user's
    removal is shown, not only the CRL)."""
    good = d.app_files(client, controller=True)
    out = []
    for name in revoked:
        host = d.hosts.get(name)
        if host is None or not host.is_app:
            continue
        old = d.app_files(host, controller=True)
        for service in ("rabbitmq", "redis"):
            for endpoint in d.endpoints(service):
                user, password = d.user(host, service), _old_password(d, host, service)
                out.append(Door(name, endpoint, old.client_cert, old.client_key, user, password, True))
                if password is not None:
                    out.append(Door(name, endpoint, good.client_cert, good.client_key, user, password, False))
    return out


def revoked_listing(d: Deployment, revoked: Mapping[str, Mapping[str, str]]) -> Check:
    """The row naming the revoked hosts (and since when), or `none`."""
    parts = []
    for name, why in revoked.items():
        note = "" if name in d.hosts else ", not in the inventory: nothing to test"
        parts.append(f"{name} (since {str(why.get('date', '?'))[:10]}{note})")
    return Check("revoked hosts", str(d.layout.state), True, ", ".join(parts) or "none")


def refusal(exc: BaseException) -> bool | None:
    """What an error while presenting a revoked host's files means: True the broker refused
    them (a TLS alert, the connection closed on us), None the test never reached the broker's
    decision (nothing listening, a timeout, the broker's own certificate not verified)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return None
    if isinstance(exc, (ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        return True
    return None


def _why(exc: BaseException) -> str:
    return str(getattr(exc, "reason", None) or getattr(exc, "verify_message", None) or exc or type(exc).__name__)


def _tls_stage(door: Door, ca: Path, probe: bytes) -> tuple[bool | None, str]:
    """Whether the broker refuses the door's certificate: True refused (in the handshake or
    right after, as TLS 1.3 servers do), False accepted (a protocol answer), None untested."""
    broker = door.endpoint.host
    ctx = tls_client_context(ca, door.cert, door.key)
    try:
        tls = _handshake(broker.address, door.endpoint.port, ctx, broker.address)
    except OSError as exc:
        verdict = refusal(exc)
        return verdict, (f"refused in the TLS handshake: {_why(exc)}" if verdict else f"could not test: {_why(exc)}")
    try:
        tls.sendall(probe)
        data = tls.recv(64)
    except OSError as exc:
        verdict = refusal(exc)
        return verdict, (f"refused after the TLS handshake: {_why(exc)}" if verdict else f"could not test: {_why(exc)}")
    finally:
        tls.close()
    return (True, "closed by the broker after the TLS handshake") if not data else (False, "certificate accepted")


def _amqp_login(door: Door, ca: Path, vhost: str) -> tuple[bool | None, str]:
    """Log in to RabbitMQ as the door's user: with its password, or EXTERNAL (the certificate)."""
    import amqp

    broker = door.endpoint.host
    tls = {"ca_certs": str(ca), "certfile": str(door.cert), "keyfile": str(door.key),
           "cert_reqs": ssl.CERT_REQUIRED, "server_hostname": broker.address}
    login = {"login_method": "EXTERNAL"} if door.password is None else {"password": door.password}
    conn = amqp.Connection(f"{broker.address}:{door.endpoint.port}", userid=door.user, virtual_host=vhost,
                           ssl=tls, connect_timeout=_TIMEOUT, **login)
    try:
        conn.connect()
    except amqp.exceptions.AccessRefused as exc:
        return True, f"login refused: {exc.reply_text or type(exc).__name__}"
    except Exception as exc:  # anything else: refused only if the broker closed on us
        verdict = refusal(exc)
        return verdict, (f"refused: {_why(exc)}" if verdict else f"could not test the login: {type(exc).__name__}: "
                         f"{_why(exc)}")
    finally:
        with contextlib.suppress(Exception):
            conn.collect()
    return False, f"logged in as {door.user}"


def _redis_login(door: Door, ca: Path) -> tuple[bool | None, str]:
    """AUTH as the door's user with its old password (none: no AUTH at all), then PING."""
    import redis

    broker = door.endpoint.host
    r = redis.Redis(host=broker.address, port=door.endpoint.port, ssl=True, ssl_ca_certs=str(ca),
                    ssl_certfile=str(door.cert), ssl_keyfile=str(door.key), socket_timeout=_TIMEOUT,
                    username=door.user if door.password is not None else None, password=door.password)
    try:
        r.ping()
    except redis.exceptions.AuthenticationError as exc:
        return True, f"refused: {exc}"
    except redis.exceptions.ResponseError as exc:
        if "NOAUTH" in str(exc):
            return True, f"refused: {exc}"
        return False, f"AUTH accepted, the user still exists: {exc}"
    except redis.exceptions.ConnectionError as exc:
        return None, f"could not test the login: {exc}"
    finally:
        r.close()
    return False, f"AUTH as {door.user} accepted, PING answered"


def _door_check(d: Deployment, door: Door) -> Check:
    """Try one door: its certificate at the TLS layer first (the CRL), then its login."""
    ca, service = d.layout.ca_pem, door.endpoint.service
    if not door.cert.is_file() or not door.key.is_file():
        return Check(door.check, door.target, False, f"could not test: {door.cert} or its key is gone")
    refused, why = _tls_stage(door, ca, _AMQP_HEADER if service == "rabbitmq" else _REDIS_PING)
    if refused is False:
        refused, why = _amqp_login(door, ca, d.settings.vhost) if service == "rabbitmq" else _redis_login(door, ca)
    return Check(door.check, door.target, refused is True, why)


def _admitted_client(d: Deployment, revoked: Mapping[str, object]) -> Host:
    """The host whose files verify connects with: a client if any, else a worker, never a revoked one."""
    for host in [*d.group("celery_clients"), *d.group("celery_workers")]:
        if host.name not in revoked:
            return host
    raise ProvisionError("no worker or client to verify with (every one is revoked)", where=str(d.inventory))


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
    # Read now, so `secure` installs at once: kombu's serializers are per process, and this
    # process signs control messages as the host whose app it made last.
    app.config_from_object(load_module(path), force=True)
    secure(app)
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


class _Recorder:
    """A producer that records what Celery's sender publishes (the signed message exactly as
    it goes on the wire) and, with *forward*, publishes it."""

    def __init__(self, producer: Any, *, forward: bool) -> None:
        self._producer, self._forward = producer, forward
        self.sent: list[tuple[Any, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)

    def publish(self, body: Any, **kwargs: Any) -> Any:
        self.sent.append((body, kwargs))
        return self._producer.publish(body, **kwargs) if self._forward else None


def _signed(app: Any, name: str, args: list[Any], *, forward: bool) -> tuple[Any, tuple[Any, dict[str, Any]]]:
    """Send (or, without *forward*, only sign) *name*(*args*) the application's way: its
    result and the published (body, publish options)."""
    with app.producer_or_acquire() as producer:
        recorder = _Recorder(producer, forward=forward)
        result = app.send_task(name, args=args, producer=recorder)
    return result, recorder.sent[-1]


def _republish(app: Any, message: tuple[Any, dict[str, Any]], **headers: Any) -> None:
    """Publish a recorded message again, its headers changed by *headers* (its envelope kept)."""
    body, options = message
    with app.producer_or_acquire() as producer:
        producer.publish(body, **{**options, "headers": {**options["headers"], **headers}})


def _settled(app: Any, timeout: float) -> None:
    """Wait for a genuine ping sent after the probe: the workers have taken the probe by then."""
    from . import canary

    app.send_task(canary.PING, args=[uuid.uuid4().hex]).get(timeout=timeout)
    time.sleep(0.5)  # a probe that got in would be a quick task, started before the ping


def _ran(meta: Mapping[str, Any]) -> bool:
    """Whether a task's stored result says it ran (a SecurityError is the workers' refusal)."""
    if meta.get("status") == "PENDING":
        return False
    result = meta.get("result")
    return not (meta.get("status") == "FAILURE" and isinstance(result, Mapping)
                and result.get("exc_type") == "SecurityError")


def _message_probe(d: Deployment, client: Host, check: str, probe: Callable[[Any], tuple[bool, str]]) -> Check:
    """Run *probe* with *client*'s application: (passed, detail). A probe that cannot be
    made is a failure, never a pass."""
    target = f"{d.settings.broker} -> workers"
    with tempfile.TemporaryDirectory(prefix="celery-provision-verify-") as tmp, \
            _app(d, client, Path(tmp)) as app:
        try:
            ok, detail = probe(app)
        except Exception as exc:  # the probe could not be made: not a pass
            return Check(check, target, False, f"could not test: {type(exc).__name__}: {exc}"[:200])
    return Check(check, target, ok, detail)


def _relabelled_canary(d: Deployment, client: Host, timeout: float) -> Check:
    """A ping signed by *client*, re-published with the same envelope as `touch` of a fresh
    path: refused, it leaves no result (and the file is never created)."""
    from . import canary

    def probe(app: Any) -> tuple[bool, str]:
        path = f"/tmp/celery-provision-verify-{uuid.uuid4().hex}"
        result, message = _signed(app, canary.PING, [path], forward=False)
        _republish(app, message, task=canary.TOUCH)
        _settled(app, timeout)
        meta = app.backend.get_task_meta(result.id, cache=False)
        if _ran(meta):
            return False, f"touch ran ({meta.get('status')}): {path} on a worker"
        return True, "refused: no result stored"

    return _message_probe(d, client, "re-labelled canary (signed ping sent as touch) not run", probe)


def _replayed_canary(d: Deployment, client: Host, timeout: float) -> Check:
    """A completed signed ping published again, byte for byte: it must not run a second time.
    Its first result is forgotten before the replay (a worker never overwrites a success), so
    a result stored again means it ran again."""
    from . import canary

    def probe(app: Any) -> tuple[bool, str]:
        result, message = _signed(app, canary.PING, [uuid.uuid4().hex], forward=True)
        result.get(timeout=timeout)
        done = app.backend.get_task_meta(result.id, cache=False).get("date_done")
        # The workers record a task as done just after its result: once a later ping is
        # answered they have, and only then is the result forgotten.
        _settled(app, timeout)
        result.forget()
        _republish(app, message)
        _settled(app, timeout)
        again = app.backend.get_task_meta(result.id, cache=False)
        if _ran(again):
            return False, f"ran again: done at {done}, then at {again.get('date_done')}"
        return True, f"refused: ran once (done at {done})"

    return _message_probe(d, client, "replayed canary (completed ping sent again) not run", probe)


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
                                     accept=["json"], callbacks=[lambda body, message: message.requeue()])
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


def _role_checks(d: Deployment, workdir: Path, revoked: Mapping[str, object] | None = None) -> list[Check]:
    """Each role may do its job and nothing more: a producer may not consume tasks, read
    events or control workers; an operator may control workers but not consume tasks.
    Revoked hosts are left out: their files are tried as theirs (`doors`), not as a role's."""
    target = f"{d.settings.broker} {', '.join(h.name for h in d.broker_hosts)}"
    out: list[Check] = []
    barred = revoked or {}
    clients = [h for h in d.group("celery_clients") if h.name not in barred]
    operators = [h for h in d.group("celery_operators") if h.name not in barred]
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
    revoked = pki.revoked_hosts(d)
    client = _admitted_client(d, revoked)
    checks: list[Check] = []

    def add(c: Check) -> None:
        checks.append(c)
        if progress:
            progress(c)

    for kind in ("rabbitmq", "redis"):
        for endpoint in d.endpoints(kind):
            for c in _endpoint_checks(d, endpoint, client):
                add(c)
    for c in sentinel_checks(d, client):
        add(c)
    add(revoked_listing(d, revoked))
    for door in doors(d, revoked, client):
        add(_door_check(d, door))
    if canary:
        add(_canary(d, client, timeout))
        add(_relabelled_canary(d, client, timeout))
        add(_replayed_canary(d, client, timeout))
        with tempfile.TemporaryDirectory(prefix="celery-provision-verify-") as tmp:
            for c in _role_checks(d, Path(tmp), revoked):
                add(c)
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


