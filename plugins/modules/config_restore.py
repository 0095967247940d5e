#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: config_restore
short_description: Restore configuration files from a backup image
version_added: 0.1.0
description:
  - Restores files, directories and symlinks captured by M(lifeboat.backup.config_archive),
    to their original paths or under an alternate O(root), all of them or only O(paths).
  - Compares each entry with what is on disk first (SHA-256, type, mode, owner); only what
    differs is written, so a second run reports no change.
  - Before the first file is written, the component's members are read whole and
    authenticated (O(authenticate)); a damaged image or a wrong key writes nothing.
  - Each file is written to a temporary name, checked against the SHA-256 in the image's
    file index, then renamed into place with its mode, owner and modification time.
    A failure after the first write lists what was written in C(written) and C(done).
  - Never writes through a symlink - neither one already on disk nor one restored from the
    archive - so an archive entry cannot reach outside O(root).
  - Names of one file (hard links, captured as such since version 0.2.0) are restored as names
    of one file again. Selecting one of them with O(paths) restores the first name captured
    too, because the content travels with it.
author:
  - lifeboat.backup maintainers (@lifeboat-backup)
extends_documentation_fragment:
  - lifeboat.backup._attributes
  - lifeboat.backup._decryption
  - lifeboat.backup._decryption.image
  - lifeboat.backup._restore
  - lifeboat.backup._progress
attributes:
  check_mode:
    support: full
    details: Reports which files would be created or changed and writes nothing.
  diff_mode:
    support: full
    details: The diff lists the changed paths with type, mode, owner, size and SHA-256 before and after; file contents are not shown.
options:
  component:
    description:
      - Name of the configuration component in the image.
    type: str
    default: config
  root:
    description:
      - Directory under which the original absolute paths are recreated. C(/) restores in place.
    type: path
    default: /
  paths:
    description:
      - Restore only these original paths. A directory selects everything below it; glob
        patterns are allowed. Default is everything in the component.
    type: list
    elements: str
    default: []
  owner:
    description:
      - Restore owner and group (by name, falling back to the numeric id). Needs root.
      - Default is true when running as root.
    type: bool
notes:
  - Files present on disk but absent from the image are left alone.
seealso:
  - module: lifeboat.backup.config_archive
"""

EXAMPLES = r"""
- name: Which configuration files differ from the backup? (nothing is written)
  lifeboat.backup.config_restore:
    image: /var/backups/lifeboat/20261122T194512Z-app1.zip
    passphrase: "{{ vault_backup_passphrase }}"
  check_mode: true
  diff: true

- name: Restore two directories in place
  lifeboat.backup.config_restore:
    image: /var/backups/lifeboat/20261122T194512Z-app1.zip
    passphrase: "{{ vault_backup_passphrase }}"
    paths: [/etc/nginx, /etc/myapp]

- name: Unpack everything under /srv/restore for inspection
  lifeboat.backup.config_restore:
    image: /var/backups/lifeboat/20261122T194512Z-app1.zip
    identity_file: /root/backup-key.txt
    root: /srv/restore
"""

RETURN = r"""
created:
  description: Original paths that did not exist and were (or would be) created.
  returned: always
  type: list
  elements: str
  sample: [/etc/myapp/new.conf]
updated:
  description: Paths whose content or type differed and were (or would be) replaced.
  returned: always
  type: list
  elements: str
  sample: [/etc/nginx/nginx.conf]
metadata_changed:
  description: Paths whose content matched but mode or owner differed.
  returned: always
  type: list
  elements: str
  sample: [/etc/myapp/secret.conf]
unchanged:
  description: Number of selected entries already identical on disk.
  returned: always
  type: int
  sample: 120
selected:
  description: Number of entries selected from the image.
  returned: always
  type: int
  sample: 123
removed_partial:
  description: Partial temporary files that a killed restore had left in the directories written to, removed.
  returned: when there were any
  type: list
  elements: str
  sample: [/etc/nginx/.nginx.conf.lifeboat-4242-1a2b3c4d]
  version_added: 0.2.0
written:
  description: Original paths written before a failure (the whole plan on success is in RV(created)/RV(updated)).
  returned: failure after a write
  type: list
  elements: str
  sample: [/etc/nginx/nginx.conf]
done:
  description: On a failure after the first write, what had been changed, in one line.
  returned: failure after a write
  type: list
  elements: str
  sample: ["wrote 11 of 40 entries under /: /etc/nginx/nginx.conf, ..."]
root:
  description: Restore root used.
  returned: always
  type: str
  sample: /
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

import fnmatch
import grp
import os
import pwd
import stat
import tarfile

from ansible_collections.lifeboat.backup.plugins.module_utils import _age, _image, _tree
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError, OptionError
from ansible_collections.lifeboat.backup.plugins.module_utils._module import LifeboatModule
from ansible_collections.lifeboat.backup.plugins.module_utils._progress import PROGRESS_SPEC


def selector(paths):
    """A predicate on original paths: exact, under a directory, or matching a glob."""
    if not paths:
        return lambda path: True
    cleaned = [os.path.normpath(p) for p in paths]

    def selected(path):
        for wanted in cleaned:
            if path == wanted or path.startswith(wanted.rstrip("/") + "/") or (_tree.has_magic(wanted) and fnmatch.fnmatchcase(path, wanted)):
                return True
        return False

    return selected


def target_of(root, path):
    return os.path.join(root, path.lstrip("/")) if root != "/" else path


def _uid(record):
    try:
        return pwd.getpwnam(record["user"]).pw_uid if record.get("user") else record["uid"]
    except KeyError:
        return record["uid"]


def _gid(record):
    try:
        return grp.getgrnam(record["group"]).gr_gid if record.get("group") else record["gid"]
    except KeyError:
        return record["gid"]


def describe(record):
    parts = [record["type"], record.get("mode", "")]
    if record["type"] == "file":
        parts += ["size=%s" % record.get("size"), "sha256=%s" % (record.get("sha256") or "?")[:16]]
    if record["type"] == "symlink":
        parts.append("-> %s" % record.get("target"))
    if record["type"] == "hardlink":
        parts.append("same file as %s" % record.get("target"))
    parts.append("%s:%s" % (record.get("user") or record.get("uid"), record.get("group") or record.get("gid")))
    return " ".join(str(p) for p in parts)


def current_state(target, want, with_owner):
    """Describe what is on disk at ``target`` in the index's terms, or None."""
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return None
    kind = "file" if stat.S_ISREG(st.st_mode) else "directory" if stat.S_ISDIR(st.st_mode) else "symlink" if stat.S_ISLNK(st.st_mode) else "special"
    record = {"type": kind, "mode": "%04o" % stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
    try:
        record["user"] = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        record["user"] = ""
    try:
        record["group"] = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        record["group"] = ""
    if kind == "file":
        record["size"] = st.st_size
        record["sha256"] = _tree.file_sha256(target) if want.get("type") == "file" and st.st_size == want.get("size") else None
    if kind == "symlink":
        record["target"] = os.readlink(target)
    return record


def compare(want, have, with_owner):
    """'create', 'update', 'metadata' or None (identical)."""
    if have is None:
        return "create"
    if want["type"] != have["type"]:
        return "update"
    if want["type"] == "file" and (want.get("size") != have.get("size") or want.get("sha256") != have.get("sha256")):
        return "update"
    if want["type"] == "symlink":
        if want.get("target") != have.get("target"):
            return "update"
        return "metadata" if with_owner and (_uid(want), _gid(want)) != (have["uid"], have["gid"]) else None
    if want.get("implicit"):
        return None  # an existing parent directory is left as it is
    if want.get("mode") != have.get("mode"):
        return "metadata"
    if with_owner and (_uid(want), _gid(want)) != (have["uid"], have["gid"]):
        return "metadata"
    return None


def restore(image, data_member, plan, root, with_owner, written, removed):
    """Stream the tar once, writing the planned entries (appended to ``written``). Returns a list of failures."""
    failures = []
    extractor = _tree.Extractor(root, same_owner=with_owner)
    try:
        with image.open_member(data_member) as member:
            with tarfile.open(fileobj=member, mode="r|", errorlevel=2) as tar:
                for info in _tree.read_entries(tar):
                    path = "/" + info.name
                    if path not in plan:
                        continue
                    record, _action = plan[path]
                    source = _image.HashingReader(tar.extractfile(info)) if info.isreg() else None
                    try:
                        extractor.extract(info, source)
                    except (OSError, _tree.TreeError) as exc:
                        failures.append({"path": path, "error": getattr(exc, "strerror", None) or str(exc)})
                        continue
                    written.append(record["path"])  # the plan's own string, not a second copy per entry
                    if source is not None and record.get("sha256") and source.sha.hexdigest() != record["sha256"]:
                        failures.append({"path": path, "error": "restored content does not match the SHA-256 in the image index"})
            # Reading to the end makes the member check its SHA-256 against the manifest.
            member.read()
    finally:
        extractor.close()
        removed.extend("/" + p if root == "/" else os.path.join(root, p) for p in extractor.removed_partial)
    return failures


def written_summary(written, planned, root):
    """``done`` lines for a failure after ``written`` entries were put in place."""
    if not written:
        return []
    shown = ", ".join(written[:10]) + (", ... (all %d in 'written')" % len(written) if len(written) > 10 else "")
    return ["wrote %d of %d planned entries under %s: %s" % (len(written), planned, root, shown)]


def read_index(image, component_name):
    """(component details, file index) of a configuration component."""
    details = _image.restorable_component(image, component_name, "config", "configuration").get("details", {})
    try:
        with image.open_member(details["index_member"]) as stream:
            return details, _tree.read_index(stream)
    except (_image.ImageError, KeyError, ValueError) as exc:
        raise _image.ImageError("cannot read the file index of %s: %s" % (component_name, exc)) from None


def ancestors_of(paths):
    """Directories above the chosen entries: recreated when missing, never changed otherwise."""
    ancestors = set()
    for path in paths:
        parent = os.path.dirname(path)
        while parent not in ("/", "") and parent not in ancestors:
            ancestors.add(parent)
            parent = os.path.dirname(parent)
    return ancestors


def link_action(path, want, plan, root):
    """'create', 'update' or None for a hard link: it is in place when it is the same file as
    its first name and that name is not rewritten."""
    try:
        have = os.lstat(target_of(root, path))
    except FileNotFoundError:
        return "create"
    if want["target"] in plan:
        return "update"  # the first name gets a new file: link to that one
    try:
        first = os.lstat(target_of(root, want["target"]))
    except FileNotFoundError:
        return "update"
    return None if (have.st_dev, have.st_ino) == (first.st_dev, first.st_ino) else "update"


def choose(params, index):
    """(selector of the chosen paths, the chosen paths, the first names of chosen hard links);
    a selection that matches nothing is an error naming the option."""
    wanted = selector(params["paths"])
    chosen = [p for p in index if wanted(p)]
    if params["paths"] and not chosen:
        raise OptionError("paths", "paths: nothing in component %s matches %s" % (params["component"], ", ".join(params["paths"])))
    # A hard link's content travels with the first name of its file: that name comes along.
    firsts = {index[p]["target"] for p in chosen if index[p]["type"] == "hardlink" and index[p].get("target") in index}
    return wanted, chosen + sorted(firsts.difference(chosen)), firsts


def make_plan(params, index, root, with_owner):
    """({path: (record, action)} of what differs, number of selected entries already identical,
    number selected)."""
    wanted, chosen, firsts = choose(params, index)
    ancestors = ancestors_of(chosen)
    plan = {}
    links = []
    unchanged = 0
    for path, record in index.items():
        explicit = wanted(path) or path in firsts
        if not explicit and path not in ancestors:
            continue
        # The index's own record, not a copy: with many files a copy per entry doubled the
        # module's memory. The index is not read again once the plan is made. Only a
        # directory taken along as an ancestor gains a key: one more key on every record
        # made Python grow each record's table, 400 bytes an entry.
        want = record
        if not explicit:
            want["implicit"] = True
        if record["type"] == "hardlink":
            links.append((path, want))
            continue
        action = compare(want, current_state(target_of(root, path), want, with_owner), with_owner)
        if action:
            plan[path] = (want, action)
        elif explicit:
            unchanged += 1
    # Hard links last: whether one is in place depends on whether its first name is rewritten.
    for path, want in links:
        action = link_action(path, want, plan, root)
        if action:
            plan[path] = (want, action)
        else:
            unchanged += 1
    return plan, unchanged, len(chosen)


def plan_diff(plan, root, with_owner):
    before = []
    after = []
    for path in sorted(plan):
        record, action = plan[path]
        have = current_state(target_of(root, path), record, with_owner) if action != "create" else None
        before.append("%s: %s" % (path, describe(have) if have else "(absent)"))
        after.append("%s: %s" % (path, describe(record)))
    return {"before_header": "on disk", "after_header": "image", "before": "\n".join(before) + "\n", "after": "\n".join(after) + "\n"}


def plan_result(plan, unchanged, selected, root):
    return dict(
        changed=bool(plan),
        created=sorted(p for p, (r, a) in plan.items() if a == "create" and not r.get("implicit")),
        updated=sorted(p for p, (_r, a) in plan.items() if a == "update"),
        metadata_changed=sorted(p for p, (_r, a) in plan.items() if a == "metadata"),
        unchanged=unchanged,
        selected=selected,
        root=root,
    )


def apply(image, details, plan, params, root, with_owner, result):
    """Authenticate what will be read, then write the plan; raises with what was written.
    Returns the partial files of killed restores removed on the way."""
    if params["authenticate"]:
        try:
            _image.authenticate(image, [details["index_member"], details["data_member"]])
        except _image.ImageError as exc:
            raise type(exc)("%s. Nothing was written" % exc, **{**result, "changed": False}) from None
    written = []
    removed = []
    extra = {k: v for k, v in result.items() if k != "changed"}
    try:
        failures = restore(image, details["data_member"], plan, root, with_owner, written, removed)
    except (LifeboatError, tarfile.TarError, OSError) as exc:
        raise LifeboatError(
            "restore of %s failed while reading the image: %s; once the cause is fixed, run again (only what differs is written)"
            % (params["component"], getattr(exc, "strerror", None) or exc),
            done=written_summary(written, len(plan), root),
            written=written,
            **extra,
        ) from None
    if failures:
        raise LifeboatError(
            "%d entries could not be restored, first: %s: %s" % (len(failures), failures[0]["path"], failures[0]["error"]),
            done=written_summary(written, len(plan), root),
            failures=failures,
            written=written,
            **extra,
        )
    return removed


def restore_config(module):
    params = module.params
    module.require("cryptography", _age.HAS_CRYPTOGRAPHY, _age.CRYPTOGRAPHY_IMPORT_ERROR)
    root = os.path.abspath(params["root"])
    with_owner = os.geteuid() == 0 if params["owner"] is None else params["owner"]
    if with_owner and os.geteuid() != 0:
        raise OptionError("owner", "owner=true needs root; run with become or set owner=false")
    with _image.open_image(params["image"], params) as image:
        details, index = read_index(image, params["component"])
        plan, unchanged, selected = make_plan(params, index, root, with_owner)
        del index  # what the plan does not keep (entries already in place) is freed
        result = plan_result(plan, unchanged, selected, root)
        if module._diff and plan:
            result["diff"] = plan_diff(plan, root, with_owner)
        if module.check_mode or not plan:
            return result
        removed = apply(image, details, plan, params, root, with_owner, result)
    if removed:
        result["removed_partial"] = removed
        module.warn("removed %d partial file(s) left by a restore that was killed: %s" % (len(removed), ", ".join(removed[:10])))
    return result


def main():
    module = LifeboatModule(
        argument_spec=dict(
            component=dict(type="str", default="config"),
            root=dict(type="path", default="/"),
            paths=dict(type="list", elements="str", default=[]),
            owner=dict(type="bool"),
        ),
        specs=[_image.IMAGE_SPEC, _image.DECRYPTION_SPEC, _image.RESTORE_SPEC, PROGRESS_SPEC],
        supports_check_mode=True,
    )
    module.run(restore_config)


if __name__ == "__main__":
    main()
