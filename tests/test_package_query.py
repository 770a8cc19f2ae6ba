"""The package query (roles/package_query): written once, asked once per role and host.

Its command runs against this machine's own dpkg database (Debian 12 or 13, where the
suite runs), so the reading of the answer is checked against dpkg's real output.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import livekit
import pytest
import yaml
from ansible.errors import AnsibleFilterError

REPO = Path(__file__).resolve().parent.parent
ROLES_DIR = REPO / "roles"
INSTALLING_ROLES = ["celery_worker", "firewall", "rabbitmq", "redis"]


def _filters():
    return livekit.role_filters("package_query")


FILTERS = _filters()


def _ask(*packages: str) -> tuple[int, dict[str, str]]:
    argv = FILTERS["package_query_argv"](list(packages))
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return proc.returncode, FILTERS["package_query_installed"](proc.stdout.splitlines())


def _dpkg_version(package: str) -> str:
    return subprocess.run(["dpkg-query", "--show", "--showformat=${Version}", package],
                          capture_output=True, text=True, check=True).stdout


def test_an_installed_package_is_answered_with_its_dpkg_version() -> None:
    rc, installed = _ask("dpkg", "coreutils")
    assert rc == 0
    assert installed == {"dpkg": _dpkg_version("dpkg"), "coreutils": _dpkg_version("coreutils")}


def test_a_package_the_host_never_saw_is_missing_and_the_others_still_answered() -> None:
    rc, installed = _ask("dpkg", "celery-provision-no-such-package")
    assert rc == 1  # the roles' tasks accept rc 0 and 1
    assert list(installed) == ["dpkg"]


def test_a_package_removed_but_not_purged_is_missing() -> None:
    lines = ["nftables\tconfig-files\t1.0.6-2+deb12u2", "redis-server\thalf-installed\t5:7.0.15-1",
             "openssl\tinstalled\t3.0.17-1~deb12u2"]
    assert FILTERS["package_query_installed"](lines) == {"openssl": "3.0.17-1~deb12u2"}


@pytest.mark.parametrize("name", ["--admindir=/tmp", "", None])
def test_a_name_that_is_no_package_name_is_refused(name) -> None:
    with pytest.raises(AnsibleFilterError, match="not a package name"):
        FILTERS["package_query_argv"](["dpkg", name])


def test_no_role_writes_the_query_or_its_reading_itself() -> None:
    """One fact, one place: the dpkg-query argv and the parsing of its answer live in the filter."""
    offenders = []
    for path in sorted(ROLES_DIR.rglob("*")):
        if path.suffix in {".yml", ".j2", ".py"} and "package_query" not in path.parts:
            text = path.read_text()
            if "dpkg-query" in text or "db:Status" in text or re.search(r"\\tinstalled\\t", text):
                offenders.append(str(path.relative_to(REPO)))
    assert not offenders


@pytest.mark.parametrize("role", INSTALLING_ROLES)
def test_every_role_that_installs_packages_depends_on_the_query(role: str) -> None:
    meta = yaml.safe_load((ROLES_DIR / role / "meta" / "main.yml").read_text())
    assert {"role": "package_query"} in meta["dependencies"]
    install = (ROLES_DIR / role / "tasks" / "install.yml").read_text()
    assert "| package_query_argv" in install
