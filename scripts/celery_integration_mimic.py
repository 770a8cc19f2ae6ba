#!/usr/bin/env python3
"""A stand-in for the secured deployment, for scripts/celery_integration.py --config, on the
private plain brokers of scripts/celery-integration-brokers.sh. Usage::

    .venv/bin/python scripts/celery_integration_mimic.py -i INVENTORY --host worker-1 \\
        --amqp 127.0.0.1:5710 --redis 127.0.0.1:6410 --brokers-dir DIR --out celeryconfig.py

It renders *host*'s configuration as `render --controller-paths` does (signing, serializers,
passwords from their files, queues and routing, worker switches) and swaps only the
transport: the same users, vhost and databases, over plain TCP to the private brokers
(TLS itself is not what the suite tests). Then it gives those brokers the deployment's
users exactly as the roles would, from `export` (so from celery_provision.acl as it is
now): RabbitMQ vhost, users, permissions and topic permissions (rabbitmqctl through
`celery-integration-brokers.sh ctl DIR`), Redis ACL users (`ACL SETUSER`). The Redis
`default` user stays open: it is the suite's own side connection (--side-redis).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse, urlunparse

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from celery_provision import export, model, render  # noqa: E402

_PLAIN = {"amqps": "amqp", "rediss": "redis"}


def plain_url(url: str, netloc: str) -> str:
    """*url* (one rendered broker or backend URL) over plain TCP to *netloc*: same scheme
    family, user, vhost or database; TLS query options dropped."""
    parts = urlparse(url.split(";")[0])
    user = f"{parts.username}@" if parts.username else ""
    return urlunparse((_PLAIN.get(parts.scheme, parts.scheme), user + netloc, parts.path, "", "", ""))


def mimic_config(rendered: str, broker: str, backend: str | None) -> str:
    """The rendered module with a last section that swaps its transport."""
    lines = ["", "", "# --- celery-integration mimic: the same identities over plain TCP to private brokers",
             f"broker_url = {broker!r}", "broker_use_ssl = None"]
    if backend:
        lines += [f"result_backend = {backend!r}", "redis_backend_use_ssl = None"]
    return rendered.rstrip("\n") + "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-i", "--inventory", type=Path, required=True)
    parser.add_argument("--host", default="worker-1")
    parser.add_argument("--amqp", default="127.0.0.1:5710", metavar="HOST:PORT")
    parser.add_argument("--redis", default="127.0.0.1:6410", metavar="HOST:PORT")
    parser.add_argument("--brokers-dir", type=Path, required=True, help="DIR of celery-integration-brokers.sh")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    d = model.load(args.inventory)
    host = d.host(args.host)
    s = d.settings
    rendered = render.render(d, host, controller_paths=True)
    namespace: dict[str, object] = {}
    exec(compile(rendered, "rendered", "exec"), namespace)  # our own rendered file: read its URLs
    broker = plain_url(str(namespace["broker_url"]), args.amqp if s.broker == "rabbitmq" else args.redis)
    backend = plain_url(str(namespace["result_backend"]), args.redis) if "result_backend" in namespace else None
    args.out.write_text(mimic_config(rendered, broker, backend))
    print(f"mimic: {args.out}: broker {broker}, backend {backend}")

    ctl = ["bash", str(HERE / "celery-integration-brokers.sh"), "ctl", str(args.brokers_dir)]
    rabbit = next((h for h in d.hosts.values() if h.is_rabbitmq), None)
    if s.broker == "rabbitmq" and rabbit is not None:
        spec = export.host_vars(d, rabbit)["rabbitmq"]
        for vhost in spec["vhosts"]:
            subprocess.run([*ctl, "add_vhost", vhost], check=False, capture_output=True)
        for user in spec["users"]:
            name = user["name"]
            subprocess.run([*ctl, "delete_user", name], check=False, capture_output=True)
            subprocess.run([*ctl, "add_user", name, user["password"]], check=True, capture_output=True)
            for p in user["permissions"]:
                subprocess.run([*ctl, "set_permissions", "-p", p["vhost"], name, p["configure_priv"],
                                p["write_priv"], p["read_priv"]], check=True, capture_output=True)
            for t in user["topic_permissions"]:
                subprocess.run([*ctl, "set_topic_permissions", "-p", t["vhost"], name, t["exchange"],
                                t["write_priv"], t["read_priv"]], check=True, capture_output=True)
            print(f"mimic: rabbitmq user {name}: {user['permissions']} topic {user['topic_permissions']}")
    redis_host = next((h for h in d.hosts.values() if h.is_redis), None)
    if redis_host is not None:
        import redis

        spec = export.host_vars(d, redis_host)["redis"]
        rhost, _, rport = args.redis.rpartition(":")
        client = redis.Redis(host=rhost, port=int(rport))
        for user in spec["users"]:
            client.execute_command("ACL", "SETUSER", user["name"], "reset", "on", ">" + user["password"],
                                   *user["rules"].split())
            print(f"mimic: redis user {user['name']}: {user['rules']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
