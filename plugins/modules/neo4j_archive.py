#!/usr/bin/python
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: neo4j_archive
short_description: Capture a stopped Neo4j (community) database into the backup image
version_added: 0.1.0
description:
  - Neo4j community edition has no online backup; its files can be copied only while no
    Neo4j process uses them. The module first checks that Neo4j is stopped and refuses,
    naming the evidence, when it is not (see the notes).
  - With O(method=files) (the default) it streams the whole data directory (C(databases/),
    C(transactions/), C(dbms/), C(server_id)...) as one POSIX tar through compression and
    encryption into a member of the session's image, plus a per-file index (SHA-256, size,
    mode, owner). Nothing is staged on disk. It is the vendor's C(tar) of the data
    directory, done safely.
  - With O(method=dump) it runs C(neo4j-admin database dump <db> --to-stdout) for each
    database and streams each dump into its own member (loadable with
    C(neo4j-admin database load)).
  - Reads the store id of every database from its C(neostore) file and records it in the
    manifest as the component's consistency marker (C(store_ids)); after the capture it
    checks again that Neo4j did not start and that the store ids did not change.
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._attributes
  - lifeboat.backup._session
  - lifeboat.backup._neo4j
  - lifeboat.backup._progress
attributes:
  check_mode:
    support: full
    details: Checks that Neo4j is stopped and reports the databases, store ids and size; writes nothing.
  diff_mode:
    support: none
  platform:
    platforms: linux
    details: Tells a running Neo4j from a stale pid file through C(/proc/<pid>/cmdline).
options:
  name:
    default: neo4j
  method:
    description:
      - C(files) archives the data directory as it is on disk; restore puts it back as it
        was, for the same Neo4j version.
      - C(dump) uses C(neo4j-admin database dump), one member per database; it needs
        C(neo4j-admin) on the node (see O(neo4j_admin)).
    type: str
    choices: [files, dump]
    default: files
  databases:
    description:
      - With O(method=dump), the databases to dump. Default is every database of the data
        directory, C(system) included (it holds users and roles).
    type: list
    elements: str
    default: []
  exclude:
    description:
      - With O(method=files), glob patterns of paths to leave out, as in
        M(lifeboat.backup.config_archive). For example C(*/dumps) when C(neo4j-admin) dumps
        are kept in the data directory (the Neo4j 5 default).
    type: list
    elements: str
    default: []
  timeout:
    description:
      - With O(method=dump), seconds one C(neo4j-admin database dump) may run.
    type: int
    default: 3600
  fingerprint:
    description:
      - Record the number of nodes and relationships of each captured database, for the restore
        drill and M(lifeboat.backup.neo4j_restore), which compares them after a restore
        (C(docs/drills.md)).
      - Counted from the stopped store's files (the records in use of the node and relationship
        stores, record formats C(standard) and C(aligned)); a database in another format is
        recorded without counts. Costs one read of the node and relationship store files.
    type: bool
    default: true
    version_added: 0.2.0
requirements:
  - cryptography (Python library, on the managed node) when the session encrypts.
  - zstandard (Python library, on the managed node) when the session compresses with zstd.
  - C(neo4j-admin) on the managed node for O(method=dump).
seealso:
  - module: lifeboat.backup.neo4j_restore
  - module: lifeboat.backup.backup_session
  - name: Neo4j backup and restore (docs/neo4j.md)
    description: Stop, archive, restore and check a Neo4j community database.
    link: https://github.com/lifeboat-backup/lifeboat.backup/blob/main/docs/neo4j.md
"""

EXAMPLES = r"""
- name: Stop Neo4j (or use the lifeboat.backup.quiesce role)
  ansible.builtin.systemd_service:
    name: neo4j
    state: stopped

- name: Archive the data directory named in neo4j.conf (threat-intel platform layout)
  lifeboat.backup.neo4j_archive:
    session: "{{ backup.session.work_dir }}"
    config: /etc/eclecticiq-neo4j/neo4j.conf
  register: graph

- name: Dump each database with neo4j-admin instead
  lifeboat.backup.neo4j_archive:
    session: "{{ backup.session.work_dir }}"
    home: /opt/neo4j
    method: dump
    databases: [neo4j, system]

- name: Is Neo4j stopped, and what would be archived?
  lifeboat.backup.neo4j_archive:
    session: "{{ backup.session.work_dir }}"
  check_mode: true
"""

RETURN = r"""
component:
  description: Component name in the image.
  returned: always
  type: str
  sample: neo4j
method:
  description: How the databases were captured (C(files) or C(dump)).
  returned: always
  type: str
  sample: files
data_dir:
  description: The data directory.
  returned: always
  type: str
  sample: /var/lib/neo4j/data
databases:
  description: The databases found (O(method=files)) or dumped (O(method=dump)).
  returned: always
  type: list
  elements: str
  sample: [neo4j, system]
store_ids:
  description:
    - Store id of each database, C(<creationTime>:<random>) as Neo4j's C(debug.log) prints
      them (C(StoreId{creationTime=..., random=...})). Recorded in the manifest as the
      component's consistency marker.
  returned: always
  type: dict
  sample: {neo4j: "1795378252028:1834726679562575866", system: "1795378247907:-6991638630361737212"}
stores:
  description: Per database, the store id and its parts (creation time, format, external store UUID).
  returned: always
  type: dict
  sample: {neo4j: {store_id: "1795378252028:1834726679562575866", created: "2026-11-22T20:10:52Z", format: record-aligned-1.1,
           external_store_uuid: b68cd4cb-da94-47a2-ba78-94b48ec8c126}}
members:
  description: Image members written.
  returned: success and not check mode
  type: list
  elements: str
  sample: [neo4j/data.tar.zst.age, neo4j/index.jsonl.zst.age]
file_count:
  description: With O(method=files), regular files captured (in check mode, that would be).
  returned: method is files
  type: int
  sample: 64
total_bytes:
  description: With O(method=files), sum of the file sizes; with O(method=dump), bytes of dump output.
  returned: always
  type: int
  sample: 1048576
stored_bytes:
  description: Bytes the component takes in the image after compression and encryption.
  returned: success and not check mode
  type: int
  sample: 262144
notes:
  description: Observations that did not stop the archive (a stale pid file, a lock that could not be checked).
  returned: always
  type: list
  elements: str
  sample: ["stale pid file /var/lib/neo4j/run/neo4j.pid: process 4242 is gone"]
duration:
  description: Seconds spent capturing.
  returned: success and not check mode
  type: float
  sample: 3.2
fingerprint:
  description:
    - With O(fingerprint), the node and relationship counts of each captured database (null for a
      store in a format that cannot be counted) and the seconds the count took.
  returned: success and not check mode, with fingerprint
  type: dict
  version_added: 0.2.0
  sample: {counts: {neo4j: {nodes: 120345, relationships: 455001}, system: {nodes: 14, relationships: 9}}, seconds: 0.4}
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
import time

from ansible_collections.lifeboat.backup.plugins.module_utils import _fingerprint, _image, _neo4j, _proc, _session, _tree
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError, OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule
from ansible_collections.lifeboat.backup.plugins.module_utils._progress import PROGRESS_SPEC


def relative_entries(data_dir, exclude, problems):
    """The data directory's entries, named relative to it (the directory itself is '.')."""
    roots = [(data_dir, os.lstat(data_dir))]
    for entry in _tree.iter_entries(roots, exclude, one_file_system=False, problems=problems):
        if entry.implicit:
            continue  # the directories above the data directory are not Neo4j's
        entry.arcname = os.path.relpath(entry.path, data_dir)
        yield entry


def archive_files(component, layout, exclude):
    """Stream the data directory into data.tar and its index into index.jsonl."""
    totals = _tree.Totals()
    problems = []
    index = _tree.IndexBuffer()
    with component.appender() as appender:
        with component.member(appender, "data.tar", "application/x-tar", threads=-1) as data:
            tar = _tree.TarWriter(data)
            for entry in relative_entries(layout.data_dir, exclude, problems):
                record, warning = tar.add(entry)
                if warning:
                    # A stopped Neo4j writes nothing: a file changing under us means something does.
                    raise _neo4j.Neo4jError(f"{warning}; something is writing to the data directory - is Neo4j (or neo4j-admin) really stopped?")
                if record:
                    record["path"] = entry.arcname
                    totals.add(entry)
                    index.add(record)
            if problems:
                raise _neo4j.Neo4jError(f"cannot read {problems[0]['path']}: {problems[0]['error']}")
            tar.close()
        component.add_member_record(data.record)
        with component.member(appender, "index.jsonl", "application/x-ndjson") as index_member:
            index.write_to(index_member)
        component.add_member_record(index_member.record)
    return totals, [data.record, index_member.record]


def archive_dumps(component, layout, admin, databases, timeout):
    """One neo4j-admin dump per database, each streamed into <db>.dump."""
    records = []
    total = 0
    with component.appender() as appender, layout.admin_options() as options:
        for database in databases:
            argv = [admin, "database", "dump", database, "--to-stdout"] + options
            with component.member(appender, f"{_image.safe_name(database)}.dump", "application/vnd.neo4j.dump", extra={"database": database}) as out:
                copied, _stderr = _proc.stream_from(argv, out, env=layout.env(), timeout=timeout)
            if copied == 0:
                raise _neo4j.Neo4jError(f"neo4j-admin database dump {database} wrote nothing")
            component.add_member_record(out.record)
            records.append(out.record)
            total += copied
    return total, records


def plan_files(layout, exclude):
    totals = _tree.Totals()
    problems = []
    for entry in relative_entries(layout.data_dir, exclude, problems):
        totals.add(entry)
    return totals, problems


def inspect(params, result):
    """The installation's layout, checked stopped, and the databases to capture; fills ``result``."""
    layout = _neo4j.Layout(params["home"], params["config"], params["data_dir"], params["pid_file"], params["bolt_address"])
    result["data_dir"] = layout.data_dir
    if not os.path.isdir(layout.data_dir):
        raise _neo4j.Neo4jError(f"data_dir {layout.data_dir} does not exist or is not a directory; give data_dir, or the home/config of this Neo4j")
    found = layout.databases()
    if not found:
        raise _neo4j.Neo4jError(
            f"no Neo4j database under {layout.databases_dir} (no databases/*/neostore): is this the Neo4j data directory? Give data_dir or config"
        )
    evidence, notes = _neo4j.running_evidence(layout)
    result["notes"] = notes
    if evidence:
        raise _neo4j.Neo4jError(_neo4j.refuse_message(f"archive {layout.data_dir}", evidence))
    databases = params["databases"] or found
    missing = [d for d in databases if d not in found]
    if missing:
        raise OptionError("databases", f"databases: {', '.join(missing)} not found in {layout.databases_dir} (present: {', '.join(found)})")
    stores = _neo4j.store_ids(layout.data_dir, found)
    # The marker names the store ids of what the image holds: every database, or the ones dumped.
    result.update(databases=databases, stores=stores, store_ids={db: stores[db]["store_id"] for db in databases})
    return layout, found


def plan(params, layout, result):
    """Check mode: what would be captured."""
    if params["method"] == "files":
        totals, problems = plan_files(layout, params["exclude"])
        if problems:
            result["notes"].extend(f"cannot read {p['path']}: {p['error']}" for p in problems)
        result.update(file_count=totals.file_count, total_bytes=totals.total_bytes)
    return dict(result, changed=True)


def capture(params, session, component, layout, admin, result):
    """Archive the files or dump the databases into the component; returns the member records."""
    try:
        with session.heartbeat():
            if params["method"] == "files":
                totals, records = archive_files(component, layout, params["exclude"])
                result.update(file_count=totals.file_count, total_bytes=totals.total_bytes)
            else:
                total, records = archive_dumps(component, layout, admin, result["databases"], params["timeout"])
                result["total_bytes"] = total
    except (OSError, LifeboatError) as exc:
        raise _neo4j.Neo4jError(f"neo4j archive of {layout.data_dir} failed: {getattr(exc, 'strerror', None) or exc}") from None
    return records


def check_untouched(layout, found, stores):
    """The capture is only consistent if nothing touched the store meanwhile."""
    evidence, _notes = _neo4j.running_evidence(layout)
    if evidence:
        raise _neo4j.Neo4jError(f"Neo4j started while its files were being archived; the archive is not consistent: {'; '.join(evidence)}")
    after = _neo4j.store_ids(layout.data_dir, found)
    changed_ids = sorted(db for db in found if after[db]["store_id"] != stores[db]["store_id"])
    if changed_ids:
        raise _neo4j.Neo4jError(f"the store id of {', '.join(changed_ids)} changed while it was being archived; the archive is not consistent")


def count_graphs(layout, databases):
    """Node and relationship counts per database, from the stopped store's files."""
    started = time.time()
    try:
        counts = _fingerprint.neo4j_all(layout.data_dir, databases)
    except _fingerprint.FingerprintError as exc:
        raise _neo4j.Neo4jError(f"counting the graph failed: {exc} (fingerprint=false leaves it out)") from None
    return {"counts": counts, "seconds": round(time.time() - started, 3)}


def succeed(component, params, layout, records, result):
    files = params["method"] == "files"
    component.marker("store_ids", result["store_ids"])
    for note in result["notes"]:
        component.warn(note)
    component.succeed(
        {
            "method": params["method"],
            "data_dir": layout.data_dir,
            "databases": result["databases"],
            "stores": result["stores"],
            "members": [r["name"] for r in records],
            "data_member": records[0]["name"] if files else None,
            "index_member": records[1]["name"] if files else None,
            "total_bytes": result["total_bytes"],
            "file_count": result.get("file_count"),
            "fingerprint": result.get("fingerprint"),
        }
    )


def archive(module, session, result):
    params = module.params
    component = None if module.check_mode else module.start_component(session, params["name"], "neo4j")
    layout, found = inspect(params, result)
    admin = _neo4j.find_admin(layout, params["neo4j_admin"]) if params["method"] == "dump" else None
    if module.check_mode:
        return plan(params, layout, result)
    started = time.time()
    records = capture(params, session, component, layout, admin, result)
    check_untouched(layout, found, result["stores"])
    if params["fingerprint"]:
        result["fingerprint"] = count_graphs(layout, result["databases"])
    notes = list(result["notes"])
    succeed(component, params, layout, records, result)
    for note in notes:
        module.warn(note)
    return dict(
        result,
        changed=True,
        members=[r["name"] for r in records],
        stored_bytes=sum(r["stored_size"] for r in records),
        duration=round(time.time() - started, 3),
    )


def run(module):
    params = module.params
    session = module.open_session(params["session"])
    if params["databases"] and params["method"] != "dump":
        raise OptionError("databases", "databases applies to method=dump; method=files always archives the whole data directory")
    result = {
        "changed": False,
        "component": _image.safe_name(params["name"]),
        "method": params["method"],
        "data_dir": None,
        "databases": [],
        "store_ids": {},
        "stores": {},
        "total_bytes": 0,
        "notes": [],
    }
    return archive(module, session, module.keep(result))


def main():
    module = LifeboatModule(
        argument_spec=dict(
            method=dict(type="str", choices=["files", "dump"], default="files"),
            databases=dict(type="list", elements="str", default=[]),
            exclude=dict(type="list", elements="str", default=[]),
            timeout=dict(type="int", default=3600),
            fingerprint=dict(type="bool", default=True),
        ),
        specs=[_neo4j.LAYOUT_SPEC, _session.component_spec("neo4j"), PROGRESS_SPEC],
        supports_check_mode=True,
    )
    module.run(run)


if __name__ == "__main__":
    main()
