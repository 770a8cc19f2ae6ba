"""Shared, generic fixtures: role defaults, inventories written at test time, the CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

# The live all-in-one deployment fixture (`local_deployment`), shared by the live tests.
pytest_plugins = ["livedeploy"]

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

def _basic_hosts() -> dict[str, Any]:
    return {
        "rabbitmq": {"rabbitmq-1": {"ansible_host": "127.0.0.1", "celery_provision_extra_sans": ["localhost"]}},
        "redis": {"redis-1": {"ansible_host": "127.0.0.2", "celery_provision_extra_sans": ["localhost"]}},
        "celery_workers": {"worker-1": {"ansible_host": "127.0.0.3"}},
        "celery_clients": {"client-1": {"ansible_host": "127.0.0.4"}},
    }


# Fast settings for tests where the key type is not the point.
FAST_VARS = {"celery_provision_key_type": "ec-p256", "celery_provision_signing_key_type": "rsa2048"}


@dataclass
class InventoryWriter:
    """Writes YAML inventories (a directory with hosts.yml and group_vars/all.yml) under tmp."""

    base: Path

    def __call__(
        self,
        groups: dict[str, dict[str, Any]] | None = None,
        all_vars: dict[str, Any] | None = None,
        *,
        name: str = "inv",
        fast: bool = True,
    ) -> Path:
        inv = self.base / name
        (inv / "group_vars").mkdir(parents=True, exist_ok=True)
        groups = _basic_hosts() if groups is None else groups
        doc = {"all": {"children": {g: {"hosts": hosts} for g, hosts in groups.items()}}}
        (inv / "hosts.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
        values = {**(FAST_VARS if fast else {}), **(all_vars or {})}
        (inv / "group_vars" / "all.yml").write_text("---\n" + yaml.safe_dump(values, sort_keys=False))
        return inv


@pytest.fixture
def write_inventory(tmp_path: Path) -> InventoryWriter:
    """Factory: `write_inventory(groups=None, all_vars=None)` -> inventory directory."""
    return InventoryWriter(tmp_path)


@pytest.fixture
def basic_groups() -> dict[str, Any]:
    """A small deployment (one RabbitMQ, one Redis, one worker, one client, on loopback) as
    `{group: {host: vars}}`, fresh for each test so it can be edited and passed to write_inventory."""
    return _basic_hosts()


@pytest.fixture
def inventory(write_inventory: InventoryWriter) -> Path:
    """The basic deployment as an inventory directory (nothing issued yet)."""
    return write_inventory()


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run `celery_provision.cli.main` in-process: `cli("certs", "issue", "-i", inv)`."""
    from celery_provision.cli import main

    def run(*argv: Any) -> Result:
        capsys.readouterr()
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse usage errors
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


@pytest.fixture
def console() -> Callable[..., Result]:
    """Run the real `celery-provision` console script in a subprocess."""
    script = shutil.which("celery-provision", path=str(VENV_BIN)) or shutil.which("celery-provision")
    command = [script] if script else [sys.executable, "-m", "celery_provision.cli"]

    def run(*argv: Any, env: dict[str, str] | None = None) -> Result:
        proc = subprocess.run(
            [*command, *map(str, argv)], capture_output=True, text=True, cwd=REPO, check=False,
            env={**os.environ, **(env or {})}, timeout=300,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run


# --------------------------------------------------------------------------- parallel runs

_SERIAL_GROUPS = {
    # Its own replicated Redis and worker (no RabbitMQ cluster: it need not run alone).
    "tests/faults/test_sentinel_faults.py": "sentinel-faults",
    # Everything that uses the one live deployment on this machine runs in one process.
    "tests/faults/": "live",
    "tests/security/": "live",
    "tests/test_deploy_local.py": "live",
    "tests/test_canvas.py": "live",
    "tests/test_collection_live.py": "live",
    # One private redis-server and worker pair per module: its tests in one process.
    "tests/test_envelope_live.py": "envelope-live",
    # One private three-node RabbitMQ cluster per module.
    "tests/test_rabbitmq_cluster_live.py": "rabbitmq-cluster",
    # A replicated Redis with three Sentinels per module; its failover test runs last.
    "tests/test_redis_sentinel_live.py": "sentinel-live",
    # Network namespaces: one process, they are cheap but chatty.
    "tests/test_firewall.py": "netns",
}


def _group_of(item: pytest.Item) -> str | None:
    if item.nodeid.startswith("tests/test_molecule.py"):
        return f"molecule-{item.callspec.params['scenario']}"
    return next((g for prefix, g in _SERIAL_GROUPS.items() if item.nodeid.startswith(prefix)), None)


def _start_rank(group: str | None) -> int:
    """The longest units first: the live deployment's group, then each Molecule scenario,
    then the other groups, then the single tests."""
    if group == "live":
        return 0
    if group and group.startswith("molecule-"):
        return 1
    return 2 if group else 3


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under `pytest -n N --dist loadgroup --no-loadscope-reorder` (scripts/test.sh), keep the
    live tests together in one worker and give each Molecule scenario its own, so they overlap
    with each other, and hand them out first. xdist hands out units in collection order with
    `--no-loadscope-reorder`; its default, most tests first, put the one-test Molecule units
    behind a thousand single tests: seen starting 21 minutes into a 31-minute run."""
    groups = {item.nodeid: _group_of(item) for item in items}
    items.sort(key=lambda item: _start_rank(groups[item.nodeid]))  # stable: each group keeps its order
    for item in items:
        if groups[item.nodeid]:
            item.add_marker(pytest.mark.xdist_group(groups[item.nodeid]))


# --------------------------------------------------------------------------- hostile-client summary
# Here, not in tests/security/conftest.py: under xdist only this conftest is loaded by the
# process that prints the summary.

_OUTCOMES: dict[str, str] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "probe: an attack on the live deployment; it passes when refused")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "probe" not in report.keywords:
        return
    if report.when == "call":
        _OUTCOMES[report.nodeid] = "refused" if report.passed else ("got in" if report.failed else "not run")
    elif report.when == "setup" and not report.passed:
        _OUTCOMES[report.nodeid] = "not run"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _OUTCOMES:
        return
    values = list(_OUTCOMES.values())
    line = (f"{len(values)} probes, {values.count('refused')} refused, {values.count('got in')} got in")
    if values.count("not run"):
        line += f", {values.count('not run')} not run (setup failed or skipped)"
    terminalreporter.write_sep("=", "hostile clients")
    terminalreporter.write_line(line)
    for nodeid, outcome in _OUTCOMES.items():
        if outcome == "got in":
            terminalreporter.write_line(f"GOT IN: {nodeid}")
