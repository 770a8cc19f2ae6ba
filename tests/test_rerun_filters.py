"""A re-run that only looks: the roles read the host's state once and compare it on the
controller, then call the modules only for what differs. These comparisons must never call
something equal that the modules would change (that would drop a check); the live proof
is tests/test_deploy_local.py (a second run changes nothing) and the security suites.
Static checks: no server runs here."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _load(role: str, name: str):
    spec = importlib.util.spec_from_file_location(f"{role}_{name}", REPO / "roles" / role / "filter_plugins" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rmq = _load("rabbitmq", "rabbitmq_state")
cw = _load("celery_worker", "celery_worker")

PASSWORD = "correct horse battery staple"
PERMS = [{"vhost": "celery", "configure_priv": "^$", "write_priv": "^(celery)$", "read_priv": "^$"}]
TOPIC = [{"vhost": "celery", "exchange": "celery.tasks", "write_priv": "^(celery)$", "read_priv": "^$"}]


def _hash(password: str, salt: bytes = b"\x01\x02\x03\x04") -> str:
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def _user(**over):
    return {"name": "client-1", "password": PASSWORD, "tags": [], "permissions": PERMS,
            "topic_permissions": TOPIC, "state": "present", **over}


ADMIN = {"name": "admin", "password": "admin password 1234", "tags": ["administrator"],
         "permissions": [{"vhost": "celery", "configure_priv": ".*", "write_priv": ".*", "read_priv": ".*"}]}


def _state(users=None, perms=None, topics=None, vhosts=("/", "celery"), tracing=None) -> str:
    users = users if users is not None else [
        {"name": "client-1", "password_hash": _hash(PASSWORD), "hashing_algorithm": "rabbit_password_hashing_sha256",
         "tags": []},
        {"name": "admin", "password_hash": _hash(ADMIN["password"]),
         "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["administrator"]}]
    perms = perms if perms is not None else [
        {"user": "client-1", "vhost": "celery", "configure": "^$", "write": "^(celery)$", "read": "^$"},
        {"user": "admin", "vhost": "celery", "configure": ".*", "write": ".*", "read": ".*"}]
    topics = topics if topics is not None else [
        {"user": "client-1", "vhost": "celery", "exchange": "celery.tasks", "write": "^(celery)$", "read": "^$"}]
    defs = {"users": users, "permissions": perms, "topic_permissions": topics,
            "vhosts": [{"name": v} for v in vhosts]}
    # As `rabbitmqctl eval` prints it: the JSON, then the return value `ok`.
    return json.dumps({"definitions": defs, "tracing": tracing or {v: False for v in vhosts}}) + "ok\n"


def _pending(text, users=None):
    return rmq.rabbitmq_pending(text, ["celery"], users if users is not None else [_user()], ADMIN)


def test_a_node_in_the_wanted_state_needs_no_module_call() -> None:
    assert _pending(_state()) == {"known": True, "vhosts": [], "guest": False, "admin": False, "users": []}


def test_a_changed_password_is_found_from_the_stored_salted_hash() -> None:
    assert _pending(_state(), [_user(password="another password 123")])["users"] == ["client-1"]


def test_a_password_hashed_with_an_unknown_scheme_goes_to_the_module() -> None:
    users = [{"name": "client-1", "password_hash": _hash(PASSWORD), "hashing_algorithm": "rabbit_password_hashing_x",
              "tags": []}]
    assert _pending(_state(users=users))["users"] == ["client-1"]


def test_a_user_without_a_password_is_not_taken_for_one_with() -> None:
    users = [{"name": "client-1", "password_hash": "", "hashing_algorithm": "rabbit_password_hashing_sha256",
              "tags": []}]
    assert _pending(_state(users=users))["users"] == ["client-1"]


@pytest.mark.parametrize("change", [
    {"tags": ["administrator"]},
    {"permissions": [dict(PERMS[0], write_priv=".*")]},
    {"topic_permissions": []},
    {"topic_permissions": [dict(TOPIC[0], read_priv="^(celery)$")]},
], ids=["tags", "permissions", "topic-permissions-removed", "topic-permissions-widened"])
def test_every_difference_the_module_would_fix_is_found(change) -> None:
    assert _pending(_state(), [_user(**change)])["users"] == ["client-1"]


def test_a_permission_on_another_vhost_is_found() -> None:
    perms = [{"user": "client-1", "vhost": "celery", "configure": "^$", "write": "^(celery)$", "read": "^$"},
             {"user": "client-1", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"},
             {"user": "admin", "vhost": "celery", "configure": ".*", "write": ".*", "read": ".*"}]
    assert _pending(_state(perms=perms))["users"] == ["client-1"]


def test_a_revoked_user_that_still_exists_is_deleted_and_a_gone_one_left_alone() -> None:
    revoked = _user(state="absent", password=None, permissions=[], topic_permissions=[])
    assert _pending(_state(), [revoked])["users"] == ["client-1"]
    assert _pending(_state(users=[]), [revoked])["users"] == []


def test_guest_a_missing_vhost_and_tracing_are_found() -> None:
    users = json.loads(_state()[:-3])["definitions"]["users"] + [{"name": "guest", "password_hash": _hash("guest"),
                                                                  "tags": ["administrator"]}]
    assert _pending(_state(users=users))["guest"] is True
    assert _pending(_state(vhosts=("/",)))["vhosts"] == ["celery"]
    assert _pending(_state(tracing={"celery": True}))["vhosts"] == ["celery"]


def test_an_admin_with_a_changed_password_is_found() -> None:
    assert rmq.rabbitmq_pending(_state(), ["celery"], [_user()], dict(ADMIN, password="x" * 20))["admin"] is True


@pytest.mark.parametrize("text", ["", "Error: unable to perform an operation on node", "{not json", None])
def test_an_unreadable_state_sends_everything_to_the_modules(text) -> None:
    assert _pending(text) == {"known": False, "vhosts": ["celery"], "guest": True, "admin": True,
                              "users": ["client-1"]}


@pytest.mark.parametrize("text, names", [
    ("[rabbitmq_management,rabbitmq_auth_mechanism_ssl].\n", ["rabbitmq_auth_mechanism_ssl", "rabbitmq_management"]),
    ("[].", []),
    ("[ rabbitmq_management ,\n  rabbitmq_shovel ].", ["rabbitmq_management", "rabbitmq_shovel"]),
    ("garbage", None),
    ("[{rabbitmq_management, x}].", None),
])
def test_the_enabled_plugins_file_is_read_or_declared_unreadable(text, names) -> None:
    assert rmq.rabbitmq_enabled_plugins(text) == names


# --- celery_worker: one find, compared on the controller --------------------------------


def _found(path: Path, **over):
    st = path.stat()
    entry = {"path": str(path), "isdir": path.is_dir(), "islnk": path.is_symlink(), "mode": "%04o" % (st.st_mode & 0o7777),
             "pw_name": "root", "gr_name": "celery"}
    if path.is_file():
        entry["checksum"] = hashlib.sha1(path.read_bytes()).hexdigest()
    return {**entry, **over}


def test_placed_files_that_match_are_left_alone_and_any_difference_is_copied(tmp_path: Path) -> None:
    src = tmp_path / "src.pem"
    src.write_text("CERT\n")
    dest = tmp_path / "dest.pem"
    dest.write_text("CERT\n")
    os.chmod(dest, 0o644)
    files = cw.celery_worker_at([str(src)], str(tmp_path / "d"), "0644")
    files[0]["path"] = str(dest)
    conf = {"path": str(tmp_path / "c.py"), "content": "x = 1\n", "mode": "0640", "kind": "secret"}
    (tmp_path / "c.py").write_text("x = 1\n")
    os.chmod(tmp_path / "c.py", 0o640)
    found = [_found(dest), _found(tmp_path / "c.py"), _found(tmp_path)]
    dirs = {str(tmp_path): "%04o" % (tmp_path.stat().st_mode & 0o7777)}
    pending = cw.celery_worker_pending
    assert pending(found, files + [conf], dirs, "root", "celery") == []
    assert pending(found, files + [dict(conf, content="x = 2\n")], dirs, "root", "celery") == [conf["path"]]
    assert pending([_found(dest, mode="0664")] + found[1:], files, dirs, "root", "celery") == [str(dest)]
    assert pending([_found(dest, gr_name="root")] + found[1:], files, dirs, "root", "celery") == [str(dest)]
    assert pending(found[1:], files, dirs, "root", "celery") == [str(dest)]
    assert pending(found[:2], files, dirs, "root", "celery") == [str(tmp_path)]
    src.write_text("NEW CERT\n")
    assert pending(found, files, dirs, "root", "celery") == [str(dest)]


# --- celery_worker: the virtualenv is checked before pip ---------------------------------

CHECK = REPO / "roles" / "celery_worker" / "files" / "requirements_met.py"


def _met(*reqs: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHECK.read_text(), *reqs], capture_output=True, text=True)


def test_met_requirements_skip_pip() -> None:
    assert _met("celery[redis]", "cryptography", "pyyaml>=5").returncode == 0


@pytest.mark.parametrize("req", ["celery==0.0.1", "no-such-distribution-xyz", "celery[no-such-extra-dep]==99"])
def test_an_unmet_requirement_sends_the_run_to_pip(req: str) -> None:
    proc = _met("cryptography", req)
    assert proc.returncode == 1 and proc.stdout.strip(), proc.stdout + proc.stderr
