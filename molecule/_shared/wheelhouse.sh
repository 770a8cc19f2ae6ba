#!/usr/bin/env bash
# Download the wheels of the Celery worker venv (worker-requirements.txt) for
# the test containers of one Debian release, which have no network:
#
#   wheelhouse.sh [SUITE]          SUITE: bookworm (default), trixie
#
# The wheels are resolved INSIDE a throw-away container of that release's test
# image (localhost/celery-provision-debian:SUITE), by the image's own Python and
# pip, so they never depend on the controller's Python: Debian 12 gets wheels
# for CPython 3.11, Debian 13 for 3.13, whatever this machine runs. pip
# evaluates environment markers with the interpreter that runs it, not with
# --python-version: redis needs async-timeout only on Python < 3.11.3, so a
# download from any other Python silently leaves it out for bookworm's 3.11.2.
#
# Idempotent: skips when the wheelhouse was made from the same requirements and
# the same image (a stamp file records their hash).
#
# Environment (optional):
#   CELERY_PROVISION_WHEELHOUSES  root of the per-release wheelhouses
#                                 (/var/cache/celery-provision/wheelhouses)
#   CELERY_PROVISION_IMAGE_REPO   image name without tag (localhost/celery-provision-debian)
#   CELERY_PROVISION_CA_BUNDLE    CA bundle pip in the container trusts (default: this
#                                 host's /etc/ssl/certs/ca-certificates.crt, so a proxy
#                                 or mirror the host trusts is trusted there too)
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST, PIP_DEFAULT_TIMEOUT,
#   http(s)_proxy, no_proxy       passed to the container when set
#
# Result: ROOT/SUITE/*.whl, ROOT/SUITE/requirements.txt (copy of the list),
# ROOT/SUITE/.stamp. create.yml mounts ROOT/<the platform image's suite> at
# /opt/celery-provision/wheelhouse; a scenario installs with
#   pip install --no-index --find-links DIR -r DIR/requirements.txt
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
suite="${1:-bookworm}"
image="${CELERY_PROVISION_IMAGE_REPO:-localhost/celery-provision-debian}:$suite"
root="${CELERY_PROVISION_WHEELHOUSES:-/var/cache/celery-provision/wheelhouses}"
dest="$root/$suite"
requirements="$here/worker-requirements.txt"
ca_bundle="${CELERY_PROVISION_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
# Bump when the build steps below change in a way that needs new wheels.
recipe_version=2

log() { printf '[wheelhouse %s] %s\n' "$suite" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

image_id=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null) \
    || die "no image $image: run molecule/_shared/prepare-host.sh $suite"

stamp=$({ cat "$requirements"; echo "recipe=$recipe_version image=$image_id"; } | sha256sum | cut -c1-16)
if [[ -f $dest/.stamp && "$(cat "$dest/.stamp")" == "$stamp" ]]; then
    log "$dest is current ($(find "$dest" -name '*.whl' | wc -l) wheels)"
    exit 0
fi

install -d -m 0755 "$root"
tmp=$(mktemp -d "$root/.$suite.XXXXXX")
name="celery-provision-wheelhouse-$suite-$$"
cleanup() {
    podman rm -f --time 0 "$name" >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT

# The host's network: the download needs only what the host reaches (PyPI or its mirror,
# through the host's resolver and proxy), also where a bridge's NAT has no way out (a
# Debian 13 stand-in container running this nested).
run_args=(--rm --name "$name" --network host
          -v "$tmp:/wheelhouse" -v "$requirements:/requirements.txt:ro")
if [[ -r $ca_bundle ]]; then
    run_args+=(-v "$ca_bundle:/etc/celery-provision-ca.pem:ro" -e PIP_CERT=/etc/celery-provision-ca.pem)
fi
for var in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST PIP_DEFAULT_TIMEOUT \
    http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    if [[ -n ${!var:-} ]]; then run_args+=(-e "$var"); fi
done

# In the container: python3-venv from the image's pre-downloaded packages (no
# download), a venv as the roles make one, its pip downloads wheels only (the
# hosts have no compiler), then an offline dry run proves the wheelhouse is
# complete for exactly this interpreter.
# shellcheck disable=SC2016  # expanded in the container
podman run "${run_args[@]}" "$image" sh -euc '
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --no-download \
        python3-venv >/dev/null
    python3 -m venv /tmp/venv
    /tmp/venv/bin/python --version
    /tmp/venv/bin/pip download --quiet --disable-pip-version-check --no-cache-dir \
        --only-binary=:all: --dest /wheelhouse -r /requirements.txt
    /tmp/venv/bin/pip install --quiet --disable-pip-version-check --dry-run \
        --no-index --find-links /wheelhouse -r /requirements.txt
' >&2 || die "download in $image failed"

cp "$requirements" "$tmp/requirements.txt"
printf '%s\n' "$stamp" >"$tmp/.stamp"
chmod 0755 "$tmp"
chmod 0644 "$tmp"/*.whl "$tmp/requirements.txt" "$tmp/.stamp"

rm -rf "$dest.old"
[[ -e $dest ]] && mv "$dest" "$dest.old"
mv "$tmp" "$dest"
rm -rf "$dest.old"
trap - EXIT
log "$dest: $(find "$dest" -name '*.whl' | wc -l) wheels"
