"""Probes of the site scenario's verify step, run inside the containers.

Each command prints ONE verdict word first (what happened), then details:

    site_probe.py connect HOST PORT            connected | refused | timeout | error
    site_probe.py tls-cert HOST PORT KIND      accepted | refused   (TLS, the worker's certificate)
    site_probe.py tls-nocert HOST PORT KIND    refused | accepted   (TLS, no client certificate)
    site_probe.py guest HOST PORT              refused | accepted   (RabbitMQ guest/guest)
    site_probe.py redis-default HOST PORT      refused | accepted   (Redis default user)
    site_probe.py canary                       pong | error         (signed task round trip, the envelope)
    site_probe.py consume QUEUE                refused | allowed | error  (start a consumer on a task queue)
    site_probe.py events                       refused | allowed | error  (read the event stream)
    site_probe.py broadcast                    refused | allowed | error  (a remote-control broadcast)
    site_probe.py ping                         answered NAMES | refused | error  (control ping)

`connect` needs only the standard library (the outsider has no venv); the other
commands run with the host's celery_worker venv and read its deployed files, in the
directory SITE_CONFIG_DIR (set by verify.yml from the model's celery.config_dir); the
Celery commands use the host's own rendered configuration (CELERY_CONFIG_MODULE).
"""

import os
import socket
import ssl
import sys
import uuid

TIMEOUT = 5.0
PROBES = {"rabbitmq": b"AMQP\x00\x00\x09\x01", "redis": b"PING\r\n"}


def config_dir():
    """The worker's configuration directory; no default here (`connect` does not need it)."""
    path = os.environ.get("SITE_CONFIG_DIR")
    if not path:
        sys.exit("site_probe.py: SITE_CONFIG_DIR is not set (verify.yml sets it from the model)")
    return path


def tls_context(client_cert=True):
    """Verifying context with the deployment's CA, with or without the worker's certificate."""
    conf = config_dir()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(f"{conf}/ca.pem")
    if client_cert:
        ctx.load_cert_chain(f"{conf}/client.pem", f"{conf}/client.key")
    return ctx


def connect(host, port):
    """Plain TCP connect: tells a dropped SYN (timeout) from a reset (refused)."""
    try:
        socket.create_connection((host, int(port)), timeout=TIMEOUT).close()
    except socket.timeout:
        return "timeout", "no answer to SYN (dropped)"
    except ConnectionRefusedError:
        return "refused", "RST (nothing listens, or rejected)"
    except OSError as exc:
        return "error", f"{type(exc).__name__}: {exc}"
    return "connected", "TCP handshake completed"


def tls_session(host, port, kind, client_cert):
    """Handshake (server name = the address, checked against the certificate's IP SAN),
    then speak the broker's protocol: TLS 1.3 servers refuse a client certificate only
    after the client's handshake has ended, so acceptance shows on the first read.
    A broker answer (AMQP connection.start frame, Redis -NOAUTH) means accepted."""
    try:
        sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
        tls = tls_context(client_cert).wrap_socket(sock, server_hostname=host)
    except (ssl.SSLError, OSError) as exc:
        return "refused", f"handshake: {exc}"
    try:
        version = tls.version()
        tls.sendall(PROBES[kind])
        data = tls.recv(64)
    except (ssl.SSLError, OSError) as exc:
        return "refused", f"after handshake: {exc}"
    finally:
        tls.close()
    if not data:
        return "refused", "closed by server"
    return "accepted", f"{version}, server answered {data[:16]!r}"


def tls_cert(host, port, kind):
    return tls_session(host, port, kind, client_cert=True)


def tls_nocert(host, port, kind):
    return tls_session(host, port, kind, client_cert=False)


def guest(host, port):
    """RabbitMQ's guest/guest over a TLS session that the broker accepts (the worker's
    client certificate): only an AMQP-level refusal of the login counts as refused."""
    import amqp

    conf = config_dir()
    opts = {"ca_certs": f"{conf}/ca.pem", "certfile": f"{conf}/client.pem",
            "keyfile": f"{conf}/client.key", "cert_reqs": ssl.CERT_REQUIRED,
            "server_hostname": host}
    conn = amqp.Connection(f"{host}:{port}", userid="guest", password="guest", virtual_host="/",
                           ssl=opts, connect_timeout=TIMEOUT)
    try:
        conn.connect()
    except amqp.exceptions.AMQPError as exc:  # ACCESS_REFUSED (403) from the broker
        return "refused", f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # TLS or network failure: not a verdict on guest
        return "error", f"{type(exc).__name__}: {exc}"
    finally:
        try:
            conn.collect()
        except Exception:
            pass
    return "accepted", "guest logged in"


def redis_default(host, port):
    """Redis's `default` user: neither implicitly (no AUTH) nor with AUTH default <any>."""
    import redis

    conf = config_dir()
    kw = dict(host=host, port=int(port), ssl=True, ssl_ca_certs=f"{conf}/ca.pem",
              ssl_certfile=f"{conf}/client.pem", ssl_keyfile=f"{conf}/client.key",
              socket_timeout=TIMEOUT, protocol=2)
    details = []
    attempts = (("no AUTH", {}), ("AUTH default", {"username": "default", "password": "x"}))
    for label, extra in attempts:
        r = redis.Redis(**kw, **extra)
        try:
            r.ping()
        except (redis.exceptions.AuthenticationError, redis.exceptions.ResponseError) as exc:
            details.append(f"{label}: {exc}")
            continue
        except redis.exceptions.ConnectionError as exc:  # e.g. protected mode: not a verdict
            return "error", f"{label}: {exc}"
        finally:
            r.close()
        return "accepted", f"{label}: PING answered"
    return "refused", "; ".join(details)


def canary():
    """A signed task to the running worker service, through the rendered configuration (the
    canary app calls celery_provision.runtime.secure(app): the envelope)."""
    app = _app()
    nonce = uuid.uuid4().hex
    try:
        answer = app.send_task("celery_provision.canary.ping", args=[nonce]).get(timeout=60)
    except Exception as exc:
        return "error", f"{type(exc).__name__}: {exc}"
    if isinstance(answer, dict) and answer.get("nonce") == nonce:
        return "pong", f"answered by {answer.get('host')} pid {answer.get('pid')}"
    return "error", f"bad answer {answer!r}"


# What RabbitMQ and Redis answer when permissions refuse an operation, as kombu passes it on.
REFUSALS = ("ACCESS_REFUSED", "access_refused", "AccessRefused", "NOPERM", "NoPermission")


def attempt(action):
    """refused (by the broker's permissions), allowed, or error (anything else)."""
    try:
        action()
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        return ("refused" if any(mark in text for mark in REFUSALS) else "error"), text[:300]
    return "allowed", "the broker let it through"


def _app():
    """The canary app (secured by the envelope when its configuration is read)."""
    from celery_provision_canary import app

    return app


def consume(queue):
    """Start a consumer on a task queue (declaring nothing) and wait a moment."""
    app = _app()

    def action():
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1)
            known = app.amqp.queues.get(queue) or app.amqp.queues.new_missing(queue)
            bare = type(known)(known.name, known.exchange, known.routing_key, no_declare=True)
            consumer = app.amqp.Consumer(conn.default_channel, queues=[bare], accept=app.conf.accept_content,
                                         callbacks=[lambda body, message: message.requeue()])
            with consumer:
                try:
                    conn.drain_events(timeout=1)
                except (socket.timeout, TimeoutError):
                    pass

    return attempt(action)


def events():
    """Read the event stream as `celery events` and Flower do."""
    app = _app()

    def action():
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1)
            receiver = app.events.Receiver(conn, handlers={"*": lambda event: None})
            try:
                receiver.capture(limit=1, timeout=1, wakeup=False)
            except (socket.timeout, TimeoutError):
                pass

    return attempt(action)


def broadcast():
    """A rate_limit broadcast for a task no worker has: it would change nothing."""
    app = _app()
    return attempt(lambda: app.control.rate_limit("site.probe.no_such_task", "1/h", reply=False))


def ping():
    app = _app()
    try:
        replies = app.control.ping(timeout=5)
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        return ("refused" if any(mark in text for mark in REFUSALS) else "error"), text[:300]
    names = sorted(name.split("@", 1)[0] for reply in replies for name in reply)
    return ("answered" if names else "error"), ",".join(names) or "no worker answered"


def main(argv):
    commands = {"connect": connect, "tls-cert": tls_cert, "tls-nocert": tls_nocert, "guest": guest,
                "redis-default": redis_default, "canary": canary, "consume": consume, "events": events,
                "broadcast": broadcast, "ping": ping}
    verdict, detail = commands[argv[0]](*argv[1:])
    print(verdict, detail)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
