#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: postgresql_wal_info
short_description: State of a PostgreSQL WAL archive - last archived segment, lag, failures, gaps and recoverable windows
version_added: 0.2.0
description:
  - Reads a WAL archive written by M(lifeboat.backup.postgresql_wal_archive) and reports what
    it holds - segments per timeline, the last archived one and its age, B(gaps) in the WAL
    sequence of each timeline, files archived twice with different content, the base backups
    the archive knows of, and the B(recoverable windows) - for each base backup and each
    timeline it can follow, from the backup's consistent point (its stop) to the end of the
    last segment reachable without a hole.
  - With a database connection (O(query_server)), adds the server's side - C(pg_stat_archiver)
    (archived and failed counts, last failure), the current WAL position, the lag between
    it and the last archived segment, and the segments waiting in C(pg_wal/archive_status).
  - With O(settings_file), adds the pusher's own status on this host (running, last success,
    last failure, queue, the segments failing now).
  - Needs no key. The archive's names and plaintext summaries are enough for everything but
    the content - with O(verify=full) and the private key (O(identity) or O(identity_file)),
    every archived file is decrypted and checked (authentication, SHA-256 and, for segments,
    the WAL page header), and a damaged file is reported as a gap.
  - Changes nothing.
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._attributes
  - lifeboat.backup._attributes.info_module
  - lifeboat.backup._postgresql
  - lifeboat.backup._storage
  - lifeboat.backup._wal_archive
options:
  query_server:
    description:
      - Connect to the server (the connection options) for C(pg_stat_archiver), the current WAL
        position and the archiving lag. Turn off where no server runs (a restore host).
    type: bool
    default: true
  settings_file:
    description:
      - The archive program's settings file on this host, to report the pusher's status
        (see M(lifeboat.backup.postgresql_wal_archive)).
    type: path
  images:
    description:
      - Backup images (files, or folders whose C(*.zip) files are taken) whose base backups
        define the windows. Only base backups with an image can be restored, so with this
        option the windows are those of the images; without it, of every base backup the
        archive's backup history records.
    type: list
    elements: path
  verify:
    description:
      - C(names) checks what the listing shows. C(full) also decrypts and checks every
        archived file; it needs O(identity) or O(identity_file).
    type: str
    choices: [names, full]
    default: names
  identity:
    description:
      - Content of an age identity file whose key the archive is encrypted to, for O(verify=full).
      - Never logged, never returned.
    type: str
  identity_file:
    description:
      - Path on the managed node of an age identity file, for O(verify=full).
    type: path
  parallel:
    description:
      - Files decrypted at once with O(verify=full).
    type: int
    default: 2
requirements:
  - psycopg (3) or psycopg2 on the managed node, with O(query_server).
  - cryptography and zstandard on the managed node, with O(verify=full).
seealso:
  - module: lifeboat.backup.postgresql_wal_archive
  - module: lifeboat.backup.postgresql_pitr
"""

EXAMPLES = r"""
- name: Is archiving healthy, and how far back can the database be restored?
  lifeboat.backup.postgresql_wal_info:
    login_unix_socket: /var/run/postgresql
    settings_file: /etc/lifeboat/wal/main.json
    target:
      type: local
      path: /srv/backup/wal
    archive_prefix: db1-main
    images: [/var/backups/lifeboat]
  register: wal

- name: Fail when there is a gap or archiving lags more than 10 minutes
  ansible.builtin.assert:
    that:
      - wal.gaps | length == 0
      - wal.last_archived.age_seconds < 600

- name: Check every archived byte (on a host that holds the private key)
  lifeboat.backup.postgresql_wal_info:
    query_server: false
    target: {type: local, path: /srv/backup/wal}
    archive_prefix: db1-main
    verify: full
    identity_file: /root/recovery/identity.txt
"""

RETURN = r"""
archive:
  description: Where the archive is, and its descriptor (database system, segment size).
  returned: always
  type: dict
  sample: {location: file:///srv/backup/wal/db1-main, system_identifier: "7713690055242281204", segment_size: 16777216}
segments:
  description: Number of archived segments.
  returned: always
  type: int
stored_bytes:
  description: Bytes the archived files take on the target.
  returned: always
  type: int
last_archived:
  description:
    - The newest segment in the archive (the furthest WAL position, on the newest timeline),
      when it was archived and how long ago.
    - Not the segment stored last - the pusher stores several at once, so an older segment can
      land a moment after a newer one.
  returned: always
  type: dict
  sample: {file: "000000010000000000000042", archived: "2026-11-29T17:02:11Z", age_seconds: 35}
timelines:
  description: Per timeline - its parent and switch point, first and last segment, count, and gaps.
  returned: always
  type: list
  elements: dict
gaps:
  description: Missing (or, with O(verify=full), damaged) segments inside each timeline's sequence.
  returned: always
  type: list
  elements: dict
  sample: [{timeline: 1, first: "000000010000000000000017", last: "000000010000000000000017", count: 1}]
conflicts:
  description: WAL files archived twice with different content.
  returned: always
  type: list
  elements: str
damaged:
  description: Files that failed the check of O(verify=full), with why.
  returned: always
  type: list
  elements: dict
base_backups:
  description: Base backups (start and stop positions, timeline, stop time, label, image).
  returned: always
  type: list
  elements: dict
windows:
  description:
    - Recoverable windows, one per base backup and timeline - a restore can reach any point from
      C(start_time)/C(start_lsn) to C(end_time)/C(end_lsn). C(end_time) is when PostgreSQL
      finished the last segment of the window - no transaction in it is later. C(ends_at) says whether
      the window stops at a C(gap) (C(first_missing) names the hole) or at the C(end of archive).
  returned: always
  type: list
  elements: dict
server:
  description: The server's side (O(query_server)) - pg_stat_archiver, current WAL file and position, lag, ready segments.
  returned: when O(query_server)
  type: dict
  sample:
    archived_count: 66
    failed_count: 0
    last_archived_wal: "000000010000000000000042"
    current_wal_file: "000000010000000000000043"
    lag_segments: 1
    ready: 0
pusher:
  description: The pusher's status on this host (O(settings_file)).
  returned: when O(settings_file)
  type: dict
problems:
  description: Things that make the report less certain (an unreadable summary, a timeline without history).
  returned: always
  type: list
  elements: str
lifeboat_succeeded:
  description:
    - C(true) in every successful result of a lifeboat.backup module, absent from every failure.
    - The roles run modules with C(failed_when) false and count every result without it (a failure, a crash,
      a timeout) as failed; see docs/architecture.md, section Module result contract.
  returned: success
  type: bool
  sample: true
  version_added: 0.2.0
"""

import time

from ansible_collections.lifeboat.backup.plugins.module_utils import _image, _storage, _wal, _walarchive, _walprogram, _walrestore
from ansible_collections.lifeboat.backup.plugins.module_utils import _postgresql as pg
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule

# This module's own options; the connection and the archive's place come from the shared specs.
OPTIONS = dict(
    query_server=dict(type="bool", default=True),
    settings_file=dict(type="path"),
    images=dict(type="list", elements="path"),
    verify=dict(type="str", choices=["names", "full"], default="names"),
    identity=dict(type="str", no_log=True),
    identity_file=dict(type="path"),
    parallel=dict(type="int", default=2),
)


def main():
    module = LifeboatModule(
        argument_spec=OPTIONS,
        specs=[pg.CONNECTION_SPEC, _storage.TARGET_SPEC, _walarchive.ARCHIVE_SPEC],
        mutually_exclusive=pg.CONNECTION_MUTUALLY_EXCLUSIVE,
        supports_check_mode=True,
    )
    module.run(report)


def report(module):
    params = module.params
    if params["query_server"]:
        pg.require_driver()
    identities = keys_for_verify(params)
    with _storage.open_target(params["target"]) as backend:
        archive = _walarchive.Archive(backend, params["archive_prefix"])
        descriptor = archive.open()
        index = archive.index()
        damaged = verify_all(archive, index, identities, params["parallel"]) if identities else []
        result = archive_report(archive, descriptor, index, damaged)
    images = None
    if params["images"] is not None:
        images, problems = _walarchive.image_backups(params["images"])
        result["problems"] += problems
    missing = [key_of(index, d["file"]) for d in damaged]
    backups = _walarchive.base_backups(index, images)
    result["base_backups"] = [_walarchive.describe_backup(b) for b in backups]
    result["windows"] = windows(index, backups, missing)
    if params["query_server"]:
        result["server"] = server_report(params, index, descriptor)
    if params["settings_file"]:
        result["pusher"] = _walprogram.status(_walprogram.load_settings(params["settings_file"]))
    return result


def keys_for_verify(params):
    if params["verify"] != "full":
        return None
    if not (params["identity"] or params["identity_file"]):
        raise OptionError("verify", "verify=full decrypts every archived file: give identity or identity_file (the private key the archive is encrypted to)")
    return _image.load_identities(identity=params["identity"], identity_file=params["identity_file"])


def verify_all(archive, index, identities, parallel):
    entries = sorted(index.segments.values(), key=lambda e: e.file) + sorted(index.others.values(), key=lambda e: e.file)
    return [
        {"file": entry.file, "object": entry.object, "reason": reason} for entry, reason in _walrestore.verify_chain(archive, entries, identities, parallel)
    ]


def key_of(index, filename):
    kind, tli, segment = _wal.classify(filename)
    return (tli, _wal.parse_segment(segment, index.segment_size)[1]) if kind == _wal.SEGMENT else None


def archive_report(archive, descriptor, index, damaged):
    last = index.last_archived()
    now = time.time()
    gaps = index.gaps(missing=[key_of(index, d["file"]) for d in damaged])
    return {
        "changed": False,
        "archive": {
            "location": archive.location,
            "system_identifier": descriptor.get("system_identifier"),
            "segment_size": descriptor.get("segment_size"),
            "created": descriptor.get("created"),
        },
        "segments": len(index.segments),
        "stored_bytes": sum(e.size for e in list(index.segments.values()) + list(index.others.values())),
        "last_archived": {"file": last.file, "archived": _walarchive.iso(last.mtime), "age_seconds": round(now - last.mtime, 1)} if last else None,
        "timelines": timelines(index, gaps),
        "gaps": [dict(g, timeline=tli) for tli, items in sorted(gaps.items()) for g in items],
        "conflicts": sorted(index.conflicts),
        "damaged": damaged,
        "problems": list(index.problems),
    }


def timelines(index, gaps):
    out = []
    for tli in index.timelines():
        names = sorted(e.file for (t, _s), e in index.segments.items() if t == tli)
        parents = index.parents.get(tli, [])
        item = {"timeline": tli, "segments": len(names), "first_segment": names[0] if names else None, "last_segment": names[-1] if names else None}
        if parents:
            item.update(parent=parents[-1][0], switch_lsn=_wal.format_lsn(parents[-1][1]))
        elif tli > 1:
            index.problems.append("timeline %d has no history file in the archive: a restore cannot follow it" % tli)
        item["gaps"] = gaps.get(tli, [])
        out.append(item)
    return out


def windows(index, backups, missing):
    out = []
    for backup in backups:
        for tli in index.timelines():
            window = index.window(backup, tli, missing)
            if window is not None:
                window.pop("path", None)
                window["base_backup"] = _walarchive.describe_backup(backup)
                out.append(window)
    return out


def server_report(params, index, descriptor):
    conn = pg.connect(params)
    try:
        sysid = str(pg.scalar(conn, "SELECT system_identifier FROM pg_control_system()"))
        row = pg.execute(
            conn,
            "SELECT archived_count, last_archived_wal, last_archived_time, failed_count, last_failed_wal, last_failed_time, stats_reset FROM pg_stat_archiver",
        )[0]
        keys = ("archived_count", "last_archived_wal", "last_archived_time", "failed_count", "last_failed_wal", "last_failed_time", "stats_reset")
        server = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in zip(keys, row)}
        in_recovery = pg.scalar(conn, "SELECT pg_is_in_recovery()")
        server["in_recovery"] = in_recovery
        server["archive_mode"] = pg.scalar(conn, "SELECT current_setting('archive_mode')")
        if not in_recovery:
            lsn = pg.scalar(conn, "SELECT pg_current_wal_lsn()")
            server["current_lsn"] = str(lsn)
            server["current_wal_file"] = pg.scalar(conn, "SELECT pg_walfile_name(pg_current_wal_lsn())")
            server.update(lag(server, index, _wal.parse_lsn(str(lsn))))
        server["ready"] = pg.scalar(conn, "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'")
    finally:
        conn.close()
    server["same_system"] = sysid == str(descriptor.get("system_identifier"))
    return server


def lag(server, index, current_lsn):
    """Bytes and segments of WAL written since the end of the last segment the archive holds on
    the server's timeline."""
    tli = int(server["current_wal_file"][:8], 16)
    held = [segno for t, segno in index.segments if t == tli]
    if not held:
        return {"lag_bytes": None, "lag_segments": None}
    end = (max(held) + 1) * index.segment_size
    behind = max(0, current_lsn - end)
    return {"lag_bytes": behind, "lag_segments": -(-behind // index.segment_size)}


if __name__ == "__main__":
    main()
