"""Logins to RabbitMQ over mutual TLS (the worker's certificate, so only the login is at stake):
no guest, no wrong password, no way out of the Celery vhost; the operator still gets in. The
SASL mechanisms on the wire: exactly those the role configures, never ANONYMOUS (RabbitMQ 4.0
offers it by default and logs such a client in as guest)."""

from __future__ import annotations

import socket

import amqp_sasl
import pytest
import secprobe
from livedeploy import role_var
from secprobe import Endpoint

pytestmark = pytest.mark.usefixtures("rabbitmq")


def configured_mechanisms(live) -> list[str]:
    """The mechanisms the rabbitmq role writes into rabbitmq.conf for this deployment."""
    return role_var("rabbitmq", "_rabbitmq_auth_mechanisms", rabbitmq_auth_x509=live.d.settings.auth == "x509")


def sasl_over_tls(live, rabbitmq: Endpoint, mechanism: str, response: bytes = b"") -> amqp_sasl.Answer:
    """*mechanism* on the AMQPS port, with the worker's valid client certificate (so the TLS
    part succeeds and only the mechanism is at stake)."""
    ctx = secprobe.client_context(live.layout.ca_pem, *live.tls_pair(live.worker))
    with socket.create_connection((rabbitmq.address, rabbitmq.port), timeout=secprobe.TIMEOUT) as raw, \
            ctx.wrap_socket(raw, server_hostname=rabbitmq.address) as tls:
        return amqp_sasl.attempt(tls, mechanism, response)


def refused(login, *args, **kwargs) -> str | None:
    """None if the login worked, else why it was refused. (The controls below prove the TLS
    part works, so a refusal is about the user, the password or the vhost.)"""
    import amqp

    try:
        login(*args, **kwargs)
    except (amqp.exceptions.AccessRefused, amqp.exceptions.NotAllowed) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.mark.probe
def test_guest_with_the_default_password_is_refused(amqp_login) -> None:
    why = refused(amqp_login, "guest", "guest", vhost="/")
    assert why is not None, "guest/guest logged in"


@pytest.mark.probe
def test_a_real_user_with_a_wrong_password_is_refused(live, amqp_login) -> None:
    why = refused(amqp_login, live.worker, live.password("rabbitmq", live.worker) + "x")
    assert why is not None, f"{live.worker} logged in with a wrong password"


@pytest.mark.probe
def test_the_worker_user_cannot_enter_the_default_vhost(live, amqp_login) -> None:
    why = refused(amqp_login, live.worker, live.password("rabbitmq", live.worker), vhost="/")
    assert why is not None, f"{live.worker} opened vhost '/'"


def test_control_the_worker_user_enters_its_own_vhost(live, amqp_login) -> None:
    why = refused(amqp_login, live.worker, live.password("rabbitmq", live.worker))
    assert why is None, why


def test_control_the_admin_user_still_logs_in(live, amqp_login) -> None:
    admin = live.admin("rabbitmq")
    why = refused(amqp_login, admin, live.password("rabbitmq", admin))
    assert why is None, why


@pytest.mark.probe
def test_the_server_offers_exactly_the_mechanisms_the_role_configures(live, rabbitmq) -> None:
    """Connection.Start lists what a client may use: the role's list, in any order, nothing more
    (no ANONYMOUS, which RabbitMQ 4.0 offers by default; no EXTERNAL without certificate login)."""
    answer = sasl_over_tls(live, rabbitmq, "ANONYMOUS")
    assert sorted(answer.offered) == sorted(configured_mechanisms(live)), answer


@pytest.mark.probe
def test_anonymous_login_over_tls_is_refused_as_a_mechanism_not_offered(live, rabbitmq) -> None:
    """A client that asks for ANONYMOUS anyway: RabbitMQ closes the connection without a
    Connection.Close (3 s later), its answer to a mechanism it does not offer. A Connection.Close
    403 would mean ANONYMOUS was accepted as a mechanism and only the login failed (no guest
    user, or guest is loopback-only): refused too, but by luck, not by configuration."""
    answer = sasl_over_tls(live, rabbitmq, "ANONYMOUS")
    assert "ANONYMOUS" not in answer.offered, answer
    assert answer.reply == "eof", answer


@pytest.mark.probe
def test_anonymous_login_over_plaintext_amqp_is_refused(live, rabbitmq) -> None:
    """The plaintext AMQP port: nothing listens there (`listeners.tcp = none`); should a
    loopback plaintext listener be enabled, it refuses ANONYMOUS as the TLS port does."""
    try:
        raw = socket.create_connection((rabbitmq.address, rabbitmq.plaintext_port), timeout=secprobe.TIMEOUT)
    except ConnectionRefusedError:
        return  # no listener: no login of any kind
    with raw:
        answer = amqp_sasl.attempt(raw, "ANONYMOUS")
    assert "ANONYMOUS" not in answer.offered, answer
    assert answer.reply == "eof", answer


def test_control_the_wire_client_logs_in_with_a_configured_mechanism(live, rabbitmq) -> None:
    """The same hand-made client gets Connection.Tune with the worker's own login: the
    refusals above are about the mechanism, not about the client."""
    mechanism = configured_mechanisms(live)[0]
    response = b"" if mechanism == "EXTERNAL" else \
        f"\0{live.worker}\0{live.password('rabbitmq', live.worker)}".encode()
    answer = sasl_over_tls(live, rabbitmq, mechanism, response)
    assert answer.logged_in, answer
