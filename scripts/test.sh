#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 or 13 machine, as root:
#   sudo bash scripts/test.sh [PYTEST ARGS]
# Installs what it needs (apt, pip, the Podman image for Molecule), then runs pytest:
# unit tests, live tests against real RabbitMQ/Redis/Celery started by the test setup,
# the hostile-client suite, the Molecule scenarios and the linters.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install.sh
# The Molecule hosts' releases (tests/test_molecule.py reads the same variable).
releases_list=${CELERY_PROVISION_MOLECULE_RELEASES:-${MOLECULE_DEBIAN:-bookworm}}
read -r -a releases <<<"${releases_list//,/ }"
bash molecule/_shared/prepare-host.sh "${releases[@]}"
export PATH="$PWD/.venv/bin:$PATH"
# Arguments replace the defaults below.
if (($#)); then
  exec .venv/bin/pytest "$@"
fi
# Four processes: the live deployment's tests in one, each Molecule scenario in its own,
# the rest spread over them (see tests/conftest.py). Then the tests marked `alone` (a
# three-node RabbitMQ cluster and the cluster's faults) on a quiet machine. Both run; the first failure's code wins.
rc=0
.venv/bin/pytest -n 4 --dist loadgroup --no-loadscope-reorder --durations=20 -p no:cacheprovider -m "not alone" || rc=$?
.venv/bin/pytest --durations=5 -p no:cacheprovider -m alone || { r=$?; ((rc)) || rc=$r; }
exit "$rc"
