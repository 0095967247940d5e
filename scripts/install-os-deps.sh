#!/usr/bin/env bash
# Install the Debian packages the bench needs; only the missing ones, so a
# warm run costs one dpkg-query.
source "$(dirname "$0")/common.sh"

PACKAGES=(
    # containers (Molecule): runc, not crun; see docs/development.md
    podman runc mmdebstrap uidmap slirp4netns containernetworking-plugins
    # Recommends that --no-install-recommends would leave out: podman's --init needs
    # catatonit; short names on a podman network need netavark + aardvark-dns (without
    # them podman falls back to CNI, which has no DNS). See containers.conf.
    catatonit netavark aardvark-dns
    # servers started by the test harness
    postgresql-15 postgresql-client-15 redis-server
    # storage target servers the harness starts on loopback (docs/storage.md), and the
    # native clients the storage benchmark compares with
    openssh-server openssh-client samba smbclient nfs-ganesha nfs-ganesha-vfs libnfs-utils vsftpd
    # the image pipeline and the stock tools of docs/recovery-by-hand.md
    zstd age unzip zip tar rsync
    # the offline table-archive verifier is tested under the system Python, which has
    # cryptography (as a managed node's) and no Ansible: docs/table-archive.md
    python3-cryptography
    # break-the-glass secrets: Shamir shares read by the stock ssss-combine, jq in the page
    ssss jq
    # OpenSearch / Elasticsearch / Neo4j run on the machine's JDK, fetched with Maven
    openjdk-17-jdk-headless maven
    # alert receivers and schedulers the operations tests run on loopback (docs/operations.md):
    # rsyslogd with a private configuration (TLS by its openssl driver), cron -f, systemd-analyze verify/calendar
    rsyslog rsyslog-openssl cron systemd
    # the WAL archive program runs on the system Python as the postgres account (it cannot
    # enter root's venv): Debian's cryptography and zstandard, as on a managed node
    python3-cryptography python3-zstandard
    # the peer tool benchmarks/pitr_bench compares WAL archiving with
    pgbackrest
    # Python, and the odds and ends the scripts use
    python3 python3-venv git curl ca-certificates time procps iproute2 util-linux shellcheck
)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    log "OS packages: all present"
    exit 0
fi
log "OS packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Package maintainer scripts must not start system services (redis-server,
# postgresql): the harness runs its own instances on random ports.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod 755 "$policy"
    created_policy=1
fi
cleanup() {
    if [ "$created_policy" = 1 ]; then as_root rm -f "$policy"; fi
}
trap cleanup EXIT
as_root apt-get update -q
as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
