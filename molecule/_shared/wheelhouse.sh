#!/usr/bin/env bash
# Download the wheels of the Celery worker venv (worker-requirements.txt) for
# the test containers, which have no network: Debian bookworm's CPython 3.11,
# glibc 2.36, x86_64. Idempotent: skips when the wheelhouse was made from the
# same requirements and target (a stamp file records their hash).
#
# Environment (optional):
#   CELERY_PROVISION_WHEELHOUSE  target dir (/var/cache/celery-provision/wheelhouse)
#   CELERY_PROVISION_PIP         pip to run (default: /usr/bin/python3 -m pip,
#                                Debian's own, see below)
#
# Result: WHEELHOUSE/*.whl, WHEELHOUSE/requirements.txt (copy of the list),
# WHEELHOUSE/.stamp. A scenario copies the directory into a container and runs
#   pip install --no-index --find-links DIR -r DIR/requirements.txt
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="${CELERY_PROVISION_WHEELHOUSE:-/var/cache/celery-provision/wheelhouse}"
requirements="$here/worker-requirements.txt"
# The container's interpreter and libc (Debian 12: python3.11, glibc 2.36).
# pip does not widen a manylinux tag to older glibc versions: list them all.
target=(--python-version 3.11 --implementation cp --abi cp311)
for glibc_minor in $(seq 36 -1 17); do
    target+=(--platform "manylinux_2_${glibc_minor}_x86_64")
done
target+=(--platform manylinux2014_x86_64)

log() { printf '[wheelhouse] %s\n' "$*" >&2; }

# pip evaluates environment markers with the interpreter that RUNS it, not the
# --python-version target: redis needs async-timeout only on Python < 3.11.3,
# and a 3.11.7 venv silently leaves it out for the containers' 3.11.2. So run
# Debian's own python3 (the containers' interpreter) with Debian's pip.
if [[ -n ${CELERY_PROVISION_PIP:-} ]]; then
    read -r -a pip <<<"$CELERY_PROVISION_PIP"
else
    pip=(/usr/bin/python3 -m pip)
fi

stamp=$({ cat "$requirements"; echo "${target[*]}"; "${pip[@]}" --version; } | sha256sum | cut -c1-16)
if [[ -f $dest/.stamp && "$(cat "$dest/.stamp")" == "$stamp" ]]; then
    log "$dest is current ($(find "$dest" -name '*.whl' | wc -l) wheels)"
    exit 0
fi

parent="$(dirname "$dest")"
install -d -m 0755 "$parent"
tmp=$(mktemp -d "$parent/.wheelhouse.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# --only-binary: the containers have no compiler; every package must be a wheel.
"${pip[@]}" download --quiet --disable-pip-version-check --only-binary=:all: \
    "${target[@]}" --dest "$tmp" -r "$requirements"
cp "$requirements" "$tmp/requirements.txt"
printf '%s\n' "$stamp" >"$tmp/.stamp"
chmod 0755 "$tmp"

rm -rf "$dest.old"
[[ -e $dest ]] && mv "$dest" "$dest.old"
mv "$tmp" "$dest"
rm -rf "$dest.old"
trap - EXIT
log "$dest: $(find "$dest" -name '*.whl' | wc -l) wheels"
