#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: postgresql_wal_archive
short_description: Continuous archiving of a PostgreSQL server's WAL, compressed and encrypted to public keys
version_added: 0.2.0
description:
  - Sets a PostgreSQL server up to archive every completed WAL segment to a storage target
    (a local directory, or any target of the collection's storage targets), compressed and
    encrypted with age to B(public keys only) - the database server never holds a key that
    can read its own archive.
  - Installs the archive program C(lifeboat-wal) (one executable file built from this
    collection), writes its settings file (mode C(0600), owned by the server's account - it
    may hold the target's credentials), creates the spool folder, runs the program once as
    the server's account to prove that it can encrypt and write to the target, and only then
    sets C(archive_mode), C(archive_command) and C(archive_timeout) with C(ALTER SYSTEM) and
    reloads the configuration.
  - Checks C(wal_level) (archiving needs C(replica) or C(logical); C(minimal) is raised to
    C(replica)). C(archive_mode) and C(wal_level) take effect only after a restart - the
    module says so in RV(restart_required) and restarts the server only with O(restart=true).
  - Once archiving runs, checks it end to end (O(check_archiving)) - switches to a new WAL
    segment and waits until the server reports it archived.
  - The program honours PostgreSQL's rules. A segment is reported archived only once it is
    stored durably under its final name (written aside, checked, renamed, synced). The same
    segment pushed twice with the same content succeeds; with other content it fails loudly
    and is never overwritten. When the target fails, the command fails, PostgreSQL keeps the
    WAL and retries, and an alert is raised.
  - Archiving keeps up with a busy server (O(asynchronous), the default) - a pusher process
    reads PostgreSQL's queue of ready segments and stores several at once (O(parallel)),
    ahead of PostgreSQL's one-by-one calls, which then find their segment stored and return
    at once without starting a program.
  - Must run on the database server's host, as root (or as the server's account, which then
    owns the program and settings it writes), connected as a superuser.
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._attributes
  - lifeboat.backup._postgresql
  - lifeboat.backup._storage
  - lifeboat.backup._wal_archive
  - lifeboat.backup._alerts
attributes:
  check_mode:
    support: full
    details: Connects, inspects the server, the program and the settings file and reports what would change; changes nothing.
  diff_mode:
    support: full
    details: Shows the server settings before and after.
  platform:
    platforms: posix
options:
  state:
    description:
      - C(present) archives; C(absent) turns C(archive_mode) off (after a restart; the
        archive, the program and the settings file are left in place).
      - C(pruned) applies retention to the archive (no server connection) - removes the WAL
        segments, C(.partial) and backup history files older than the start of the oldest
        base backup held by O(images), which is what image retention kept. Timeline history
        files always stay. Only base backups the archive's own backup history records count;
        with none found, nothing is removed.
    type: str
    choices: [present, absent, pruned]
    default: present
  images:
    description:
      - With O(state=pruned), the images (files, or folders whose C(*.zip) files are taken)
        whose base backups are kept.
    type: list
    elements: path
  target:
    description:
      - Where the WAL goes. Required with O(state=present).
      - A C(local) target's directory is created (owned by the server's account) when missing.
    required: false
  recipients:
    description:
      - The age public keys (C(age1...)) every archived file is encrypted to. Required with
        O(state=present). There is no passphrase option on purpose - the server must not be
        able to read its archive. Keep the matching private keys off the server.
      - Not shown in logs (a private key pasted here by mistake must not be echoed).
    type: list
    elements: str
  compression:
    description:
      - Compression before encryption.
    type: str
    choices: [zstd, gzip]
    default: zstd
  compression_level:
    description:
      - Compression level. Default 1, the fastest, for zstd and gzip alike - WAL compresses
        well even so (zstd 1 writes about 13 % more than zstd 3 at less than half the CPU),
        and the archive has to keep up with a busy server.
    type: int
  asynchronous:
    description:
      - Push through the pusher process (in parallel, ahead of PostgreSQL). C(false) pushes
        each segment in the command PostgreSQL runs, one at a time.
    type: bool
    default: true
  parallel:
    description:
      - Segments the pusher stores at once.
    type: int
    default: 2
  push_timeout:
    description:
      - Seconds the archive command waits for its segment before it fails (PostgreSQL then
        retries; nothing is lost).
    type: int
    default: 60
  archive_timeout:
    description:
      - Sets PostgreSQL's C(archive_timeout) (seconds) - a segment is closed and archived at
        least this often, which bounds the data a lost server can take with it on a quiet
        database. C(0) switches it off. Not set, the server's setting stays as it is.
    type: int
    default: 60
  name:
    description:
      - Name of this archiving set-up on the host; the default paths of O(settings_file) and
        O(spool_dir) contain it. Give each cluster of a host its own.
    type: str
    default: main
  settings_file:
    description:
      - The program's settings file. Default C(/etc/lifeboat/wal/<name>.json).
    type: path
  spool_dir:
    description:
      - The pusher's spool folder (markers of stored segments, status, log). Default
        C(/var/spool/lifeboat/wal/<name>). Keep it on local storage.
    type: path
  program_path:
    description:
      - Where the archive program is installed.
    type: path
    default: /usr/local/lib/lifeboat/lifeboat-wal
  interpreter:
    description:
      - The Python that runs the archive program (it needs the C(cryptography) library, and
        C(zstandard) for zstd). Default the Python running this module. The server's account
        must be able to run it.
    type: path
  alerts:
    description:
      - The channels the pusher tells when archiving fails (C(wal_archive_failed), repeated
        every O(alert_interval) while it lasts) and when it works again
        (C(wal_archive_recovered)). Stored in the settings file, which is why it is C(0600).
  alert_interval:
    description:
      - While archiving keeps failing, the alert is repeated this often (seconds).
    type: int
    default: 3600
  node:
    description:
      - Node name in alerts and in the archive's descriptor. Default the host name.
    type: str
  restart:
    description:
      - Restart the server when a changed setting needs it (C(archive_mode), C(wal_level)).
        Without it the module only reports RV(restart_required).
    type: bool
    default: false
  restart_command:
    description:
      - The command that restarts the server, as a list, run as the data directory's owner.
        Default C(pg_ctl restart -D <data directory> -m fast -w). On a server run by systemd
        or C(pg_ctlcluster), give that command instead (for example
        C([pg_ctlcluster, "15", main, restart])), run as root if it must be.
    type: list
    elements: str
  restart_as_root:
    description:
      - Run O(restart_command) as root instead of the data directory's owner.
    type: bool
    default: false
  check_archiving:
    description:
      - Once archiving is active, switch to a new WAL segment and wait until the server
        reports it archived (at most twice O(push_timeout)).
    type: bool
    default: true
requirements:
  - psycopg (3) or psycopg2 on the managed node.
  - cryptography (and zstandard for zstd) for the interpreter that runs the archive program.
notes:
  - The archive command is C(test -f <spool>/<system id>/%f.ok || exec <program> push <settings> %p)
    - when the pusher already stored the segment, PostgreSQL's call costs a shell test.
  - Point-in-time restore from the archive is M(lifeboat.backup.postgresql_pitr), its state
    M(lifeboat.backup.postgresql_wal_info). See C(docs/pitr.md).
seealso:
  - module: lifeboat.backup.postgresql_wal_info
  - module: lifeboat.backup.postgresql_pitr
  - module: lifeboat.backup.postgresql_basebackup
"""

EXAMPLES = r"""
- name: Archive the WAL of the local cluster to a directory, encrypted to the recovery key
  lifeboat.backup.postgresql_wal_archive:
    login_unix_socket: /var/run/postgresql
    target:
      type: local
      path: /srv/backup/wal
    archive_prefix: db1-main
    recipients:
      - age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p
    restart: true
  become: true

- name: To an SFTP server, with an alert when archiving fails
  lifeboat.backup.postgresql_wal_archive:
    login_unix_socket: /var/run/postgresql
    target:
      type: sftp
      host: backup.example.com
      user: wal
      private_key_file: /root/.ssh/wal_ed25519
      known_hosts: "backup.example.com ssh-ed25519 AAAAC3Nza..."
      path: /srv/wal
    archive_prefix: db1-main
    recipients: "{{ lifeboat_recipients }}"
    alerts:
      - type: webhook
        url: https://alerts.example.com/hook
  become: true
"""

RETURN = r"""
archive_command:
  description: The archive command set on the server.
  returned: state is present
  type: str
  sample: >-
    test -f '/var/spool/lifeboat/wal/main/7713690055242281204/%f.ok' ||
    exec '/usr/local/lib/lifeboat/lifeboat-wal' push '/etc/lifeboat/wal/main.json' %p
settings:
  description: The server settings the module manages, as configured after the run (before a restart, the running values may differ).
  returned: state is present or absent
  type: dict
  sample: {archive_mode: "on", archive_timeout: "60", wal_level: replica}
changed_settings:
  description: Names of the settings changed.
  returned: state is present or absent
  type: list
  elements: str
restart_required:
  description: A changed setting waits for a server restart (archiving is not active until then).
  returned: state is present or absent
  type: bool
restarted:
  description: The module restarted the server.
  returned: state is present or absent
  type: bool
archiving_active:
  description: The running server archives with the installed command.
  returned: state is present or absent
  type: bool
program:
  description: Path of the installed archive program.
  returned: state is present
  type: str
settings_file:
  description: Path of the program's settings file.
  returned: state is present
  type: str
spool:
  description: The pusher's spool folder for this database system.
  returned: state is present
  type: str
archive:
  description: Location of the archive (target and prefix).
  returned: state is present or pruned
  type: str
  sample: file:///srv/backup/wal/db1-main
server:
  description: What the module found out about the server.
  returned: state is present or absent
  type: dict
  sample: {data_directory: /var/lib/postgresql/15/main, system_identifier: "7713690055242281204", segment_size: 16777216, version_num: 150018, owner: postgres}
removed:
  description: With O(state=pruned), the WAL files removed (or, in check mode, that would be).
  returned: state is pruned
  type: list
  elements: str
removed_bytes:
  description: Bytes they took on the target.
  returned: state is pruned
  type: int
kept_from:
  description: With O(state=pruned), the first segment kept - the start of the oldest base backup kept.
  returned: state is pruned
  type: str
base_backups:
  description: With O(state=pruned), the base backups whose WAL is kept.
  returned: state is pruned
  type: list
  elements: dict
check:
  description: The end-to-end check (O(check_archiving)) - the segment switched to and seconds until it was archived.
  returned: when the check ran
  type: dict
  sample: {segment: "000000010000000000000007", seconds: 0.4}
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

import json
import os
import pwd
import socket
import subprocess
import sys
import time

from ansible_collections.lifeboat.backup.plugins.module_utils import _age, _alerts, _proc, _storage, _wal, _walarchive, _walprogram
from ansible_collections.lifeboat.backup.plugins.module_utils import _postgresql as pg
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError, OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule

MANAGED = ("archive_mode", "archive_command", "archive_timeout", "wal_level")
NEEDS_RESTART = ("archive_mode", "wal_level")
UNSAFE_PATH_CHARS = ("'", "%", "\n", "\\")


class ArchiveSetupError(LifeboatError):
    pass


# ---- what the server is ------------------------------------------------------------------


def inspect(conn):
    """The facts and settings the module works from. Raises ArchiveSetupError."""
    if not pg.scalar(conn, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
        raise ArchiveSetupError("the login role is not a superuser: ALTER SYSTEM and the archiving checks need one (set login_user)")
    facts = {
        "version_num": int(pg.scalar(conn, "SELECT current_setting('server_version_num')")),
        "data_directory": pg.scalar(conn, "SELECT current_setting('data_directory')"),
        "system_identifier": str(pg.scalar(conn, "SELECT system_identifier FROM pg_control_system()")),
        "segment_size": int(pg.scalar(conn, "SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'")),
    }
    names = list(MANAGED) + ["archive_library"]
    running = {r[0]: r[1:] for r in pg.execute(conn, "SELECT name, setting, source, pending_restart FROM pg_settings WHERE name = ANY(%s)", (names,))}
    configured = {}
    for name, setting in pg.execute(conn, "SELECT name, setting FROM pg_file_settings WHERE name = ANY(%s) AND error IS NULL ORDER BY seqno", (names,)):
        configured[name] = setting
    facts["running"] = {name: running[name][0] for name in running}
    facts["configured"] = {name: configured.get(name, facts["running"].get(name)) for name in names if name in running}
    facts["command_line"] = [name for name in running if running[name][1] == "command line"]
    return facts


def data_owner(data_directory):
    try:
        info = os.stat(data_directory)
    except OSError as exc:
        raise ArchiveSetupError(
            "the server's data directory %s is not visible here (%s): run this module on the database server's host" % (data_directory, exc.strerror)
        ) from None
    try:
        name = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        name = str(info.st_uid)
    return info.st_uid, info.st_gid, name


# ---- what it should be -----------------------------------------------------------------


def paths_of(params):
    name = params["name"]
    return {
        "settings_file": params["settings_file"] or "/etc/lifeboat/wal/%s.json" % name,
        "spool_dir": params["spool_dir"] or "/var/spool/lifeboat/wal/%s" % name,
        "program": params["program_path"],
        "interpreter": params["interpreter"] or sys.executable,
    }


REQUIRED = {
    "pruned": [("target", "the storage target of the archive"), ("images", "the images (files or folders) whose base backups are kept")],
    "present": [
        ("target", "where the WAL goes (for example {type: local, path: /srv/backup/wal})"),
        ("recipients", "the age public keys (age1...) the archive is encrypted to"),
    ],
    "absent": [],
}


def validate(params):
    for option, what in REQUIRED[params["state"]]:
        if not params[option]:
            raise OptionError(option, "%s is required with state=%s: %s" % (option, params["state"], what))
    if params["state"] == "present":
        validate_present(params)


def validate_present(params):
    for recipient in params["recipients"]:
        try:
            _age.parse_recipient(recipient)
        except LifeboatError as exc:
            raise OptionError("recipients", "%s; give public keys only (age1...), never a private key" % exc) from None
    for option, minimum in (("parallel", 1), ("push_timeout", 5), ("alert_interval", 60), ("archive_timeout", 0)):
        if params[option] is not None and params[option] < minimum:
            raise OptionError(option, "%s must be at least %d" % (option, minimum))
    for option, value in paths_of(params).items():
        if not os.path.isabs(value) or any(c in value for c in UNSAFE_PATH_CHARS) or value.strip() != value:
            raise OptionError(
                option, "%s must be an absolute path without quotes, %%, backslashes or surrounding spaces (it goes into archive_command): %r" % (option, value)
            )
    _storage.validate(params["target"])
    try:
        params["alerts"] = _alerts.check_channels(params["alerts"])
    except _alerts.ChannelError as exc:
        raise OptionError("alerts", str(exc)) from None


def archive_command(paths, system_identifier):
    ok = os.path.join(paths["spool_dir"], str(system_identifier), "%f.ok")
    return "test -f '%s' || exec '%s' push '%s' %%p" % (ok, paths["program"], paths["settings_file"])


def desired_settings(params, facts, paths):
    if params["state"] == "absent":
        return {"archive_mode": "off"}
    wanted = {"archive_mode": "always" if facts["configured"].get("archive_mode") == "always" else "on"}
    wanted["archive_command"] = archive_command(paths, facts["system_identifier"])
    if params["archive_timeout"] is not None:
        wanted["archive_timeout"] = str(params["archive_timeout"])
    if facts["configured"].get("wal_level") == "minimal":
        wanted["wal_level"] = "replica"
    return wanted


def settings_document(params, facts, paths, node):
    return {
        "format": _walprogram.SETTINGS_FORMAT,
        "name": params["name"],
        "node": node,
        "target": params["target"],
        "prefix": params["archive_prefix"],
        "recipients": params["recipients"],
        "compression": params["compression"],
        "compression_level": params["compression_level"],
        "asynchronous": params["asynchronous"],
        "parallel": params["parallel"],
        "push_timeout": params["push_timeout"],
        "spool_dir": paths["spool_dir"],
        "system_identifier": facts["system_identifier"],
        "segment_size": facts["segment_size"],
        "server_version_num": facts["version_num"],
        "alerts": params["alerts"],
        "alert_interval": params["alert_interval"],
    }


# ---- files ------------------------------------------------------------------------------


def file_differs(path, content, mode, owner):
    try:
        info = os.stat(path)
        with open(path, "rb") as handle:
            current = handle.read()
    except OSError:
        return True
    wrong_owner = os.geteuid() == 0 and (info.st_uid, info.st_gid) != owner
    return current != content or info.st_mode & 0o7777 != mode or wrong_owner


def write_file(path, content, mode, owner):
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    tmp = "%s.tmp-%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        if os.geteuid() == 0:
            os.chown(tmp, *owner)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def planned_files(params, facts, paths, account, node):
    """[(path, content, mode, owner)] that differ from what is on disk."""
    root = (os.geteuid(), os.getegid())
    settings = json.dumps(settings_document(params, facts, paths, node), indent=2, sort_keys=True).encode() + b"\n"
    wanted = [
        (paths["program"], _walprogram.build(paths["interpreter"]), 0o755, root),
        (paths["settings_file"], settings, 0o600, account[:2]),
    ]
    return [item for item in wanted if file_differs(*item)]


def prepare_dirs(params, facts, paths, account):
    """The spool folder, and a local target's directory, owned by the server's account."""
    spool = os.path.join(paths["spool_dir"], facts["system_identifier"])
    made = []
    for path in (paths["spool_dir"], spool):
        if not os.path.isdir(path):
            os.makedirs(path, 0o700)
            made.append(path)
        if os.geteuid() == 0:
            os.chown(path, *account[:2])
    target = params["target"]
    if target["type"] == "local" and not os.path.isdir(target["path"]):
        os.makedirs(target["path"], 0o700)
        if os.geteuid() == 0:
            os.chown(target["path"], *account[:2])
        made.append(target["path"])
    return made


def run_program(paths, account, command, timeout=180):
    """Run the installed program as the server's account; its JSON report."""
    argv = [paths["program"], command, paths["settings_file"]]
    kwargs = {}
    if os.geteuid() == 0 and account[0] != 0:
        kwargs = {"user": account[0], "group": account[1], "extra_groups": []}
    try:
        proc = _proc.run(argv, capture_output=True, timeout=timeout, cwd="/", **kwargs)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ArchiveSetupError("running %s %s as %s failed: %s" % (paths["program"], command, account[2], exc)) from None
    if proc.returncode != 0:
        text = proc.stderr.decode("utf-8", "replace").strip() or proc.stdout.decode("utf-8", "replace").strip()
        raise ArchiveSetupError(
            "the archive program cannot work as the server's account %s (%s %s exited %d): %s"
            % (account[2], os.path.basename(paths["program"]), command, proc.returncode, text)
        )
    return json.loads(proc.stdout.decode("utf-8"))


# ---- the server ---------------------------------------------------------------------------


def apply_settings(conn, changes):
    for name, value in changes.items():
        pg.execute(conn, "ALTER SYSTEM SET %s = %s" % (name, pg.quote_literal(value)))
    if changes:
        pg.execute(conn, "SELECT pg_reload_conf()")
        time.sleep(0.5)  # the postmaster applies the reload asynchronously


def pending_restart(conn):
    rows = pg.execute(conn, "SELECT name FROM pg_settings WHERE pending_restart AND name = ANY(%s)", (list(NEEDS_RESTART),))
    return sorted(r[0] for r in rows)


def restart_server(params, facts, account):
    if params["restart_command"]:
        argv = params["restart_command"]
    else:
        tools = pg.find_tools(facts["version_num"], ["pg_ctl"], params["client_bin_dir"], purpose="restarting the server")
        log = os.path.join(facts["data_directory"], "lifeboat-restart.log")
        argv = [tools.path("pg_ctl"), "restart", "-D", facts["data_directory"], "-m", "fast", "-w", "-t", "300", "-l", log]
    kwargs = {}
    if os.geteuid() == 0 and account[0] != 0 and not params["restart_as_root"]:
        kwargs = {"user": account[0], "group": account[1], "extra_groups": []}
    try:
        proc = _proc.run(argv, capture_output=True, timeout=600, cwd="/", start_new_session=True, **kwargs)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ArchiveSetupError("restarting the server with %s failed: %s" % (" ".join(argv), exc), changed=True) from None
    if proc.returncode != 0:
        text = proc.stderr.decode("utf-8", "replace").strip()
        raise ArchiveSetupError("restarting the server with %s failed (exit %d): %s" % (" ".join(argv), proc.returncode, text), changed=True)


def reconnect(params, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return pg.connect(params)
        except pg.PgError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def check_archiving(conn, timeout):
    """Switch WAL and wait until the server says the segment is archived."""
    started = time.monotonic()
    before = pg.execute(conn, "SELECT failed_count FROM pg_stat_archiver")[0][0]
    segment = pg.scalar(conn, "SELECT pg_walfile_name(pg_switch_wal())")
    while True:
        last, failed, last_failed = pg.execute(conn, "SELECT last_archived_wal, failed_count, last_failed_wal FROM pg_stat_archiver")[0]
        if last and last[:24] >= segment and last[:8] == segment[:8]:
            return {"segment": segment, "seconds": round(time.monotonic() - started, 3)}
        if time.monotonic() - started > timeout:
            raise ArchiveSetupError(
                "archiving is configured but %s was not archived within %d s (failed attempts: %d, last failed: %s); "
                "see the server log and the spool's status.json" % (segment, timeout, failed - before, last_failed),
                changed=True,
            )
        time.sleep(0.2)


# ---- retention -------------------------------------------------------------------------------


def prune(module):
    """state=pruned: remove WAL older than the oldest base backup kept in ``images``."""
    params = module.params
    validate(params)
    images, problems = _walarchive.image_backups(params["images"])
    with _storage.open_target(params["target"]) as backend:
        archive = _walarchive.Archive(backend, params["archive_prefix"])
        archive.open()
        index = archive.index()
        kept = retained_backups(index, images, problems)
        floor, doomed = _walarchive.prune_plan(index, kept)
        result = {
            "changed": bool(doomed),
            "archive": archive.location,
            "kept_from": _wal.segment_name(kept[0]["timeline"], floor, index.segment_size),
            "base_backups": [_walarchive.describe_backup(b) for b in kept],
            "removed": [e.file for e in doomed],
            "removed_bytes": sum(e.size for e in doomed),
            "problems": problems,
        }
        if module._diff:
            result["diff"] = {
                "before": {"files": len(index.segments) + len(index.others)},
                "after": {"files": len(index.segments) + len(index.others) - len(doomed)},
            }
        if doomed and not module.check_mode:
            archive.delete(doomed)
    return result


def retained_backups(index, images, problems):
    """Base backups of the images that the archive's own backup history knows (same start,
    timeline and label): an image of another cluster must not decide what is removed."""
    known = {(b["start_lsn"], b["timeline"], b.get("label")) for b in _walarchive.base_backups(index)}
    kept = []
    for backup in _walarchive.base_backups(index, images):
        if (backup["start_lsn"], backup["timeline"], backup.get("label")) in known:
            kept.append(backup)
        else:
            problems.append("%s: its base backup is not in this archive's backup history; not counted" % backup.get("image"))
    if not kept:
        raise ArchiveSetupError(
            "no image among %s holds a base backup of this archive; nothing removed "
            "(an archive is never emptied because the images were looked for in the wrong place)"
            % ", ".join(sorted({i["image"] for i in images}) or ["(none found)"])
        )
    return kept


# ---- main ---------------------------------------------------------------------------------


# This module's own options; the connection, the archive's place and alerts come from the shared specs.
OPTIONS = dict(
    state=dict(type="str", choices=["present", "absent", "pruned"], default="present"),
    images=dict(type="list", elements="path"),
    target=dict(_storage.TARGET_SPEC["target"], required=False),
    # no_log: public keys are no secret, but a private key pasted here by mistake must not be echoed
    recipients=dict(type="list", elements="str", no_log=True),
    compression=dict(type="str", choices=list(_walarchive.COMPRESSIONS), default="zstd"),
    compression_level=dict(type="int"),
    asynchronous=dict(type="bool", default=True),
    parallel=dict(type="int", default=2),
    push_timeout=dict(type="int", default=60),
    archive_timeout=dict(type="int", default=60),
    name=dict(type="str", default="main"),
    settings_file=dict(type="path"),
    spool_dir=dict(type="path"),
    program_path=dict(type="path", default="/usr/local/lib/lifeboat/lifeboat-wal"),
    interpreter=dict(type="path"),
    alert_interval=dict(type="int", default=3600),
    node=dict(type="str"),
    restart=dict(type="bool", default=False),
    restart_command=dict(type="list", elements="str"),
    restart_as_root=dict(type="bool", default=False),
    check_archiving=dict(type="bool", default=True),
)


def main():
    module = LifeboatModule(
        argument_spec=OPTIONS,
        specs=[pg.CONNECTION_SPEC, _walarchive.ARCHIVE_SPEC, _alerts.ALERTS_SPEC],
        mutually_exclusive=pg.CONNECTION_MUTUALLY_EXCLUSIVE,
        supports_check_mode=True,
    )
    if module.params["state"] == "pruned":
        module.run(prune)
    module.run(configure)


def configure(module):
    params = module.params
    pg.require_driver()
    validate(params)
    conn = pg.connect(params)
    try:
        facts = inspect(conn)
        account = data_owner(facts["data_directory"])
        paths = paths_of(params)
        plan = make_plan(params, facts, paths, account)
        result = plan_report(plan, facts, paths, account)
        if module._diff:
            result["diff"] = {"before": plan["before"], "after": plan["after"]}
        if module.check_mode:
            return result
        conn = execute(module, conn, plan, facts, paths, account, result)
    finally:
        conn.close()
    return result


def make_plan(params, facts, paths, account):
    if facts["command_line"]:
        clash = [n for n in facts["command_line"] if n in ("archive_mode", "archive_command")]
        if clash:
            raise ArchiveSetupError("%s set on the server's command line, which ALTER SYSTEM cannot override: remove it there" % ", ".join(clash))
    if params["state"] == "present" and facts["configured"].get("archive_library"):
        raise ArchiveSetupError(
            "archive_library is set to %r; PostgreSQL refuses archive_library and archive_command together: reset it (ALTER SYSTEM RESET archive_library)"
            % facts["configured"]["archive_library"]
        )
    wanted = desired_settings(params, facts, paths)
    changes = {name: value for name, value in wanted.items() if str(facts["configured"].get(name)) != value}
    node = params["node"] or socket.gethostname()
    files = planned_files(params, facts, paths, account, node) if params["state"] == "present" else []
    before = {name: facts["configured"].get(name) for name in MANAGED}
    after = dict(before, **wanted)
    return {"params": params, "changes": changes, "files": files, "before": before, "after": after, "node": node}


def plan_report(plan, facts, paths, account):
    params = plan["params"]
    result = {
        "changed": bool(plan["changes"] or plan["files"]),
        "settings": plan["after"],
        "changed_settings": sorted(plan["changes"]),
        "restart_required": any(n in plan["changes"] for n in NEEDS_RESTART),
        "restarted": False,
        "archiving_active": facts["running"].get("archive_mode") in ("on", "always")
        and facts["running"].get("archive_command") == plan["after"].get("archive_command"),
        "files_changed": [item[0] for item in plan["files"]],
        "server": {k: facts[k] for k in ("data_directory", "system_identifier", "segment_size", "version_num")},
    }
    result["server"]["owner"] = account[2]
    if params["state"] == "present":
        result.update(
            archive_command=plan["after"]["archive_command"],
            program=paths["program"],
            settings_file=paths["settings_file"],
            spool=os.path.join(paths["spool_dir"], facts["system_identifier"]),
            archive=_storage.describe(params["target"])["location"] + ("/" + params["archive_prefix"].strip("/") if params["archive_prefix"] else ""),
        )
    return result


def execute(module, conn, plan, facts, paths, account, result):
    params = plan["params"]
    done = []
    try:
        if params["state"] == "present":
            install(plan, facts, paths, account, result, done)
        apply_settings(conn, plan["changes"])
        done += ["ALTER SYSTEM SET %s" % n for n in plan["changes"]]
        conn = restart_if_told(conn, params, facts, account, result, done)
        running = dict(pg.execute(conn, "SELECT name, setting FROM pg_settings WHERE name IN ('archive_mode', 'archive_command')"))
        active = running.get("archive_mode") in ("on", "always") and running.get("archive_command") == result.get("archive_command")
        result["archiving_active"] = params["state"] == "present" and active
        if result["archiving_active"] and params["check_archiving"]:
            result["check"] = check_archiving(conn, 2 * params["push_timeout"])
    except LifeboatError as exc:
        if done:
            exc.with_done(*done)
        raise
    except OSError as exc:
        raise ArchiveSetupError("%s: %s" % (getattr(exc, "filename", None) or "setting archiving up", exc.strerror or exc), done=done) from None
    if result["restart_required"]:
        module.warn(
            "archiving starts only after a server restart (%s changed): restart the server, or run again with restart=true" % ", ".join(plan["changes"])
        )
    return conn


def install(plan, facts, paths, account, result, done):
    """Folders, program, settings; then the program's own check as the server's account."""
    done += ["created %s" % p for p in prepare_dirs(plan["params"], facts, paths, account)]
    for item in plan["files"]:
        write_file(*item)
        done.append("wrote %s" % item[0])
    result["program_check"] = run_program(paths, account, "check")


def restart_if_told(conn, params, facts, account, result, done):
    pending = pending_restart(conn)
    result["restart_required"] = bool(pending)
    if not (pending and params["restart"]):
        return conn
    conn.close()
    restart_server(params, facts, account)
    done.append("restarted the server")
    conn = reconnect(params)
    result.update(restarted=True, restart_required=bool(pending_restart(conn)))
    return conn


if __name__ == "__main__":
    main()
