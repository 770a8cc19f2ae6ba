"""Revocation closes every door: after `certs revoke CLIENT` and a site.yml run, the client's old
certificate, key and passwords open neither RabbitMQ nor Redis (Redis has no CRL: only the
removal of its ACL user closes it), nothing new was issued to it, and everyone else works on.

Destructive for the client, so these run after every other live test but host hygiene."""

from __future__ import annotations

import ssl
import uuid

import pytest

import secprobe
from secprobe import Endpoint


def amqp_login(live, rabbitmq: Endpoint, user: str, password: str, cert, key) -> str | None:
    """None if the login worked, else the broker's refusal."""
    import amqp

    conn = amqp.Connection(f"{rabbitmq.address}:{rabbitmq.port}", userid=user, password=password,
                           virtual_host=live.d.settings.vhost, connect_timeout=secprobe.TIMEOUT,
                           ssl={"ca_certs": str(live.layout.ca_pem), "certfile": str(cert), "keyfile": str(key),
                                "cert_reqs": ssl.CERT_REQUIRED, "server_hostname": rabbitmq.address})
    try:
        conn.connect()
        conn.channel()
    except (amqp.exceptions.AccessRefused, amqp.exceptions.NotAllowed) as exc:
        return f"{type(exc).__name__}: {exc}"
    except (ssl.SSLError, OSError) as exc:
        return f"TLS refused: {exc}"
    finally:
        try:
            conn.close()
        except Exception:
            pass
    return None


def redis_login(live, redis_ep: Endpoint, user: str, password: str, cert, key) -> str | None:
    """None if AUTH and PING worked, else the server's refusal."""
    import redis

    r = redis.Redis(host=redis_ep.address, port=redis_ep.port, username=user, password=password, ssl=True,
                    ssl_ca_certs=str(live.layout.ca_pem), ssl_certfile=str(cert), ssl_keyfile=str(key),
                    socket_timeout=secprobe.TIMEOUT)
    try:
        r.ping()
    except redis.exceptions.AuthenticationError as exc:
        return f"{type(exc).__name__}: {exc}"
    except redis.exceptions.ConnectionError as exc:
        return f"TLS refused: {exc}"
    finally:
        r.close()
    return None


def test_the_site_rerun_after_the_revocation_succeeds(rerun) -> None:
    assert rerun.returncode == 0, rerun.output[-3000:]


@pytest.mark.probe
def test_revoked_client_certificate_is_refused_by_rabbitmq(live, rabbitmq: Endpoint, rerun) -> None:
    ctx = secprobe.client_context(live.layout.ca_pem, rerun.revoked_cert, rerun.revoked_key)
    outcome = secprobe.tls_attempt(rabbitmq, ctx)
    assert not outcome.got_in, outcome.detail


@pytest.mark.probe
def test_revoked_client_password_is_refused_by_rabbitmq_even_with_a_valid_certificate(live, rabbitmq: Endpoint,
                                                                                        rerun) -> None:
    if "rabbitmq" not in rerun.passwords:
        pytest.skip("the client logs in to RabbitMQ by certificate (x509): no password exists")
    why = amqp_login(live, rabbitmq, live.client, rerun.passwords["rabbitmq"], *live.tls_pair(live.worker))
    assert why is not None, f"{live.client} logged in to RabbitMQ after its revocation"


@pytest.mark.probe
def test_revoked_client_certificate_and_password_are_refused_by_redis(live, redis_ep: Endpoint, rerun) -> None:
    if "redis" not in rerun.passwords:
        pytest.skip("the client has no Redis user")
    why = redis_login(live, redis_ep, live.client, rerun.passwords["redis"], rerun.revoked_cert, rerun.revoked_key)
    assert why is not None, f"AUTH {live.client} with its old certificate and password worked on Redis"


@pytest.mark.probe
def test_revoked_client_password_is_refused_by_redis_even_with_a_valid_certificate(live, redis_ep: Endpoint,
                                                                                     rerun) -> None:
    if "redis" not in rerun.passwords:
        pytest.skip("the client has no Redis user")
    why = redis_login(live, redis_ep, live.client, rerun.passwords["redis"], *live.tls_pair(live.worker))
    assert why is not None, f"AUTH {live.client} with its old password worked on Redis"


def test_nothing_new_was_issued_to_the_revoked_client(live, rerun) -> None:
    cert, _ = live.tls_pair(live.client)
    assert cert.read_bytes() == rerun.revoked_cert.read_bytes(), "site.yml reissued the revoked client's certificate"


def test_control_the_worker_still_runs_tasks_after_the_revocation(live, rerun, tmp_path) -> None:
    """Everyone but the revoked client works on: the worker's own configuration sends a task."""
    from celery_provision import canary

    app = live.handle.client_app(tmp_path, live.worker)
    try:
        nonce = uuid.uuid4().hex
        assert app.send_task(canary.PING, args=[nonce]).get(timeout=60)["nonce"] == nonce
    finally:
        app.close()


def test_control_an_admitted_host_logs_in_to_redis_the_same_way(live) -> None:
    """The Redis probes could see success: the same login, by a host still admitted."""
    worker = live.worker
    why = redis_login(live, live.endpoint("redis"), worker, live.password("redis", worker), *live.tls_pair(worker))
    assert why is None, why
