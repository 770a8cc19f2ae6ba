"""Secrets and exposure on the deployed host: the CA key never leaves the controller, every
deployed key and password file is readable by its service only, no secret shows in Ansible's
output or in the services' logs, and RabbitMQ's CLI tools listen on loopback only while they
run. (These tests run last in the suite, see conftest: the logs they read then include every
probe's traffic.)"""

from __future__ import annotations

import grp
import pwd
import re
import stat
from pathlib import Path

import pytest

import cli_listeners
import secprobe
from livedeploy import platform_var, role_default

# The trees the roles write, from their defaults: the brokers' configuration directories (the
# parents of their TLS directories), every worker's (the parent of celery_worker_config_dir,
# one per host) and the shared install tree (the parent of the worker venv).
RABBITMQ_TLS_DIR = Path(role_default("rabbitmq", "rabbitmq_tls_dir"))
REDIS_USER, REDIS_GROUP = platform_var("redis", "_redis_user"), platform_var("redis", "_redis_group")
# The role's _redis_tls_dir (vars/main.yml): the inventory's, else under the flavor's directory.
REDIS_TLS_DIR = Path(role_default("redis", "redis_tls_dir") or platform_var("redis", "_redis_conf_dir") + "/tls")
WORKER_CONFIG_TREE = str(Path(role_default("celery_worker", "celery_worker_config_dir", "_")).parent)
WORKER_VENV = str(role_default("celery_worker", "celery_worker_venv"))
WORKER_GROUP = str(role_default("celery_worker", "celery_worker_group"))
DEPLOYED_TREES = (str(RABBITMQ_TLS_DIR.parent), str(REDIS_TLS_DIR.parent), WORKER_CONFIG_TREE,
                  str(Path(WORKER_VENV).parent))
# Third-party code the roles install (its test vectors and docs hold PEM markers), not deployed secrets.
NOT_DEPLOYED_SECRETS = (WORKER_VENV.rstrip("/") + "/",)
# /var/log/rabbitmq and the cookie's directory (the rabbitmq user's home) are the package's own.
LOG_TREES = ("/var/log/rabbitmq", str(Path(platform_var("redis", "_redis_log_file")).parent),
             str(role_default("celery_worker", "celery_worker_log_dir")))
ERLANG_COOKIE = "/var/lib/rabbitmq/.erlang.cookie"
SECRET_NAMES = re.compile(r"(\.key|\.password|\.acl|\.erlang\.cookie)$")
# Owner and group a secret-bearing file may have, per tree: the service reads it through its group.
OWNERS = {
    str(RABBITMQ_TLS_DIR.parent): ({"root", "rabbitmq"}, {"rabbitmq"}),
    str(REDIS_TLS_DIR.parent): ({"root", REDIS_USER}, {REDIS_GROUP}),
    WORKER_CONFIG_TREE: ({"root"}, {WORKER_GROUP}),
    str(Path(ERLANG_COOKIE).parent): ({"rabbitmq"}, {"rabbitmq"}),
}
SECRET_MODES = {0o400, 0o440, 0o600, 0o640}


def files_under(*trees: str) -> list[Path]:
    out = []
    for tree in trees:
        root = Path(tree)
        if root.exists():
            out.extend(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()
                       and not str(p).startswith(NOT_DEPLOYED_SECRETS))
    return out


def read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return ""


def expected_files(live) -> dict[str, tuple[str, str, int]]:
    """The key and password files the roles deploy, with the owner, group and mode chosen."""
    out = {
        str(RABBITMQ_TLS_DIR / "server.key"): ("root", "rabbitmq", 0o640),
        str(REDIS_TLS_DIR / "server.key"): ("root", REDIS_GROUP, 0o640),
        str(platform_var("redis", "_redis_aclfile_path")): (REDIS_USER, REDIS_GROUP, 0o640),
        ERLANG_COOKIE: ("rabbitmq", "rabbitmq", 0o400),
    }
    for app in live.d.apps:
        files = live.d.app_files(app)  # on the host: the keys and one password file per service
        passwords = [files.secrets_dir / name for _, name in files.secrets]
        for path in (files.client_key, files.signing_key, *passwords):
            out[str(path)] = ("root", WORKER_GROUP, 0o640)
    return out


def owner_of(path: Path) -> tuple[str, str, int]:
    st = path.stat()
    return pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name, stat.S_IMODE(st.st_mode)


@pytest.mark.probe
def test_ca_private_key_is_in_no_deployed_file(live) -> None:
    keys = [p for p in (live.layout.root_key, live.layout.intermediate_key) if p.exists()]
    bodies = {str(p): secprobe.key_body(p.read_text())[:64] for p in keys}
    found = [f"{path} holds {name}" for path in files_under(*DEPLOYED_TREES)
             for name, body in bodies.items() if body in read(path)]
    assert not found, found


@pytest.mark.probe
def test_deployed_key_and_password_files_have_the_chosen_owner_and_mode(live) -> None:
    wrong = {}
    for name, want in expected_files(live).items():
        p = Path(name)
        got = owner_of(p) if p.exists() else None
        if got != want:
            wrong[name] = f"{got and (got[0], got[1], oct(got[2]))} != {(want[0], want[1], oct(want[2]))}"
    assert not wrong, wrong


@pytest.mark.probe
def test_every_secret_bearing_deployed_file_is_readable_by_its_service_only(live, secrets) -> None:
    """Any deployed file holding a private key or a password (found by content, not by
    name), wherever the roles put it, is 0600/0640/0400/0440 and owned per its tree."""
    wrong = []
    checked = 0
    cookie = [Path(ERLANG_COOKIE)] if Path(ERLANG_COOKIE).exists() else []
    for path in files_under(*DEPLOYED_TREES) + cookie:
        text = read(path)
        holds = (SECRET_NAMES.search(path.name) or "PRIVATE KEY-----" in text
                 or any(v in text for k, v in secrets.items() if k.startswith("password")))
        if not holds:
            continue
        checked += 1
        user, group, mode = owner_of(path)
        users, groups = next((v for tree, v in OWNERS.items() if str(path).startswith(tree + "/")),
                             ({"root"}, {"root"}))
        if mode not in SECRET_MODES or user not in users or group not in groups:
            wrong.append(f"{path}: {user}:{group} {oct(mode)}")
    assert checked >= len(expected_files(live)) - 1, f"only {checked} secret-bearing files found"
    assert not wrong, wrong


@pytest.mark.probe
def test_no_secret_in_the_output_of_ansible_playbook_verbose(live, rerun, secrets) -> None:
    assert rerun.returncode == 0, rerun.output[-3000:]
    leaked = [name for name, value in secrets.items() if secprobe.contains_secret(rerun.output, value)]
    assert not leaked, f"ansible-playbook -v printed: {leaked} (log: {live.tmp / 'site-rerun.log'})"


@pytest.mark.probe
def test_no_secret_in_the_log_of_the_main_deploy_command(live, secrets) -> None:
    match = re.search(r"\(log: (\S+)\)", live.handle.output)
    texts = {"deploy-local.sh output": live.handle.output}
    if match and Path(match.group(1)).exists():
        texts[match.group(1)] = read(Path(match.group(1)))
    leaked = [f"{name} in {where}" for where, text in texts.items()
              for name, value in secrets.items() if secprobe.contains_secret(text, value)]
    assert not leaked, leaked


@pytest.mark.probe
def test_no_secret_in_any_service_log(live, secrets) -> None:
    logs = files_under(*LOG_TREES)
    assert logs, f"no logs under {LOG_TREES}"
    leaked = [f"{name} in {path}" for path in logs for name, value in secrets.items()
              if secprobe.contains_secret(read(path), value)]
    assert not leaked, leaked


# A command of each CLI tool that keeps it running (and so its Erlang node listening) for a
# few seconds while it talks to the deployment's node; rabbitmq-plugins has none, and starts
# its node through the same script (rabbitmq-env's run_escript) as these two.
CLI_COMMANDS = {
    "rabbitmqctl": ("eval", "timer:sleep(8000)."),
    "rabbitmq-diagnostics": ("log_tail_stream", "--duration", "8"),
}


@pytest.mark.probe
@pytest.mark.parametrize("tool", sorted(CLI_COMMANDS))
def test_a_running_rabbitmq_cli_tool_listens_on_loopback_only(rabbitmq_cli_argv, tool) -> None:
    """While it runs, a CLI tool's own Erlang node listens for distribution (35672-35682 by
    default, on every interface unless configured): every socket of its process tree is on
    loopback. (And it did listen, and the command worked: the test could see an exposure.)"""
    seen, rc, output = cli_listeners.listeners(rabbitmq_cli_argv(tool, *CLI_COMMANDS[tool]))
    exposed = [str(s) for s in seen if not s.loopback]
    assert not exposed, f"{tool} listened on {exposed}"
    assert rc == 0, f"{tool} exited {rc}: {output[-1000:]}"
    assert seen, f"{tool} listened on nothing while it ran: {output[-1000:]}"
