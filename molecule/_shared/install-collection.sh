#!/usr/bin/env bash
# Molecule's dependency step for a scenario that uses the roles as a consumer does: build the
# collection celery_provision.secure from this checkout (scripts/build_collection.py) and
# install its tarball into DEST, a fresh collections path (the scenario's
# ANSIBLE_COLLECTIONS_PATH). Its dependencies (community.*) are found installed already:
# the dev extra's `ansible` bundle carries them, and there is no Galaxy here (--offline).
#   bash molecule/_shared/install-collection.sh DEST
set -euo pipefail
dest=${1:?usage: install-collection.sh DEST}
root=$(cd "$(dirname "$0")/../.." && pwd)
bin="$root/.venv/bin"
[[ -x $bin/python ]] || bin=$(dirname "$(command -v python3)")
tmp=$(mktemp -d -t celery-provision-collection.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
"$bin/python" "$root/scripts/build_collection.py" --output-dir "$tmp" >/dev/null
rm -rf "$dest"
"$bin/ansible-galaxy" collection install --offline -p "$dest" "$tmp"/celery_provision-secure-*.tar.gz
