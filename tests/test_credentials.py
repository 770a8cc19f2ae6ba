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
