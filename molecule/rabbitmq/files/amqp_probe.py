"""Probe the broker with real AMQP clients; print one verdict line, exit 0 when it is OK.

    amqp_probe.py login USER VHOST [--cert client|foreign|none] [--password-file F|--password P]
    amqp_probe.py declare QUEUE            as the Celery user, in the Celery vhost
    amqp_probe.py roundtrip                kombu publish + consume on the default task queue
    amqp_probe.py put QUEUE BODY           persistent message (as the Celery user)
    amqp_probe.py get QUEUE                consume one message and print its body
    amqp_probe.py anonymous --expect M,M   ask for SASL ANONYMOUS on the wire (amqp_sasl.py):
                                           OK when the server offers exactly M,M and refuses
                                           ANONYMOUS as a mechanism it does not offer
    amqp_probe.py quorum QUEUE             as the Celery user: declare QUEUE as a quorum queue,
                                           a message through it, then delete it

roundtrip, put and get route as the host's rendered configuration does (rendered_settings.py):
through the task exchange (celery.tasks, topic) with the queue's name as routing key, the
only way a worker may publish and bind. The broker's name, TLS port and vhost and the
Celery user come from the environment (VERIFY_SERVER, VERIFY_PORT, VERIFY_VHOST,
VERIFY_USER), set by verify.yml from the model.
"""

import argparse
import os
import socket
import ssl
import sys

import amqp
import kombu

import amqp_sasl
import rendered_settings


def setting(name):
    """A value verify.yml passes in the environment; none has a default here."""
    value = os.environ.get(name)
    if not value:
        sys.exit(f"amqp_probe.py: {name} is not set (verify.yml sets it from the model)")
    return value


HERE = os.path.dirname(os.path.abspath(__file__))  # the verify directory, with tls/ and password
SERVER = setting("VERIFY_SERVER")  # host name (in the certificate) of the broker
PORT = int(setting("VERIFY_PORT"))
USER = setting("VERIFY_USER")
VHOST = setting("VERIFY_VHOST")


def password():
    with open(f"{HERE}/password", encoding="ascii") as fh:
        return fh.read().strip()


def tls(cert="client"):
    opts = {"ca_certs": f"{HERE}/tls/ca.pem", "cert_reqs": ssl.CERT_REQUIRED, "server_hostname": SERVER}
    if cert != "none":
        opts.update(certfile=f"{HERE}/tls/{cert}.pem", keyfile=f"{HERE}/tls/{cert}.key")
    return opts


def connect(user, secret, vhost, cert="client"):
    conn = amqp.Connection(f"{SERVER}:{PORT}", userid=user, password=secret, virtual_host=vhost,
                           ssl=tls(cert), connect_timeout=10)
    conn.connect()
    return conn


def verdict(ok, text):
    print(("OK " if ok else "REFUSED ") + text)
    return 0 if ok else 1


def main(argv=None):
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    login = sub.add_parser("login")
    login.add_argument("user")
    login.add_argument("vhost")
    login.add_argument("--cert", default="client", choices=["client", "foreign", "none", "old-client"])
    login.add_argument("--password")
    sub.add_parser("declare").add_argument("queue")
    sub.add_parser("roundtrip")
    put = sub.add_parser("put")
    put.add_argument("queue")
    put.add_argument("body")
    sub.add_parser("get").add_argument("queue")
    sub.add_parser("anonymous").add_argument("--expect", required=True, help="mechanisms, comma-separated")
    sub.add_parser("quorum").add_argument("queue")
    a = p.parse_args(argv)

    if a.cmd == "anonymous":
        # The worker's valid certificate: the TLS part succeeds, only the mechanism is at stake.
        raw = socket.create_connection((SERVER, PORT), timeout=10)
        opts = tls()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the server and its host name
        ctx.load_verify_locations(opts["ca_certs"])
        ctx.load_cert_chain(opts["certfile"], opts["keyfile"])
        with ctx.wrap_socket(raw, server_hostname=SERVER) as sock:
            answer = amqp_sasl.attempt(sock, "ANONYMOUS")
        expected = sorted(a.expect.split(","))
        if sorted(answer.offered) != expected:
            return verdict(False, f"offered mechanisms are not {expected}: {answer}")
        if answer.reply != "eof":  # a Close 403 would mean ANONYMOUS was taken as a mechanism
            return verdict(False, f"ANONYMOUS was not refused as a mechanism not offered: {answer}")
        return verdict(True, f"ANONYMOUS refused, not offered: {answer}")

    if a.cmd == "login":
        secret = a.password if a.password is not None else password()
        try:
            conn = connect(a.user, secret, a.vhost, a.cert)
            conn.channel().close()
            conn.close()
        except (amqp.exceptions.AMQPError, ssl.SSLError, OSError) as exc:
            return verdict(False, f"{type(exc).__name__}: {exc}")
        return verdict(True, f"{a.user} logged in to vhost {a.vhost}")

    if a.cmd == "declare":
        conn = connect(USER, password(), VHOST)
        try:
            conn.channel().queue_declare(a.queue, durable=False, auto_delete=True)
        except amqp.exceptions.AccessRefused as exc:
            return verdict(False, f"AccessRefused: {exc}")
        finally:
            try:
                conn.close()
            except Exception:  # the channel error may have closed it already
                pass
        return verdict(True, f"declared {a.queue}")

    rendered = rendered_settings.load()
    name = a.queue if a.cmd in ("put", "get", "quorum") else rendered["task_default_queue"]
    # The rendered task_queues entry says exchange, type and routing key (= the queue's name).
    route = rendered["task_queues"][name]
    url = f"amqp://{USER}:{password()}@{SERVER}:{PORT}/{VHOST}"
    with kombu.Connection(url, ssl=tls(), connect_timeout=10) as conn:
        queue = kombu.Queue(name, kombu.Exchange(route["exchange"], route["exchange_type"]),
                            routing_key=route["routing_key"], durable=True)
        if a.cmd == "roundtrip":
            body = {"probe": os.urandom(8).hex()}
            with conn.Producer() as producer:
                producer.publish(body, exchange=queue.exchange, routing_key=queue.routing_key, declare=[queue])
            got = conn.SimpleQueue(queue).get(timeout=10)
            got.ack()
            return verdict(got.payload == body, f"kombu round trip over TLS: {got.payload}")
        if a.cmd == "quorum":
            quorum = kombu.Queue(name, queue.exchange, routing_key=queue.routing_key, durable=True,
                                 queue_arguments={"x-queue-type": "quorum"})
            body = {"quorum": os.urandom(8).hex()}
            with conn.Producer() as producer:
                producer.publish(body, exchange=quorum.exchange, routing_key=quorum.routing_key, declare=[quorum])
            got = conn.SimpleQueue(quorum).get(timeout=10)
            got.ack()
            quorum.bind(conn.default_channel).delete()
            return verdict(got.payload == body, f"quorum queue {name}: declared, round trip {got.payload}, deleted")
        if a.cmd == "put":
            with conn.Producer() as producer:
                producer.publish(a.body, exchange=queue.exchange, routing_key=queue.routing_key, declare=[queue],
                                 delivery_mode=2)
            return verdict(True, f"published {a.body}")
        got = conn.SimpleQueue(queue).get(timeout=10)
        got.ack()
        print(got.payload)
        return 0


if __name__ == "__main__":
    sys.exit(main())
