#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: config_archive
short_description: Capture configuration files and directories into the backup image
version_added: 0.1.0
description:
  - Streams files, directories and glob matches as one POSIX tar through compression and
    encryption into a member of the session's image. Nothing is staged on disk.
  - Preserves mode, owner, group and modification time; symlinks are stored as links (never
    followed); a file with several names (hard links) is stored once, its further names as
    hard links to the first name captured, so a restore links them again; empty directories are kept; the parent directories of each listed path are
    recorded too, so a restore recreates them with their modes.
  - Writes a second member, the file index, with the SHA-256, size and metadata of every file.
    The index is encrypted like the data, because hashes of short secrets must not be
    readable from an image without the key.
  - A missing path or an unreadable file is a warning listed in the result; with O(halt) (or
    a session started with halt) it fails the component.
  - A listed path that is a symlink to a directory is captured as the link alone, with a
    warning naming the directory to list instead.
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._attributes
  - lifeboat.backup._session
  - lifeboat.backup._progress
attributes:
  check_mode:
    support: full
    details: Lists what would be captured and the total size; writes nothing.
  diff_mode:
    support: none
options:
  name:
    default: config
  paths:
    description:
      - Absolute paths of files or directories to capture, or glob patterns (C(*), C(?), C([...])).
      - Directories are captured recursively.
    type: list
    elements: str
    required: true
  exclude:
    description:
      - Glob patterns to leave out. A pattern with a C(/) is matched against the whole path,
        one without against the file name (so C(*.swp) excludes swap files anywhere).
      - A matching directory is skipped with everything under it.
    type: list
    elements: str
    default: []
  one_file_system:
    description:
      - Do not descend into directories on other filesystems (like C(tar --one-file-system)).
    type: bool
    default: false
  halt:
    description:
      - Fail on the first missing path or unreadable file. Defaults to the session's halt setting.
    type: bool
  list_limit:
    description:
      - At most this many files are listed in RV(files) in check mode (counts and sizes cover all).
    type: int
    default: 1000
requirements:
  - cryptography (Python library, on the managed node) when the session encrypts.
  - zstandard (Python library, on the managed node) when the session compresses with zstd.
notes:
  - Extended attributes, ACLs and SELinux labels are not captured.
  - A file that changes while it is read is archived as read and reported in RV(warnings_detail),
    like GNU tar does.
seealso:
  - module: lifeboat.backup.config_restore
  - module: lifeboat.backup.backup_session
"""

EXAMPLES = r"""
- name: Capture the platform configuration (threat-intel platform profile)
  lifeboat.backup.config_archive:
    session: "{{ backup.session.work_dir }}"
    paths:
      - /etc/environment
      - /etc/eclecticiq
      - /etc/default/eclecticiq-platform*
      - /etc/eclecticiq-elasticsearch
      - /etc/eclecticiq-nginx
    exclude:
      - "*.swp"
      - "*~"

- name: What would be captured, and how much
  lifeboat.backup.config_archive:
    session: "{{ backup.session.work_dir }}"
    paths: [/etc/nginx]
  check_mode: true
  register: plan
"""

RETURN = r"""
component:
  description: Component name in the image.
  returned: always
  type: str
  sample: config
members:
  description: Image members written (data, then index).
  returned: success and not check mode
  type: list
  elements: str
  sample: [config/files.tar.zst.age, config/index.jsonl.zst.age]
file_count:
  description: Regular files captured.
  returned: always
  type: int
  sample: 112
directory_count:
  description: Directories captured (including recorded parents).
  returned: always
  type: int
  sample: 9
symlink_count:
  description: Symlinks captured as links.
  returned: always
  type: int
  sample: 2
hardlink_count:
  description:
    - Further names of files captured under another name first, stored as hard links to that
      name (not counted in RV(file_count) or RV(total_bytes)).
  returned: always
  type: int
  sample: 0
  version_added: 0.2.0
total_bytes:
  description: Sum of the sizes of the files captured.
  returned: always
  type: int
  sample: 1048576
stored_bytes:
  description: Bytes the component takes in the image after compression and encryption.
  returned: success and not check mode
  type: int
  sample: 262144
missing:
  description: Listed paths or patterns that matched nothing.
  returned: always
  type: list
  elements: str
  sample: [/etc/myapp/optional.conf]
unreadable:
  description: Files or directories that could not be read, with the reason.
  returned: always
  type: list
  elements: dict
  sample: [{path: /etc/secret, error: Permission denied}]
files:
  description: In check mode, the files that would be captured (path and size), up to O(list_limit).
  returned: check mode
  type: list
  elements: dict
  sample: [{path: /etc/nginx/nginx.conf, size: 1482}]
truncated:
  description: In check mode, whether RV(files) was cut at O(list_limit).
  returned: check mode
  type: bool
  sample: false
duration:
  description: Seconds spent capturing.
  returned: success and not check mode
  type: float
  sample: 1.7
warnings_detail:
  description: Warnings recorded in the manifest for this component (files that changed while read, special files skipped).
  returned: always
  type: list
  elements: str
  sample: []
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

import os
import stat
import time

from ansible_collections.lifeboat.backup.plugins.module_utils import _image, _session, _tree
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule
from ansible_collections.lifeboat.backup.plugins.module_utils._progress import PROGRESS_SPEC


def plan(roots, params, problems):
    """Check mode: walk without reading file contents."""
    totals = _tree.Totals()
    links = _tree.HardLinks()
    files = []
    for entry in _tree.iter_entries(roots, params["exclude"], params["one_file_system"], problems):
        links.mark(entry)
        totals.add(entry)
        if entry.kind == "file" and len(files) <= params["list_limit"]:
            files.append({"path": entry.path, "size": entry.st.st_size})
    return totals, files


def archive(component, entries, halt, totals, unreadable, warnings):
    """Stream the entries into the data member, then write the index member."""
    index = _tree.IndexBuffer()
    with component.appender() as appender:
        with component.member(appender, "files.tar", "application/x-tar", threads=-1) as data:
            tar = _tree.TarWriter(data, hardlinks=True)
            for entry in entries:
                try:
                    record, warning = tar.add(entry)
                except OSError as exc:
                    problem = {"path": entry.path, "error": exc.strerror or str(exc)}
                    if halt:
                        raise _tree.TreeError("cannot read %s: %s (halt is set)" % (entry.path, problem["error"])) from None
                    unreadable.append(problem)
                    continue
                if warning:
                    warnings.append(warning)
                if record:
                    totals.add(entry)
                    index.add(record)
                if halt and unreadable:
                    raise _tree.TreeError("cannot read %s: %s (halt is set)" % (unreadable[0]["path"], unreadable[0]["error"]))
            tar.close()
        component.add_member_record(data.record)
        with component.member(appender, "index.jsonl", "application/x-ndjson") as index_member:
            index.write_to(index_member)
        component.add_member_record(index_member.record)
    return data.record, index_member.record


def check(roots, params, result, unreadable):
    """Check mode: what would be captured."""
    totals, files = plan(roots, params, unreadable)
    truncated = len(files) > params["list_limit"]
    return dict(result, **totals.as_dict(), changed=True, files=files[: params["list_limit"]], truncated=truncated, warnings_detail=[])


def capture(session, component, roots, params, halt, unreadable):
    """Archive the tree into the component; returns (data record, index record, totals, warnings)."""
    totals = _tree.Totals()
    warnings = []
    try:
        with session.heartbeat():
            entries = _tree.iter_entries(roots, params["exclude"], params["one_file_system"], unreadable)
            data, index = archive(component, entries, halt, totals, unreadable, warnings)
    except (OSError, LifeboatError) as exc:
        reason = "config archive failed: %s" % (getattr(exc, "strerror", None) or exc)
        component.fail(reason, totals.as_dict())
        raise _tree.TreeError(reason) from None
    return data, index, totals, warnings


def linked_directories(roots):
    """A warning for each listed path that is a symlink to a directory: it is captured as the
    link alone (links are never followed), which is rarely what the operator meant."""
    return [
        "%s is a symlink to the directory %s: only the link is captured, not the files it points to; list %s to capture them"
        % (path, os.path.realpath(path), os.path.realpath(path))
        for path, st in roots
        if stat.S_ISLNK(st.st_mode) and os.path.isdir(path)
    ]


def record(component, params, data, index, totals, missing, unreadable, warnings):
    """Warnings and details in the component record; the component succeeds."""
    for path in missing:
        component.warn("%s: no such file or directory (or the pattern matched nothing)" % path)
    for problem in unreadable:
        component.warn("%s: unreadable: %s" % (problem["path"], problem["error"]))
    for warning in warnings:
        component.warn(warning)
    details = dict(totals.as_dict(), index_member=index["name"], data_member=data["name"], roots=params["paths"], unreadable=unreadable, missing=missing)
    component.succeed(details)


def run(module):
    params = module.params
    session = module.open_session(params["session"])
    halt = session.halt if params["halt"] is None else params["halt"]
    roots, missing, unreadable = _tree.expand(params["paths"], params["exclude"])
    result = module.keep(dict(changed=False, component=_image.safe_name(params["name"]), missing=missing, unreadable=unreadable))
    if module.check_mode:
        checked = check(roots, params, result, unreadable)
        for text in linked_directories(roots):
            module.warn(text)
            checked["warnings_detail"].append(text)
        return checked
    component = module.start_component(session, params["name"], "config")
    if halt and (missing or unreadable):
        raise _tree.TreeError("missing or unreadable paths with halt set: %s" % ", ".join(missing + [p["path"] for p in unreadable]))
    started = time.time()
    data, index, totals, warnings = capture(session, component, roots, params, halt, unreadable)
    warnings = linked_directories(roots) + warnings
    record(component, params, data, index, totals, missing, unreadable, warnings)
    for text in component.record["warnings"]:
        module.warn(text)
    return dict(
        result,
        **totals.as_dict(),
        changed=True,
        members=[data["name"], index["name"]],
        stored_bytes=data["stored_size"] + index["stored_size"],
        duration=round(time.time() - started, 3),
        warnings_detail=component.record["warnings"],
    )


def main():
    module = LifeboatModule(
        argument_spec=dict(
            paths=dict(type="list", elements="str", required=True),
            exclude=dict(type="list", elements="str", default=[]),
            one_file_system=dict(type="bool", default=False),
            halt=dict(type="bool"),
            list_limit=dict(type="int", default=1000),
        ),
        specs=[_session.component_spec("config"), PROGRESS_SPEC],
        supports_check_mode=True,
    )
    module.run(run)


if __name__ == "__main__":
    main()
