#!/usr/bin/env bash
# Build (or reuse) the base image of the Molecule container testbed and print
# its tag on stdout:
#   localhost/lifeboat-testbed:<hash>   (also tagged :latest, for hand use)
# <hash> is the content hash of this script, so changing the package list (or
# anything else here) makes a new image; an unchanged script costs one
# `podman image exists`.
#
# The image is a Debian bookworm minbase rootfs made by mmdebstrap (no registry
# is reachable here) and `podman import`ed. The rootfs tarball is kept in
# ${LIFEBOAT_CACHE}/images/ so `podman system reset` (or a new storage) only
# costs an import, not a rebuild.
#
# No init system in the image: containers run `sleep infinity` under podman's
# --init (catatonit) as PID 1. Scenarios start the servers they need themselves
# (pg_ctlcluster, redis-server --daemonize), as the harness does on loopback.
#
#   scripts/build-image.sh            build if missing, print the tag
#   scripts/build-image.sh --tag      print the tag only (never builds)
#   scripts/build-image.sh --rebuild  fetch the packages again (security updates)
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/common.sh"
export CONTAINERS_CONF="${CONTAINERS_CONF:-${ROOT}/extensions/molecule/containers.conf}"

SUITE=bookworm
MIRROR=http://deb.debian.org/debian
SECURITY=http://deb.debian.org/debian-security

# One image for every scenario, so it is built once. Keep it to Debian
# packages: the managed nodes get what a Debian 12 server would have.
PACKAGES=(
    # what Ansible and the scenarios' checks need on a managed node
    python3 procps iproute2 iputils-ping ca-certificates
    # servers the backup captures and restores
    postgresql-15 redis-server
    # Python libraries the modules import on the managed node
    python3-psycopg python3-redis python3-requests python3-zstandard python3-cryptography
    # stock tools: image pipeline, recovery by hand, storage targets, scheduling
    zstd age unzip rsync openssh-client openssh-server cron
    # the cluster scenario's storage container (rsync over SSH is openssh-server above)
    vsftpd
)

NAME=localhost/lifeboat-testbed
hash="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)"
TAG="${NAME}:${hash}"
IMAGES="${LIFEBOAT_CACHE}/images"
ROOTFS="${IMAGES}/lifeboat-testbed-${SUITE}-${hash}.tar.zst"

case "${1:-}" in
    --tag) echo "${TAG}"; exit 0 ;;
    --rebuild) rebuild=1 ;;
    "") rebuild=0 ;;
    *) die "usage: $0 [--tag|--rebuild]" ;;
esac

tmp=""
trap '[ -z "${tmp}" ] || rm -rf "${tmp}"' EXIT

build_rootfs() {
    command -v mmdebstrap >/dev/null || die "mmdebstrap is missing (make deps installs it)"
    tmp="$(mktemp -d "${IMAGES}/.build-XXXXXX")"
    log "image: mmdebstrap ${SUITE} minbase + ${#PACKAGES[@]} packages (about a minute)"
    local includes
    includes="$(IFS=,; echo "${PACKAGES[*]}")"
    # Docs, man pages and translations are of no use in a test node.
    mmdebstrap --quiet --variant=minbase --include="${includes}" \
        --aptopt='Acquire::Languages "none"' \
        --aptopt='APT::Install-Recommends "false"' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        "${SUITE}" "${tmp}/rootfs.tar" \
        "deb ${MIRROR} ${SUITE} main" \
        "deb ${MIRROR} ${SUITE}-updates main" \
        "deb ${SECURITY} ${SUITE}-security main"
    zstd -q -T0 -3 --rm "${tmp}/rootfs.tar" -o "${tmp}/rootfs.tar.zst"
    # Appear under the final name only when complete.
    mv -f "${tmp}/rootfs.tar.zst" "${ROOTFS}"
}

import_image() {
    log "image: podman import ${ROOTFS##*/} as ${TAG}"
    podman import --quiet \
        --change 'CMD ["sleep", "infinity"]' \
        --change 'ENV LANG=C.UTF-8' \
        --message "lifeboat testbed: ${SUITE} minbase + ${PACKAGES[*]}" \
        "${ROOTFS}" "${TAG}" >/dev/null
}

ensure_image() {
    if [ "${rebuild}" = 1 ]; then
        # Import over the tag; running containers keep the old image.
        rm -f "${ROOTFS}"
    elif podman image exists "${TAG}"; then
        return 0
    fi
    [ -s "${ROOTFS}" ] || build_rootfs
    import_image
}

mkdir -p "${IMAGES}"
with_lock "image-${hash}" ensure_image
podman tag "${TAG}" "${NAME}:latest"
echo "${TAG}"
