"""The redis role's exports for a replicated group, run by ansible-playbook on nothing but facts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent

PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - name: The role's firewall export
      ansible.builtin.include_role:
        name: redis
        tasks_from: firewall
    - name: Show it
      ansible.builtin.copy:
        content: "{{ redis_firewall_rules | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
"""


def _rules(tmp_path: Path, **variables: Any) -> list[dict[str, Any]]:
    (tmp_path / "play.yml").write_text(PLAY)
    out = tmp_path / "rules.json"
    extra = {"out": str(out), "ansible_python_interpreter": sys.executable, **variables}
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           str(tmp_path / "play.yml"), "-e", json.dumps(extra)], capture_output=True, text=True,
                          cwd=REPO, timeout=120, env=dict(os.environ, ANSIBLE_ROLES_PATH=str(REPO / "roles")))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result: list[dict[str, Any]] = json.loads(out.read_text())
    return result


@pytest.mark.slow
def test_a_replicated_group_opens_the_sentinel_port_to_the_same_sources_and_a_lone_server_does_not(
        tmp_path: Path) -> None:
    sources = ["10.0.0.5/32", "10.0.0.12/32"]
    replicated = _rules(tmp_path, redis_sentinel=True, redis_firewall_allowed_sources=sources)
    assert [(r["port"], r["sources"]) for r in replicated] == [(6380, sources), (26379, sources)]
    lone = _rules(tmp_path, redis_firewall_allowed_sources=sources)
    assert [(r["port"], r["sources"]) for r in lone] == [(6380, sources)]
