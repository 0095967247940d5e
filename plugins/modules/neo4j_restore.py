#!/usr/bin/python
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: neo4j_restore
short_description: Restore a Neo4j (community) database from a backup image
version_added: 0.1.0
description:
  - Restores what M(lifeboat.backup.neo4j_archive) captured, into a stopped Neo4j. Refuses,
    naming the evidence, while Neo4j runs (see the notes).
  - For an image made with C(method=files) it restores the whole data directory. It
    refuses a data directory that is not empty unless O(replace=true). The archive is first
    unpacked into a staging directory inside the data directory, each file checked against
    the SHA-256 of the image's index and the store ids against the manifest; only then is
    the old content moved out and the restored content moved in (renames on one file
    system), and the old content removed. A failure before that point leaves the data
    directory as it was.
  - For an image made with C(method=dump) it runs
    C(neo4j-admin database load <db> --from-stdin) for each database, streaming the dump from
    the image; a database that exists is refused unless O(replace=true)
    (C(--overwrite-destination)). The dumps are read whole and authenticated first
    (O(authenticate)), so a damaged image or a wrong key overwrites nothing; a failure after
    the first load names in C(done) the databases already loaded.
  - Ownership is fixed afterwards - to O(owner)/O(group) when given; otherwise files keep
    the owner recorded in the image (by name) and C(neo4j-admin) output gets the owner of
    the data directory, so that the Neo4j service account can open its store.
  - Reports the store id of every restored database and fails if it is not the one the
    manifest recorded at backup time.
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._attributes
  - lifeboat.backup._decryption
  - lifeboat.backup._decryption.image
  - lifeboat.backup._neo4j
  - lifeboat.backup._restore
  - lifeboat.backup._progress
attributes:
  check_mode:
    support: full
    details: Checks that Neo4j is stopped and that the target is empty (or O(replace) is set), reports what would be restored; writes nothing.
  diff_mode:
    support: none
  platform:
    platforms: linux
    details: Tells a running Neo4j from a stale pid file through C(/proc/<pid>/cmdline).
options:
  component:
    description:
      - Name of the Neo4j component in the image.
    type: str
    default: neo4j
  replace:
    description:
      - Replace the content of a data directory that is not empty (C(method=files) images),
        or databases that already exist (C(method=dump) images). What was there is removed
        once the restored data is in place.
    type: bool
    default: false
  databases:
    description:
      - For an image made with C(method=dump), restore only these databases. Default is
        every database in the image.
    type: list
    elements: str
    default: []
  rename:
    description:
      - For an image made with C(method=dump), load database C(<key>) of the image under the
        name C(<value>), for example C(neo4j) as C(graph_staging) (the restore role passes the
        database names of its C(restore_mapping)). The existence check and O(replace) apply to
        the new name; store ids and counts are compared with what the image recorded for the old one.
      - The C(system) database cannot be renamed. An image made with C(method=files) holds the
        whole data directory, whose C(system) database records the names of the others; it is
        refused with a non-empty O(rename) (take a C(method=dump) image to restore under other names).
      - Community edition serves its default database only - point C(initial.dbms.default_database)
        in C(neo4j.conf) at the new name (a migration mapping rewrites it in a restored C(neo4j.conf)).
    type: dict
    default: {}
    version_added: 0.2.0
  owner:
    description:
      - User (name or id) to own everything restored, for example C(neo4j). Needs root.
    type: str
  group:
    description:
      - Group (name or id) to own everything restored. Needs root.
    type: str
  timeout:
    description:
      - For C(method=dump) images, seconds one C(neo4j-admin database load) may run.
    type: int
    default: 3600
  verify_counts:
    description:
      - After the restore, count the nodes and relationships of each restored database (from its
        store files) and fail, naming the database, when they differ from the counts the image
        recorded (C(neo4j_archive) with C(fingerprint)). Images without counts are not compared.
    type: bool
    default: true
    version_added: 0.2.0
seealso:
  - module: lifeboat.backup.neo4j_archive
  - module: lifeboat.backup.image_verify
  - name: Neo4j backup and restore (docs/neo4j.md)
    description: Stop, archive, restore and check a Neo4j community database.
    link: https://github.com/lifeboat-backup/lifeboat.backup/blob/main/docs/neo4j.md
"""

EXAMPLES = r"""
- name: Stop Neo4j before restoring
  ansible.builtin.systemd_service:
    name: neo4j
    state: stopped

- name: Replace the data directory with the one in the image
  lifeboat.backup.neo4j_restore:
    image: /var/backups/lifeboat/20261122T194512Z-graph1.zip
    passphrase: "{{ vault_backup_passphrase }}"
    config: /etc/eclecticiq-neo4j/neo4j.conf
    replace: true
    owner: neo4j
    group: neo4j
  register: graph

- name: Start Neo4j again
  ansible.builtin.systemd_service:
    name: neo4j
    state: started

- name: Restore into a new, empty data directory on another host (nothing is replaced)
  lifeboat.backup.neo4j_restore:
    image: /srv/images/20261122T194512Z-graph1.zip
    identity_file: /root/backup-key.txt
    home: /opt/neo4j
    data_dir: /srv/neo4j-restored/data
    bolt_address: ""
"""

RETURN = r"""
method:
  description: How the component was captured (C(files) or C(dump)).
  returned: always
  type: str
  sample: files
data_dir:
  description: The data directory restored into.
  returned: always
  type: str
  sample: /var/lib/neo4j/data
databases:
  description: The databases restored (would be, in check mode), under the names restored as (O(rename)).
  returned: always
  type: list
  elements: str
  sample: [neo4j, system]
store_ids:
  description: Store id of each restored database (in check mode, the ones recorded in the image), C(<creationTime>:<random>).
  returned: always
  type: dict
  sample: {neo4j: "1795378252028:1834726679562575866"}
expected_store_ids:
  description: The store ids the manifest recorded when the image was made.
  returned: always
  type: dict
  sample: {neo4j: "1795378252028:1834726679562575866"}
renamed:
  description: For C(method=dump) images, the databases loaded under another name (O(rename)), image name to restored name.
  returned: always
  type: dict
  sample: {neo4j: graph_staging}
  version_added: 0.2.0
replaced:
  description: Whether existing data was replaced (would be, in check mode).
  returned: always
  type: bool
  sample: false
file_count:
  description: For C(method=files) images, regular files restored.
  returned: success and method is files
  type: int
  sample: 64
notes:
  description: Observations that did not stop the restore (a stale pid file, a lock that could not be checked).
  returned: always
  type: list
  elements: str
  sample: ["stale pid file /var/lib/neo4j/run/neo4j.pid: process 4242 is gone"]
owner:
  description:
    - The numeric owner and group given to the restored files (O(owner)/O(group), or the owner of the data directory for
      C(neo4j-admin) output); null when the files kept the ownership recorded in the image. A null part was left unchanged.
  returned: always
  type: dict
  sample: {uid: 112, gid: 118}
counts:
  description: With O(verify_counts) and counts in the image, the node and relationship counts of each restored database.
  returned: after a restore compared with the image's counts
  type: dict
  version_added: 0.2.0
  sample: {neo4j: {nodes: 120345, relationships: 455001}}
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

import grp
import os
import pwd
import shutil
import tarfile
import tempfile

from ansible_collections.lifeboat.backup.plugins.module_utils import _age, _fingerprint, _image, _neo4j, _proc, _tree
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError, OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule
from ansible_collections.lifeboat.backup.plugins.module_utils._progress import PROGRESS_SPEC

STAGING_PREFIX = ".lifeboat-restore-"
PREVIOUS_PREFIX = ".lifeboat-previous-"


class RestoreError(LifeboatError):
    """The restore cannot go on (target not empty, store ids that do not match)."""


def resolve_owner(owner, group):
    """(uid or -1, gid or -1) for names or numbers; raise RestoreError naming the bad one."""
    uid = gid = -1
    if owner is not None:
        try:
            uid = int(owner) if owner.isdigit() else pwd.getpwnam(owner).pw_uid
        except KeyError:
            raise RestoreError(f"owner: no user {owner!r} on this host") from None
    if group is not None:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise RestoreError(f"group: no group {group!r} on this host") from None
    return uid, gid


def owner_record(owner_ids):
    uid, gid = owner_ids
    return {"uid": uid if uid >= 0 else None, "gid": gid if gid >= 0 else None}


def chown_tree(path, uid, gid):
    os.lchown(path, uid, gid)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


def existing_entries(data_dir):
    try:
        entries = os.listdir(data_dir)
    except FileNotFoundError:
        return []
    # lost+found belongs to the file system when the data directory is a mount point.
    return sorted(e for e in entries if not e.startswith((STAGING_PREFIX, PREVIOUS_PREFIX)) and e != "lost+found")


def extract_tree(image, details, staging, with_owner):
    """Unpack the data tar into ``staging``, checking each file against the index.

    Returns (the tar entry of the data directory itself or None, regular files restored).
    """
    with image.open_member(details["index_member"]) as stream:
        index = _tree.read_index(stream)
    extractor = _tree.Extractor(staging, same_owner=with_owner)
    root_info = None
    files = 0
    try:
        with image.open_member(details["data_member"]) as member:
            with tarfile.open(fileobj=member, mode="r|", errorlevel=2) as tar:
                for info in _tree.read_entries(tar):
                    if info.name in (".", "./"):
                        root_info = info
                        continue
                    record = index.get(info.name)
                    if record is None:
                        raise RestoreError(f"{info.name} is in the archive but not in its index; the image is inconsistent")
                    source = _image.HashingReader(tar.extractfile(info)) if info.isreg() else None
                    extractor.extract(info, source)
                    if source is not None:
                        files += 1
                        if source.sha.hexdigest() != record.get("sha256"):
                            raise RestoreError(f"{info.name}: restored content does not match the SHA-256 in the image index")
            member.read()  # to the end: checks the member's SHA-256 against the manifest
    finally:
        extractor.close()
    return root_info, files


def swap_in(data_dir, staging):
    """Move the current content aside, the staged content in; roll back on failure."""
    previous = tempfile.mkdtemp(prefix=PREVIOUS_PREFIX, dir=data_dir)
    moved_out = []
    moved_in = []
    try:
        for entry in existing_entries(data_dir):
            os.rename(os.path.join(data_dir, entry), os.path.join(previous, entry))
            moved_out.append(entry)
        for entry in sorted(os.listdir(staging)):
            os.rename(os.path.join(staging, entry), os.path.join(data_dir, entry))
            moved_in.append(entry)
    except OSError:
        for entry in moved_in:
            os.rename(os.path.join(data_dir, entry), os.path.join(staging, entry))
        for entry in moved_out:
            os.rename(os.path.join(previous, entry), os.path.join(data_dir, entry))
        os.rmdir(previous)
        raise
    shutil.rmtree(previous)
    os.rmdir(staging)
    return bool(moved_out)


def restore_files(image, details, data_dir, replace, with_owner, expected):
    """Unpack, verify, swap in. Until the swap, a failure leaves ``data_dir`` as it was.

    Returns (regular files restored, whether old content was replaced, the tar entry of
    the data directory itself or None).
    """
    created = not os.path.isdir(data_dir)
    if created:
        os.makedirs(data_dir, 0o750)
    for entry in os.listdir(data_dir):
        if entry.startswith(STAGING_PREFIX):  # left by a restore that was killed
            shutil.rmtree(os.path.join(data_dir, entry), ignore_errors=True)
    staging = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=data_dir)
    try:
        root_info, files = extract_tree(image, details, staging, with_owner)
        check_store_ids(_neo4j.store_ids(staging), expected)
        if existing_entries(data_dir) and not replace:
            raise RestoreError(f"{data_dir} is no longer empty; something wrote to it while the image was unpacked")
        replaced = swap_in(data_dir, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(data_dir, ignore_errors=True)
        raise
    return files, replaced, root_info


def fix_ownership(data_dir, root_info, with_owner, owner_ids):
    """The data directory's own mode and owner from the image, then O(owner)/O(group) on everything."""
    if root_info is not None:
        os.chmod(data_dir, root_info.mode)
        if with_owner:
            os.chown(data_dir, *_tree._owner(root_info))
    if owner_ids != (-1, -1):
        chown_tree(data_dir, *owner_ids)


def dump_members(image, component):
    """{database: member name} of a dump component."""
    found = {}
    for member in image.component_members(component):
        database = (member.get("extra") or {}).get("database")
        if database:
            found[database] = member["name"]
    return found


def restore_dumps(image, layout, admin, members, plan, replace, owner_ids, timeout, done):
    """Load each database of ``plan`` ({source: target}) under its target name."""
    for source, database in plan.items():
        argv = [admin, "database", "load", database, "--from-stdin"]
        if replace:
            argv.append("--overwrite-destination=true")
        existed = os.path.isfile(os.path.join(layout.databases_dir, database, "neostore"))
        try:
            with image.open_member(members[source]) as member, layout.admin_options() as options:
                _proc.stream_into(argv + options, member, env=layout.env(), timeout=timeout)
        except BaseException:
            if existed:
                done.append(f"neo4j-admin load of {database} started over the existing database (it may be partly overwritten)")
            raise
        renamed = f" as {database}" if database != source else ""
        done.append(f"loaded database {source}{renamed}" + (" (replacing the one there)" if existed else ""))
    databases = list(plan.values())
    if owner_ids != (-1, -1):
        for database in databases:
            for path in (os.path.join(layout.databases_dir, database), os.path.join(layout.data_dir, "transactions", database)):
                if os.path.exists(path):
                    chown_tree(path, *owner_ids)
    return _neo4j.store_ids(layout.data_dir, databases)


def check_store_ids(restored, expected):
    wrong = []
    for database, store_id in sorted(expected.items()):
        have = restored.get(database, {}).get("store_id")
        if have != store_id:
            wrong.append(f"{database} has {have or 'no store'}, the image recorded {store_id}")
    if wrong:
        raise RestoreError(f"restored store ids do not match the image: {'; '.join(wrong)}")


def _reason(exc):
    return getattr(exc, "strerror", None) or str(exc)


def _failure(msg, done, result):
    return LifeboatError(msg, changed=bool(done), done=done, **{k: v for k, v in result.items() if k != "changed"})


def restore_files_component(module, image, params, layout, details, expected, owner_ids, result):
    """A ``method=files`` component: the whole data directory. Returns the restored store
    ids (None in check mode)."""
    root = os.geteuid() == 0
    data_dir = layout.data_dir
    if params["databases"]:
        raise OptionError("databases", "databases: this image holds the whole data directory (method=files); it is restored as a whole")
    if params["rename"]:
        raise OptionError(
            "rename",
            "rename: this image holds the whole data directory (method=files), whose system database records the names of the "
            "others; it restores only under its own names. Keep the names (keep: true in a migration mapping), or restore from "
            "an image taken with method=dump",
        )
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise RestoreError(f"data_dir {data_dir} exists and is not a directory")
    existing = existing_entries(data_dir)
    if existing and not params["replace"]:
        raise RestoreError(
            f"data_dir {data_dir} is not empty ({', '.join(existing[:8])}): restoring into it would mix two stores. Set replace=true to "
            "replace its content (removed only once the restored data is in place), or give an empty data_dir"
        )
    result.update(databases=sorted(expected) or list(details.get("databases", [])), replaced=bool(existing), store_ids=expected)
    if module.check_mode:
        result["changed"] = True
        return None
    try:
        files, replaced, root_info = restore_files(image, details, data_dir, params["replace"], root, expected)
    except (LifeboatError, tarfile.TarError, OSError) as exc:
        raise RestoreError(f"restore of {params['component']} into {data_dir} failed, the data directory is as it was: {_reason(exc)}") from None
    result.update(file_count=files, replaced=replaced, changed=True)
    try:
        fix_ownership(data_dir, root_info, root, owner_ids)
        return _neo4j.store_ids(data_dir, sorted(expected) or None)
    except (OSError, _neo4j.Neo4jError) as exc:
        done = [f"{'replaced the content of' if replaced else 'restored'} {data_dir} with the image's ({files} files)"]
        msg = f"restored into {data_dir}, but: {_reason(exc)}; fix it and set the owner and mode by hand, or run the restore again"
        raise _failure(msg, done, result) from None


def dump_plan(params, layout, members):
    """({source: target} databases to load, targets present); refuses unknown names, bad
    renames and, without replace, present targets."""
    databases = params["databases"] or sorted(members)
    unknown = [d for d in databases if d not in members]
    if unknown:
        raise OptionError("databases", f"databases: {', '.join(unknown)} not in the image (it has: {', '.join(sorted(members))})")
    rename = {str(k): str(v) for k, v in (params["rename"] or {}).items() if str(k) != str(v)}
    plan = {d: rename.get(d, d) for d in databases}
    problems = [f"{s} is not a database of the image (it has: {', '.join(sorted(members))})" for s in sorted(rename) if s not in members]
    problems += [f"{s} cannot be renamed (the system database keeps its name)" for s in sorted(rename) if s == "system"]
    problems += [f"{t!r} is not a valid database name" for t in sorted(set(rename.values())) if not _neo4j.valid_database_name(t)]
    clashes = sorted({t for t in plan.values() if list(plan.values()).count(t) > 1})
    problems += [f"two databases would be loaded as {t}" for t in clashes]
    if problems:
        raise OptionError("rename", f"rename: {'; '.join(problems)}")
    present = [t for t in plan.values() if os.path.isfile(os.path.join(layout.databases_dir, t, "neostore"))]
    if present and not params["replace"]:
        raise RestoreError(
            f"databases already present in {layout.databases_dir}: {', '.join(present)}; set replace=true to overwrite them "
            "(neo4j-admin --overwrite-destination), or restore other databases" + (", or rename them to names not present" if rename else "")
        )
    return plan, present


def restore_dump_component(module, image, params, layout, expected, owner_ids, result):
    """A ``method=dump`` component: neo4j-admin load per database. Returns the restored store
    ids (None in check mode)."""
    members = dump_members(image, params["component"])
    plan, present = dump_plan(params, layout, members)
    expected = {plan[d]: s for d, s in expected.items() if d in plan}  # under the names restored
    renamed = {s: t for s, t in plan.items() if s != t}
    result.update(databases=list(plan.values()), renamed=renamed, replaced=bool(present), store_ids=expected, expected_store_ids=expected)
    admin = _neo4j.find_admin(layout, params["neo4j_admin"])
    if module.check_mode:
        result["changed"] = True
        return None
    if params["authenticate"]:
        try:
            _image.authenticate(image, [members[d] for d in plan])
        except _image.ImageError as exc:
            raise type(exc)(f"{exc}. Nothing was changed") from None
    if os.geteuid() == 0 and owner_ids == (-1, -1) and os.path.isdir(layout.data_dir):
        st = os.stat(layout.data_dir)
        owner_ids = (st.st_uid, st.st_gid)  # neo4j-admin ran as root; the service account must own its store
    if owner_ids != (-1, -1):
        result["owner"] = owner_record(owner_ids)
    result["changed"] = True
    done = []
    try:
        return restore_dumps(image, layout, admin, members, plan, params["replace"], owner_ids, params["timeout"], done)
    except (LifeboatError, OSError) as exc:
        msg = f"neo4j-admin load into {layout.data_dir} failed: {_reason(exc)}; once the cause is fixed, run again with replace=true for the databases named"
        raise _failure(msg, done, result) from None


def prepare(params, result):
    """Owner ids and the installation's layout; fills ``result``."""
    if (params["owner"] is not None or params["group"] is not None) and os.geteuid() != 0:
        raise OptionError("owner", "owner/group need root; run with become, or leave them out")
    owner_ids = resolve_owner(params["owner"], params["group"])
    layout = _neo4j.Layout(params["home"], params["config"], params["data_dir"], params["pid_file"], params["bolt_address"])
    if owner_ids != (-1, -1):
        result["owner"] = owner_record(owner_ids)
    result["data_dir"] = layout.data_dir
    return owner_ids, layout


def refuse_if_running(module, layout, result):
    evidence, notes = _neo4j.running_evidence(layout)
    result["notes"] = notes
    for note in notes:
        module.warn(note)
    if evidence:
        raise _neo4j.Neo4jError(_neo4j.refuse_message(f"restore into {layout.data_dir}", evidence))


def restore(module):
    params = module.params
    module.require("cryptography", _age.HAS_CRYPTOGRAPHY, _age.CRYPTOGRAPHY_IMPORT_ERROR)
    result = module.keep(
        {
            "changed": False,
            "method": None,
            "data_dir": None,
            "databases": [],
            "store_ids": {},
            "expected_store_ids": {},
            "renamed": {},
            "replaced": False,
            "owner": None,
            "notes": [],
        }
    )
    owner_ids, layout = prepare(params, result)
    with _image.open_image(params["image"], params) as image:
        component = _image.restorable_component(image, params["component"], "neo4j", "Neo4j")
        details = component.get("details", {})
        expected = dict(component.get("markers", {}).get("store_ids") or {})
        result.update(method=details.get("method", "files"), expected_store_ids=expected)
        refuse_if_running(module, layout, result)
        if result["method"] == "files":
            restored = restore_files_component(module, image, params, layout, details, expected, owner_ids, result)
        else:
            restored = restore_dump_component(module, image, params, layout, expected, owner_ids, result)
    if restored is None:  # check mode
        return result
    result["store_ids"] = {d: info["store_id"] for d, info in restored.items()}
    check_store_ids(restored, result["expected_store_ids"])
    recorded = ((details.get("fingerprint") or {}).get("counts")) or {}
    if params["verify_counts"] and recorded:
        renamed = result.get("renamed") or {}
        compare_counts(layout, {renamed.get(d, d): c for d, c in recorded.items() if renamed.get(d, d) in restored}, result)
    return result


def compare_counts(layout, recorded, result):
    """Graph counts of the restored databases against the image's; raises naming the differences."""
    try:
        result["counts"] = _fingerprint.neo4j_all(layout.data_dir, sorted(recorded))
    except _fingerprint.FingerprintError as exc:
        raise _failure(f"restored, but the graph could not be counted: {exc}", ["restored %s" % layout.data_dir], result) from None
    problems = _fingerprint.neo4j_compare(recorded, result["counts"])
    if problems:
        raise _failure(f"the restored graph differs from the backup: {'; '.join(problems)}", ["restored %s" % layout.data_dir], result)


def main():
    module = LifeboatModule(
        argument_spec=dict(
            component=dict(type="str", default="neo4j"),
            replace=dict(type="bool", default=False),
            databases=dict(type="list", elements="str", default=[]),
            owner=dict(type="str"),
            group=dict(type="str"),
            timeout=dict(type="int", default=3600),
            verify_counts=dict(type="bool", default=True),
            rename=dict(type="dict", default={}),
        ),
        specs=[_image.IMAGE_SPEC, _image.DECRYPTION_SPEC, _image.RESTORE_SPEC, _neo4j.LAYOUT_SPEC, PROGRESS_SPEC],
        supports_check_mode=True,
    )
    module.run(restore)


if __name__ == "__main__":
    main()
