#!/usr/bin/env python3
"""Run Celery's own integration suite (`t/integration` of its source distribution) against
plain brokers or with a rendered celery-provision configuration. docs/celery-integration.md
says what it proves and what it cannot. Usage::

    .venv/bin/python scripts/celery_integration.py --plain BROKER_URL BACKEND_URL [options] [-- PYTEST ARGS]
    .venv/bin/python scripts/celery_integration.py --config CELERYCONFIG.py [options] [-- PYTEST ARGS]
    .venv/bin/python scripts/celery_integration.py --compare BASE.json OTHER.json

It downloads the sdist of the Celery this venv has (`pip download --no-binary :all:`),
extracts `t/` without Celery's own source, and makes a venv of its own for the suite (the
same Celery, kombu, redis-py, py-amqp, billiard, vine and cryptography as this one, plus
the suite's pytest plugins, which stay out of the project's venv), all cached under
--cache. Then it runs pytest there with scripts/celery_integration_plugin.py, which lays
the configuration over the suite's `celery_config` fixture. The report (--report, JSON:
each test's outcome and reason) is what --compare reads: it lists every test that passed
in BASE and not in OTHER.

The suite also reads and writes a Redis of its own besides Celery (counters, id lists,
`PUBSUB CHANNELS` of the backend): --side-redis (default: the backend URL if it is Redis;
`rediss://` takes the configuration's TLS files) and --side-redis-password-file.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import tarfile
import venv
from pathlib import Path
from urllib.parse import urlparse

HERE = Path(__file__).resolve().parent
#: The plugin's imports in the suite's venv: itself, and the project last (for
#: celery_provision.runtime, which needs only the PINNED packages).
PLUGIN_PATH = os.pathsep.join([str(HERE), str(HERE.parent)])
#: Pinned to this venv's versions: the suite must test the Celery the deployment runs.
PINNED = ("celery", "kombu", "redis", "amqp", "billiard", "vine", "cryptography")
#: What t/integration needs beyond Celery (from its imports and conftest markers; Celery's
#: requirements/test.txt lists more, for suites this one does not run). pytest 9 has
#: subtests built in (the suite's `subtests` fixture); django for test_worker's fixup tests.
SUITE_REQUIREMENTS = ("pytest>=9,<10", "pytest-rerunfailures>=16", "pytest-timeout>=2.3",
                      "pydantic>=2", "psutil>=5", "django>=4.2")
#: The markers Celery's pyproject.toml registers for its tests.
#: The default selection: the whole directory but two modules for result backends a
#: celery-provision deployment has not (Azure Block Blob, SQLAlchemy/SQLite: their tests set
#: their own backend and would only need more packages). PYTEST ARGS replace it.
DEFAULT_SELECTION = ("t/integration", "--ignore=t/integration/test_backend.py",
                     "--ignore=t/integration/test_database_backend.py")
PYTEST_INI = """[pytest]
python_classes = test_*
markers =
    flaky
    timeout
    amqp
    sleepdeprived_patched_module
    masked_modules
    patched_environ
    patched_module
"""


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "celery-provision" / "celery-integration"


def _run(cmd: list[str], **kwargs: object) -> None:
    print("celery-integration: " + " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]


def sdist(cache: Path, version: str) -> Path:
    """Celery's source distribution of *version*, downloaded once into *cache*."""
    path = cache / f"celery-{version}.tar.gz"
    if not path.exists():
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps",
              f"celery=={version}", "--dest", str(cache)])
    if not path.exists():
        raise SystemExit(f"celery-integration: pip download did not leave {path}")
    return path


def extract_suite(archive: Path, dest: Path) -> Path:
    """`t/` of the sdist (the integration suite and the helpers it imports), without
    Celery's own source: the suite then imports the installed Celery."""
    suite = dest / "suite"
    if (suite / "t" / "integration" / "conftest.py").exists():
        return suite
    tmp = dest / "suite.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        prefix = tar.getnames()[0].split("/")[0] + "/"
        members = []
        for member in tar.getmembers():
            rel = member.name[len(prefix):] if member.name.startswith(prefix) else ""
            if rel == "t/__init__.py" or rel.startswith("t/integration/") or rel in (
                    "t/canvas_helpers.py", "t/skip.py"):
                member.name = rel
                members.append(member)
        tar.extractall(tmp, members=members, filter="data")
    (tmp / "pytest.ini").write_text(PYTEST_INI)
    tmp.rename(suite)
    return suite


def suite_venv(dest: Path, pins: dict[str, str]) -> Path:
    """A venv for the suite with *pins* and SUITE_REQUIREMENTS; made again when they change."""
    requirements = [f"{name}=={version}" for name, version in pins.items()] + list(SUITE_REQUIREMENTS)
    stamp_text = "\n".join(requirements) + "\n"
    env_dir = dest / "venv"
    stamp = env_dir / "celery-integration.requirements"
    python = env_dir / "bin" / "python"
    if stamp.exists() and stamp.read_text() == stamp_text and python.exists():
        return python
    venv.create(env_dir, with_pip=True, clear=True)
    _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *requirements])
    stamp.write_text(stamp_text)
    return python


def compare(base: Path, other: Path) -> int:
    """Print every test that passed in *base* and not in *other*, with *other*'s reason."""
    a, b = json.loads(base.read_text()), json.loads(other.read_text())
    print(f"{base}: {a['counts']}\n{other}: {b['counts']}")
    lost = 0
    for nodeid, test in sorted(a["tests"].items()):
        if test["outcome"] != "passed":
            continue
        there = b["tests"].get(nodeid, {"outcome": "not run", "reason": ""})
        if there["outcome"] != "passed":
            lost += 1
            print(f"{there['outcome']:8} {nodeid}\n         {there['reason']}")
    gained = [n for n, t in b["tests"].items() if t["outcome"] == "passed"
              and a["tests"].get(n, {}).get("outcome") != "passed"]
    for nodeid in sorted(gained):
        print(f"passed only in {other.name}: {nodeid} ({a['tests'].get(nodeid, {}).get('outcome', 'not run')} in base)")
    print(f"{lost} test(s) passed in {base.name} and not in {other.name}")
    return 1 if lost else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pytest_args: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, pytest_args = argv[:at], argv[at + 1:]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--plain", nargs=2, metavar=("BROKER_URL", "BACKEND_URL"),
                      help="the suite's own configuration with these URLs (the baseline)")
    mode.add_argument("--config", type=Path, metavar="CELERYCONFIG.py",
                      help="a rendered celery-provision configuration module")
    mode.add_argument("--compare", nargs=2, type=Path, metavar=("BASE.json", "OTHER.json"),
                      help="list the tests that passed in BASE and not in OTHER")
    parser.add_argument("--side-redis", metavar="URL",
                        help="the Redis the suite itself uses (default: the backend, if Redis)")
    parser.add_argument("--side-redis-password-file", type=Path, metavar="FILE")
    parser.add_argument("--report", type=Path, metavar="FILE.json", help="write each test's outcome here")
    parser.add_argument("--cache", type=Path, default=_default_cache(), help="default: %(default)s")
    parser.add_argument("--timeout", type=int, default=300, help="per test, seconds (default: %(default)s)")
    parser.add_argument("--max-time", type=int, default=7200,
                        help="the whole run, seconds: then the suite is killed (default: %(default)s)")
    parser.add_argument("--prepare-only", action="store_true", help="download, extract, make the venv; run nothing")
    args = parser.parse_args(argv)
    if args.compare:
        return compare(*args.compare)

    pins = {name: importlib.metadata.version(name) for name in PINNED}
    dest = args.cache / f"celery-{pins['celery']}"
    dest.mkdir(parents=True, exist_ok=True)
    suite = extract_suite(sdist(args.cache, pins["celery"]), dest)
    python = suite_venv(dest, pins)
    if args.prepare_only:
        print(suite)
        return 0

    env = dict(os.environ)
    env.pop("CELERY_INTEG_CONFIG", None)
    if args.plain:
        broker, backend = args.plain
    else:
        config = args.config.resolve()
        env["CELERY_INTEG_CONFIG"] = str(config)
        # The suite reads TEST_BROKER/TEST_BACKEND for its own decisions (skips, xfails, the
        # workers it starts by URL alone); the rendered URLs carry no password.
        out = subprocess.run([str(python), "-c", _URLS, str(config)], check=True, capture_output=True,
                             text=True, env={**env, "PYTHONPATH": PLUGIN_PATH}).stdout.split("\n")
        broker, backend = out[0], out[1]
    env["TEST_BROKER"], env["TEST_BACKEND"] = broker, backend
    side = args.side_redis or (backend if backend.startswith(("redis://", "rediss://")) else None)
    if side:
        env["CELERY_INTEG_SIDE_REDIS"] = side
        parsed = urlparse(side)
        env["REDIS_HOST"], env["REDIS_PORT"] = parsed.hostname or "localhost", str(parsed.port or 6379)
    if args.side_redis_password_file:
        env["CELERY_INTEG_SIDE_REDIS_PASSWORD_FILE"] = str(args.side_redis_password_file.resolve())
    if args.report:
        env["CELERY_INTEG_REPORT"] = str(args.report.resolve())
    env["PYTHONPATH"] = os.pathsep.join([str(suite), PLUGIN_PATH])
    # Tests that start `celery worker` or `celery` by name find the suite venv's.
    env["PATH"] = os.pathsep.join([str(python.parent), env.get("PATH", "")])
    # celery.contrib.pytest: the fixtures the suite's conftest does not import by name
    # (upstream, the pytest-celery package loads it; its docker-based rest is not needed).
    cmd = [str(python), "-m", "pytest", "-p", "celery.contrib.pytest", "-p", "celery_integration_plugin", "-p", "no:cacheprovider",
           "-c", str(suite / "pytest.ini"), "--rootdir", str(suite), f"--timeout={args.timeout}", "-ra",
           *(pytest_args or DEFAULT_SELECTION)]
    print(f"celery-integration: TEST_BROKER={broker} TEST_BACKEND={backend} side Redis={side}", file=sys.stderr)
    # A worker that cannot start (an ACCESS_REFUSED on a declare is "Unrecoverable error" in
    # the log) leaves Celery's test worker waiting forever, and pytest-timeout does not end
    # that: the whole run has a limit of its own, and the suite its own process group.
    proc = subprocess.Popen(cmd, cwd=suite, env=env, start_new_session=True)
    try:
        return proc.wait(timeout=args.max_time)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        print(f"celery-integration: the suite was stopped after {args.max_time} s or by the user "
              "(a worker that cannot start hangs it: see 'Unrecoverable error' in the log)", file=sys.stderr)
        return 124


#: Prints a configuration module's broker and backend URLs (run in the suite's venv).
_URLS = (
    "import sys; from celery_integration_plugin import load_settings; "
    "s, _ = load_settings(sys.argv[1]); print(s.get('broker_url', '')); print(s.get('result_backend', ''))"
)

if __name__ == "__main__":
    raise SystemExit(main())
