#!/usr/bin/env python3
"""Benchmark: Celery throughput of N no-op tasks, secured vs plaintext, measured in one run.

Variants, each with a worker process this script starts (same concurrency, same app, same
delivery settings: acks late, prefetch 1, publisher confirms, durable queue):

* secured   -- the deployed RabbitMQ and Redis (mutual TLS on both links, least-privilege
               users, CRL checks), the rendered configuration of the worker and client
               hosts, and the signed envelope (`celery_provision.runtime.secure(app)` in
               the client and the worker: the client signs each task message, the worker
               checks signer, allow-list, age and the replay record in Redis, and records
               each completed task; results signed too where the inventory says so);
* tls       -- the same brokers, configuration and users, but no envelope and JSON
               results: TLS without message signing;
* plaintext -- a throwaway RabbitMQ node and Redis server started by this script on other
               loopback ports (plain AMQP, plain Redis, no auth beyond guest), JSON.

Why separate plaintext brokers rather than `rabbitmq_plaintext_loopback_enabled`: turning
that on reconfigures the shared deployment (and `verify`, run by other jobs, checks that the
plaintext AMQP port is refused), and Redis has no such switch at all. The separate instances use the
same packages and durability settings (RabbitMQ defaults, Redis appendonly everysec).

Variants run interleaved (secured, tls, plaintext, secured, ...) and the median of each is
reported, with the ratio secured/plaintext (target >= 0.85x) and the share of the secured
overhead that signing adds versus TLS alone. Timing covers publishing every task (the
client signs) until every result is back. Nothing is asserted.

The deployed worker service consumes the same queue, so it is stopped for the duration and
started again at the end. Needs the deployment up (`bash scripts/deploy-local.sh INV`)
and root (the controller's key files are 0600).

Usage: benchmarks/bench_throughput.py [-i inventories/local] [-n 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from livedeploy import worker_service_name  # noqa: E402  (celery_worker_service_name, role default)

from celery_provision import model, render  # noqa: E402
from celery_provision.runtime.envelope import may_call  # noqa: E402

VARIANTS = ("secured", "tls", "plaintext")
TARGET_RATIO = 0.85
#: In the canary's namespace: the one inventories/local's producer may call
#: (`celery_provision_allowed_tasks`); main() checks the client's allow-list.
NOOP = "celery_provision.canary.bench_noop"
#: The variant whose apps call secure(app) (the others inherit the envelope setting from the
#: rendered module, unused).
ENVELOPE_VARIANT = "secured"

_APP = f'''\
"""The benchmark's Celery app: one no-op task; the envelope only where BENCH_ENVELOPE=1."""
import os

from celery import Celery

app = Celery("bench")
app.config_from_object(os.environ["CELERY_CONFIG_MODULE"])
if os.environ.get("BENCH_ENVELOPE") == "1":
    from celery_provision.runtime import secure

    secure(app)  # as the rendered module says; installed when the worker reads the config


@app.task(name={NOOP!r})
def noop():
    return None
'''

_JSON = '''
task_serializer = "json"
accept_content = ["json"]
result_serializer = "json"
result_accept_content = ["json"]
'''


def _plain(amqp_port: int, redis_port: int) -> str:
    return _JSON + textwrap.dedent(f'''
        broker_url = "amqp://guest:guest@127.0.0.1:{amqp_port}//"
        broker_use_ssl = False
        broker_password = None
        result_backend = "redis://127.0.0.1:{redis_port}/1"
        redis_backend_use_ssl = None
        redis_password = None
    ''')


# --------------------------------------------------------------------------- throwaway brokers


def free_port() -> int:
    """A loopback TCP port nothing listens on now (other jobs run their own test brokers)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PlainRabbitMQ:
    """An isolated RabbitMQ node (own node name, config, database, cookie, ports), plain AMQP
    on loopback only. Leaves /etc/rabbitmq and the deployed node alone."""

    def __init__(self, base: Path, port: int, dist_port: int) -> None:
        self.base, self.port = base, port
        self.node = f"bench-{uuid.uuid4().hex[:6]}@localhost"
        base.mkdir(parents=True)
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{port}\nlisteners.ssl = none\nloopback_users.guest = true\n")
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq-env.conf").write_text("")
        self.pidfile = base / "node.pid"
        self.env = {
            **os.environ, "HOME": str(base), "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"), "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.pidfile), "RABBITMQ_DIST_PORT": str(dist_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def ctl(self, *args: str, timeout: float = 120) -> None:
        subprocess.run(["/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", self.node, *args], env=self.env,
                       check=True, capture_output=True, timeout=timeout)

    def start(self) -> None:
        subprocess.run(["/usr/lib/rabbitmq/bin/rabbitmq-server", "-detached"], env=self.env,
                       check=True, capture_output=True, timeout=60)
        self.ctl("wait", "--timeout", "90", str(self.pidfile))
        self.ctl("await_startup", "--timeout", "90")

    def stop(self) -> None:
        try:
            self.ctl("stop", str(self.pidfile))
        except (subprocess.SubprocessError, OSError):
            if self.pidfile.exists():
                try:
                    os.kill(int(self.pidfile.read_text().strip()), signal.SIGKILL)
                except (ValueError, OSError):
                    pass


class PlainRedis:
    """A Redis server on another loopback port, no TLS, no password, appendonly everysec
    (the durability the redis role configures)."""

    def __init__(self, base: Path, port: int) -> None:
        base.mkdir(parents=True)
        self.pidfile = base / "redis.pid"
        self.conf = base / "redis.conf"
        self.conf.write_text(textwrap.dedent(f"""\
            bind 127.0.0.1
            port {port}
            daemonize yes
            pidfile {self.pidfile}
            logfile {base / 'redis.log'}
            dir {base}
            save 3600 1 300 100 60 10000
            appendonly yes
            appendfsync everysec
            """))

    def start(self) -> None:
        subprocess.run(["redis-server", str(self.conf)], check=True, capture_output=True, timeout=30)
        for _ in range(100):
            if self.pidfile.exists():
                return
            time.sleep(0.1)
        raise RuntimeError("redis did not start")

    def stop(self) -> None:
        """SIGTERM, and wait: Redis saves on shutdown and refuses to exit if it cannot (so
        its directory must outlive it); SIGKILL if it is still there after 30 s."""
        try:
            pid = int(self.pidfile.read_text().strip())
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            return
        for _ in range(300):
            try:
                os.kill(pid, 0)
            except OSError:
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- workers and clients


def _write_configs(d: model.Deployment, work: Path, worker: str, client: str, amqp: int, redis: int) -> None:
    (work / "benchapp.py").write_text(_APP)
    for role, host in (("worker", worker), ("client", client)):
        (work / f"secured_{role}.py").write_text(render.render(d, d.host(host), controller_paths=True))
        (work / f"tls_{role}.py").write_text(f"from secured_{role} import *  # noqa\n" + _JSON)
        (work / f"plaintext_{role}.py").write_text(f"from secured_{role} import *  # noqa\n" + _plain(amqp, redis))


def _client(work: Path, variant: str) -> Any:
    from celery import Celery

    if str(work) not in sys.path:
        sys.path.insert(0, str(work))
    app = Celery(f"bench-client-{variant}", set_as_current=False)
    app.config_from_object(f"{variant}_client")
    if variant == ENVELOPE_VARIANT:
        from celery_provision.runtime import secure

        secure(app)
    return app


def _deployed_worker_switches() -> list[str]:
    """The deployed worker's `--without-*` switches (roles/celery_worker/vars/main.yml): a
    worker may not broadcast (mingle, gossip), so the benchmark's worker starts as that one."""
    import yaml

    args = yaml.safe_load((REPO / "roles" / "celery_worker" / "vars" / "main.yml").read_text())
    return [a for a in args["_celery_worker_base_args"] if a.startswith("--without-")]


def _start_worker(work: Path, variant: str, concurrency: int,
                  queue: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": f"{work}:{REPO}", "CELERY_CONFIG_MODULE": f"{variant}_worker",
           "BENCH_ENVELOPE": "1" if variant == ENVELOPE_VARIANT else "0"}
    log = open(work / f"worker-{variant}.log", "ab")
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "celery"), "-A", "benchapp", "worker", "-Q", queue,
         "-c", str(concurrency), "--hostname", f"bench-{variant}@%h", "--loglevel", "WARNING",
         *_deployed_worker_switches()],
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)


def _stop_worker(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _batch(app: Any, n: int, timeout: float) -> float:
    from celery.result import ResultSet

    started = time.perf_counter()
    results = ResultSet([app.send_task(NOOP) for _ in range(n)], app=app)
    results.join_native(timeout=timeout, propagate=True)
    return time.perf_counter() - started


def _wait_consuming(app: Any, queue: str, worker: subprocess.Popen[bytes], timeout: float = 90) -> None:
    """Until the worker consumes *queue*. On the fresh plaintext node the worker declares the
    task exchange and its queue; a client publishing before that gets NOT_FOUND (on the
    deployed brokers the deployed worker declared both long ago)."""
    deadline = time.monotonic() + timeout
    with app.connection_for_write() as conn:
        while True:
            try:
                with conn.channel() as channel:  # a passive declare that fails closes its channel
                    if channel.queue_declare(queue, passive=True).consumer_count:
                        return
            except conn.channel_errors:
                pass
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker does not consume {queue}")
            time.sleep(0.2)


def measure(work: Path, variant: str, n: int, concurrency: int, queue: str) -> float:
    """Tasks per second of one run of *variant* (worker started, warmed up, then timed); the
    tasks go to *queue*, the rendered configuration's task_default_queue."""
    worker = _start_worker(work, variant, concurrency, queue)
    app = _client(work, variant)
    try:
        if variant == "plaintext":
            _wait_consuming(app, queue, worker)
        _batch(app, 50, timeout=120)  # worker ready, connections and pools warm
        return n / _batch(app, n, timeout=600)
    except Exception:
        log = (work / f"worker-{variant}.log").read_text(errors="replace").splitlines()
        print(f"bench_throughput: {variant} failed; worker log:\n" + "\n".join(log[-30:]), file=sys.stderr)
        raise
    finally:
        app.close()
        _stop_worker(worker)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="See the module docstring (and benchmarks/README.md).")
    p.add_argument("-i", "--inventory", type=Path, default=REPO / "inventories" / "local",
                   help="the deployed inventory (default: inventories/local)")
    p.add_argument("-n", "--tasks", type=int, default=2000, help="tasks per measurement (2000)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians reported (3)")
    p.add_argument("-c", "--concurrency", type=int, default=2, help="worker processes (2)")
    p.add_argument("--amqp-port", type=int, default=0, help="plaintext RabbitMQ port (default: a free one)")
    p.add_argument("--dist-port", type=int, default=0, help="its Erlang distribution port (default: a free one)")
    p.add_argument("--redis-port", type=int, default=0, help="plaintext Redis port (default: a free one)")
    args = p.parse_args(argv)
    args.amqp_port = args.amqp_port or free_port()
    args.dist_port = args.dist_port or free_port()
    args.redis_port = args.redis_port or free_port()

    d = model.load(args.inventory)
    worker_host = d.group("celery_workers")[0]
    client_host = (d.group("celery_clients") or d.group("celery_workers"))[0]
    if not may_call(NOOP, client_host.allowed_tasks):
        p.error(f"{client_host.name} may not call {NOOP} (celery_provision_allowed_tasks): "
                "the secured variant's worker would refuse every task")
    service = worker_service_name(worker_host.name)
    queue = client_host.queues[0]  # the rendered configuration's task_default_queue
    work = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    os.chmod(work, 0o700)
    rabbit = PlainRabbitMQ(work / "rabbitmq", args.amqp_port, args.dist_port)
    redis = PlainRedis(work / "redis", args.redis_port)
    stopped_service = False
    rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
    try:
        _write_configs(d, work, worker_host.name, client_host.name, args.amqp_port, args.redis_port)
        print(f"bench_throughput: starting plaintext RabbitMQ :{args.amqp_port} and Redis :{args.redis_port}",
              flush=True)
        rabbit.start()
        redis.start()
        stopped_service = subprocess.run(["service", service, "stop"], capture_output=True).returncode == 0
        for r in range(args.rounds):
            for variant in VARIANTS:
                rate = measure(work, variant, args.tasks, args.concurrency, queue)
                rates[variant].append(rate)
                print(f"  round {r + 1} {variant:<9} {rate:8.1f} tasks/s", flush=True)
    finally:
        if stopped_service:
            subprocess.run(["service", service, "start"], capture_output=True)
        rabbit.stop()
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)

    med = {v: statistics.median(rates[v]) for v in VARIANTS}
    per_task = {v: 1000 / med[v] for v in VARIANTS}  # ms of wall time per task
    overhead = per_task["secured"] - per_task["plaintext"]
    signing = per_task["secured"] - per_task["tls"]
    ratio = med["secured"] / med["plaintext"]
    print(f"\nCelery throughput, {args.tasks} no-op tasks, worker -c {args.concurrency}, "
          f"median of {args.rounds} interleaved rounds (tasks/s; ms per task)")
    for v, label in (("secured", "secured: mutual TLS + the signed envelope"),
                     ("tls", "TLS only (JSON, no signing)"),
                     ("plaintext", "plaintext brokers, JSON")):
        print(f"  {label:<46} {med[v]:8.1f}   {per_task[v]:6.3f}")
    verdict = "OK" if ratio >= TARGET_RATIO else f"MISSED {TARGET_RATIO}x"
    print(f"secured/plaintext = {ratio:.2f}x ({verdict})   tls/plaintext = {med['tls'] / med['plaintext']:.2f}x")
    if overhead > 0:
        print(f"of the secured overhead ({overhead:.3f} ms/task): signing {signing / overhead:.0%}, "
              f"TLS {(overhead - signing) / overhead:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
