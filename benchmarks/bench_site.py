#!/usr/bin/env python3
"""Benchmark: `playbooks/site.yml` on the local inventory against a reference workload, and
`celery-provision verify`, measured in one run (issue #16, items 2 and 4).

* first converge -- site.yml on a fresh copy of the inventory (new PKI, new passwords). The
                    machine state it starts from is printed: packages, the worker venv and
                    the services are usually already there, so this is not a bare machine;
                    the package installs it made (apt/package/pip tasks that ran) are timed
                    from the callback's per-task durations and printed beside it;
* re-run         -- site.yml again (idempotent: nothing changes), the number that matters;
* reference      -- a playbook of 10 `ansible.builtin.stat` tasks on every host of the
                    inventory (10 real module runs per host), the issue's reference workload;
* verify         -- `celery-provision verify -i INVENTORY` (TLS probes and a signed canary);
* main job       -- `scripts/deploy-local.sh INVENTORY` once more at the end (its second
                    run: install check, site.yml, verify), end to end.

Re-run, reference and verify are repeated interleaved (--rounds) and medians are reported,
with re-run/reference (target <= 2.5x), first converge against 1.5 x re-run + the package
installs, the main job's second run against 30 s, and the slowest tasks of the re-run (from
the `ansible.posix.json` callback's per-task durations). Nothing is asserted.

This reconfigures the machine's RabbitMQ, Redis and worker for the copied inventory (as
`scripts/deploy-local.sh` does): don't run it while live tests use the deployment. With
--workdir the copy is kept (deployed) for other benchmarks; otherwise it is removed.

Usage: benchmarks/bench_site.py [--rounds 2] [--workdir DIR] [--top 10] [--no-main-job]
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

TARGET_RATIO = 2.5        # re-run / reference
TARGET_FIRST = 1.5        # first converge <= TARGET_FIRST x re-run + package installs
TARGET_MAIN_JOB = 30.0    # seconds, the main job's second run end to end
REFERENCE_TASKS = 10      # ansible.builtin.stat tasks per host
PACKAGE_ACTIONS = {"ansible.builtin.apt", "apt", "ansible.builtin.package", "package",
                   "ansible.builtin.pip", "pip"}


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


def reference_playbook(path: Path) -> None:
    """The issue's reference: REFERENCE_TASKS `ansible.builtin.stat` tasks on every inventory host."""
    lines = ["---", "- name: Reference workload", "  hosts: all", "  gather_facts: false", "  tasks:"]
    for j in range(REFERENCE_TASKS):
        lines += [f"    - name: Stat {j}", "      ansible.builtin.stat:", "        path: /etc/os-release"]
    path.write_text("\n".join(lines) + "\n")


def module_runs(out: dict[str, Any]) -> int:
    """Task runs on hosts that were not skipped."""
    return sum(1 for p in out["plays"] for t in p["tasks"] for r in t["hosts"].values() if not r.get("skipped"))


def _seconds(task: dict[str, Any]) -> float:
    from datetime import datetime

    d = task.get("duration") or {}
    if not (d.get("start") and d.get("end")):
        return 0.0
    return (datetime.fromisoformat(d["end"].rstrip("Z")) - datetime.fromisoformat(d["start"].rstrip("Z"))).total_seconds()


def package_installs(out: dict[str, Any]) -> tuple[float, list[str]]:
    """Seconds spent in package tasks (apt, package, pip) that ran on some host, and their names."""
    total, names = 0.0, []
    for p in out["plays"]:
        for t in p["tasks"]:
            action = t["task"].get("action") or next(iter(t["hosts"].values()), {}).get("action", "")
            ran = [r for r in t["hosts"].values() if not r.get("skipped")]
            if action in PACKAGE_ACTIONS and ran:
                total += _seconds(t["task"])
                names.append(t["task"]["name"])
    return total, names


def changed_tasks(out: dict[str, Any]) -> list[str]:
    """Tasks that reported a change (an idempotent re-run has none)."""
    return [f"{t['task']['name']} on {h}" for p in out["plays"] for t in p["tasks"]
            for h, res in t["hosts"].items() if res.get("changed")]


def slowest(out: dict[str, Any], top: int) -> list[tuple[float, str, str]]:
    rows = [(_seconds(t["task"]), p["play"]["name"], t["task"]["name"]) for p in out["plays"] for t in p["tasks"]
            if (t["task"].get("duration") or {}).get("end")]
    return sorted(rows, reverse=True)[:top]


def main_job(inventory: Path) -> tuple[float, int]:
    """`scripts/deploy-local.sh INVENTORY` (the main job) end to end: (seconds, exit code)."""
    started = time.perf_counter()
    proc = subprocess.run(["bash", str(REPO / "scripts" / "deploy-local.sh"), str(inventory)], cwd=REPO,
                          capture_output=True, text=True, timeout=3600, env=_env())
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        print(f"  (the main job failed: {proc.stdout.strip().splitlines()[-1:]})")
    return elapsed, proc.returncode


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
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds of re-run/reference/verify (2)")
    p.add_argument("--workdir", type=Path, help="keep the deployed copy here (for bench_throughput)")
    p.add_argument("--top", type=int, default=10, help="slowest re-run tasks to list (10)")
    p.add_argument("--no-main-job", action="store_true", help="skip the timed second run of deploy-local.sh")
    args = p.parse_args(argv)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-site-"))
    inventory = work / "inventories" / args.inventory.name
    if inventory.exists():
        sys.exit(f"bench_site: {inventory} exists; give an empty --workdir")
    shutil.copytree(args.inventory, inventory)
    site = REPO / "playbooks" / "site.yml"
    reference_path = work / "reference.yml"
    reference_playbook(reference_path)
    main = None
    try:
        print(f"bench_site: machine before the first converge: {machine_state()}", flush=True)
        load_before = os.getloadavg()
        first, first_out = playbook(inventory, site)
        packages, package_tasks = package_installs(first_out)
        print(f"  first converge   {first:7.1f} s  {executions(first_out)} task runs, {changed(first_out)} changed; "
              f"package installs {packages:.1f} s ({', '.join(package_tasks) or 'none: all present'})", flush=True)
        times: dict[str, list[float]] = {"rerun": [], "reference": [], "verify": []}
        rerun_out: dict[str, Any] = {}
        for r in range(args.rounds):
            t, rerun_out = playbook(inventory, site)
            times["rerun"].append(t)
            t, reference_out = playbook(inventory, reference_path)
            times["reference"].append(t)
            times["verify"].append(verify(inventory))
            print(f"  round {r + 1}: re-run {times['rerun'][-1]:6.1f} s ({changed(rerun_out)} changed)  "
                  f"reference {times['reference'][-1]:6.1f} s ({module_runs(reference_out)} module runs)  "
                  f"verify {times['verify'][-1]:5.2f} s", flush=True)
        if not args.no_main_job:
            main = main_job(inventory)
        load_after = os.getloadavg()
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    plays = Counter(p["play"]["name"] for p in rerun_out["plays"])
    ratio = med["rerun"] / med["reference"]
    first_target = TARGET_FIRST * med["rerun"] + packages
    print(f"\nsite.yml on {args.inventory.name} ({len(plays)} plays, {executions(rerun_out)} task runs, "
          f"{module_runs(rerun_out)} not skipped), median of {args.rounds}; load average "
          f"{load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"  first converge (fresh PKI)   {first:7.1f} s")
    print(f"  package installs in it       {packages:7.1f} s")
    print(f"  idempotent re-run            {med['rerun']:7.1f} s")
    label = f"reference ({REFERENCE_TASKS} stat x {module_runs(reference_out) // REFERENCE_TASKS} hosts)"
    print(f"  {label:<29}{med['reference']:7.1f} s")
    print(f"  celery-provision verify      {med['verify']:7.2f} s")
    if main is not None:
        print(f"  main job, second run         {main[0]:7.1f} s  (scripts/deploy-local.sh, exit {main[1]})")

    def verdict(ok: bool) -> str:
        return "OK" if ok else "MISSED"

    print(f"re-run/reference = {ratio:.2f}x (target <= {TARGET_RATIO}x: {verdict(ratio <= TARGET_RATIO)})")
    print(f"first converge = {first:.1f} s (target <= {TARGET_FIRST} x re-run + package installs = "
          f"{first_target:.1f} s: {verdict(first <= first_target)}; {first / med['rerun']:.2f}x the re-run)")
    if main is not None:
        print(f"main job second run = {main[0]:.1f} s (target <= {TARGET_MAIN_JOB:.0f} s: "
              f"{verdict(main[0] <= TARGET_MAIN_JOB and main[1] == 0)})")
    for name in changed_tasks(rerun_out):
        print(f"  changed in the last re-run (not idempotent): {name}")
    print("slowest tasks of the last re-run:")
    for seconds, play, task in slowest(rerun_out, args.top):
        print(f"  {seconds:6.2f} s  {play} | {task}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
