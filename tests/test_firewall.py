"""The firewall role, applied by playbooks/firewall.yml to a throw-away LAN.

Tests build throw-away network namespaces (see tests/netns.py): a broker
with a bridge, an "allowed" client and an "outsider" on the same subnet.
Read-only tests share one converged LAN (``converged``); tests that change
the rules or the ruleset get their own (``lan`` + ``broker``). The
playbook runs inside the broker namespace with ``-c local``, so nftables
changes never reach this machine's own network stack, and the role's files
go to a temporary directory instead of /etc. A dropped connection shows up
as "timeout"; "refused" would mean the packet got through.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    from tests import netns
    from tests.livedeploy import role_default
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    import netns
    from livedeploy import role_default

REPO = Path(__file__).resolve().parent.parent
PLAYBOOK = REPO / "playbooks" / "firewall.yml"
TABLE = "celery_provision"
# The brokers' TLS ports, from the roles' defaults; SSH: a port the rules do not list.
AMQPS = int(role_default("rabbitmq", "rabbitmq_tls_port"))
REDIS_TLS = int(role_default("redis", "redis_tls_port"))
SSH = 2222
PORTS = (AMQPS, REDIS_TLS, SSH)

pytestmark = pytest.mark.slow


def _ansible_playbook() -> str:
    beside = Path(sys.executable).parent / "ansible-playbook"
    return str(beside) if beside.exists() else (shutil.which("ansible-playbook") or "")


@pytest.fixture(scope="session")
def netns_available():
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(reason)
    if not _ansible_playbook():
        pytest.skip("ansible-playbook is not installed")


@pytest.fixture
def lan(netns_available):
    with netns.Lan(["allowed", "outsider"]) as lan, netns.Listener(lan.server, PORTS):
        yield lan


class Run:
    """One ansible-playbook run: return code, output, number of changed tasks."""

    def __init__(self, process: subprocess.CompletedProcess) -> None:
        self.rc = process.returncode
        self.output = process.stdout + process.stderr
        recap = re.search(r"changed=(\d+)", self.output)
        self.changed = int(recap.group(1)) if recap else None

    def __repr__(self) -> str:
        return f"Run(rc={self.rc}, changed={self.changed})\n{self.output}"


class Broker:
    """Applies playbooks/firewall.yml to the broker namespace of a LAN."""

    def __init__(self, lan: netns.Lan, workdir: Path) -> None:
        self.lan = lan
        self.workdir = workdir
        self.ruleset = workdir / "etc" / "nftables.d" / "celery_provision.nft"
        (workdir / "systemd").mkdir(parents=True, exist_ok=True)
        allowed = lan.clients["allowed"]
        self.rabbitmq_rules = [
            {"port": AMQPS, "proto": "tcp", "comment": "AMQPS",
             "sources": [f"{allowed.ipv4}/32", f"{allowed.ipv6}/128"]},
        ]
        self.redis_rules = [
            {"port": REDIS_TLS, "proto": "tcp", "comment": "Redis TLS",
             "sources": [f"{allowed.ipv4}/32"]},
        ]

    def apply(self, *extra: str, groups=("rabbitmq", "redis"), **hostvars) -> Run:
        host = {
            "ansible_connection": "local",
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_become": False,
            "firewall_ruleset_path": str(self.ruleset),
            "firewall_systemd_unit_dir": str(self.workdir / "systemd"),
            "rabbitmq_firewall_rules": self.rabbitmq_rules,
            "redis_firewall_rules": self.redis_rules,
        }
        host.update(hostvars)
        host = {k: v for k, v in host.items() if v is not None}
        inventory = {"all": {"children": {g: {"hosts": {"broker": host}} for g in groups}}}
        path = self.workdir / "inventory.yml"
        path.write_text(json.dumps(inventory))
        env = {"ANSIBLE_ROLES_PATH": str(REPO / "roles"), "ANSIBLE_NOCOLOR": "1",
               "ANSIBLE_RETRY_FILES_ENABLED": "0", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        return Run(self.lan.server.run(
            "env", *(f"{k}={v}" for k, v in env.items()),
            _ansible_playbook(), "-i", str(path), str(PLAYBOOK), *extra,
            check=False, cwd=REPO,
        ))

    def converge(self, **hostvars) -> Run:
        run = self.apply(**hostvars)
        assert run.rc == 0, run
        return run

    def tables(self) -> str:
        return self.lan.server.run("nft", "list", "tables").stdout


@pytest.fixture
def broker(lan, tmp_path):
    """A broker namespace the role has not touched yet (one per test)."""
    return Broker(lan, tmp_path)


@pytest.fixture(scope="module")
def converged(netns_available, tmp_path_factory):
    """A broker converged once with the default rules, shared by read-only tests."""
    with netns.Lan(["allowed", "outsider"]) as lan, netns.Listener(lan.server, PORTS):
        broker = Broker(lan, tmp_path_factory.mktemp("converged"))
        broker.converge()
        yield broker


def reach(lan, client: str, port: int, family: str = "ipv4") -> str:
    return lan.clients[client].connect(getattr(lan.server, family), port)


# --- who gets through --------------------------------------------------------

@pytest.mark.parametrize("port", [AMQPS, REDIS_TLS])
def test_allowed_source_reaches_listed_port(converged, port):
    assert reach(converged.lan, "allowed", port) == "connected"


def test_allowed_ipv6_source_reaches_listed_port(converged):
    assert reach(converged.lan, "allowed", AMQPS, "ipv6") == "connected"


def test_outsider_reaches_listed_port_before_the_role_runs(lan):
    assert reach(lan, "outsider", AMQPS) == "connected"


@pytest.mark.parametrize("port", [AMQPS, REDIS_TLS])
def test_outsider_is_dropped_on_listed_port(converged, port):
    assert reach(converged.lan, "outsider", port) == "timeout"


def test_outsider_is_dropped_on_listed_port_over_ipv6(converged):
    assert reach(converged.lan, "outsider", AMQPS, "ipv6") == "timeout"


def test_ipv4_only_allow_list_drops_ipv6_from_the_same_client(converged):
    # Redis TLS lists only the allowed client's IPv4 address
    assert reach(converged.lan, "allowed", REDIS_TLS, "ipv6") == "timeout"


def test_outsider_still_reaches_unlisted_port(converged):
    assert reach(converged.lan, "outsider", SSH) == "connected"


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "192.0.2.1"])
def test_broker_reaches_its_own_listed_port_locally(converged, address):
    assert converged.lan.server.connect(address, AMQPS) == "connected"


def test_emptied_allow_list_closes_port_to_previously_allowed_source(lan, broker):
    broker.converge()
    assert reach(lan, "allowed", AMQPS) == "connected"
    broker.rabbitmq_rules[0]["sources"] = []
    broker.converge()
    assert reach(lan, "allowed", AMQPS) == "timeout"
    assert lan.server.connect("127.0.0.1", AMQPS) == "connected"


def test_emptied_allow_list_leaves_other_ports_alone(lan, broker):
    broker.rabbitmq_rules[0]["sources"] = []
    broker.converge()
    assert reach(lan, "allowed", REDIS_TLS) == "connected"


def test_no_rules_manage_no_port(lan, broker):
    broker.converge(rabbitmq_firewall_rules=[], redis_firewall_rules=[])
    assert reach(lan, "outsider", AMQPS) == "connected"


# --- how it is applied -------------------------------------------------------

def test_second_run_changes_nothing(converged):
    assert converged.converge().changed == 0


def test_check_mode_after_convergence_changes_nothing(converged):
    run = converged.apply("--check")
    assert (run.rc, run.changed) == (0, 0), run


def test_check_mode_on_a_fresh_host_loads_nothing(lan, broker):
    run = broker.apply("--check")
    assert run.rc == 0, run
    assert TABLE not in broker.tables()
    assert reach(lan, "outsider", AMQPS) == "connected"


def test_changed_allow_list_is_reported_as_a_change(broker):
    broker.converge()
    broker.redis_rules[0]["sources"].append("192.0.2.12/32")
    assert broker.converge().changed > 0


def test_deleted_live_table_is_restored_on_next_run(lan, broker):
    broker.converge()
    lan.server.run("nft", "delete", "table", "inet", TABLE)
    assert broker.converge().changed > 0
    assert reach(lan, "outsider", AMQPS) == "timeout"


def test_other_tables_of_the_host_survive(lan, broker):
    host_table = (
        "table inet hostfw {\n chain input {\n"
        "  type filter hook input priority 0; policy accept;\n"
        "  tcp dport 22 counter accept\n }\n}\n"
    )
    lan.server.run("nft", "-f", "-", input=host_table)
    before = lan.server.run("nft", "list", "table", "inet", "hostfw").stdout
    broker.converge()
    broker.converge()
    assert lan.server.run("nft", "list", "table", "inet", "hostfw").stdout == before


def test_ruleset_file_restores_the_table_after_a_flush(lan, broker):
    broker.converge()
    lan.server.run("nft", "flush", "ruleset")  # what a reboot (or nftables.service) leaves
    lan.server.run("nft", "-f", str(broker.ruleset))  # what the boot-time unit runs
    assert reach(lan, "outsider", AMQPS) == "timeout"
    assert reach(lan, "allowed", AMQPS) == "connected"


def test_ruleset_file_holds_only_the_role_table(converged):
    text = converged.ruleset.read_text()
    assert "flush ruleset" not in text
    assert set(re.findall(r"^table (\S+ \S+)", text, re.M)) == {f"inet {TABLE}"}


def test_absent_state_removes_table_and_file(lan, broker):
    broker.converge()
    broker.converge(firewall_state="absent")
    assert TABLE not in broker.tables()
    assert not broker.ruleset.exists()
    assert reach(lan, "outsider", AMQPS) == "connected"


# --- bad input ---------------------------------------------------------------

def test_source_with_host_bits_fails_with_a_hint_and_changes_nothing(broker):
    broker.redis_rules[0]["sources"] = ["192.0.2.11/24"]
    run = broker.apply()
    assert run.rc != 0
    assert "did you mean 192.0.2.0/24" in run.output
    assert TABLE not in broker.tables()


def test_source_that_is_not_an_address_fails(broker):
    broker.redis_rules[0]["sources"] = ["worker-1"]
    run = broker.apply()
    assert run.rc != 0
    assert "'worker-1' is not a valid IPv4/IPv6 CIDR" in run.output


def test_playbook_refuses_to_run_without_the_exported_rules(broker):
    run = broker.apply(rabbitmq_firewall_rules=None)
    assert run.rc != 0
    assert "rabbitmq_firewall_rules" in run.output
    assert TABLE not in broker.tables()


# --- the filter that normalises the rules (no namespace needed) -------------

def _filters():
    path = REPO / "roles" / "firewall" / "filter_plugins" / "firewall.py"
    spec = importlib.util.spec_from_file_location("firewall_filters", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FilterModule().filters()


def test_rules_for_the_same_port_merge_their_sources():
    ports = _filters()["firewall_ports"]([
        {"port": AMQPS, "proto": "tcp", "sources": ["192.0.2.11/32"], "comment": "AMQPS"},
        {"port": AMQPS, "proto": "tcp", "sources": ["198.51.100.0/24"], "comment": "admins"},
    ])
    assert [(p["port"], p["v4"]) for p in ports] == [(AMQPS, ["192.0.2.11/32", "198.51.100.0/24"])]


def test_overlapping_sources_collapse_into_the_wider_network():
    ports = _filters()["firewall_ports"]([
        {"port": AMQPS, "proto": "tcp", "sources": ["192.0.2.0/24", "192.0.2.11/32", "::1/128"]},
    ])
    assert (ports[0]["v4"], ports[0]["v6"]) == (["192.0.2.0/24"], ["::1/128"])


@pytest.mark.parametrize("rule, message", [
    ({"port": 0, "sources": []}, "port 0 is not an integer between 1 and 65535"),
    ({"port": AMQPS, "proto": "sctp", "sources": []}, "proto 'sctp' is not one of tcp, udp"),
    ({"port": AMQPS, "sources": "192.0.2.0/24"}, "sources must be a list"),
])
def test_malformed_rule_is_reported(rule, message):
    errors = _filters()["firewall_rule_errors"]([rule])
    assert any(message in e for e in errors), errors


def test_comment_cannot_break_out_of_the_nft_string():
    ports = _filters()["firewall_ports"]([
        {"port": AMQPS, "sources": [], "comment": 'x" accept; drop "'},
    ])
    assert '"' not in ports[0]["comment"]
