"""The pure parts of the harness for Celery's own integration suite (scripts/celery_integration*.py,
docs/celery-integration.md): how a rendered configuration becomes the suite's settings, how the
mimic swaps only the transport, and how test outcomes are counted. The harness itself runs
Celery's suite against brokers and stays out of this test suite."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from celery_provision import credentials, model, pki, render, runtime

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _script(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_a_rendered_worker_config_becomes_the_suite_settings_with_only_the_transport_swapped(
        inventory: Path, tmp_path: Path) -> None:
    plugin, mimic = _script("celery_integration_plugin"), _script("celery_integration_mimic")
    d = model.load(inventory)
    pki.issue(d)
    credentials.ensure(d)
    rendered = render.render(d, d.host("worker-1"), controller_paths=True)
    path = tmp_path / "celeryconfig.py"
    path.write_text(rendered)
    secured, other = plugin.load_settings(path)
    # Every public name is a Celery setting (ssl, Path and _secret are not taken for one).
    assert other == []
    assert secured["task_serializer"] == "celery-provision-json" and secured["accept_content"] == ["celery-provision-json"]
    assert secured[runtime.CONFIG]["signer"] == "worker-1"  # not a Celery setting, applied all the same
    assert secured["broker_url"].startswith("amqps://worker-1@")
    assert secured["broker_password"] == credentials.password(d, "rabbitmq", "worker-1")
    assert "task_queues" in secured and not [k for k in secured if k.startswith("security_")]

    broker = mimic.plain_url(secured["broker_url"], "127.0.0.1:5710")
    backend = mimic.plain_url(secured["result_backend"], "127.0.0.1:6410")
    assert broker == "amqp://worker-1@127.0.0.1:5710/celery"
    assert backend == "redis://worker-1@127.0.0.1:6410/1"  # TLS query options dropped
    path.write_text(mimic.mimic_config(rendered, broker, backend))
    swapped, _ = plugin.load_settings(path)
    changed = {k for k in secured if swapped[k] != secured[k]}
    assert changed == {"broker_url", "broker_use_ssl", "result_backend", "redis_backend_use_ssl"}
    assert swapped["broker_use_ssl"] is None and swapped["redis_backend_use_ssl"] is None


def test_the_suite_apps_are_secured_as_the_rendered_module_says(inventory: Path, tmp_path: Path) -> None:
    """As celery.contrib.pytest makes them (TestApp: the settings as pending defaults, read
    on first use, here `app.control`): signing sender, envelope check, signed control."""
    from celery.contrib.testing.app import TestApp

    plugin = _script("celery_integration_plugin")
    d = model.load(inventory)
    pki.issue(d)
    credentials.ensure(d)
    path = tmp_path / "celeryconfig.py"
    path.write_text(render.render(d, d.host("worker-1"), controller_paths=True))
    settings, _ = plugin.load_settings(path)
    app = plugin.secure_app(TestApp(config=settings))
    mailbox = app.control.mailbox
    assert (mailbox.serializer, mailbox.accept) == (runtime.SERIALIZER, [runtime.SERIALIZER])
    assert app._celery_provision.signer.name == "worker-1"
    assert type(app.amqp).__name__.startswith("Signing")
    assert any(step.__name__ == "EnvelopeStep" for step in app.steps["consumer"])
    assert getattr(plugin.secure_app(TestApp()), "_celery_provision", None) is None  # no envelope: left alone


def test_the_side_connection_takes_the_backend_tls_only_for_rediss() -> None:
    plugin = _script("celery_integration_plugin")
    tls = {"ssl_ca_certs": "/ca.pem", "ssl_certfile": "/c.pem", "ssl_keyfile": "/c.key", "ssl_cert_reqs": 2}
    settings = {"redis_backend_use_ssl": tls}
    assert plugin.side_redis_kwargs("rediss://admin@h:6380/0", settings, "pw") == {
        "socket_timeout": None, **tls, "password": "pw"}
    assert plugin.side_redis_kwargs("redis://h:6410/0", settings) == {"socket_timeout": None}


def test_outcomes_count_each_test_once_by_its_worst_phase() -> None:
    o = _script("celery_integration_plugin").Outcomes()
    o.add("a", "setup", "passed", False, "")
    o.add("a", "call", "rerun", False, "flaky")      # pytest-rerunfailures: not an outcome
    o.add("a", "call", "passed", False, "")
    o.add("a", "teardown", "passed", False, "")
    o.add("b", "setup", "failed", False, "NOPERM")  # a fixture failed: an error
    o.add("c", "call", "failed", False, "assert 1")
    o.add("c", "teardown", "failed", False, "later")
    o.add("d", "call", "skipped", True, "xfail")
    o.add("e", "setup", "skipped", False, "needs redis")
    o.add("f", "call", "passed", True, "")
    assert {k: v["outcome"] for k, v in o.tests.items()} == {
        "a": "passed", "b": "error", "c": "error", "d": "xfailed", "e": "skipped", "f": "xpassed"}
    assert o.tests["b"]["reason"] == "NOPERM"
    assert o.counts() == {"passed": 1, "xfailed": 1, "skipped": 1, "xpassed": 1, "failed": 0, "error": 2}
