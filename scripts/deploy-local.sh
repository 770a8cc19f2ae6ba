#!/usr/bin/env bash
# The main job: an all-in-one deployment on this machine, verified end to end.
#   sudo bash scripts/deploy-local.sh [INVENTORY]      (default: inventories/local)
# Installs what is needed, issues the PKI and passwords, converges playbooks/site.yml
# (RabbitMQ and Redis TLS-only, firewall, a Celery worker), then runs
# `celery-provision verify`. A second run changes nothing and passes again.
set -euo pipefail
cd "$(dirname "$0")/.."
inventory=${1:-inventories/local}

bash scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"

log=$(mktemp -t celery-provision-site.XXXXXX.log)
echo "deploy: ansible-playbook -i $inventory playbooks/site.yml (log: $log)"
if ! ansible-playbook -i "$inventory" playbooks/site.yml >"$log" 2>&1; then
  tail -n 40 "$log"
  echo "deploy: site.yml FAILED (full log: $log)"
  exit 1
fi
sed -n '/PLAY RECAP/,$p' "$log"
changed=$(awk '/ changed=/{for(i=1;i<=NF;i++) if($i ~ /^changed=/){split($i,a,"="); s+=a[2]}} END{print s+0}' "$log")

echo "deploy: celery-provision verify -i $inventory"
status=0
celery-provision verify -i "$inventory" || status=$?
echo
if ((status == 0)); then
  echo "deploy: OK — site.yml made $changed change(s); every verify check passed."
else
  echo "deploy: FAILED — verify reported failures (site.yml made $changed change(s))."
fi
exit "$status"
