"""pytest plugin: Celery's own integration suite (`t/integration`) with a rendered config.

Loaded by scripts/celery_integration.py (`-p celery_integration_plugin`) into the suite's
venv; docs/celery-integration.md says how to run it. It changes nothing in the suite's
files. Through the environment it is given:

- CELERY_INTEG_CONFIG: a celery-provision configuration module (rendered with
  `render --controller-paths`), loaded by path. Its Celery settings are laid over the
  suite's own `celery_config` fixture (broker, backend, TLS, passwords read from their
  files, the signed envelope's `celery_provision_envelope`, serializers, queues and
  routing, worker switches); when it has the envelope, each app the suite makes gets
  `celery_provision.runtime.secure(app)`, as the rendered module tells applications to
  do (scripts/celery_integration.py puts the project on the suite's path: the runtime
  needs only Celery, kombu and cryptography, pinned there).
- CELERY_INTEG_SIDE_REDIS (+ CELERY_INTEG_SIDE_REDIS_PASSWORD_FILE): the Redis the suite
  itself reads and writes besides Celery (`t.integration.tasks.get_redis_connection`:
  counters, lists of ids, `PUBSUB CHANNELS`). Upstream it is `localhost:6379` without
  TLS or password; here it is this URL, with the configuration's `redis_backend_use_ssl`
  for `rediss://`. It is the test's instrument, not one of the deployment's identities.
- CELERY_INTEG_REPORT: a JSON file to write each test's outcome to (`--compare` reads it).

The pure parts (`load_settings`, `secure_app`, `side_redis_kwargs`, `Outcomes`) are unit-tested in
tests/test_celery_integration.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import types
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from celery_provision.runtime import CONFIG as ENVELOPE
from celery_provision.runtime import secure

__all__ = ["load_settings", "secure_app", "side_redis_kwargs", "Outcomes"]


def load_settings(path: str | Path) -> tuple[dict[str, Any], list[str]]:
    """The Celery settings a configuration module defines (with the runtime's
    `celery_provision_envelope`), and the public names it defines that are not settings
    (they are not applied; the caller may report them)."""
    from celery.app.defaults import DEFAULTS

    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"_celery_integ_config_{abs(hash(path))}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    settings, other = {}, []
    for name, value in vars(module).items():
        if name.startswith("_") or isinstance(value, types.ModuleType | type | types.FunctionType):
            continue
        if name in DEFAULTS or name == ENVELOPE:
            settings[name] = value
        else:
            other.append(name)
    return settings, sorted(other)


def secure_app(app: Any) -> Any:
    """*app* as the rendered module says to use it: `secure(app)` when its configuration has
    the envelope. The configuration is read first: the runtime, called before that, loses
    its control serializer where the first use is `app.control` (the suite's `manager`
    inspects workers), see the xfail test in tests/test_render.py."""
    if app.conf.get(ENVELOPE) is not None:
        secure(app)
    return app


def side_redis_kwargs(url: str, settings: dict[str, Any], password: str | None = None) -> dict[str, Any]:
    """Keyword arguments of `redis.Redis.from_url(url, **kwargs)` for the suite's own
    connection: TLS from the configuration's `redis_backend_use_ssl` on `rediss://`."""
    kwargs: dict[str, Any] = {"socket_timeout": None}  # the suite's blocking reads wait long
    if urlparse(url).scheme == "rediss":
        kwargs.update(settings.get("redis_backend_use_ssl") or {})
    if password is not None:
        kwargs["password"] = password
    return kwargs


_RANK = {"passed": 0, "xfailed": 1, "skipped": 1, "xpassed": 2, "failed": 3, "error": 4}


class Outcomes:
    """One outcome per test id from pytest's reports: the worst of its phases (setup
    failure = error; reruns of pytest-rerunfailures ignored), with the first reason."""

    def __init__(self) -> None:
        self.tests: dict[str, dict[str, str]] = {}

    def add(self, nodeid: str, when: str, outcome: str, wasxfail: bool, reason: str) -> None:
        if outcome == "rerun":
            return
        if outcome == "passed":
            result = "xpassed" if wasxfail else "passed"
            if when != "call" and nodeid in self.tests:
                return
        elif outcome == "skipped":
            result = "xfailed" if wasxfail else "skipped"
        else:
            result = "failed" if when == "call" else "error"
        old = self.tests.get(nodeid)
        if old is None or _RANK[result] > _RANK[old["outcome"]]:
            self.tests[nodeid] = {"outcome": result, "reason": reason}

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(_RANK, 0)
        for test in self.tests.values():
            counts[test["outcome"]] += 1
        return counts


def _reason(report: Any) -> str:
    """The first line of why a test did not pass (a skip's reason, a failure's message)."""
    if report.passed:
        return ""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # a skip: (file, line, reason)
        return str(longrepr[2])[:500]
    crash = getattr(longrepr, "reprcrash", None)
    text = (crash.message if crash is not None else str(longrepr or getattr(report, "wasxfail", ""))).strip()
    return text.splitlines()[0][:500] if text else ""


_CONFIG = os.environ.get("CELERY_INTEG_CONFIG")
_SETTINGS: dict[str, Any] = {}
_OUTCOMES = Outcomes()


def pytest_configure(config: pytest.Config) -> None:
    if _CONFIG:
        settings, other = load_settings(_CONFIG)
        _SETTINGS.update(settings)
        print(f"celery-integration: {len(settings)} settings from {_CONFIG}"
              + (f" (not settings, ignored: {', '.join(other)})" if other else ""), file=sys.stderr)


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: Any, request: Any) -> Any:
    result = yield
    if fixturedef.argname == "celery_config" and _SETTINGS:
        result.update(_SETTINGS)  # the suite's dict, in place: its other keys stay
    elif fixturedef.argname in ("celery_session_app", "celery_app") and ENVELOPE in _SETTINGS:
        secure_app(result)
    return result


def pytest_collection_finish(session: pytest.Session) -> None:
    url = os.environ.get("CELERY_INTEG_SIDE_REDIS")
    if not url:
        return
    import redis

    password_file = os.environ.get("CELERY_INTEG_SIDE_REDIS_PASSWORD_FILE")
    password = Path(password_file).read_text().strip() if password_file else None
    kwargs = side_redis_kwargs(url, _SETTINGS, password)

    def get_redis_connection() -> Any:
        return redis.Redis.from_url(url, **kwargs)

    # Every module of the suite that holds the function (imported by name) gets ours;
    # the worker's pool processes are forked later and inherit it.
    for name, module in list(sys.modules.items()):
        if name.startswith("t.integration") and hasattr(module, "get_redis_connection"):
            module.get_redis_connection = get_redis_connection


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _OUTCOMES.add(report.nodeid, report.when, report.outcome, hasattr(report, "wasxfail"), _reason(report))


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("CELERY_INTEG_REPORT")
    if path:
        Path(path).write_text(json.dumps({"counts": _OUTCOMES.counts(), "tests": _OUTCOMES.tests},
                                         indent=1, sort_keys=True) + "\n")
