#!/usr/bin/env bash
# Prepare this machine (Debian 12 or 13, root) to run the Molecule scenarios of
# celery-provision on rootful Podman. Idempotent: every phase checks first and
# does nothing when its result is already there.
#
#   prepare-host.sh [SUITE...]      SUITE: bookworm (default), trixie
#
#   1. host packages   podman runc debootstrap netavark aardvark-dns iptables python3-pip (apt)
#   2. podman config   drop-in /etc/containers/containers.conf.d/50-celery-provision.conf
#   per SUITE, the same recipe for every Debian release:
#   3. test image      localhost/celery-provision-debian:SUITE, rebuilt only when
#                      absent or when packages.txt / the recipe changed (label)
#   4. wheelhouse      wheelhouse.sh SUITE: the worker venv's wheels, resolved by the
#                      image's own Python (CACHE/wheelhouses/SUITE)
#
# Environment (all optional):
#   CELERY_PROVISION_SUITES       suites when none is given as argument (bookworm)
#   CELERY_PROVISION_IMAGE_REPO   image name without tag (localhost/celery-provision-debian)
#   CELERY_PROVISION_CACHE        cache dir    (/var/cache/celery-provision)
#   CELERY_PROVISION_MIRROR       Debian mirror (default: the one apt on this host uses)
#   CELERY_PROVISION_SECURITY_MIRROR  Debian security mirror (default: as the host)
#   CELERY_PROVISION_FORCE_REBUILD=1  rebuild the image even if it is up to date
#   CELERY_PROVISION_SKIP_WHEELHOUSE=1  skip phase 4
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
image_repo="${CELERY_PROVISION_IMAGE_REPO:-localhost/celery-provision-debian}"
cache="${CELERY_PROVISION_CACHE:-/var/cache/celery-provision}"
# The Debian releases the recipe knows (debootstrap >= 1.0.128 has scripts for both).
known_suites=(bookworm trixie)
if (($#)); then
    suites=("$@")
else
    read -r -a suites <<<"${CELERY_PROVISION_SUITES:-bookworm}"
fi
# Set per suite by the loop at the end: suite, image.
suite="" image=""
label=org.celery-provision.recipe
# The release an image was built for (create.yml mounts that release's wheelhouse).
suite_label=org.celery-provision.suite
# Bump when the build steps below change in a way that needs a new image.
recipe_version=1

log() { printf '[prepare-host] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# phase NAME FUNCTION: run FUNCTION and report how long it took.
phase() {
    local name="$1" start end
    shift
    start=$(date +%s.%N)
    "$@"
    end=$(date +%s.%N)
    log "$(awk -v n="$name" -v s="$start" -v e="$end" 'BEGIN { printf "phase %-12s %6.1f s", n, e - s }')"
}

[[ $(id -u) -eq 0 ]] || die "run as root (rootful podman, debootstrap, apt)"

# Lines of one [section] of packages.txt, comments and blanks removed.
packages() {
    awk -v want="[$1]" '
        { sub(/#.*/, ""); gsub(/[ \t]+/, "") }
        /^\[.*\]$/ { section = $0; next }
        section == want && length($0) { print }
    ' "$here/packages.txt"
}

# ---------------------------------------------------------------- 1. host packages
host_packages() {
    local wanted=(podman runc debootstrap netavark aardvark-dns iptables python3-pip) missing=() p
    for p in "${wanted[@]}"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' \
            || missing+=("$p")
    done
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        log "host packages present"
    fi
}

# ---------------------------------------------------------------- 2. podman config
# A drop-in, so an administrator's /etc/containers/containers.conf stays
# untouched (podman 4.3 reads containers.conf.d/*.conf after containers.conf).
#  - default_ulimits: podman's defaults exceed this kind of machine's hard
#    limits ("setrlimit ... Operation not permitted"); never ask above them.
#  - runtime runc: crun refuses cgroups in hybrid (v1) mode here.
podman_config() {
    local dropin=/etc/containers/containers.conf.d/50-celery-provision.conf
    local nofile nproc want
    nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
    [[ $nofile == unlimited || $nofile -gt 16384 ]] && nofile=16384
    [[ $nproc == unlimited || $nproc -gt 16384 ]] && nproc=16384
    want=$(cat <<EOF
# Written by celery-provision molecule/_shared/prepare-host.sh; safe to delete.
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]

[engine]
runtime = "runc"
EOF
)
    if [[ -f $dropin && "$(cat "$dropin")" == "$want" ]]; then
        log "$dropin up to date"
    else
        install -d -m 0755 "$(dirname "$dropin")"
        printf '%s\n' "$want" >"$dropin.tmp"
        chmod 0644 "$dropin.tmp"
        mv "$dropin.tmp" "$dropin"
        log "wrote $dropin"
    fi
}

# ---------------------------------------------------------------- 3. image
# packages.txt as SUITE sees it: sections of other suites ([preload:OTHER]) are
# left out, with the blank lines before them, so adding a section for one
# release leaves the other releases' images (and their labels) as they are.
packages_for_suite() {
    awk -v suite="$suite" '
        /^\[[^]]*\]$/ {
            name = substr($0, 2, length($0) - 2)
            skip = (index(name, ":") && substr(name, index(name, ":") + 1) != suite)
            if (!skip) printf "%s", blanks
            blanks = ""
            if (!skip) print
            next
        }
        skip { next }
        /^$/ { blanks = blanks "\n"; next }
        { printf "%s", blanks; blanks = ""; print }
        END { printf "%s", blanks }
    ' "$here/packages.txt"
}

recipe_hash() {
    { echo "recipe=$recipe_version suite=$suite"; packages_for_suite; } \
        | sha256sum | cut -c1-16
}

# "URL SUITE" of the Debian repositories apt uses on this host, e.g.
# "http://deb.debian.org/debian bookworm". Read from apt-cache policy, which
# names the origin of each source, so mirrors with any host name are found.
# A mirror carries every release: for a suite the host does not use (trixie on
# a bookworm host) the host's mirror of its own release serves.
host_debian_repos() {
    apt-cache policy | awk '
        /^ *[0-9]+ (https?|file):/ { url = $2; split($3, s, "/"); suite = s[1]; next }
        / release / && /o=Debian[,]/ && url != "" { print url, suite; url = "" }
    ' | sort -u
}

mirrors() {
    local repos
    repos=$(host_debian_repos)
    if [[ -z $repos ]]; then
        apt-get update -qq
        repos=$(host_debian_repos)
    fi
    mirror="${CELERY_PROVISION_MIRROR:-$(awk -v s="$suite" '$2 == s { print $1; exit }' <<<"$repos")}"
    mirror="${mirror:-$(awk '$2 !~ /-/ { print $1; exit }' <<<"$repos")}"
    security_mirror="${CELERY_PROVISION_SECURITY_MIRROR:-$(awk -v s="$suite-security" '$2 == s { print $1; exit }' <<<"$repos")}"
    security_mirror="${security_mirror:-$(awk '$2 ~ /-security$/ { print $1; exit }' <<<"$repos")}"
    mirror="${mirror:-http://deb.debian.org/debian}"
    security_mirror="${security_mirror:-http://deb.debian.org/debian-security}"
    log "mirror $mirror, security mirror $security_mirror"
}

image_is_current() {
    local have
    have=$(podman image inspect --format "{{ index .Labels \"$label\" }}" "$image" 2>/dev/null) || return 1
    [[ $have == "$(recipe_hash)" ]]
}

rootfs=""
cleanup() {
    if [[ -n $rootfs ]]; then
        mountpoint -q "$rootfs/proc" && umount "$rootfs/proc"
        rm -rf "$rootfs"
    fi
    return 0
}
trap cleanup EXIT

debootstrap_phase() {
    local include
    include=$(packages base | paste -sd, -)
    # Bookworm keeps the cache directories it always had; other suites get their own.
    debs="$cache/debootstrap-debs${suite_cache_dir}"
    install -d -m 0755 "$debs" "$cache/build"
    rootfs=$(mktemp -d "$cache/build/rootfs.XXXXXX")
    # mktemp makes it 0700; it becomes the container's "/", which every
    # service user must be able to traverse (and apt's _apt user here).
    chmod 0755 "$rootfs"
    # --cache-dir keeps the .debs between builds: a rebuild does not download.
    debootstrap --variant=minbase --include="$include" \
        --cache-dir="$debs" \
        "$suite" "$rootfs" "$mirror" >"$cache/build/debootstrap${suite_log}.log" 2>&1 \
        || { tail -n 20 "$cache/build/debootstrap${suite_log}.log" >&2; die "debootstrap $suite failed"; }
}

preload_phase() {
    local -a preload
    # What every release preloads, then what only this one has.
    mapfile -t preload < <(packages preload; packages "preload:$suite")
    cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security_mirror $suite-security main
EOF
    cp -L /etc/resolv.conf "$rootfs/etc/resolv.conf"
    mount -t proc proc "$rootfs/proc"
    local archives="$cache/apt-archives${suite_cache_dir}"
    install -d -m 0755 "$archives"
    # Seed from the previous build's downloads; apt fetches only what is new.
    find "$archives" -maxdepth 1 -name '*.deb' -exec cp -t "$rootfs/var/cache/apt/archives/" {} +
    local log="$cache/build/preload${suite_log}.log"
    {
        chroot "$rootfs" apt-get update
        # Upgrade first so the image is current with the security archive,
        # then download (not install) what the roles will install.
        chroot "$rootfs" env DEBIAN_FRONTEND=noninteractive apt-get -y dist-upgrade
        chroot "$rootfs" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --download-only "${preload[@]}"
    } >"$log" 2>&1 || { tail -n 20 "$log" >&2; die "preload failed (see $log)"; }
    find "$rootfs/var/cache/apt/archives" -maxdepth 1 -name '*.deb' -exec cp -n -t "$archives/" {} +
    umount "$rootfs/proc"
}

tune_phase() {
    # podman writes /etc/resolv.conf and /etc/hosts per container.
    rm -f "$rootfs/etc/resolv.conf"
    # Empty machine-id: systemd makes a unique one at first boot.
    : >"$rootfs/etc/machine-id"
    rm -f "$rootfs/var/lib/dbus/machine-id"
    # apt's timers would try the (absent) network and hold the dpkg lock
    # while a role runs; nothing else in a test container needs them.
    local unit
    for unit in apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service \
        getty@tty1.service console-getty.service systemd-logind.service; do
        ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
    done
    # Remove old downloaded debs of packages that dist-upgrade replaced: keep
    # only what the preload needs (apt-get autoclean keeps current versions).
    chroot "$rootfs" apt-get -qq autoclean
}

import_phase() {
    local old new
    old=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
    tar --numeric-owner --xattrs -C "$rootfs" -c . | podman import \
        --change 'CMD ["/sbin/init"]' \
        --change 'ENV container=podman' \
        --change 'STOPSIGNAL SIGRTMIN+3' \
        --change "LABEL $label=$(recipe_hash)" \
        --change "LABEL $suite_label=$suite" \
        --message "celery-provision test image ($suite, $(recipe_hash))" \
        - "$image" >/dev/null
    new=$(podman image inspect --format '{{.Id}}' "$image")
    if [[ -n $old && $old != "$new" ]]; then
        podman rmi "$old" >/dev/null 2>&1 || log "old image $old still in use; left in place"
    fi
    log "image $image ($(podman image inspect --format '{{.Size}}' "$image" | numfmt --to=iec) , recipe $(recipe_hash))"
}

build_image() {
    if [[ ${CELERY_PROVISION_FORCE_REBUILD:-0} != 1 ]] && image_is_current; then
        log "image $image is current (recipe $(recipe_hash))"
        return 0
    fi
    log "building $image (recipe $(recipe_hash))"
    mirrors
    phase debootstrap debootstrap_phase
    phase preload preload_phase
    phase tune tune_phase
    phase import import_phase
    cleanup
    rootfs=""
}

# One build at a time on this machine (engineers and CI jobs share the cache).
install -d -m 0755 "$cache"
exec 9>"$cache/.lock"
flock 9

for suite in "${suites[@]}"; do
    [[ " ${known_suites[*]} " == *" $suite "* ]] || die "unknown suite $suite (known: ${known_suites[*]})"
done

total_start=$(date +%s.%N)
phase packages host_packages
phase podman-conf podman_config
for suite in "${suites[@]}"; do
    image="$image_repo:$suite"
    # bookworm's caches stay where they were before there were several suites.
    if [[ $suite == bookworm ]]; then suite_cache_dir="" suite_log=""; else suite_cache_dir="/$suite" suite_log="-$suite"; fi
    build_image
    if [[ ${CELERY_PROVISION_SKIP_WHEELHOUSE:-0} != 1 ]]; then
        phase "wheels:$suite" "$here/wheelhouse.sh" "$suite"
    fi
done
log "$(awk -v s="$total_start" -v e="$(date +%s.%N)" 'BEGIN { printf "total %.1f s", e - s }')"
