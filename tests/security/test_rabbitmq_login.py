"""Logins to RabbitMQ over mutual TLS (the worker's certificate, so only the login is at stake):
no guest, no wrong password, no way out of the Celery vhost; the operator still gets in."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("rabbitmq")


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
