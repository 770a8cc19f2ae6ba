#!/usr/bin/env bash
# Install everything celery-provision needs on this (Debian 12 or 13) machine, as root.
# Idempotent: a second run installs nothing. Used by deploy-local.sh and test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

# Servers for the all-in-one local deployment, and the tools the roles and tests use.
APT_PACKAGES=(rabbitmq-server redis-server redis-tools nftables python3-venv python3-apt
              python3-requests socat openssl iproute2 ca-certificates)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "install: apt packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  echo "install: virtualenv .venv ($($PYTHON --version))"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.celery-provision-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  echo "install: Python packages (pip install -e '.[dev]')"
  .venv/bin/pip install -q --upgrade pip 2>/dev/null || true
  .venv/bin/pip install -q -e '.[dev]'
  touch "$stamp"
fi
echo "install: ok"
