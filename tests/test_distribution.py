"""The distributions work away from the checkout: the wheel, the sdist and the collection.

Fast tests check the packaging configuration against the tree; the ``slow`` ones build
the wheel, install it into a fresh virtualenv under tmp and drive the CLI from a
directory outside the checkout against a copy of ``inventories/local``, then build and
install the collection and check a user's own playbooks that call it by FQCN.
Nothing here starts a service: the only play run is the controller's (CLI on localhost).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import distbuild
import pytest
import yaml
from distbuild import FQ, REPO, VENV_BIN, build_collection_module, clean_env, run

PACKAGE = REPO / "celery_provision"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())

# One xdist worker for the file: the module fixtures (a wheel venv, an installed
# collection) are built once, not once per worker (scripts/test.sh: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("distribution")


def _version() -> str:
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "__version__":
            return str(ast.literal_eval(node.value))
    raise AssertionError("no __version__")


# ---------------------------------------------------------------------------- fast


def test_every_module_directory_is_a_listed_package() -> None:
    """pyproject lists the packages (a mapped data package forbids find): none forgotten."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in PACKAGE.rglob("*.py")
               if "__pycache__" not in p.parts}
    assert on_disk <= listed, f"not in [tool.setuptools] packages: {sorted(on_disk - listed)}"


def test_the_model_reads_only_roles_whose_defaults_ship_in_the_wheel() -> None:
    from celery_provision import model

    mapped = PYPROJECT["tool"]["setuptools"]["package-dir"]["celery_provision.roles"]
    assert mapped == "roles"
    assert PYPROJECT["tool"]["setuptools"]["package-data"]["celery_provision.roles"] == ["*/defaults/main.yml"]
    for role in model._ROLE_VARS:
        assert (REPO / mapped / role / "defaults" / "main.yml").is_file()


def test_roles_dir_prefers_env_then_checkout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from celery_provision import model

    monkeypatch.setenv("CELERY_PROVISION_ROLES_DIR", str(tmp_path))
    assert model.roles_dir() == tmp_path
    monkeypatch.delenv("CELERY_PROVISION_ROLES_DIR")
    assert model.roles_dir() == REPO / "roles"


def test_runtime_dependencies_do_not_cap_below_the_newest_releases() -> None:
    deps = {re.split(r"[<>=\[ ;]", d, maxsplit=1)[0]: d for d in PYPROJECT["project"]["dependencies"]}
    assert "<2.22" in deps["ansible-core"]
    assert "<51" in deps["cryptography"]
    assert "sslyze" not in deps  # its cryptography cap belongs to the dev extra only


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    from celery_provision import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"celery-provision {_version()}"


def test_collection_tree_qualifies_every_filter_role_and_playbook(tmp_path: Path) -> None:
    bc = build_collection_module()
    coll = bc.assemble(tmp_path)
    galaxy = yaml.safe_load((coll / "galaxy.yml").read_text())
    assert (galaxy["namespace"], galaxy["name"], galaxy["version"]) == ("celery_provision", "secure", _version())
    assert yaml.safe_load((coll / "meta" / "runtime.yml").read_text())["requires_ansible"].startswith(">=")
    assert not list((coll / "roles").rglob("filter_plugins")), "roles in a collection carry no plugins"
    filters = [n for p in (coll / "plugins" / "filter").glob("*.py") for n in bc.filter_names(p)]
    assert filters
    roles = [p.name for p in (coll / "roles").iterdir()]
    for path in [*(coll / "roles").rglob("*.yml"), *(coll / "roles").rglob("*.j2"), *(coll / "playbooks").glob("*.yml")]:
        text = path.read_text()
        for name in filters:
            assert not re.search(rf"\|\s*{name}\b", text), f"{path}: unqualified filter {name}"
        assert not re.search(rf"^\s*-?\s*role:\s*({'|'.join(roles)})\s*$", text, re.M), f"{path}: short role name"
        assert not re.search(r"import_playbook:\s*\S+\.ya?ml", text), f"{path}: import by file name"
    assert (coll / "changelogs" / "changelog.yaml").is_file()
    for role in roles:
        assert (coll / "roles" / role / "README.md").is_file()


# ---------------------------------------------------------------------------- slow


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the built wheel (and its dependencies) installed; its bin/."""
    return distbuild.wheel_venv(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project directory outside the checkout with its own copy of inventories/local."""
    project = tmp_path_factory.mktemp("project")
    shutil.copytree(REPO / "inventories" / "local", project / "inventory")
    return project


@pytest.mark.slow
def test_wheel_cli_works_outside_the_checkout(wheel_venv: Path, outside: Path) -> None:
    cli = wheel_venv / "celery-provision"
    env = clean_env(PATH=f"{wheel_venv}{os.pathsep}{os.environ.get('PATH', '')}")
    inv = outside / "inventory"
    cwd = outside

    assert run([cli, "--version"], cwd, env).stdout.strip() == f"celery-provision {_version()}"
    where = run([wheel_venv / "python", "-c", "import celery_provision.model as m; print(m.roles_dir())"], cwd, env)
    assert "site-packages" in where.stdout and str(REPO) not in where.stdout
    assert "issued" in run([cli, "certs", "issue", "-i", inv], cwd, env).stdout
    assert "nothing to do" in run([cli, "certs", "issue", "-i", inv], cwd, env).stdout
    assert "credentials:" in run([cli, "credentials", "-i", inv], cwd, env).stdout
    rendered = run([cli, "render", "-i", inv], cwd, env).stdout
    assert "render: 3 rendered" in rendered  # worker-1, client-1, ops-1
    config = outside / ".celery-provision" / "inventory" / "configs" / "worker-1" / "celeryconfig.py"
    assert config.is_file()
    model = json.loads(run([cli, "export", "-i", inv], cwd, env).stdout)
    canary = Path(model["hosts"]["worker-1"]["celery"]["canary_src"])
    assert canary.is_file() and "site-packages" in str(canary)
    assert model["hosts"]["rabbitmq-1"]["rabbitmq"]["admin_user"]
    audit = run([cli, "audit", "--json", config], cwd, env)
    assert not [f for f in json.loads(audit.stdout) if f["severity"] in ("high", "critical")]


@pytest.fixture(scope="module")
def installed_collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built collection tarball installed into a fresh collections path; that path."""
    return distbuild.installed_collection(tmp_path_factory.mktemp("collection"))


USER_PLAYBOOKS = {
    "site.yml": """\
---
- name: The whole deployment from the collection
  ansible.builtin.import_playbook: celery_provision.secure.site
""",
    "brokers.yml": """\
---
- name: Controller
  ansible.builtin.import_playbook: celery_provision.secure.controller

- name: Redis through the role
  hosts: redis
  become: true
  gather_facts: true
  tasks:
    - name: Redis
      ansible.builtin.import_role:
        name: celery_provision.secure.redis

- name: TLS policy through roles
  hosts: rabbitmq
  gather_facts: false
  roles:
    - celery_provision.secure.tls_policy
""",
    "filters.yml": """\
---
- name: The collection's filters resolve by FQCN
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Spell the policy
      ansible.builtin.debug:
        msg: "{{ ['TLSv1.2', 'TLSv1.3'] | celery_provision.secure.tls_policy_erlang_versions }}"
""",
}


@pytest.mark.slow
def test_user_playbooks_call_the_collection_by_fqcn(installed_collection: Path, outside: Path,
                                                      tmp_path: Path) -> None:
    project = tmp_path / "playbooks"
    shutil.copytree(outside / "inventory", project / "inventory")
    for name, text in USER_PLAYBOOKS.items():
        (project / name).write_text(text)
    env = clean_env(ANSIBLE_COLLECTIONS_PATH=str(installed_collection), ANSIBLE_ROLES_PATH=str(tmp_path / "none"),
                     PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    playbook = shutil.which("ansible-playbook", path=str(VENV_BIN)) or "ansible-playbook"
    for name in ("site.yml", "brokers.yml"):
        run([playbook, "--syntax-check", "-i", "inventory", name], project, env)
    for book in ("site", "controller", "redis", "rabbitmq", "firewall", "celery_workers"):
        run([playbook, "--syntax-check", "-i", "inventory", f"{FQ}.{book}"], project, env)
    out = run([playbook, "-i", "localhost,", "filters.yml"], project, env).stdout
    assert "tlsv1.2" in out


@pytest.mark.slow
def test_collection_controller_play_uses_the_installed_cli(wheel_venv: Path, installed_collection: Path,
                                                           tmp_path: Path) -> None:
    """The collection's controller play, run by the wheel venv's ansible-playbook, issues the
    PKI and reads the model beside the user's inventory (CLI on localhost only)."""
    project = tmp_path / "project"
    shutil.copytree(REPO / "inventories" / "local", project / "inventory")
    env = clean_env(ANSIBLE_COLLECTIONS_PATH=str(installed_collection),
                     PATH=f"{wheel_venv}{os.pathsep}{os.environ.get('PATH', '')}")
    out = run([wheel_venv / "ansible-playbook", f"{FQ}.controller", "-i", "inventory"], project, env).stdout
    assert re.search(r"localhost\s+: ok=3 +changed=1 .*failed=0 +skipped=2", out), out[-2000:]  # prepare, its handler, set_fact
    assert (project / ".celery-provision" / "inventory" / "pki").is_dir()


# ---------------------------------------------------------------------------- quality gates

def _checkout_cache(name: str) -> Path:
    """A cache directory kept between runs, outside the checkout, one per checkout (two
    worktrees running the suite at once do not share it)."""
    return Path(tempfile.gettempdir()) / f"celery-provision-{name}-{hashlib.sha256(bytes(REPO)).hexdigest()[:12]}"


def _dev_tool(name: str) -> str:
    path = shutil.which(name, path=str(VENV_BIN))
    if not path:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return path


def test_ruff_passes_on_the_package() -> None:
    proc = subprocess.run([_dev_tool("ruff"), "check", "--no-cache", "celery_provision", "scripts",
                           "tests/test_distribution.py", "tests/distbuild.py", "tests/test_collection_live.py"],
                          cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict_reports_no_error_on_the_package() -> None:
    """``mypy --strict`` (pyproject [tool.mypy]) finds nothing. Its cache lives outside the
    checkout, one per checkout: a warm run takes under a second, a cold one about ten."""
    cache = _checkout_cache("mypy")
    proc = subprocess.run([_dev_tool("mypy"), "--cache-dir", cache], cwd=REPO, capture_output=True, text=True,
                          check=False, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


#: The ansible-test sanity tests that need a virtualenv of their own. ansible-test bootstraps
#: its pip with a script from ci-files.testing.ansible.com, a host this machine cannot reach
#: (PyPI and Debian only): `--requirements` does not help, the bootstrap is what fails.
#: The fast test runs every other test of `--list-tests` (offline; pslint and shellcheck
#: have no targets: no PowerShell or shell scripts in the collection); the slow one runs
#: these with a stand-in for that script (`_GET_PIP`), their requirements from PyPI.
SANITY_NEEDS_A_BOOTSTRAPPED_VENV = ("ansible-doc", "changelog", "import", "pep8", "pylint", "runtime-metadata",
                                    "validate-modules", "yamllint")

#: Stand-in for ansible-test's pip bootstrap script (it runs as ``python SCRIPT pip==X
#: --no-setuptools --no-wheel`` in a new, pip-less venv): this venv's pip installs the
#: requested pip into it, from PyPI. ansible-test then installs each test's pinned
#: requirements with that pip, as it would with the original script.
_GET_PIP = """\
import subprocess, sys
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel", "--disable-pip-version-check")]
sys.exit(subprocess.call([{python!r}, "-m", "pip", "--python", sys.executable, "install", "-q", *args]))
"""


def _ansible_test_sanity(coll: Path, *selection: str, env: dict[str, str] | None = None
                         ) -> tuple[set[str], set[str]]:
    """Run ``ansible-test sanity --local`` with this Python on the collection at COLL;
    (the tests listed, the tests that ran). Fails the test on any finding."""
    ansible_test = _dev_tool("ansible-test")
    env = env or clean_env(PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    listed = set(subprocess.run([ansible_test, "sanity", "--list-tests"], cwd=coll, env=env, capture_output=True,
                                text=True, check=True).stdout.split())
    assert set(SANITY_NEEDS_A_BOOTSTRAPPED_VENV) <= listed, "a test named here no longer exists: drop it"
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    proc = subprocess.run([ansible_test, "sanity", "--local", "--python", python, "--color", "no", *selection],
                          cwd=coll, env=env, capture_output=True, text=True, check=False, timeout=1200)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return listed, set(re.findall(r'Running sanity test "([^"]+)"', proc.stdout + proc.stderr))


def test_ansible_test_sanity_passes_offline_on_the_built_collection(tmp_path: Path) -> None:
    """The collection in the ``ansible_collections/NS/NAME`` layout ansible-test needs: every
    sanity test that needs no virtualenv of its own passes."""
    coll = build_collection_module().assemble(tmp_path)
    listed, ran = _ansible_test_sanity(coll, *(a for n in SANITY_NEEDS_A_BOOTSTRAPPED_VENV for a in ("--skip-test", n)))
    assert ran == listed - set(SANITY_NEEDS_A_BOOTSTRAPPED_VENV), ran


@pytest.mark.slow
def test_ansible_test_sanity_passes_in_its_own_virtualenvs_on_the_built_collection(tmp_path: Path) -> None:
    """pylint, pep8, validate-modules, import, ansible-doc, yamllint, changelog and
    runtime-metadata, each in the virtualenv ansible-test makes for it. Their home (venvs,
    the stand-in) is `_checkout_cache`, not the user's ~/.ansible: kept between
    runs, a warm run takes about half a minute, a cold one a minute and a half."""
    coll = build_collection_module().assemble(tmp_path)
    import ansible_test

    source = (Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py").read_text()
    pip = re.search(r"default_packages = dict\(\s*pip='([\d.]+)'", source)
    assert pip, "ansible-test no longer names its pip version where this test reads it"
    home = _checkout_cache("ansible-test-home")
    cache = home / ".ansible" / "test" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / f"get_pip_{pip.group(1).replace('.', '_')}.py").write_text(_GET_PIP.format(python=sys.executable))
    env = clean_env(HOME=str(home), PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    _, ran = _ansible_test_sanity(coll, *(a for n in SANITY_NEEDS_A_BOOTSTRAPPED_VENV for a in ("--test", n)), env=env)
    assert ran == set(SANITY_NEEDS_A_BOOTSTRAPPED_VENV), ran


@pytest.mark.slow
def test_ansible_lint_production_passes_on_the_built_collection(tmp_path: Path) -> None:
    coll = build_collection_module().assemble(tmp_path)
    proc = subprocess.run([_dev_tool("ansible-lint"), "--profile", "production", "--offline"],
                          cwd=coll, capture_output=True, text=True, check=False, timeout=900,
                          env=clean_env(ANSIBLE_COLLECTIONS_PATH=str(tmp_path)))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
