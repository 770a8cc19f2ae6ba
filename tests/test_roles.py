"""The roles' structure: one fact, one place.

- Every role default is written once, in ``defaults/main.yml``, and typed and
  documented in ``meta/argument_specs.yml`` (which carries no ``default:`` of
  its own to drift from it).
- The TLS policy is written once, in ``roles/tls_policy/defaults/main.yml``; the
  broker roles read it, and its filters spell it for Erlang and OpenSSL.
- OS differences are data: ``vars/<os_family>.yml`` (+ release overrides), loaded
  by one task file that is the same in every role.
Static checks only: nothing here runs Ansible against a host.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import livekit
import pytest
import yaml
from ansible.errors import AnsibleFilterError

REPO = Path(__file__).resolve().parent.parent
ROLES_DIR = REPO / "roles"
ROLES = sorted(p.name for p in ROLES_DIR.iterdir() if (p / "meta" / "main.yml").is_file())
# Roles with tasks (tls_policy is data only).
TASK_ROLES = [r for r in ROLES if (ROLES_DIR / r / "tasks" / "main.yml").is_file()]
POLICY_FILE = ROLES_DIR / "tls_policy" / "defaults" / "main.yml"
POLICY = yaml.safe_load(POLICY_FILE.read_text())

# argument_specs types -> the Python type of a literal YAML value.
_TYPES: dict[str, type | tuple[type, ...]] = {
    "str": str, "path": str, "int": int, "bool": bool, "list": list, "dict": dict, "raw": object,
}
# The role defaults the Python model and the test suites read with yaml.safe_load.
_READ_BY_PYTHON = {
    "rabbitmq": ["rabbitmq_tls_port", "rabbitmq_admin_user", "rabbitmq_nodename", "rabbitmq_cluster"],
    "redis": ["redis_tls_port", "redis_admin_user"],
    "celery_worker": ["celery_worker_config_dir", "celery_worker_user", "celery_worker_state_dir",
                      "celery_worker_run_dir", "celery_worker_log_dir"],
}
# Role variables that inventories, Molecule scenarios and tests set: they must stay public.
_SET_ELSEWHERE = {
    "rabbitmq": ["rabbitmq_apt_update_cache"],
    "redis": ["redis_apt_update_cache"],
    "celery_worker": ["celery_worker_apt_update_cache", "celery_worker_pip_extra_args"],
    "firewall": ["firewall_table", "firewall_ruleset_path", "firewall_service_name", "firewall_systemd_unit_dir"],
}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _defaults(role: str) -> dict[str, Any]:
    return _yaml(ROLES_DIR / role / "defaults" / "main.yml") or {}


def _options(role: str) -> dict[str, dict[str, Any]]:
    spec = _yaml(ROLES_DIR / role / "meta" / "argument_specs.yml")
    return spec["argument_specs"]["main"].get("options") or {}


def _templated(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


def _filters():
    return livekit.role_filters("tls_policy")


def _text_files(*roots: Path) -> list[Path]:
    out = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix not in {".pyc"}:
                out.append(path)
    return out


# --- defaults and argument_specs -------------------------------------------------------


def test_every_role_is_found() -> None:
    assert {"rabbitmq", "redis", "celery_worker", "firewall", "tls_policy"} <= set(ROLES)


@pytest.mark.parametrize("role", ROLES)
def test_every_public_default_is_typed_and_documented(role: str) -> None:
    options = _options(role)
    public = [name for name in _defaults(role) if not name.startswith("_")]
    missing = [name for name in public if name not in options]
    assert not missing, f"{role}: defaults without an argument_spec option: {missing}"
    untyped = [name for name in public if not options[name].get("type") or not options[name].get("description")]
    assert not untyped, f"{role}: options without type or description: {untyped}"


@pytest.mark.parametrize("role", ROLES)
def test_every_option_is_required_or_has_a_default(role: str) -> None:
    defaults = _defaults(role)
    orphans = [name for name, opt in _options(role).items()
               if not opt.get("required") and name not in defaults]
    assert not orphans, f"{role}: options neither required nor defined in defaults/main.yml: {orphans}"


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_carry_no_default_of_their_own(role: str) -> None:
    """ansible-core reads defaults from defaults/main.yml; a copy in the spec only drifts."""
    copies = [name for name, opt in _options(role).items() if "default" in opt]
    assert not copies, f"{role}: argument_specs repeat the default of {copies}: keep it in defaults/main.yml only"


@pytest.mark.parametrize("role", ROLES)
def test_literal_defaults_match_their_declared_type(role: str) -> None:
    options = _options(role)
    wrong = []
    for name, value in _defaults(role).items():
        opt = options.get(name)
        if opt is None or _templated(value):
            continue  # templated defaults are checked by the role's own argument validation
        kind = opt.get("type", "str")
        if value is None:
            if opt.get("required"):
                wrong.append(f"{name}: null but required")
            continue
        if not isinstance(value, _TYPES[kind]) or (kind == "int" and isinstance(value, bool)):
            wrong.append(f"{name}: {value!r} is not {kind}")
            continue
        elements = opt.get("elements")
        if kind == "list" and elements and not all(isinstance(v, _TYPES[elements]) for v in value):
            wrong.append(f"{name}: elements of {value!r} are not all {elements}")
        if "choices" in opt and kind != "list" and value not in opt["choices"]:
            wrong.append(f"{name}: {value!r} not in {opt['choices']}")
    assert not wrong, f"{role}: {wrong}"


@pytest.mark.parametrize("role", sorted(_READ_BY_PYTHON))
def test_defaults_read_by_python_are_plain_literals(role: str) -> None:
    defaults = _defaults(role)
    for name in _READ_BY_PYTHON[role]:
        assert name in defaults, f"{role}: {name} must stay in defaults/main.yml (Python reads it)"
        # A number, a string (the model templates it per host) or a switch (rabbitmq_cluster).
        assert isinstance(defaults[name], (int, str, bool)), name


@pytest.mark.parametrize("role", sorted(_SET_ELSEWHERE))
def test_variables_set_elsewhere_stay_public(role: str) -> None:
    missing = [name for name in _SET_ELSEWHERE[role] if name not in _defaults(role) or name not in _options(role)]
    assert not missing, f"{role}: {missing} are set by inventories, Molecule or tests"


# --- the TLS policy ---------------------------------------------------------------------


def test_policy_is_plain_literal_data() -> None:
    assert set(POLICY) == {"tls_policy_versions", "tls_policy_tls12_ciphers", "tls_policy_tls13_ciphersuites",
                           "tls_policy_groups", "tls_policy_stack_groups"}
    assert "{{" not in POLICY_FILE.read_text()
    for name in ("tls_policy_versions", "tls_policy_tls12_ciphers", "tls_policy_tls13_ciphersuites",
                 "tls_policy_groups"):
        value = POLICY[name]
        assert isinstance(value, list) and value and all(isinstance(v, str) for v in value), name
        assert len(set(value)) == len(value), f"{name} lists a name twice"


def test_each_suite_name_is_written_in_one_file() -> None:
    suites = POLICY["tls_policy_tls12_ciphers"] + POLICY["tls_policy_tls13_ciphersuites"]
    files = _text_files(ROLES_DIR, REPO / "celery_provision")
    where = {}
    for suite in suites:
        pattern = re.compile(r"(?<![A-Za-z0-9_-])" + re.escape(suite) + r"(?![A-Za-z0-9_-])")
        where[suite] = sorted(str(p.relative_to(REPO)) for p in files if pattern.search(p.read_text(errors="replace")))
    policy = str(POLICY_FILE.relative_to(REPO))
    assert {s: w for s, w in where.items() if w != [policy]} == {}


def test_group_and_version_names_are_written_only_in_the_policy_role() -> None:
    """Outside roles/tls_policy (the policy and its spelling table) no role names a policy group
    or version in any spelling: they read the policy."""
    filters = _filters()
    names = set(POLICY["tls_policy_groups"]) | set(POLICY["tls_policy_versions"])
    names |= set(filters["tls_policy_erlang_groups"](POLICY["tls_policy_groups"]))
    names |= set(filters["tls_policy_openssl_groups"](POLICY["tls_policy_groups"]))
    names |= set(filters["tls_policy_erlang_versions"](POLICY["tls_policy_versions"]))
    pattern = re.compile(r"(?<![A-Za-z0-9_-])(" + "|".join(map(re.escape, sorted(names))) + r")(?![A-Za-z0-9_-])")
    hits = {}
    for path in _text_files(ROLES_DIR):
        if path.is_relative_to(ROLES_DIR / "tls_policy"):
            continue
        found = sorted(set(pattern.findall(path.read_text(errors="replace"))))
        if found:
            hits[str(path.relative_to(REPO))] = found
    assert hits == {}


@pytest.mark.parametrize(("role", "variables"), [
    ("rabbitmq", ["rabbitmq_tls_versions", "rabbitmq_tls_ciphers", "rabbitmq_tls_groups"]),
    ("redis", ["redis_tls_protocols", "redis_tls_ciphers", "redis_tls_ciphersuites", "redis_tls_groups"]),
])
def test_broker_tls_defaults_read_the_policy(role: str, variables: list[str]) -> None:
    defaults = _defaults(role)
    for name in variables:
        assert _templated(defaults[name]) and "tls_policy_" in defaults[name], f"{role}: {name} must read the policy"
    deps = [d["role"] if isinstance(d, dict) else d for d in _yaml(ROLES_DIR / role / "meta" / "main.yml")["dependencies"]]
    assert "tls_policy" in deps


def test_filters_spell_the_policy_as_the_servers_had_it() -> None:
    f = _filters()
    versions, groups = POLICY["tls_policy_versions"], POLICY["tls_policy_groups"]
    stacks = POLICY["tls_policy_stack_groups"]
    assert f["tls_policy_erlang_versions"](versions) == ["tlsv1.3", "tlsv1.2"]
    assert f["tls_policy_openssl_versions"](versions) == ["TLSv1.2", "TLSv1.3"]
    # Debian 12 (Erlang/OTP 25, OpenSSL 3.0): what the servers had before the hybrid group.
    assert f["tls_policy_erlang_groups"](groups, supported=stacks["otp-25"]) == ["x25519", "secp256r1", "secp384r1"]
    assert f["tls_policy_openssl_groups"](groups, supported=stacks["openssl-3.0"]) == ["X25519", "P-256", "P-384"]
    # Debian 13: OpenSSL 3.5 offers the hybrid post-quantum group first, Erlang/OTP 27 cannot.
    assert f["tls_policy_erlang_groups"](groups, supported=stacks["otp-27"]) == ["x25519", "secp256r1", "secp384r1"]
    assert f["tls_policy_openssl_groups"](groups, supported=stacks["openssl-3.5"]) == [
        "X25519MLKEM768", "X25519", "P-256", "P-384"]
    # Unfiltered (a platform whose stack is not named): the whole policy.
    assert f["tls_policy_erlang_groups"](groups) == ["x25519mlkem768", "x25519", "secp256r1", "secp384r1"]
    # Already-spelled lists pass through unchanged (a per-role override in the server's spelling).
    assert f["tls_policy_openssl_groups"](["X25519", "P-256", "prime256v1"]) == ["X25519", "P-256"]
    assert f["tls_policy_erlang_versions"](["tlsv1.2"]) == ["tlsv1.2"]


def test_filters_drop_the_groups_a_stack_cannot_offer() -> None:
    f = _filters()
    future = ["X25519MLKEM768", *POLICY["tls_policy_groups"]]
    otp25 = POLICY["tls_policy_stack_groups"]["otp-25"]
    assert f["tls_policy_erlang_groups"](future, supported=otp25) == ["x25519", "secp256r1", "secp384r1"]
    assert f["tls_policy_openssl_groups"](future, supported=["X25519MLKEM768", "x25519"]) == ["X25519MLKEM768", "X25519"]
    with pytest.raises(AnsibleFilterError, match="none of the key exchange groups"):
        f["tls_policy_openssl_groups"](["x448"], supported=["x25519"])
    with pytest.raises(AnsibleFilterError, match="none of the key exchange groups"):
        f["tls_policy_erlang_groups"](["X25519MLKEM768"], supported=POLICY["tls_policy_stack_groups"]["otp-27"])


@pytest.mark.parametrize(("name", "value"), [
    ("tls_policy_erlang_versions", ["TLSv1.1", "TLSv1.2"]),
    ("tls_policy_openssl_versions", ["TLSv1"]),
    ("tls_policy_openssl_versions", []),
    ("tls_policy_openssl_groups", ["x25519", "brainpoolP256r1"]),
    ("tls_policy_erlang_groups", "x25519"),
])
def test_filters_refuse_what_they_do_not_know(name: str, value: Any) -> None:
    with pytest.raises(AnsibleFilterError):
        _filters()[name](value)


def test_every_platform_names_a_known_tls_stack_that_offers_the_policy() -> None:
    f = _filters()
    stacks = POLICY["tls_policy_stack_groups"]
    named = {}
    for path in ROLES_DIR.glob("*/vars/*.yml"):
        for key, value in (_yaml(path) or {}).items():
            if key.endswith("_tls_stack"):
                named[str(path.relative_to(REPO))] = value
    assert named, "no platform names its TLS stack"
    for where, stack in named.items():
        assert stack in stacks, f"{where}: TLS stack {stack!r} is not in tls_policy_stack_groups"
        assert f["tls_policy_openssl_groups"](POLICY["tls_policy_groups"], supported=stacks[stack])


# --- platform data ----------------------------------------------------------------------


def test_platform_tasks_are_the_same_file_in_every_role() -> None:
    texts = {role: (ROLES_DIR / role / "tasks" / "platform.yml").read_text() for role in TASK_ROLES}
    assert len(set(texts.values())) == 1, "tasks/platform.yml differs between roles: keep the copies equal"


@pytest.mark.parametrize("role", TASK_ROLES)
def test_platform_vars_load_before_anything_else(role: str) -> None:
    first = _yaml(ROLES_DIR / role / "tasks" / "main.yml")[0]
    assert first.get("ansible.builtin.import_tasks") == "platform.yml", f"{role}: tasks/main.yml must start with it"


@pytest.mark.parametrize("role", TASK_ROLES)
def test_platform_vars_are_internal_and_not_hard_coded_elsewhere(role: str) -> None:
    family = ROLES_DIR / role / "vars" / "Debian.yml"
    assert family.is_file(), f"{role}: no vars/Debian.yml"
    literals = set()
    # The OS family's and releases' files, and a role's server flavors (the redis role's).
    vars_files = [*(ROLES_DIR / role / "vars").glob("Debian*.yml"), *(ROLES_DIR / role / "vars").glob("flavor-*.yml")]
    for path in vars_files:
        for key, value in (_yaml(path) or {}).items():
            assert key.startswith(f"_{role}_"), f"{path.name}: {key} must be internal (_{role}_...)"
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str) and ("/" in item or "-" in item):
                    literals.add(item)
    files = [p for d in ("tasks", "handlers", "templates", "defaults") for p in (ROLES_DIR / role / d).rglob("*")
             if p.is_file()]
    def code(path: Path) -> str:  # YAML comments may name things; templates render theirs
        lines = path.read_text().splitlines()
        return "\n".join(l for l in lines if path.suffix != ".yml" or not l.lstrip().startswith("#"))
    hard = {str(p.relative_to(ROLES_DIR)): sorted(v for v in literals if re.search(
        r"(?<![\w./-])" + re.escape(v) + r"(?![\w/-])", code(p))) for p in files}
    assert {k: v for k, v in hard.items() if v} == {}, "platform names written outside vars/"


# --- redis: the server flavors ------------------------------------------------------------

REDIS_VARS = ROLES_DIR / "redis" / "vars"
REDIS_FLAVORS = {p.stem.removeprefix("flavor-"): _yaml(p) for p in sorted(REDIS_VARS.glob("flavor-*.yml"))}


def test_redis_flavors_name_the_same_things() -> None:
    keys = {flavor: sorted(names) for flavor, names in REDIS_FLAVORS.items()}
    assert len({tuple(k) for k in keys.values()}) == 1, f"vars/flavor-*.yml differ in their keys: {keys}"


def test_redis_flavor_choices_are_the_flavor_files() -> None:
    assert sorted(_options("redis")["redis_flavor"]["choices"]) == sorted(REDIS_FLAVORS)


def test_redis_flavors_a_release_ships_have_their_names_and_the_default_is_on_every_release() -> None:
    family = _yaml(REDIS_VARS / "Debian.yml")["_redis_flavors"]
    releases = {p.name: (_yaml(p) or {}).get("_redis_flavors", family) for p in REDIS_VARS.glob("Debian-*.yml")}
    assert set(family).union(*releases.values()) <= set(REDIS_FLAVORS)
    default = _defaults("redis")["redis_flavor"]
    assert default in family and all(default in flavors for flavors in releases.values()), releases


_REFUSE_PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: redis
      vars:
        redis_flavor: valkey
        redis_tls_ca_src: /nonexistent/ca.pem
        redis_tls_cert_src: /nonexistent/server.pem
        redis_tls_key_src: /nonexistent/server.key
        redis_admin_password: not-used-0123456789
        # Should the check be gone, apt still finds no valkey-server (and updates nothing).
        redis_apt_update_cache: false
"""


def test_redis_role_refuses_valkey_on_debian_12_before_any_change(tmp_path: Path) -> None:
    release = Path("/etc/debian_version").read_text().split(".")[0].strip() if Path("/etc/debian_version").exists() else ""
    if release != "12":
        pytest.skip("needs a Debian 12 host (the release without valkey-server)")
    (tmp_path / "play.yml").write_text(_REFUSE_PLAY)
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(ROLES_DIR), "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
           "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,",
                           str(tmp_path / "play.yml")], capture_output=True, text=True, env=env, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "redis_flavor 'valkey' is not available on Debian 12" in out, out
    assert "changed=0" in out, out


# --- celery_worker: the runtime it copies into the application directory ----------------

_RUNTIME_CHECK = '''
import json, sys
import celery_provision.runtime as rt
from celery import Celery

conf = json.loads(sys.argv[1])
app = Celery("copied", set_as_current=False)
app.config_from_object(conf, force=True)
rt.secure(app)
signer = app._celery_provision.signer
headers = {"task": "celery_provision.canary.ping", "id": "t-1"}
headers[rt.HEADER] = signer.sign_task(headers, "application/json", "utf-8", b"[[], {}, {}]")
app._celery_provision.trust.verify_task(headers, "application/json", "utf-8", b"[[], {}, {}]")
try:
    import celery_provision.model  # noqa: F401
except ImportError:
    pass
else:
    sys.exit("celery_provision.model came from elsewhere: the check does not isolate the copy")
print(rt.__file__)
'''


def test_the_runtime_files_a_worker_gets_are_all_it_needs(inventory: Path, tmp_path: Path) -> None:
    """The export's `celery.runtime_files`, copied as the role does (each `dest` under the
    application directory), import and sign/check alone: with Celery, kombu and
    cryptography but without the rest of celery-provision (the hosts have no more)."""
    import json
    import subprocess
    import sys
    import sysconfig

    from celery_provision import credentials, export, model, pki, render
    from celery_provision.runtime import CONFIG
    from celery_provision.verify import load_module

    d = model.load(inventory)
    pki.issue(d)
    credentials.ensure(d)
    files = export.host_vars(d, d.host("worker-1"))["celery"]["runtime_files"]
    app_dir = tmp_path / "app"
    for f in files:
        assert not Path(f["dest"]).is_absolute() and ".." not in Path(f["dest"]).parts
        (app_dir / f["dest"]).parent.mkdir(parents=True, exist_ok=True)
        (app_dir / f["dest"]).write_bytes(Path(f["src"]).read_bytes())
    assert {Path(f["dest"]).parts[0] for f in files} == {"celery_provision"}
    rendered = load_module(render.write_all(d, tmp_path / "out", hosts=["worker-1"], controller_paths=True)[0][0])
    conf = {CONFIG: getattr(rendered, CONFIG), "broker_url": "memory://"}
    # -S: no .pth files, so not the editable install of this checkout; site-packages after the copy.
    path = f"{app_dir}:{sysconfig.get_paths()['purelib']}:{sysconfig.get_paths()['platlib']}"
    out = subprocess.run([sys.executable, "-S", "-c", _RUNTIME_CHECK, json.dumps(conf)], env={"PYTHONPATH": path},
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().startswith(str(app_dir / "celery_provision" / "runtime"))
