#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: postgresql_basebackup
short_description: Online physical backup of a PostgreSQL cluster streamed into the backup image
version_added: 0.1.0
description:
  - Runs C(pg_basebackup) in tar format with the WAL needed for consistency included
    (C(--wal-method=fetch)) and streams the tar through compression and encryption into one
    image member. Nothing is staged on disk.
  - Asks for a fast checkpoint by default, so the backup starts at once instead of waiting for
    the next spread checkpoint (which sat for minutes on a quiet 1 GB database).
  - The backup counts as taken only when C(pg_basebackup) exited 0 and wrote no error, and the
    tar stream - read as it passes - is complete and holds C(PG_VERSION), C(global/pg_control),
    C(backup_label), C(backup_manifest) and at least one WAL segment.
  - Records the start and end WAL positions, the timeline and the label as consistency markers -
    with the server's WAL archive (M(lifeboat.backup.postgresql_wal_archive)) they define the
    window a point-in-time restore (M(lifeboat.backup.postgresql_pitr)) can reach.
  - To restore, unpack the member into a new, empty data directory and start the server on it;
    see C(docs/postgresql.md) ("Restoring a base backup").
  - Needs a role with the C(REPLICATION) attribute (or a superuser), a C(replication) entry in
    C(pg_hba.conf) and a free WAL sender (C(max_wal_senders)).
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._attributes
  - lifeboat.backup._session
  - lifeboat.backup._postgresql
  - lifeboat.backup._progress
attributes:
  check_mode:
    support: full
    details: Checks the role, the WAL settings, the tablespaces, the client tools and the free space; writes nothing.
  diff_mode:
    support: none
options:
  name:
    default: basebackup
  checkpoint:
    description:
      - C(fast) requests an immediate checkpoint; C(spread) waits for the next one, sparing I/O
        on a busy server at the cost of a delayed start.
    type: str
    choices: [fast, spread]
    default: fast
  max_rate:
    description:
      - Transfer rate limit on the server side, as C(pg_basebackup --max-rate) takes it
        (C(32M), C(100k)). Default is unlimited.
    type: str
  label:
    description:
      - Backup label recorded in C(backup_label). Default is C(lifeboat <backup id>).
    type: str
  manifest_checksums:
    description:
      - Checksum algorithm of the backup manifest (C(pg_verifybackup) checks it after a restore).
    type: str
    choices: [NONE, CRC32C, SHA224, SHA256, SHA384, SHA512]
    default: CRC32C
  space_factor:
    description:
      - The backup is refused when the free space at the session's destination is below
        O(space_factor) times the summed size of all databases. 0 disables the check.
    type: float
    default: 0.1
requirements:
  - cryptography (Python library, on the managed node) when the session encrypts.
  - zstandard (Python library, on the managed node) when the session compresses with zstd.
notes:
  - C(pg_basebackup) can write only the main data directory to a stream; a cluster with
    additional tablespaces is refused.
  - With C(--wal-method=fetch) the WAL written during the backup is collected at its end. On a
    very busy server, make sure it is kept that long (C(wal_keep_size), or WAL archiving);
    otherwise C(pg_basebackup) fails and so does this module.
seealso:
  - module: lifeboat.backup.postgresql_dump
  - module: lifeboat.backup.postgresql_info
"""

EXAMPLES = r"""
- name: Physical backup of the cluster into the session's image
  lifeboat.backup.postgresql_basebackup:
    session: "{{ backup.session.work_dir }}"
    login_host: 127.0.0.1
    login_user: replicator
    login_password: "{{ vault_replicator_password }}"

- name: Gentle on a busy primary
  lifeboat.backup.postgresql_basebackup:
    session: "{{ backup.session.work_dir }}"
    login_unix_socket: /var/run/postgresql
    checkpoint: spread
    max_rate: 50M
  become: true
  become_user: postgres
"""

RETURN = r"""
component:
  description: Component name in the image.
  returned: always
  type: str
  sample: basebackup
member:
  description: Image member holding the tar of the data directory.
  returned: success and not check mode
  type: str
  sample: basebackup/base.tar.zst.age
start_lsn:
  description: WAL position where the backup starts (its checkpoint).
  returned: success and not check mode
  type: str
  sample: 0/2000028
end_lsn:
  description: WAL position the restored server must replay to before it is consistent.
  returned: success and not check mode
  type: str
  sample: 0/2000100
timeline:
  description: Timeline of the backup.
  returned: success and not check mode
  type: int
  sample: 1
tar_bytes:
  description: Size of the tar stream (before compression).
  returned: success and not check mode
  type: int
  sample: 41234567
stored_bytes:
  description: Bytes the member takes in the image.
  returned: success and not check mode
  type: int
  sample: 8123456
files:
  description: Number of files in the backup.
  returned: success and not check mode
  type: int
  sample: 982
wal_segments:
  description: WAL segments included.
  returned: success and not check mode
  type: int
  sample: 1
estimated_bytes:
  description: Summed size of all databases (the preflight estimate).
  returned: always
  type: int
  sample: 41234567
free_bytes:
  description: Free space at the destination when the module started.
  returned: always
  type: int
  sample: 1073741824
duration:
  description: Seconds spent.
  returned: success and not check mode
  type: float
  sample: 2.5
client_tools:
  description: Directory and version of C(pg_basebackup).
  returned: always
  type: dict
  sample: {dir: /usr/lib/postgresql/15/bin, version: pg_basebackup (PostgreSQL) 15.18, version_num: 150018}
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

import re
import time

from ansible_collections.lifeboat.backup.plugins.module_utils import _image, _proc, _session
from ansible_collections.lifeboat.backup.plugins.module_utils import _postgresql as pg
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError, OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule
from ansible_collections.lifeboat.backup.plugins.module_utils._progress import PROGRESS_SPEC

TAR_MEDIA = "application/x-tar"
REQUIRED_FILES = ("PG_VERSION", "global/pg_control", "backup_label", "backup_manifest")
_START = re.compile(r"write-ahead log start point: (\S+) on timeline (\d+)")
_END = re.compile(r"write-ahead log end point: (\S+)")
_WAL_SEGMENT = re.compile(r"^pg_wal/[0-9A-F]{24}$")


class BackupError(LifeboatError):
    """The server cannot give a base backup, or what it gave is not a usable one."""


class TarScanner:
    """A sink that parses a tar stream as it passes: header checksums, names, sizes and the
    end-of-archive blocks. ``names`` lists the regular files; ``complete`` is true once the
    two zero blocks that end a tar were seen."""

    def __init__(self):
        self.names = []
        self.complete = False
        self._header = b""
        self._skip = 0
        self._zero_blocks = 0
        self._long_name = None
        self.error = None

    def write(self, data):
        view = memoryview(data)
        while len(view) and not self.error:
            if self._skip:
                step = min(self._skip, len(view))
                self._skip -= step
                view = view[step:]
                continue
            need = 512 - len(self._header)
            self._header += bytes(view[:need])
            view = view[need:]
            if len(self._header) == 512:
                self._parse(self._header)
                self._header = b""
        return len(data)

    def _parse(self, block):
        if self.complete:
            return  # padding after the end marker
        if block == bytes(512):
            self._zero_blocks += 1
            self.complete = self._zero_blocks >= 2
            return
        self._zero_blocks = 0
        try:
            stored = int(block[148:156].split(b"\0")[0].strip() or b"0", 8)
            size = int(block[124:136].split(b"\0")[0].strip() or b"0", 8)
        except ValueError:
            self.error = "a tar header is not valid"
            return
        if stored != sum(block[:148]) + 256 + sum(block[156:]):
            self.error = "a tar header checksum does not match: the stream is corrupt"
            return
        kind = block[156:157]
        name = block[0:100].split(b"\0")[0]
        prefix = block[345:500].split(b"\0")[0] if block[257:262] == b"ustar" else b""
        if prefix:
            name = prefix + b"/" + name
        self._skip = (size + 511) // 512 * 512
        if kind in (b"L", b"x"):
            self._long_name = kind  # a long name / pax header precedes the real entry
            return
        self._long_name = None  # the names checked here are short; a long one is only counted
        if kind in (b"0", b"\0"):
            text = name.decode("utf-8", "replace")
            while text.startswith("./"):
                text = text[2:]
            self.names.append(text)


def check_server(conn, params):
    """Raise BackupError naming what prevents a base backup."""
    rows = pg.execute(conn, "SELECT rolsuper, rolreplication FROM pg_roles WHERE rolname = current_user")
    if not rows or not (rows[0][0] or rows[0][1]):
        raise BackupError(
            "%s cannot take a base backup: it lacks the REPLICATION attribute. Run ALTER ROLE %s REPLICATION (and allow it in pg_hba.conf for replication)"
            % (params["login_user"], pg.quote_ident(params["login_user"]))
        )
    settings = dict(pg.execute(conn, "SELECT name, setting FROM pg_settings WHERE name IN ('wal_level', 'max_wal_senders')"))
    if settings.get("wal_level") == "minimal":
        raise BackupError("wal_level is minimal: a base backup needs wal_level=replica (or logical); change it and restart the server")
    if settings.get("max_wal_senders") == "0":
        raise BackupError("max_wal_senders is 0: a base backup needs a WAL sender; set it to at least 2 and restart the server")
    spaces = [r[0] for r in pg.execute(conn, "SELECT spcname FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY 1")]
    if spaces:
        raise BackupError(
            "the cluster has tablespaces outside the data directory (%s); pg_basebackup can stream only the main data directory. "
            "Use lifeboat.backup.postgresql_dump for this cluster" % ", ".join(spaces)
        )


def validate(params):
    if params["max_rate"] and not re.match(r"^\d+[kKmM]?$", params["max_rate"]):
        raise OptionError("max_rate", "max_rate must be a number of kB/s, optionally with k or M (for example 32M)")
    if params["space_factor"] < 0:
        raise OptionError("space_factor", "space_factor must be 0 (no check) or more")


def inspect(params):
    """What the server is and whether it can give a base backup; raises BackupError or PgError."""
    conn = pg.connect(params)
    try:
        server_num, server_text = pg.server_version(conn)
        check_server(conn, params)
        estimated = int(pg.scalar(conn, "SELECT coalesce(sum(pg_database_size(oid)), 0) FROM pg_database"))
        try:
            data_directory = pg.scalar(conn, "SELECT current_setting('data_directory')")
        except pg.PgError:
            data_directory = None
    except pg.PgError as exc:
        raise pg.PgError("inspecting the server at %s failed: %s" % (pg.where(params), exc)) from None
    finally:
        conn.close()
    return {"server_version_num": server_num, "server_version": server_text, "estimated": estimated, "data_directory": data_directory}


def check_space(params, session, estimated, result):
    if params["space_factor"] <= 0:
        return
    problem = pg.space_problem(session.work_dir, int(estimated * params["space_factor"]), "the base backup")
    if problem:
        problem += " (estimate: space_factor %s x %s, the size of all databases)" % (params["space_factor"], pg.format_size(estimated))
        raise LifeboatError(problem, **result)


def basebackup_argv(params, tools, label):
    argv = [
        tools.path("pg_basebackup"),
        "--pgdata=-",
        "--format=tar",
        "--wal-method=fetch",
        "--checkpoint=%s" % params["checkpoint"],
        "--label=%s" % label,
        "--manifest-checksums=%s" % params["manifest_checksums"],
        "--no-password",
        "--verbose",
    ]
    if params["max_rate"]:
        argv.append("--max-rate=%s" % params["max_rate"])
    return argv


def check_stream(stderr, scanner):
    """Raise BackupError unless pg_basebackup's tar stream is complete and holds a usable
    backup; returns the WAL segments it holds."""
    errors = pg.error_lines(stderr)
    if errors:
        raise BackupError("pg_basebackup reported errors: %s" % "; ".join(errors[:5]))
    if scanner.error:
        raise BackupError("pg_basebackup's output is not a valid tar: %s" % scanner.error)
    if not scanner.complete:
        raise BackupError("pg_basebackup's tar stream ends without its end-of-archive blocks: it is incomplete")
    missing = [f for f in REQUIRED_FILES if f not in scanner.names]
    wal = [n for n in scanner.names if _WAL_SEGMENT.match(n)]
    if missing or not wal:
        raise BackupError("the backup lacks %s" % ", ".join(missing + ([] if wal else ["WAL segments (pg_wal/)"])))
    return wal


def stream_backup(component, session, params, argv):
    """pg_basebackup's tar into one member, checked as it passes. Returns (member record,
    tar bytes, scanner, WAL segments, stderr); raises LifeboatError ("base backup failed")."""
    scanner = TarScanner()
    try:
        with session.heartbeat(), pg.password_file(params["login_password"], session.work_dir) as passfile, component.appender() as appender:
            env = pg.client_env(params, None, passfile, application="lifeboat.backup pg_basebackup")
            with component.member(appender, "base.tar", TAR_MEDIA, threads=-1, extra={"format": "tar", "wal": "included"}) as out:
                copied, stderr = _proc.stream_from(argv, _proc.Tee(out, [scanner]), env=env)
                wal = check_stream(stderr, scanner)
            component.add_member_record(out.record)
    except (OSError, LifeboatError) as exc:
        raise LifeboatError("base backup failed: %s" % (getattr(exc, "strerror", None) or exc)) from None
    return out.record, copied, scanner, wal, stderr


def basebackup(module):
    params = module.params
    session = module.open_session(params["session"])
    module.require("psycopg (or psycopg2)", pg.HAS_PSYCOPG, pg.PSYCOPG_IMPORT_ERROR)
    component = None if module.check_mode else module.start_component(session, params["name"], "postgresql-basebackup")
    validate(params)
    server = inspect(params)
    tools = pg.find_tools(server["server_version_num"], ["pg_basebackup"], params["client_bin_dir"], purpose="a base backup of this server")
    result = module.keep(
        dict(
            changed=False,
            component=_image.safe_name(params["name"]),
            estimated_bytes=server["estimated"],
            free_bytes=pg.free_bytes(session.work_dir),
            client_tools=tools.describe(),
        )
    )
    check_space(params, session, server["estimated"], result)
    if module.check_mode:
        return dict(result, changed=True)

    label = params["label"] or "lifeboat %s" % session.data.get("backup_id")
    started = time.time()
    record, copied, scanner, wal, stderr = stream_backup(component, session, params, basebackup_argv(params, tools, label))
    start, end = _START.search(stderr), _END.search(stderr)
    start_lsn, timeline = (start.group(1), int(start.group(2))) if start else (None, None)
    end_lsn = end.group(1) if end else None
    component.marker("start_lsn", start_lsn)
    component.marker("end_lsn", end_lsn)
    component.marker("timeline", timeline)
    component.marker("label", label)  # with the positions, ties the backup to the WAL archive (postgresql_pitr)
    details = dict(
        server_version=server["server_version"],
        server_version_num=server["server_version_num"],
        data_directory=server["data_directory"],
        client=tools.describe(),
        label=label,
        checkpoint=params["checkpoint"],
        wal_method="fetch",
        member=record["name"],
        tar_bytes=copied,
        files=len(scanner.names),
        wal_segments=len(wal),
        manifest_checksums=params["manifest_checksums"],
    )
    component.succeed(details)
    return dict(
        result,
        changed=True,
        member=record["name"],
        start_lsn=start_lsn,
        end_lsn=end_lsn,
        timeline=timeline,
        tar_bytes=copied,
        stored_bytes=record["stored_size"],
        files=len(scanner.names),
        wal_segments=len(wal),
        duration=round(time.time() - started, 3),
    )


def main():
    module = LifeboatModule(
        argument_spec=dict(
            checkpoint=dict(type="str", choices=["fast", "spread"], default="fast"),
            max_rate=dict(type="str"),
            label=dict(type="str"),
            manifest_checksums=dict(type="str", choices=["NONE", "CRC32C", "SHA224", "SHA256", "SHA384", "SHA512"], default="CRC32C"),
            space_factor=dict(type="float", default=0.1),
        ),
        specs=[pg.CONNECTION_SPEC, _session.component_spec("basebackup"), PROGRESS_SPEC],
        mutually_exclusive=pg.CONNECTION_MUTUALLY_EXCLUSIVE,
        supports_check_mode=True,
    )
    module.run(basebackup)


if __name__ == "__main__":
    main()
