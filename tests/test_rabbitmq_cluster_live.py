"""A real three-node RabbitMQ cluster whose Erlang distribution runs over mutual TLS, with
the rabbitmq role's ssl_dist_optfile and the project's certificates (tests/rabbitcluster.py),
and real Celery 5.7 processes on it.

The nodes form a cluster through classic_config peer discovery; their distribution port
admits a real Erlang peer with a node certificate and the cookie, and refuses a plain Erlang
handshake, a TLS client without a certificate, with a CA certificate lacking clientAuth or
with another CA's certificate, and a peer with the wrong cookie (a worker's client
certificate of the same CA passes TLS: the cookie and the firewall keep it out). A worker (its rendered configuration, AMQPS with its
client certificate to every node, the permissions `rabbitmq_permissions` gives it) declares
its queue as a quorum queue replicated on the three nodes, and a producer's tasks complete,
a countdown one through native delayed delivery.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import livekit
import pytest
import yaml
from pkiutil import foreign_ca, load_cert, load_key, sign_leaf, write_pair
from rabbitcluster import BIN, REPO, ClusterNode, Live, live_cluster, start_worker
from rabbitnode import _BIN

from celery_provision import credentials

# Alone: with the rest of the suite on two cores, a joining node refused its CLI's TLS
# distribution connection at boot and `rabbitmqctl status` took 80-120 s, some failing.
pytestmark = [pytest.mark.live, pytest.mark.slow, pytest.mark.alone]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with live_cluster(tmp_path_factory.mktemp("cluster")) as live:
        worker = start_worker(live)
        try:
            yield live
        finally:
            livekit.stop_worker(worker)


# --- the cluster -------------------------------------------------------------------------------

def test_every_node_sees_three_running_nodes(live: Live) -> None:
    names = {n.name for n in live.nodes}
    for node in live.nodes:
        assert set(live.cluster.status(node)["running_nodes"]) == names


def test_the_nodes_distribution_listens_on_loopback_only(live: Live) -> None:
    listeners = live.cluster.status()["listeners"]
    clustering = [entry for node in listeners.values() for entry in node if entry["protocol"] == "clustering"]
    assert len(clustering) == 3 and {e["interface"] for e in clustering} == {"127.0.0.1"}


# --- who may talk to the distribution port -------------------------------------------------------

#: Distribution capabilities OTP 25 requires of a peer (dist_util's mandatory flags).
_FLAGS = 0x4 | 0x8 | 0x10 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800 | 0x10000 | 0x20000 | 0x40000 | 0x1000000


def _erlang_hello(sock: socket.socket | ssl.SSLSocket) -> bytes:
    """Send the first message of an Erlang distribution handshake (`send_name`, version 6: flags,
    creation, name) and return what comes back: a status message (`s...`) from an Erlang node
    that listens, b"" or an error from one that refuses."""
    name = b"probe@localhost"
    body = b"N" + struct.pack(">QIH", _FLAGS, 0, len(name)) + name
    sock.settimeout(10)
    sock.sendall(struct.pack(">H", len(body)) + body)
    data = b""
    while len(data) < 3:
        chunk = sock.recv(64)
        if not chunk:
            break
        data += chunk
    return data[2:]


def _tls_hello(dist: tuple[int, Path], cert: Path | None = None, key: Path | None = None) -> bytes | str:
    """The Erlang status over TLS to the distribution port with *cert* (verifying the node
    against the CA), or the error that ended the attempt."""
    port, ca = dist
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, ctx.wrap_socket(raw) as tls:
            return _erlang_hello(tls)
    except (ssl.SSLError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"


@pytest.fixture
def dist(live: Live) -> tuple[int, Path]:
    """A node's distribution port (the second's: not the seed) and the CA to check it with."""
    return live.nodes[1].dist_port, live.d.layout.ca_pem


def _accepted(answer: bytes | str) -> bool:
    return isinstance(answer, bytes) and answer.startswith(b"s")


def _erlang_ping(live: Live, tmp_path: Path, cert: Path, key: Path, *, cookie: str | None = None) -> str:
    """`net_adm:ping` of the second node from a throw-away Erlang node that speaks TLS
    distribution with *cert* and has *cookie* (the cluster's by default): `pong` when the node
    admits it."""
    opt = tmp_path / "probe-dist.config"
    tls = f'{{cacertfile, "{live.d.layout.ca_pem}"}}, {{certfile, "{cert}"}}, {{keyfile, "{key}"}}, {{verify, verify_peer}}'
    opt.write_text(f"[{{server, [{tls}, {{fail_if_no_peer_cert, true}}]}}, {{client, [{tls}]}}].\n")
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / ".erlang.cookie").write_text(cookie or live.cluster.cookie)
    (home / ".erlang.cookie").chmod(0o400)
    out = subprocess.run(
        ["erl", "-sname", f"cp-probe-{os.getpid()}-{tmp_path.name[-12:]}", "-proto_dist", "inet_tls",
         "-ssl_dist_optfile", str(opt), "-kernel", "inet_dist_use_interface", "{127,0,0,1}", "-noshell",
         "-eval", f"io:format(\"~p\", [net_adm:ping('{live.nodes[1].name}')]), halt()."],
        env=os.environ | {"HOME": str(home), "ERL_EPMD_ADDRESS": "127.0.0.1"},
        capture_output=True, text=True, timeout=60)
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr


def test_an_erlang_peer_with_a_node_certificate_and_the_cookie_is_admitted(live: Live, tmp_path: Path) -> None:
    """The control of the probes below: the port admits a real peer, so a refusal is the port's."""
    layout = live.d.layout
    assert _erlang_ping(live, tmp_path, layout.cert("rabbitmq-1", "server"), layout.key("rabbitmq-1", "server")) == "pong"


def test_an_erlang_peer_with_a_node_certificate_but_another_cookie_is_refused(live: Live, tmp_path: Path) -> None:
    layout = live.d.layout
    assert _erlang_ping(live, tmp_path, layout.cert("rabbitmq-1", "server"), layout.key("rabbitmq-1", "server"),
                        cookie=credentials.new_cookie()) == "pang"


def test_a_workers_client_certificate_passes_tls_but_not_the_cookie(live: Live, tmp_path: Path) -> None:
    """A known limit, pinned: a client certificate of the CA (clientAuth) completes the TLS
    handshake of the distribution port; the cookie, and the firewall (peers only), keep it out."""
    files = live.d.app_files(live.d.host("worker-1"), controller=True)
    assert _erlang_ping(live, tmp_path, files.client_cert, files.client_key, cookie=credentials.new_cookie()) == "pang"


def test_the_distribution_port_refuses_a_plain_erlang_handshake(dist: tuple[int, Path]) -> None:
    with socket.create_connection(("127.0.0.1", dist[0]), timeout=10) as sock:
        try:
            answer: bytes | str = _erlang_hello(sock)
        except OSError as exc:
            answer = str(exc)
    assert not _accepted(answer), answer


def test_the_distribution_port_refuses_tls_without_a_client_certificate(dist: tuple[int, Path]) -> None:
    answer = _tls_hello(dist)
    assert not _accepted(answer) and "CERTIFICATE_REQUIRED" in str(answer).upper(), answer


def test_the_distribution_port_refuses_a_certificate_of_the_ca_without_client_auth(live: Live, dist: tuple[int, Path],
                                                                                   tmp_path: Path) -> None:
    layout = live.d.layout
    cert, key = sign_leaf(load_cert(layout.root_cert), load_key(layout.root_key), "rabbitmq-9",
                          eku="serverAuth", sans=["rabbitmq-9", "127.0.0.1", "localhost"])
    answer = _tls_hello(dist, *write_pair(tmp_path, "server-only", cert, key))
    # The alert is the release's: OTP 25 (Debian 12) sends handshake_failure, OTP 27 (Debian 13)
    # unsupported_certificate.
    alerts = ("HANDSHAKE_FAILURE", "UNSUPPORTED_CERTIFICATE")
    assert not _accepted(answer) and any(a in str(answer).upper() for a in alerts), answer


def test_the_distribution_port_refuses_another_cas_certificate(dist: tuple[int, Path], tmp_path: Path) -> None:
    ca, ca_key = foreign_ca()
    cert, key = sign_leaf(ca, ca_key, "rabbitmq-1", eku="clientAuth", sans=["rabbitmq-1", "127.0.0.1", "localhost"])
    answer = _tls_hello(dist, *write_pair(tmp_path, "foreign", cert, key))
    assert not _accepted(answer) and "UNKNOWN_CA" in str(answer).upper(), answer


# --- Celery on the cluster -------------------------------------------------------------------------

def test_the_workers_queue_is_a_quorum_queue_with_a_member_on_every_node(live: Live) -> None:
    queue = live.cluster.queue("celery")
    assert queue["type"] == "quorum"
    assert set(queue["members"]) == {n.name for n in live.nodes}


def test_a_task_completes_over_the_cluster(live: Live) -> None:
    assert live.act("client-1", "send") == {"ok": True, "value": 5}


def test_a_countdown_task_completes_through_native_delayed_delivery(live: Live) -> None:
    assert live.act("client-1", "countdown") == {"ok": True, "value": 5}


# --- the role's restart of a cluster node (last: one test stops a node) ---------------------------

#: What the role's restart step is aimed at here: a service that does not exist, so the tests
#: never restart this machine's own broker, and show by where the run stops how far it got.
NO_SUCH_SERVICE = "celery-provision-test-no-such-service"
WAIT_TASK = "rabbitmq : Restart | Wait until every quorum queue keeps its majority without this node"
RESTART_TASK = "rabbitmq : Restart | Restart rabbitmq"


def _role_restart(node: ClusterNode, tmp_path: Path, timeout: int) -> str:
    """Run the role's restart of one node (tasks/restart.yml, which the `Restart rabbitmq`
    handler includes for each node in turn) against *node*, with the node's CLI environment
    (TLS distribution, its cookie). Return the task the run failed in."""
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False,
             "tasks": [{"ansible.builtin.include_role": {"name": "rabbitmq", "tasks_from": "restart.yml"}}]}]
    (tmp_path / "restart.yml").write_text(yaml.safe_dump(play))
    extra = {"rabbitmq_cluster": True, "rabbitmq_nodename": node.name, "rabbitmq_restart_quorum_timeout": timeout,
             "_rabbitmq_rabbitmqctl": str(_BIN / "rabbitmqctl"), "_rabbitmq_upgrade": str(_BIN / "rabbitmq-upgrade"),
             "_rabbitmq_service": NO_SUCH_SERVICE,
             "ansible_python_interpreter": sys.executable}
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-e", json.dumps(extra),
                           str(tmp_path / "restart.yml")], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout + 120,
                          env=node._env() | {"ANSIBLE_ROLES_PATH": str(REPO / "roles"), "ANSIBLE_NOCOLOR": "1",
                                             "ANSIBLE_LOCALHOST_WARNING": "False"})
    assert proc.returncode != 0, f"the restart of {NO_SUCH_SERVICE} succeeded?\n{proc.stdout[-3000:]}"
    failed = proc.stdout[:proc.stdout.index("fatal: ")]
    return failed[failed.rindex("TASK [") + len("TASK ["):].split("]")[0]


def test_the_roles_restart_of_a_node_goes_ahead_when_every_peer_is_up(live: Live, tmp_path: Path) -> None:
    assert _role_restart(live.nodes[1], tmp_path, timeout=30) == RESTART_TASK


def test_the_roles_restart_of_a_node_that_is_not_running_does_not_wait(live: Live, tmp_path: Path) -> None:
    stopped = live.nodes[2]
    stopped.halt()
    try:
        assert _role_restart(stopped, tmp_path, timeout=30) == RESTART_TASK
    finally:
        stopped.launch()
        stopped.await_boot()


def test_the_roles_restart_of_a_node_waits_while_a_peer_is_down_and_leaves_the_node_running(
        live: Live, tmp_path: Path) -> None:
    """With one node down, stopping a second would leave the quorum queue one member of
    three: the role waits for the peer, and past its timeout fails before the restart."""
    down, target = live.nodes[2], live.nodes[1]
    down.halt()
    try:
        assert _role_restart(target, tmp_path, timeout=5) == WAIT_TASK
    finally:
        down.launch()
        down.await_boot()
    assert set(live.cluster.status()["running_nodes"]) == {n.name for n in live.nodes}
