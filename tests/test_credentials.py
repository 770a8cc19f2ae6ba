"""Broker passwords: strong, and safe to hand to every tool that receives them."""

from __future__ import annotations

import re

from celery_provision import credentials


def test_a_password_has_256_bits_of_letters_and_digits() -> None:
    password = credentials.new_password()
    assert re.fullmatch(r"[A-Za-z0-9]{43}", password), password


def test_no_password_starts_with_a_dash_which_rabbitmqctl_would_read_as_options() -> None:
    # token_urlsafe() started one password in 64 with "-": rabbitmqctl change_password
    # then failed and printed the password in its usage error.
    assert not any(credentials.new_password().startswith("-") for _ in range(5000))


def test_two_passwords_differ() -> None:
    assert len({credentials.new_password() for _ in range(100)}) == 100


def test_an_erlang_cookie_is_64_letters_and_digits_as_the_rabbitmq_role_expects() -> None:
    assert re.fullmatch(r"[A-Za-z0-9]{64}", credentials.new_cookie())


def test_a_cluster_gets_one_0600_erlang_cookie_that_a_rerun_keeps(write_inventory, basic_groups) -> None:  # noqa: ANN001
    from celery_provision import model

    basic_groups["rabbitmq"]["rabbitmq-1"]["rabbitmq_cluster"] = True
    basic_groups["rabbitmq"]["rabbitmq-2"] = {"ansible_host": "127.0.0.5", "rabbitmq_cluster": True}
    d = model.load(write_inventory(basic_groups))
    assert credentials.COOKIE in credentials.ensure(d)
    path = credentials.path_for(d, credentials.COOKIE)
    first = credentials.erlang_cookie(d)
    assert path.stat().st_mode & 0o777 == 0o600
    assert credentials.COOKIE not in credentials.ensure(d)
    assert credentials.erlang_cookie(d) == first


def test_independent_brokers_get_no_erlang_cookie_from_the_controller(inventory) -> None:  # noqa: ANN001
    from celery_provision import model

    d = model.load(inventory)
    credentials.ensure(d)
    assert not credentials.path_for(d, credentials.COOKIE).exists()


def test_a_replicated_redis_gets_its_replication_and_sentinel_passwords_once(write_inventory, basic_groups) -> None:  # noqa: ANN001
    import stat

    from celery_provision import model

    basic_groups["redis"] = {f"redis-{i}": {"ansible_host": f"127.0.1.{i}", "redis_sentinel": True} for i in (1, 2, 3)}
    d = model.load(write_inventory(basic_groups))
    created = {c.user for c in credentials.ensure(d) if c.service == "redis"}
    assert {"replica", "sentinel", "sentinel-peer"} <= created
    path = credentials.path_for(d, model.Credential("redis", "replica"))
    before = path.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert credentials.ensure(d) == [] and path.read_bytes() == before
