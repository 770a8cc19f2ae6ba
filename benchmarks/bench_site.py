#!/usr/bin/env python3
"""Benchmark: `playbooks/site.yml` on the local inventory against Ansible's own floor, and
`celery-provision verify`, measured in one run.

* first converge -- site.yml on a fresh copy of the inventory (new PKI, new passwords). The
                    machine state it starts from is printed: packages, the worker venv and
                    the services are usually already there, so this is not a bare machine;
* re-run         -- site.yml again (idempotent: nothing changes), the number that matters;
* floor          -- a generated playbook with the same plays on the same hosts, each with as
                    many `ansible.builtin.debug` tasks as the re-run executed there (debug
                    goes through Ansible's worker processes like a module task; meta: noop
                    would bypass them and understate the floor);
* verify         -- `celery-provision verify -i INVENTORY` (TLS probes and a signed canary).

Re-run, floor and verify are repeated interleaved (--rounds) and medians are reported, with
the ratio re-run/floor (target <= 1.5x) and the slowest tasks of the re-run (from the
`ansible.posix.json` callback's per-task durations). Nothing is asserted.

This reconfigures the machine's RabbitMQ, Redis and worker for the copied inventory (as
`scripts/deploy-local.sh` does): don't run it while live tests use the deployment. With
--workdir the copy is kept (deployed) for other benchmarks; otherwise it is removed.

Usage: benchmarks/bench_site.py [--rounds 2] [--workdir DIR] [--top 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "tests"))

from livedeploy import role_default  # noqa: E402  (the tests' one reader of the role defaults)

TARGET_RATIO = 1.5


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}", "ANSIBLE_NOCOLOR": "1", **extra}


def playbook(inventory: Path, path: Path) -> tuple[float, dict[str, Any]]:
    """Run a playbook with the JSON callback; (wall seconds, parsed callback output)."""
    started = time.perf_counter()
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(path)],
                          cwd=REPO, capture_output=True, text=True, timeout=3600,
                          env=_env(ANSIBLE_STDOUT_CALLBACK="ansible.posix.json"))
    elapsed = time.perf_counter() - started
    try:
        out = json.loads(proc.stdout[proc.stdout.index("{"):])
    except ValueError:
        out = {}
    failed = sum(s.get("failures", 0) + s.get("unreachable", 0) for s in out.get("stats", {}).values())
    if proc.returncode != 0 or failed or not out:
        # The callback output holds task results (secrets are no_log'ed); show only the error.
        sys.exit(f"bench_site: {path.name} failed (rc {proc.returncode}); stderr:\n{proc.stderr[-3000:]}")
    return elapsed, out


def executions(out: dict[str, Any]) -> int:
    """Task runs on hosts (a task on two hosts counts twice), skipped ones included."""
    return sum(len(t["hosts"]) for p in out["plays"] for t in p["tasks"])


def changed(out: dict[str, Any]) -> int:
    return sum(s.get("changed", 0) for s in out["stats"].values())


def floor_playbook(out: dict[str, Any], path: Path) -> None:
    """The same plays on the same hosts, each task replaced by a debug task."""
    lines = ["---"]
    for i, p in enumerate(out["plays"]):
        hosts = sorted({h for t in p["tasks"] for h in t["hosts"]})
        if not hosts:
            continue
        lines += [f"- name: Floor play {i}", f"  hosts: {json.dumps(hosts)}", "  gather_facts: false",
                  "  tasks:"]
        for j in range(len(p["tasks"])):
            lines += [f"    - name: Noop {j}", "      ansible.builtin.debug:", "        msg: noop"]
    path.write_text("\n".join(lines) + "\n")


def changed_tasks(out: dict[str, Any]) -> list[str]:
    """Tasks that reported a change (an idempotent re-run has none)."""
    return [f"{t['task']['name']} on {h}" for p in out["plays"] for t in p["tasks"]
            for h, res in t["hosts"].items() if res.get("changed")]


def slowest(out: dict[str, Any], top: int) -> list[tuple[float, str, str]]:
    from datetime import datetime

    rows = []
    for p in out["plays"]:
        for t in p["tasks"]:
            d = t["task"].get("duration") or {}
            if d.get("start") and d.get("end"):
                seconds = (datetime.fromisoformat(d["end"].rstrip("Z")) -
                           datetime.fromisoformat(d["start"].rstrip("Z"))).total_seconds()
                rows.append((seconds, p["play"]["name"], t["task"]["name"]))
    return sorted(rows, reverse=True)[:top]


def verify(inventory: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.run([str(VENV_BIN / "celery-provision"), "verify", "-i", str(inventory)],
                          cwd=REPO, capture_output=True, text=True, timeout=600, env=_env())
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        print(f"  (verify reported failures: {proc.stdout.strip().splitlines()[-1:]})")
    return elapsed


def machine_state() -> str:
    def installed(pkg: str) -> bool:
        q = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
        return "install ok installed" in q.stdout

    def running(service: str) -> bool:
        return subprocess.run(["service", service, "status"], capture_output=True).returncode == 0

    pkgs = ", ".join(f"{p} {'yes' if installed(p) else 'no'}" for p in ("rabbitmq-server", "redis-server", "nftables"))
    celery = Path(role_default("celery_worker", "celery_worker_venv")) / "bin" / "celery"
    venv = "yes" if celery.exists() else "no"
    svcs = ", ".join(f"{s} {'running' if running(s) else 'stopped'}" for s in ("rabbitmq-server", "redis-server"))
    return f"packages installed: {pkgs}; worker venv present: {venv}; {svcs}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="See the module docstring (and benchmarks/README.md).")
    p.add_argument("-i", "--inventory", type=Path, default=REPO / "inventories" / "local",
                   help="inventory to copy (default: inventories/local); the copy gets its own PKI")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds of re-run/floor/verify (2)")
    p.add_argument("--workdir", type=Path, help="keep the deployed copy here (for bench_throughput)")
    p.add_argument("--top", type=int, default=10, help="slowest re-run tasks to list (10)")
    args = p.parse_args(argv)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-site-"))
    inventory = work / "inventories" / args.inventory.name
    if inventory.exists():
        sys.exit(f"bench_site: {inventory} exists; give an empty --workdir")
    shutil.copytree(args.inventory, inventory)
    site = REPO / "playbooks" / "site.yml"
    try:
        print(f"bench_site: machine before the first converge: {machine_state()}", flush=True)
        first, out = playbook(inventory, site)
        print(f"  first converge   {first:7.1f} s  {executions(out)} task runs, {changed(out)} changed", flush=True)
        floor_path = work / "floor.yml"
        times: dict[str, list[float]] = {"rerun": [], "floor": [], "verify": []}
        rerun_out: dict[str, Any] = {}
        for r in range(args.rounds):
            t, rerun_out = playbook(inventory, site)
            times["rerun"].append(t)
            floor_playbook(rerun_out, floor_path)
            t, floor_out = playbook(inventory, floor_path)
            times["floor"].append(t)
            times["verify"].append(verify(inventory))
            print(f"  round {r + 1}: re-run {times['rerun'][-1]:6.1f} s ({changed(rerun_out)} changed)  "
                  f"floor {times['floor'][-1]:6.1f} s  verify {times['verify'][-1]:5.2f} s", flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    plays = Counter(p["play"]["name"] for p in rerun_out["plays"])
    ratio = med["rerun"] / med["floor"]
    print(f"\nsite.yml on {args.inventory.name} ({len(plays)} plays, {executions(rerun_out)} task runs; "
          f"floor: the same number of debug tasks), median of {args.rounds}")
    print(f"  first converge (fresh PKI)   {first:7.1f} s")
    print(f"  idempotent re-run            {med['rerun']:7.1f} s")
    print(f"  floor (debug tasks)          {med['floor']:7.1f} s")
    print(f"  celery-provision verify      {med['verify']:7.2f} s")
    verdict = "OK" if ratio <= TARGET_RATIO else f"MISSED {TARGET_RATIO}x"
    print(f"re-run/floor = {ratio:.2f}x ({verdict})")
    for name in changed_tasks(rerun_out):
        print(f"  changed in the last re-run (not idempotent): {name}")
    print("slowest tasks of the last re-run:")
    for seconds, play, task in slowest(rerun_out, args.top):
        print(f"  {seconds:6.2f} s  {play} | {task}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
