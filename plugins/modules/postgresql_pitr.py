#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: postgresql_pitr
short_description: Point-in-time restore of PostgreSQL from a base backup image and the WAL archive
version_added: 0.2.0
description:
  - Restores a base backup (an image's M(lifeboat.backup.postgresql_basebackup) component) into
    a new, empty data directory and recovers it with the WAL archived by
    M(lifeboat.backup.postgresql_wal_archive) to a target - a time, a WAL position (LSN), a
    named restore point, a transaction id, the earliest consistent point (C(immediate)) or
    everything the archive holds (C(latest)) - on a chosen timeline.
  - B(Refuses a target outside every recoverable window) before touching anything, and says
    what the windows are. A window runs from a base backup's consistent point to the end of
    the last archived segment reachable without a gap; a missing segment ends it. With
    O(verify_wal) (the default) every segment the recovery needs is decrypted and checked
    first, so a damaged one also ends the window before anything is restored.
  - Chooses the base backup itself when O(image) is a folder of images - the newest one
    whose window holds the target.
  - Checks the restored files against the backup's manifest (C(pg_verifybackup)), then starts
    the server isolated - no TCP, a private socket folder, a private C(pg_hba.conf) - with
    recovery settings on its command line (nothing is written into its configuration). The
    server's C(restore_command) takes each WAL file from a prefetch folder this module fills
    ahead of it (decrypted and checked in parallel), or asks the module over a private unix
    socket - the private key stays in the module's memory, never on disk or on a command line.
    A file that cannot be delivered stops recovery with an error; it never ends early.
  - Waits for the target, recording progress (position, percentage, rate) in
    O(progress_file), then promotes the server (or leaves it paused, or shut down) and reports
    the point actually reached - position, time of the last transaction replayed, and
    PostgreSQL's own "recovery stopping" line.
  - With O(final_state=running) the promoted server is restarted on its own configuration
    (and O(server_options)), ready for clients.
  - With O(recovery_target_action=pause) the server stays isolated and paused at the target
    for inspection (psql on the socket folder the module reports); run the module again
    with O(state=promoted) to promote it.
  - Run it on the host that is to run the restored server, as root.
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._attributes
  - lifeboat.backup._decryption
  - lifeboat.backup._storage
  - lifeboat.backup._wal_archive
attributes:
  check_mode:
    support: full
    details: Reads the archive and the image manifests, chooses the base backup, checks the target against the windows and reports the plan; restores nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  state:
    description:
      - C(restored) restores and recovers. C(promoted) promotes a server an earlier run left
        paused at its target (O(recovery_target_action=pause)) in O(data_dir).
    type: str
    choices: [restored, promoted]
    default: restored
  data_dir:
    description:
      - The data directory to restore into. It must not exist, or be empty; it is created
        owned by O(server_user), mode C(0700).
    type: path
    required: true
  image:
    description:
      - An image holding a base backup, or a folder of images - then the newest base backup
        whose window holds the target is chosen.
      - Required with O(state=restored).
    type: path
  component:
    description:
      - Name of the base backup component in the image, when an image holds several.
    type: str
  target:
    description:
      - The storage target of the WAL archive.
  identity:
    description:
      - The WAL archive is encrypted to public keys only, so O(identity) or O(identity_file)
        (a private key it is encrypted to) is required. It also opens the image when the
        image was written to that key; a passphrase-protected image needs O(passphrase) too.
  recovery_target:
    description:
      - C(latest) replays everything the archive holds on the target timeline. C(immediate)
        stops as soon as the base backup is consistent. Ignored when one of
        O(recovery_target_time), O(recovery_target_lsn), O(recovery_target_name) or
        O(recovery_target_xid) is set.
    type: str
    choices: [latest, immediate]
    default: latest
  recovery_target_time:
    description:
      - Recover up to this time, for example C(2026-11-29 16:50:00) (the managed node's local
        time) or with a zone, C(2026-11-29 15:50:00+00), C(2026-11-29T15:50:00Z). It is passed
        to PostgreSQL in UTC, so the server's own time zone does not matter.
    type: str
  recovery_target_lsn:
    description:
      - Recover up to this WAL position, for example C(0/3A0C7F8).
    type: str
  recovery_target_name:
    description:
      - Recover up to the named restore point created with C(pg_create_restore_point()).
    type: str
  recovery_target_xid:
    description:
      - Recover up to this transaction id (its commit).
    type: str
  recovery_target_inclusive:
    description:
      - Stop just after the target (C(true)) or just before it (C(false)). Not used with
        O(recovery_target=latest), O(recovery_target=immediate) or O(recovery_target_name).
    type: bool
    default: true
  recovery_target_timeline:
    description:
      - C(latest) (the newest timeline in the archive), C(current) (the base backup's own) or
        a timeline number.
    type: str
    default: latest
  recovery_target_action:
    description:
      - What happens at the target. C(promote) ends recovery and opens the database for
        writes on a new timeline; C(pause) keeps the server in recovery, isolated, for
        inspection; C(shutdown) stops the server there. With O(recovery_target=latest) the
        server always promotes when the archive is exhausted.
    type: str
    choices: [promote, pause, shutdown]
    default: promote
  archive_mode:
    description:
      - C(off) keeps the restored server from archiving - during recovery, and afterwards through
        C(ALTER SYSTEM SET archive_mode = off) - so a restore made beside a running primary
        (a drill, a copy to look at) never writes a new timeline into the primary's archive,
        where it would become the C(latest) timeline of later restores. Set archiving up
        with M(lifeboat.backup.postgresql_wal_archive) once the restored server is the primary.
      - C(preserve) keeps the backed-up server's archiving settings - once promoted, it archives
        its new timeline into the same archive (if the archive program and its settings file
        exist on this host), where later restores can follow it. Use it when the restored
        server replaces the lost one.
    type: str
    choices: ['off', preserve]
    default: 'off'
  final_state:
    description:
      - After promotion - C(running) restarts the server on its own configuration (plus
        O(server_options)) for clients; C(stopped) leaves it stopped, for a service manager to
        start.
    type: str
    choices: [running, stopped]
    default: running
  server_user:
    description:
      - The operating-system account that owns the data directory and runs the server.
    type: str
    default: postgres
  login_user:
    description:
      - A superuser role of the restored cluster, used over the private socket (trust
        authentication, only during recovery) to watch and promote the server.
    type: str
    default: postgres
  port:
    description:
      - Port of the restored server (during recovery only its socket file name, as it listens
        on no TCP address then).
    type: int
    default: 5432
  server_options:
    description:
      - Settings passed to the restored server on its command line (C(-c name=value)), during
        recovery and for the final start - for example C(config_file) on a Debian-style
        installation whose configuration lives outside the data directory, or
        C(listen_addresses). Not recovery settings - those come from the options above.
    type: dict
    default: {}
  bin_dir:
    description:
      - Directory of the server binaries (C(postgres), C(pg_ctl), C(pg_verifybackup)) of the
        backup's major version. Default C(/usr/lib/postgresql/<major>/bin) and the usual places.
    type: path
  interpreter:
    description:
      - The Python that runs the small C(restore_command) client (standard library only). The
        server's account must be able to run it. Default the Python running this module.
    type: path
  verify_wal:
    description:
      - Decrypt and check every archived WAL file the recovery needs before restoring anything.
        Each file is checked again as it is served.
    type: bool
    default: true
  verify_backup:
    description:
      - Check the restored files and the base backup's WAL against its manifest
        (C(pg_verifybackup)) before starting the server.
    type: bool
    default: true
  parallel:
    description:
      - WAL files fetched and decrypted at once.
    type: int
    default: 2
  prefetch:
    description:
      - WAL files fetched ahead of the server (each takes one segment of disk space in the data
        directory until the server takes it).
    type: int
    default: 8
  timeout:
    description:
      - Seconds the recovery may take before the module stops the server and fails.
    type: int
    default: 3600
  progress_file:
    description:
      - File where the module writes its progress while it runs (follow it with C(tail -f)).
        Default C(<data_dir>.pitr.log), beside the data directory.
    type: path
requirements:
  - cryptography (and zstandard for zstd) on the managed node.
  - The PostgreSQL server binaries of the backup's major version, and C(tar).
notes:
  - With O(recovery_target_timeline=latest) and a time or position that more than one
    timeline of the archive reaches (a restore was promoted and archived beside the
    original), the newest timeline is followed, as PostgreSQL does, and the module warns
    naming the others - say which one with O(recovery_target_timeline).
  - A time target is reached when PostgreSQL sees the first transaction after it. A time
    after the last transaction in the archive is not reached and PostgreSQL stops with an
    error; restore to C(latest) instead.
  - The procedure by hand, with stock tools, is in C(docs/pitr.md).
seealso:
  - module: lifeboat.backup.postgresql_wal_archive
  - module: lifeboat.backup.postgresql_wal_info
  - module: lifeboat.backup.postgresql_basebackup
"""

EXAMPLES = r"""
- name: Bring the database back to 10 minutes before the accidental DELETE
  lifeboat.backup.postgresql_pitr:
    image: /var/backups/lifeboat
    data_dir: /var/lib/postgresql/15/restored
    target:
      type: local
      path: /srv/backup/wal
    archive_prefix: db1-main
    identity_file: /root/recovery/identity.txt
    recovery_target_time: "2026-11-29 16:50:00"
    port: 5433
  register: pitr

- name: Look before promoting - stop at a named restore point and pause
  lifeboat.backup.postgresql_pitr:
    image: /var/backups/lifeboat/20261129T020000Z-db1.zip
    data_dir: /var/lib/postgresql/15/inspect
    target: {type: local, path: /srv/backup/wal}
    archive_prefix: db1-main
    identity_file: /root/recovery/identity.txt
    recovery_target_name: before-migration-42
    recovery_target_action: pause
    port: 5434

- name: Then promote it
  lifeboat.backup.postgresql_pitr:
    state: promoted
    data_dir: /var/lib/postgresql/15/inspect
    target: {type: local, path: /srv/backup/wal}
    archive_prefix: db1-main
    identity_file: /root/recovery/identity.txt
    port: 5434
"""

RETURN = r"""
reached:
  description:
    - The point recovery reached - WAL position (C(lsn)), time of the last transaction replayed
      (C(time)), PostgreSQL's C(stopping) line (which transaction it stopped before or after),
      and the C(timeline) the server runs on afterwards.
  returned: success and not check mode
  type: dict
  sample:
    lsn: 0/5A1C2D8
    time: "2026-11-29T15:49:58.120433Z"
    stopping: "recovery stopping before commit of transaction 1187, time 2026-11-29 15:50:02.417+00"
    timeline: 3
base_backup:
  description: The base backup restored (image, component, label, start and stop positions, stop time).
  returned: always
  type: dict
window:
  description: The recoverable window the target lies in (see M(lifeboat.backup.postgresql_wal_info)).
  returned: always
  type: dict
recovery:
  description: The recovery settings given to the server.
  returned: always
  type: dict
  sample: {recovery_target_time: "2026-11-29 15:50:00.000000+00", recovery_target_inclusive: "on", recovery_target_timeline: "2"}
wal:
  description: WAL files served to the server, bytes, files verified beforehand, and the replay rate in bytes per second.
  returned: success and not check mode
  type: dict
server:
  description:
    - The restored server - data directory, port, state (running, paused, stopped), socket folder while isolated, log file,
      archive_mode (off or preserve).
  returned: success and not check mode
  type: dict
progress:
  description: Progress samples recorded while waiting (stage, position, percentage, rate, elapsed seconds).
  returned: always
  type: list
  elements: dict
duration:
  description: Seconds the restore took.
  returned: success and not check mode
  type: float
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

import datetime
import json
import os
import pwd
import shlex
import sys
import tempfile
import time

from ansible_collections.lifeboat.backup.plugins.module_utils import _image, _storage, _wal, _walarchive, _walprogram, _walrestore
from ansible_collections.lifeboat.backup.plugins.module_utils import _postgresql as pg
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError, OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule

TARGET_OPTIONS = ("recovery_target_time", "recovery_target_lsn", "recovery_target_name", "recovery_target_xid")
STATE_FILE = "lifeboat-pitr.json"
PREFETCH_DIR = "lifeboat_prefetch"
RestoreError = _walrestore.RestoreError


# ---- the request ------------------------------------------------------------------------


def validate(params):
    """The request the plan works from; OptionError names the option at fault."""
    request = dict(params)
    if not os.path.isabs(params["data_dir"]):
        raise OptionError("data_dir", "data_dir must be an absolute path")
    request["data_dir"] = os.path.normpath(params["data_dir"])
    if params["state"] == "restored" and not params["image"]:
        raise OptionError("image", "image is required with state=restored: an image file holding a base backup, or a folder of images")
    if not (params["identity"] or params["identity_file"]):
        raise OptionError("identity", "the WAL archive is encrypted to public keys: give identity or identity_file, the private key it is encrypted to")
    request["wal_keys"] = _image.load_identities(identity=params["identity"], identity_file=params["identity_file"])
    request.update(target_request(params))
    for option, minimum in (("parallel", 1), ("prefetch", 1), ("timeout", 10)):
        if params[option] < minimum:
            raise OptionError(option, "%s must be at least %d" % (option, minimum))
    try:
        request["owner"] = pwd.getpwnam(params["server_user"])[2:4]
    except KeyError:
        raise OptionError(
            "server_user", "no operating-system account %r on this host: set server_user to the account that runs PostgreSQL" % params["server_user"]
        ) from None
    request["progress_file"] = params["progress_file"] or request["data_dir"] + ".pitr.log"
    request["interpreter"] = params["interpreter"] or sys.executable
    return request


# kind of target -> (the PostgreSQL setting, whether "inclusive" applies)
TARGET_SETTINGS = {
    "time": ("recovery_target_time", True),
    "lsn": ("recovery_target_lsn", True),
    "xid": ("recovery_target_xid", True),
    "name": ("recovery_target_name", False),
    "immediate": ("recovery_target", False),
    "latest": (None, False),
}


def target_request(params):
    """kind, value and PostgreSQL settings of the recovery target."""
    given = [name for name in TARGET_OPTIONS if params[name] not in (None, "")]
    kind = given[0].rsplit("_", 1)[1] if given else params["recovery_target"]
    value = target_value(kind, params[given[0]] if given else None)
    setting, inclusive = TARGET_SETTINGS[kind]
    settings = {}
    if kind == "immediate":
        settings[setting] = "immediate"
    elif setting:
        render = {"time": _walrestore.pg_time, "lsn": _wal.format_lsn}.get(kind, str)
        settings[setting] = render(value)
    if inclusive:
        settings["recovery_target_inclusive"] = "on" if params["recovery_target_inclusive"] else "off"
    if kind == "latest" and params["recovery_target_action"] != "promote":
        raise OptionError(
            "recovery_target_action",
            "recovery_target=latest replays all the archive holds and then promotes: "
            "recovery_target_action=%s needs a target (time, lsn, name, xid or immediate)" % params["recovery_target_action"],
        )
    timeline = str(params["recovery_target_timeline"]).strip().lower()
    if timeline not in ("latest", "current") and not timeline.isdigit():
        raise OptionError("recovery_target_timeline", "recovery_target_timeline must be latest, current or a timeline number, not %r" % timeline)
    return {"kind": kind, "value": value, "recovery": settings, "timeline": timeline}


def target_value(kind, text):
    """The target as the plan compares it: an epoch, an LSN number, or the text."""
    if kind == "time":
        try:
            return _walrestore.parse_time(text)
        except ValueError as exc:
            raise OptionError("recovery_target_time", str(exc)) from None
    if kind == "lsn":
        try:
            return _wal.parse_lsn(text)
        except _wal.WalError as exc:
            raise OptionError("recovery_target_lsn", exc.msg) from None
    if kind == "xid" and not str(text).isdigit():
        raise OptionError("recovery_target_xid", "recovery_target_xid must be a transaction id (digits), not %r" % text)
    return text


# ---- the plan --------------------------------------------------------------------------------


def make_plan(request, index):
    images, problems = _walarchive.image_backups([request["image"]])
    if request["component"]:
        images = [r for r in images if r["component"] == request["component"]]
    if not images:
        raise RestoreError("no usable base backup in %s%s" % (request["image"], ": " + "; ".join(problems) if problems else ""))
    candidates = []
    for backup in _walarchive.base_backups(index, images):
        tli = resolve_timeline(request["timeline"], index, backup)
        window = index.window(backup, tli)
        if window is not None:
            candidates.append((backup, tli, window))
    if not candidates:
        raise RestoreError(
            "no base backup in %s lies on timeline %s of the archive in %s: try recovery_target_timeline=current"
            % (request["image"], request["timeline"], index_location(index))
        )
    backup, tli, window = choose(request, candidates)
    others = other_timelines(request, index, backup, tli)
    end_lsn = request["value"] + index.segment_size if request["kind"] == "lsn" else None
    chain = index.chain(backup, tli, end_lsn)
    recovery = dict(request["recovery"], recovery_target_timeline=str(tli))
    return {"backup": backup, "timeline": tli, "window": window, "chain": chain, "recovery": recovery, "candidates": candidates, "other_timelines": others}


def other_timelines(request, index, backup, chosen):
    """Other timelines whose window from the same base backup also holds a time or position
    target: the archive has more than one history there."""
    if request["kind"] not in ("time", "lsn") or request["timeline"] != "latest":
        return []
    found = []
    for tli in index.timelines():
        window = index.window(backup, tli) if tli != chosen else None
        if window and choose_quietly(request, [(backup, tli, window)]):
            found.append(tli)
    return found


def index_location(index):
    return getattr(index, "location", "the target")


def resolve_timeline(wanted, index, backup):
    if wanted == "current":
        return backup["timeline"]
    if wanted == "latest":
        return index.newest_timeline() or backup["timeline"]
    return int(wanted)


def choose(request, candidates):
    """(backup, timeline, window) whose window holds the target; RestoreError otherwise."""
    kind, value = request["kind"], request["value"]
    if kind == "time":
        fits = [c for c in candidates if c[2]["start_epoch"] is not None and c[2]["start_epoch"] <= value <= (c[2]["end_epoch"] or 0)]
    elif kind == "lsn":
        fits = [c for c in candidates if _wal.parse_lsn(c[2]["start_lsn"]) <= value <= _wal.parse_lsn(c[2]["end_lsn"])]
    else:
        fits = list(candidates)
    if not fits:
        raise RestoreError(refusal(request, candidates), windows=[describe_window(c) for c in candidates])
    if kind in ("name", "xid"):
        return min(fits, key=lambda c: c[0]["stop_lsn"])  # the oldest: it reaches furthest back
    return max(fits, key=lambda c: (c[0]["stop_lsn"], _wal.parse_lsn(c[2]["end_lsn"])))


def describe_window(candidate):
    backup, tli, window = candidate
    label = backup.get("label") or os.path.basename(backup.get("image") or "")
    return "%s to %s (%s to %s, timeline %d, base backup %s%s)" % (
        window["start_time"],
        window["end_time"],
        window["start_lsn"],
        window["end_lsn"],
        tli,
        label,
        "; the window ends at the missing segment %s" % window["first_missing"] if window["ends_at"] == "gap" else "",
    )


def refusal(request, candidates):
    kind, value = request["kind"], request["value"]
    windows = "; ".join(describe_window(c) for c in candidates)
    if kind == "time":
        shown = _walarchive.iso(value)
        if all(c[2]["start_epoch"] is not None and value < c[2]["start_epoch"] for c in candidates):
            return "recovery_target_time %s is before the oldest base backup's consistent point; nothing can be restored that early. Recoverable: %s" % (
                shown,
                windows,
            )
        return "recovery_target_time %s is outside every recoverable window: %s" % (shown, windows)
    return "recovery_target_lsn %s is outside every recoverable window: %s" % (_wal.format_lsn(value), windows)


def plan_report(request, plan, archive):
    return {
        "changed": True,
        "base_backup": _walarchive.describe_backup(plan["backup"]),
        "window": {k: v for k, v in plan["window"].items() if k != "path"},
        "recovery": plan["recovery"],
        "archive": archive.location,
        "wal_files": len(plan["chain"]),
        "data_dir": request["data_dir"],
    }


# ---- executing ----------------------------------------------------------------------------------


# This module's own options; the archive's target and place and the keys come from the shared specs.
OPTIONS = dict(
    state=dict(type="str", choices=["restored", "promoted"], default="restored"),
    data_dir=dict(type="path", required=True),
    image=dict(type="path"),
    component=dict(type="str"),
    recovery_target=dict(type="str", choices=["latest", "immediate"], default="latest"),
    recovery_target_time=dict(type="str"),
    recovery_target_lsn=dict(type="str"),
    recovery_target_name=dict(type="str"),
    recovery_target_xid=dict(type="str"),
    recovery_target_inclusive=dict(type="bool", default=True),
    recovery_target_timeline=dict(type="str", default="latest"),
    recovery_target_action=dict(type="str", choices=["promote", "pause", "shutdown"], default="promote"),
    final_state=dict(type="str", choices=["running", "stopped"], default="running"),
    archive_mode=dict(type="str", choices=["off", "preserve"], default="off"),
    server_user=dict(type="str", default="postgres"),
    login_user=dict(type="str", default="postgres"),
    port=dict(type="int", default=5432),
    server_options=dict(type="dict", default={}),
    bin_dir=dict(type="path"),
    interpreter=dict(type="path"),
    verify_wal=dict(type="bool", default=True),
    verify_backup=dict(type="bool", default=True),
    parallel=dict(type="int", default=2),
    prefetch=dict(type="int", default=8),
    timeout=dict(type="int", default=3600),
    progress_file=dict(type="path"),
)


def main():
    module = LifeboatModule(
        argument_spec=OPTIONS,
        specs=[_storage.TARGET_SPEC, _walarchive.ARCHIVE_SPEC, _image.DECRYPTION_SPEC],
        mutually_exclusive=[TARGET_OPTIONS],
        supports_check_mode=True,
    )
    module.run(pitr)


def pitr(module):
    request = validate(module.params)
    progress = _walrestore.Progress(None if module.check_mode else request["progress_file"])
    with _storage.open_target(module.params["target"]) as backend:
        archive = _walarchive.Archive(backend, module.params["archive_prefix"])
        archive.open()
        index = archive.index()
        index.location = archive.location
        if request["state"] == "promoted":
            return promote_paused(request, archive, index, progress)
        plan = make_plan(request, index)
        result = plan_report(request, plan, archive)
        if plan["other_timelines"]:
            module.warn(
                "the target lies on timeline %d (the newest) and also on timeline(s) %s of the archive: timeline %d was followed. "
                "If the history you want is another one, set recovery_target_timeline"
                % (plan["timeline"], ", ".join(map(str, plan["other_timelines"])), plan["timeline"])
            )
        if request["archive_mode"] == "off" and not module.check_mode:
            module.warn("the restored server does not archive (archive_mode=off): once it is the primary, set archiving up with postgresql_wal_archive")
        if module.check_mode:
            result["progress"] = progress.samples
            return result
        progress.say("plan", "base backup %s, %d WAL files, target %s" % (result["base_backup"].get("label"), len(plan["chain"]), plan["recovery"]))
        try:
            execute(request, plan, archive, index, progress, result)
        finally:
            result["progress"] = progress.samples
    return result


def execute(request, plan, archive, index, progress, result):
    started = time.monotonic()
    if request["verify_wal"]:
        verify_wal(request, plan, archive, index, progress)
    major = check_destination(request, plan)
    bin_dir = _walrestore.server_bin_dir(major, request["bin_dir"])
    created = restore_files(request, plan, bin_dir, progress)
    try:
        recover(request, plan, archive, index, bin_dir, progress, result)
    except LifeboatError as exc:
        exc.with_done("restored the base backup into %s (recovery did not finish: empty it before trying again)" % request["data_dir"])
        raise
    finally:
        if created and not os.listdir(request["data_dir"]):
            os.rmdir(request["data_dir"])
    result["duration"] = round(time.monotonic() - started, 3)


def verify_wal(request, plan, archive, index, progress):
    """Decrypt and check the chain; a damaged file ends the window (refused if the target is past it)."""
    progress.say("verify", "checking %d archived WAL files" % len(plan["chain"]))
    damaged = _walrestore.verify_chain(archive, plan["chain"], request["wal_keys"], request["parallel"])
    if not damaged:
        return
    first = damaged[0][0]
    missing = [(int(e.file[:8], 16), _wal.parse_segment(e.file, index.segment_size)[1]) for e, _why in damaged]
    window = index.window(plan["backup"], plan["timeline"], missing)
    candidate = (plan["backup"], plan["timeline"], window)
    inside = request["kind"] in ("time", "lsn") and bool(choose_quietly(request, [candidate]))
    if not inside:
        raise RestoreError(
            "archived WAL file %s is damaged (%s): recovery cannot pass it, and the target lies beyond it. Recoverable with this base backup: %s"
            % (first.file, damaged[0][1], describe_window(candidate)),
            damaged=[{"file": e.file, "reason": why} for e, why in damaged],
        )
    plan["chain"] = [e for e in plan["chain"] if e.file < first.file]
    plan["window"] = window


def choose_quietly(request, candidates):
    try:
        return choose(request, candidates)
    except RestoreError:
        return None


def check_destination(request, plan):
    """The data directory is empty or absent, its parent has room; the backup's major version."""
    data_dir = request["data_dir"]
    if os.path.exists(data_dir):
        if not os.path.isdir(data_dir):
            raise RestoreError("data_dir %s exists and is not a directory" % data_dir)
        if os.listdir(data_dir):
            raise RestoreError(
                "data_dir %s is not empty; a point-in-time restore goes into a new or empty directory: choose another one, or empty it" % data_dir
            )
    parent = data_dir if os.path.isdir(data_dir) else os.path.dirname(data_dir)
    if not os.path.isdir(parent):
        raise RestoreError("the parent of data_dir, %s, does not exist" % parent)
    backup = plan["backup"]
    needed = int(backup.get("tar_bytes") or 0) + request["prefetch"] * plan_segment_size(plan)
    problem = pg.space_problem(parent, needed, "the restored data directory")
    if problem:
        raise RestoreError(problem)
    version = backup.get("server_version_num")
    if not version:
        raise RestoreError(
            "the image does not record the server version of its base backup; set bin_dir and try an image written by this collection's version 0.1 or later"
        )
    return int(version) // 10000


def plan_segment_size(plan):
    return plan["chain"][0].size if plan["chain"] else 16 * 1024 * 1024


def restore_files(request, plan, bin_dir, progress):
    """Unpack the base backup and check it. Returns True if the data directory was created."""
    data_dir, owner, backup = request["data_dir"], request["owner"], plan["backup"]
    created = not os.path.exists(data_dir)
    if created:
        os.mkdir(data_dir, 0o700)
    os.chown(data_dir, *owner)
    os.chmod(data_dir, 0o700)
    progress.say("restore", "unpacking %s from %s" % (backup["member"], backup["image"]))
    try:
        with _image.open_image(backup["image"], request) as image:
            with image.open_member(backup["member"]) as stream:
                copied = _walrestore.extract(stream, data_dir, owner)
        progress.say("restore", "unpacked %d bytes" % copied)
        if request["verify_backup"]:
            code, text = _walrestore.run_as([os.path.join(bin_dir, "pg_verifybackup"), data_dir], owner)
            if code != 0:
                raise RestoreError("pg_verifybackup found the restored base backup in %s wrong: %s" % (data_dir, text[-2000:]))
            progress.say("restore", "pg_verifybackup: backup successfully verified")
    except BaseException:
        empty_dir(data_dir)
        if created:
            os.rmdir(data_dir)
        raise
    return created


def empty_dir(path):
    for name in os.listdir(path):
        full = os.path.join(path, name)
        if os.path.isdir(full) and not os.path.islink(full):
            _walrestore.remove_tree(full)
        else:
            os.unlink(full)


# ---- recovery -------------------------------------------------------------------------------


class Session:
    """What one recovery run needs: private folder, program, prefetch folder, server."""

    def __init__(self, request, bin_dir):
        self.request = request
        self.data_dir = request["data_dir"]
        self.owner = request["owner"]
        self.bin_dir = bin_dir
        self.workdir = tempfile.mkdtemp(prefix="lifeboat-pitr-")
        os.chown(self.workdir, *self.owner)
        self.socket = os.path.join(self.workdir, "fetch.sock")
        self.program = os.path.join(self.workdir, "lifeboat-wal")
        self.prefetch_dir = os.path.join(self.data_dir, PREFETCH_DIR)
        self.log = request["data_dir"] + ".pitr-server.log"

    def prepare(self):
        with open(self.program, "wb") as handle:
            handle.write(_walprogram.build(self.request["interpreter"]))
        os.chmod(self.program, 0o755)
        hba = os.path.join(self.workdir, "pg_hba.conf")
        with open(hba, "w") as handle:
            handle.write("# lifeboat.backup postgresql_pitr: during recovery only, on a private socket folder\nlocal all all trust\n")
        os.chown(hba, *self.owner)
        if not os.path.isdir(self.prefetch_dir):
            os.mkdir(self.prefetch_dir, 0o700)
        os.chown(self.prefetch_dir, *self.owner)
        return hba

    def restore_command(self):
        spool = os.path.join(self.prefetch_dir, "%f")
        return "test -f '%s' && mv -f '%s' %%p || exec '%s' get '%s' '%%f' %%p" % (spool, spool, self.program, self.socket)

    def options(self, recovery, hba):
        options = dict(self.request["server_options"])
        options.update(recovery)
        if self.request["kind"] != "latest":
            # pause, even to promote: the module reads the point reached, then promotes
            options["recovery_target_action"] = "shutdown" if self.request["recovery_target_action"] == "shutdown" else "pause"
        if self.request["archive_mode"] == "off":
            options["archive_mode"] = "off"
        options.update(
            restore_command=self.restore_command(),
            hot_standby="on",
            listen_addresses="",
            port=str(self.request["port"]),
            unix_socket_directories=self.workdir,
            hba_file=hba,
            logging_collector="off",
        )
        return options

    def connect_params(self):
        return {
            "login_unix_socket": self.workdir,
            "login_host": None,
            "port": self.request["port"],
            "login_user": self.request["login_user"],
            "login_password": None,
            "login_db": "postgres",
            "ssl_mode": "disable",
            "connect_timeout": 5,
        }

    def save(self, state):
        record = dict(state, workdir=self.workdir, socket=self.socket, program=self.program, log=self.log, port=self.request["port"])
        path = os.path.join(self.data_dir, STATE_FILE)
        with open(path, "w") as handle:
            json.dump(record, handle)

    def cleanup(self, keep_workdir=False):
        _walrestore.remove_tree(self.prefetch_dir)
        if not keep_workdir:
            _walrestore.remove_tree(self.workdir)


def recover(request, plan, archive, index, bin_dir, progress, result):
    session = Session(request, bin_dir)
    hba = session.prepare()
    with open(os.path.join(request["data_dir"], "recovery.signal"), "w"):
        pass
    os.chown(os.path.join(request["data_dir"], "recovery.signal"), *request["owner"])
    options = session.options(plan["recovery"], hba)
    server = _walrestore.FetchServer(
        archive, index, request["wal_keys"], plan["chain"], session.prefetch_dir, session.socket, request["owner"], request["prefetch"], request["parallel"]
    )
    postmaster = _walrestore.Postmaster(bin_dir, request["data_dir"], options, session.log, request["owner"])
    paused = False
    with server:
        progress.say("recover", "starting the server (isolated, socket folder %s)" % session.workdir)
        postmaster.start()
        try:
            outcome = wait_for_target(session, postmaster, server, plan, progress)
            reached = finish(request, session, postmaster, server, plan, outcome, progress)
            paused = outcome == "paused" and request["recovery_target_action"] == "pause"
        except BaseException:
            postmaster.stop()
            raise
        result["reached"] = reached
        result["wal"] = dict(server.describe(), verified=len(plan["chain"]) if request["verify_wal"] else 0)
    result["server"] = final_state(request, session, postmaster, bin_dir, paused, progress)
    if paused:
        session.save({"state": "paused", "reached": reached})
        postmaster.detach()
    session.cleanup(keep_workdir=paused)


def query_state(conn):
    row = pg.execute(
        conn,
        "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp(), "
        "CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END",
    )[0]
    return {"in_recovery": row[0], "replay_lsn": row[1], "replay_time": row[2], "paused": row[3]}


def try_connect(session):
    try:
        return pg.connect(session.connect_params())
    except pg.PgError:
        return None


def wait_for_target(session, postmaster, server, plan, progress):
    """ "paused" (at the target), "promoted" (latest: the archive is exhausted) or "shutdown"."""
    deadline = time.monotonic() + session.request["timeout"]
    conn = None
    meter = Meter(plan, progress)
    try:
        while True:
            if not postmaster.alive():
                return ended(session, postmaster, server)
            conn = conn or try_connect(session)
            state = None
            if conn is not None:
                try:
                    state = query_state(conn)
                except pg.PgError:
                    conn.close()
                    conn, state = None, None
            meter.sample(server, state)
            if state and not state["in_recovery"]:
                return "promoted"
            if state and state["paused"]:
                return "paused"
            if time.monotonic() > deadline:
                raise RestoreError(
                    "recovery did not reach its target within timeout=%d s (at %s); the server was stopped. "
                    "Raise timeout and restore again into an empty data directory"
                    % (session.request["timeout"], (state or {}).get("replay_lsn", "an unknown position"))
                )
            time.sleep(0.5)
    finally:
        if conn is not None:
            conn.close()


def ended(session, postmaster, server):
    """The server exited during recovery: at a shutdown target, or on an error."""
    stopping = postmaster.stopping_line()
    if session.request["recovery_target_action"] == "shutdown" and stopping and postmaster.process.returncode == 0:
        return "shutdown"
    reason = postmaster.fatal() or "exited with status %s" % postmaster.process.returncode
    if server.error:
        reason = "%s (the archive could not deliver %s: %s)" % (reason, server.error[0], server.error[1])
    raise RestoreError("PostgreSQL stopped during recovery: %s. Its log: %s" % (reason, session.log))


class Meter:
    """Progress of replay against the plan's expected end."""

    def __init__(self, plan, progress):
        self.progress = progress
        self.start = plan["backup"]["start_lsn"]
        self.end = _wal.parse_lsn(plan["window"]["end_lsn"])
        if plan["recovery"].get("recovery_target_lsn"):
            self.end = min(self.end, _wal.parse_lsn(plan["recovery"]["recovery_target_lsn"]))
        self.files = len(plan["chain"])
        self.last = 0.0
        self.first = None

    def sample(self, server, state):
        now = time.monotonic()
        if now - self.last < 5:
            return
        self.last = now
        lsn = _wal.parse_lsn(state["replay_lsn"]) if state and state.get("replay_lsn") else None
        values = {"files_taken": server.handed_over(), "files": self.files}
        if lsn is not None:
            self.first = self.first or (now, lsn)
            span = max(1, self.end - self.start)
            rate = (lsn - self.first[1]) / (now - self.first[0]) if now > self.first[0] else 0
            values.update(lsn=_wal.format_lsn(lsn), percent=round(min(100.0, 100.0 * (lsn - self.start) / span), 1), rate=int(rate))
            message = "replayed to %s (%s%%), %s/s, %d of %d WAL files taken" % (
                values["lsn"],
                values["percent"],
                pg.format_size(values["rate"]),
                values["files_taken"],
                self.files,
            )
        else:
            message = "recovering, not yet consistent: %d of %d WAL files taken" % (values["files_taken"], self.files)
        self.progress.say("recover", message, **values)


def finish(request, session, postmaster, server, plan, outcome, progress):
    """At the target: read the point reached, promote when asked. Returns ``reached``."""
    reached = {"stopping": postmaster.stopping_line()}
    if outcome == "shutdown":
        progress.say("recover", "the server shut down at the target: %s" % reached["stopping"])
        return reached
    conn = pg.connect(session.connect_params())
    try:
        state = query_state(conn)
        reached.update(lsn=state["replay_lsn"], time=iso_time(state["replay_time"]))
        if outcome == "paused" and request["recovery_target_action"] == "promote":
            pg.execute(conn, "SELECT pg_promote(true, 300)")
        if request["recovery_target_action"] == "promote" or outcome == "promoted":
            wait_promoted(conn)
            reached["timeline"] = int(pg.scalar(conn, "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), 16)
            keep_archiving_off(conn, request)
        else:
            reached["timeline"] = None
    finally:
        conn.close()
    if request["kind"] == "latest":
        check_latest(server, plan)
    progress.say("recover", "reached %s (%s)%s" % (reached.get("lsn"), reached.get("time"), "; " + reached["stopping"] if reached.get("stopping") else ""))
    return reached


def keep_archiving_off(conn, request):
    """archive_mode=off survives the restarts to come: it goes into postgresql.auto.conf."""
    if request["archive_mode"] == "off":
        pg.execute(conn, "ALTER SYSTEM SET archive_mode = 'off'")


def wait_promoted(conn, timeout=300):
    deadline = time.monotonic() + timeout
    while pg.scalar(conn, "SELECT pg_is_in_recovery()"):
        if time.monotonic() > deadline:
            raise RestoreError("the server did not leave recovery within %d s of its promotion" % timeout)
        time.sleep(0.2)


def check_latest(server, plan):
    """With target latest, the server must have asked for the first file after the window."""
    wanted = plan["window"]["first_missing"]
    if wanted not in server.missing and not any(m > wanted and m[:8] == wanted[:8] for m in server.missing):
        raise RestoreError(
            "recovery ended before the end of the archive: the server never asked for %s (it asked last for %s and found nothing for %s)"
            % (wanted, server.last_request, ", ".join(server.missing) or "nothing")
        )


def iso_time(value):
    if value is None:
        return None
    return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if hasattr(value, "astimezone") else str(value)


def final_state(request, session, postmaster, bin_dir, paused, progress):
    server = {"data_dir": request["data_dir"], "port": request["port"], "log": session.log, "archive_mode": request["archive_mode"]}
    if paused:
        server.update(state="paused", socket_dir=session.workdir)
        progress.say("done", "paused at the target; inspect with psql -h %s -p %s, then run again with state=promoted" % (session.workdir, request["port"]))
        return server
    postmaster.stop()
    if request["recovery_target_action"] == "shutdown" or request["final_state"] == "stopped":
        server["state"] = "stopped"
        progress.say("done", "the restored server is stopped")
        return server
    start_normally(request, bin_dir, session.log)
    server["state"] = "running"
    progress.say("done", "the restored server runs on port %s" % request["port"])
    return server


def start_normally(request, bin_dir, log):
    options = dict(request["server_options"], port=str(request["port"]))
    argv = [os.path.join(bin_dir, "pg_ctl"), "start", "-D", request["data_dir"], "-w", "-t", "300", "-l", log]
    argv += ["-o", " ".join("-c %s" % shlex.quote("%s=%s" % item) for item in sorted(options.items()))]
    code, text = _walrestore.run_as(argv, request["owner"], timeout=600)
    if code != 0:
        raise RestoreError("the recovered server did not start normally (pg_ctl exited %d: %s); its log: %s" % (code, text[-1000:], log), changed=True)


# ---- promoting a paused restore --------------------------------------------------------------------


def promote_paused(request, archive, index, progress):
    """state=promoted: serve WAL again (the promotion looks for timeline history files), promote,
    then leave the server as final_state says."""
    saved = load_state(request["data_dir"])
    if saved.get("state") != "paused":
        return {"changed": False, "server": {"data_dir": request["data_dir"], "state": saved.get("state")}, "reached": saved.get("reached")}
    params = {"login_unix_socket": saved["workdir"], "login_host": None, "port": saved["port"], "login_user": request["login_user"]}
    params.update(login_password=None, login_db="postgres", ssl_mode="disable", connect_timeout=5)
    prefetch_dir = os.path.join(request["data_dir"], PREFETCH_DIR)
    os.makedirs(prefetch_dir, 0o700, exist_ok=True)
    os.chown(prefetch_dir, *request["owner"])
    with _walrestore.FetchServer(archive, index, request["wal_keys"], [], prefetch_dir, saved["socket"], request["owner"]):
        conn = pg.connect(params)
        try:
            if not pg.scalar(conn, "SELECT pg_is_in_recovery()"):
                raise RestoreError("the server in %s is no longer in recovery" % request["data_dir"])
            pg.execute(conn, "SELECT pg_promote(true, 300)")
            wait_promoted(conn)
            timeline = int(pg.scalar(conn, "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), 16)
            keep_archiving_off(conn, request)
        finally:
            conn.close()
        progress.say("promote", "promoted to timeline %d" % timeline)
        with open(os.path.join(request["data_dir"], "PG_VERSION")) as handle:
            bin_dir = _walrestore.server_bin_dir(handle.read().strip(), request["bin_dir"])
        code, text = _walrestore.run_as([os.path.join(bin_dir, "pg_ctl"), "stop", "-D", request["data_dir"], "-m", "fast", "-w", "-t", "300"], request["owner"])
        if code != 0:
            raise RestoreError("stopping the isolated server after its promotion failed: %s" % text, changed=True)
    server = {"data_dir": request["data_dir"], "port": request["port"], "log": saved["log"], "state": "stopped"}
    if request["final_state"] == "running":
        start_normally(request, bin_dir, saved["log"])
        server["state"] = "running"
    os.unlink(os.path.join(request["data_dir"], STATE_FILE))
    _walrestore.remove_tree(prefetch_dir)
    _walrestore.remove_tree(saved["workdir"])
    return {"changed": True, "reached": dict(saved.get("reached") or {}, timeline=timeline), "server": server, "progress": progress.samples}


def load_state(data_dir):
    try:
        with open(os.path.join(data_dir, STATE_FILE)) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        raise RestoreError("%s holds no restore paused by this module (no readable %s)" % (data_dir, STATE_FILE)) from None


if __name__ == "__main__":
    main()
