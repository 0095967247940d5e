# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What a backup profile may say, in one place: the profile_problems filter validates a
profile with it (backup, restore and plan playbooks, before anything runs), and
docs/profile-reference.md is generated from it (scripts/profile-reference.py; a unit test
keeps the page up to date).

A component's keys are the options of the modules the roles run for its kind, passed the
way the roles pass them (module_options with the same arguments; a unit test compares these
uses with the role task files), plus the few keys the roles read themselves. Options the
roles set from elsewhere (the session, the image, the passphrase from restore_passphrase)
are no profile keys."""

from __future__ import annotations

import difflib
import functools
import os
import re
from collections import namedtuple

import yaml
from ansible.module_utils.common.validation import check_type_bool, check_type_dict, check_type_float, check_type_int, check_type_list

from ansible_collections.lifeboat.backup.plugins.filter.module_options import module_options, module_spec
from ansible_collections.lifeboat.backup.plugins.plugin_utils._module_docs import documented_options

KINDS = ("config", "postgresql", "postgresql_basebackup", "postgresql_pitr", "elasticsearch", "neo4j", "archive")
REFERENCE = "docs/profile-reference.md"
ROLES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "roles")

# One module a role runs for a component, with the module_options arguments of that call.
# role_sets: options the role gives from elsewhere (a profile key for them would be ignored).
# only_with: the use happens only when the component has this key.
Use = namedtuple("Use", "module prefix except_own_options_of exclude shared_only role_sets only_with")
Use.__new__.__defaults__ = (None, (), (), False, (), None)

_RESTORE_SETS = ("image", "component", "passphrase", "identity", "identity_file", "authenticate")
_PG_REACH = Use("postgresql_info", shared_only=True)

USES = {
    "config": (
        Use("config_archive", role_sets=("session", "halt")),
        Use("config_restore", prefix="restore_", except_own_options_of=("config_archive",), role_sets=_RESTORE_SETS + ("root",)),
    ),
    "postgresql": (
        _PG_REACH,
        Use("postgresql_dump", role_sets=("session", "halt")),
        Use("postgresql_restore", prefix="restore_", except_own_options_of=("postgresql_dump",), role_sets=_RESTORE_SETS),
    ),
    "postgresql_basebackup": (
        _PG_REACH,
        Use("postgresql_basebackup", role_sets=("session",)),
    ),
    "postgresql_pitr": (
        _PG_REACH,
        Use("postgresql_wal_archive", prefix="archive_", except_own_options_of=("postgresql_basebackup",), role_sets=("node",)),
        Use("postgresql_basebackup", role_sets=("session",)),
        Use(
            "postgresql_pitr",
            prefix="restore_",
            except_own_options_of=("postgresql_basebackup",),
            exclude=("login_user", "parallel"),
            role_sets=("image", "component", "passphrase", "identity", "identity_file")
            + tuple("recovery_target_" + t for t in ("time", "lsn", "name", "xid", "inclusive", "timeline", "action")),
        ),
    ),
    "elasticsearch": (
        Use("elasticsearch_snapshot_info", shared_only=True),
        Use("elasticsearch_repository", role_sets=("name",)),
        Use("elasticsearch_snapshot", role_sets=("session",)),
        Use(
            "elasticsearch_restore",
            prefix="restore_",
            except_own_options_of=("elasticsearch_snapshot",),
            role_sets=("repository", "snapshot", "image", "component", "repository_location", "passphrase", "identity", "identity_file"),
        ),
    ),
    "neo4j": (
        Use("neo4j_archive", role_sets=("session",)),
        Use("neo4j_restore", prefix="restore_", except_own_options_of=("neo4j_archive",), role_sets=_RESTORE_SETS),
    ),
    "archive": (
        _PG_REACH,
        Use("table_archive", role_sets=("session",)),
        Use("table_checkpoint", exclude=("record",), role_sets=("record",)),
    ),
}
# Any kind: the digest of the tables when_changed follows, through the component's connection.
WHEN_CHANGED_USE = Use("table_checkpoint", shared_only=True, role_sets=("record", "tables"), only_with="when_changed")

# Keys the roles read themselves: {name: (type, description)}.
COMMON_KEYS = {
    "name": ("str", "Component name, unique in the profile; the image member, the summary and O(backup_components) use it. Required."),
    "kind": ("str", "What the component is: %s. Required." % ", ".join(KINDS)),
    "group": ("str", "Inventory group of the hosts that host the component. Default: every host of the play."),
    "once": ("bool", "Run on one host of C(group) only (the first in the play): cluster-wide components such as a search snapshot."),
    "audit": ("bool", "An audit component: left out of a standard selection unless O(backup_include_audits)."),
    "when_changed": (
        "list",
        "Tables (C(schema.table), or dicts with C(name)) whose digest decides whether a standard selection takes the component: "
        "only when it changed since its last verified backup (docs/table-archive.md). Read through the component's "
        "PostgreSQL connection keys (C(login_host), ...).",
    ),
    "after_restore": (
        "list",
        "Shell actions run after the component is restored, each with C(name), C(command) and optionally C(chdir), "
        "C(environment), C(timeout) (docs/drills.md).",
    ),
}
KIND_KEYS = {
    "elasticsearch": {
        "restore_repository": (
            "str",
            "Repository name of the restore. Default: the backed-up one, or C(<repository>-<backup id>) for one restored from the image.",
        ),
        "restore_location": (
            "path",
            "Directory (under C(path.repo)) the image's repository files are unpacked into for a restore. Default: beside C(location).",
        ),
    },
    "archive": {
        "checkpoint": ("bool", "Also checkpoint the rows that stay (M(lifeboat.backup.table_checkpoint)), so that deleting or altering them is found."),
    },
}
# Keys a kind cannot do without (a role task reads them unconditionally).
REQUIRED = {"config": ("paths",), "elasticsearch": ("repository", "location"), "postgresql_pitr": ("target",)}

PROFILE_KEYS = {
    "name": ("str", "Profile name (the summary and the audit rows show it)."),
    "description": ("str", "Free text."),
    "platform": ("dict", "C(name) and C(version) of the platform: an image restores only onto the same version."),
    "components": ("list", "The components, each validated against its kind below."),
    "quiesce": ("dict", "Services stopped and Redis queues drained around the capture and the restore (docs/quiesce.md)."),
    "checks": ("list", "Post-restore checks (O(restore_checks))."),
}
QUIESCE_KEYS = {
    "group": ("str", "Inventory group of the hosts the section applies to. Default: every host."),
    "services": ("list", "The services, in the order they are stopped (the keys below)."),
    "queues": ("list", "Redis keys of the work queues that must be empty (M(lifeboat.backup.queue_drain))."),
    "purge": ("list", "Redis keys deleted, items and all, when the queues are drained."),
}
CHECK_KEYS = {
    "name": ("str", "Check name. Required."),
    "command": ("str", "Shell command; the check passes when it exits 0 with no output."),
    "sql": ("str", "SQL query run with psql against C(component); the check passes when it returns no row."),
    "component": ("str", "The PostgreSQL component whose connection a C(sql) check uses (and whose nodes run it)."),
    "database": ("str", "Database of a C(sql) check."),
    "group": ("str", "Run a C(command) check only on the hosts of this inventory group."),
    "environment": ("dict", "Environment variables of a C(command) check."),
}


def _uses(kind, component=None):
    for use in USES.get(kind, ()) + (WHEN_CHANGED_USE,):
        if use.only_with and component is not None and use.only_with not in component:
            continue
        yield use


def _use_keys(use):
    """{profile key: (option, documented spec)} of the keys that reach ``use.module``."""
    names, _own = module_spec(use.module)
    options = documented_options(use.module)[0]
    candidates = set(names) | {"owner_group"} | ({use.prefix + n for n in names} if use.prefix else set())
    keys = {}
    for key in sorted(candidates):
        passed = module_options(
            {key: None},
            use.module,
            prefix=use.prefix,
            except_own_options_of=list(use.except_own_options_of),
            shared_only=use.shared_only,
            exclude=list(use.exclude),
        )
        for option in passed:
            if option not in use.role_sets:
                keys[key] = (option, options.get(option) or {})
    return keys


def component_keys(kind, component=None):
    """{key: {type, elements, choices, description, modules}} a component of ``kind`` may have
    (with ``component``, only the uses that apply to it: when_changed brings the connection)."""
    keys = {}
    for key, (type_, text) in COMMON_KEYS.items():
        keys[key] = {"type": type_, "description": text, "modules": []}
    for key, (type_, text) in KIND_KEYS.get(kind, {}).items():
        keys[key] = {"type": type_, "description": text, "modules": []}
    for use in _uses(kind, component):
        for key, (option, spec) in _use_keys(use).items():
            if key in COMMON_KEYS or key in KIND_KEYS.get(kind, {}):
                continue
            entry = keys.setdefault(
                key,
                {
                    "type": spec.get("type", "str"),
                    "elements": spec.get("elements"),
                    "choices": spec.get("choices"),
                    "description": spec.get("description"),
                    "modules": [],
                    "only_with": use.only_with,
                },
            )
            if entry.get("only_with") and not use.only_with:
                entry["only_with"] = None
            label = use.module if option == key else "%s (%s)" % (use.module, option)
            if label not in entry["modules"]:
                entry["modules"].append(label)
    return keys


_CHECKERS = {"int": check_type_int, "float": check_type_float, "bool": check_type_bool, "list": check_type_list, "dict": check_type_dict}
_TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "a boolean", "list": "a list", "dict": "a mapping", "str": "a string", "path": "a path"}


def _as_type(value, type_):
    """(``value`` converted to the documented type, None) or (None, why it is not of that type)."""
    if type_ in ("str", "path") and isinstance(value, (list, dict)):
        return None, "must be %s, not %s" % (_TYPE_WORDS[type_], "a list" if isinstance(value, list) else "a mapping")
    if type_ not in _CHECKERS:
        return value, None
    try:
        return _CHECKERS[type_](value), None
    except (TypeError, ValueError):
        return None, "must be %s, not %r" % (_TYPE_WORDS[type_], value)


def _choice_problem(value, choices):
    """Why ``value`` (or an element of it) is not one of ``choices``, or None."""
    if not choices or value is None:
        return None
    values = value if isinstance(value, list) else [value]
    wrong = [v for v in values if v not in choices and str(v) not in [str(c) for c in choices]]
    return "must be one of %s, not %r" % (", ".join(str(c) for c in choices), wrong[0]) if wrong else None


def _type_problem(value, spec):
    """Why ``value`` is not of the documented type, or None (templates left unrendered pass)."""
    type_ = spec.get("type") or "str"
    if isinstance(value, str) and "{{" in value:
        return None
    value, problem = _as_type(value, type_)
    problem = problem or _choice_problem(value, spec.get("choices"))
    if not problem and type_ == "list" and spec.get("elements") in ("str", "path") and any(isinstance(v, (list, dict)) for v in value):
        problem = "must be a list of strings"
    return problem


def _unknown(where, key, valid):
    near = difflib.get_close_matches(str(key), list(valid), n=1, cutoff=0.6)
    hint = " - did you mean '%s'?" % near[0] if near else " (valid keys: %s)" % ", ".join(sorted(valid))
    return "%s: unknown key '%s'%s" % (where, key, hint)


def _check_keys(where, mapping, spec):
    problems = []
    for key, value in mapping.items():
        if key not in spec:
            problems.append(_unknown(where, key, spec))
            continue
        entry = spec[key] if isinstance(spec[key], dict) else {"type": spec[key][0]}
        problem = _type_problem(value, entry)
        if problem:
            problems.append("%s: '%s' %s" % (where, key, problem))
    return problems


def component_problems(index, component, names):
    """The problems of one profile component (an empty list when it is usable)."""
    if not isinstance(component, dict):
        return ["component #%d: must be a mapping with a name and a kind, not %r" % (index + 1, component)]
    name, kind = component.get("name"), component.get("kind")
    where = "component %s" % (name or "#%d" % (index + 1))
    if not name or not kind:
        return ["%s: needs %s" % (where, " and ".join(k for k in ("name", "kind") if not component.get(k)))]
    if kind not in KINDS:
        near = difflib.get_close_matches(str(kind), KINDS, n=1, cutoff=0.6)
        return ["%s: unknown kind '%s'%s (kinds: %s)" % (where, kind, " - did you mean '%s'?" % near[0] if near else "", ", ".join(KINDS))]
    where = "component %s (%s)" % (name, kind)
    problems = ["%s: the name is used twice" % where] if name in names else []
    problems += _check_keys(where, component, component_keys(kind, component))
    for key in REQUIRED.get(kind, ()):
        if key not in component:
            problems.append("%s: '%s' is required" % (where, key))
    return problems


@functools.cache
def _quiesce_service_keys():
    path = os.path.join(ROLES_DIR, "quiesce", "meta", "argument_specs.yml")
    with open(path, encoding="utf-8") as handle:
        spec = yaml.safe_load(handle)["argument_specs"]["main"]["options"]["quiesce_services"]["options"]
    keys = {key: dict(value, description=value.get("description")) for key, value in spec.items()}
    keys["group"] = {"type": "str", "description": "Inventory group of the hosts that run this service. Default: every host of the section."}
    return keys


def _label(what, item, index):
    """How a problem names one entry of a section list: by its name, else by its position."""
    return "%s %s" % (what, item.get("name") if isinstance(item, dict) and item.get("name") else "#%d" % (index + 1))


def _quiesce_problems(quiesce):
    problems = _check_keys("quiesce", quiesce, QUIESCE_KEYS)
    for index, service in enumerate(quiesce.get("services") or []):
        label = _label("quiesce service", service, index)
        if not isinstance(service, dict) or not service.get("name"):
            problems.append("%s: needs a name" % label)
        if isinstance(service, dict):
            problems += _check_keys(label, service, _quiesce_service_keys())
    return problems


def _checks_problems(checks):
    problems = []
    for index, check in enumerate(checks):
        label = _label("check", check, index)
        if not isinstance(check, dict) or not check.get("name") or ("command" in check) == ("sql" in check):
            problems.append("%s: needs a name and either command or sql" % label)
        if isinstance(check, dict):
            problems += _check_keys(label, check, CHECK_KEYS)
    return problems


def _section_problems(profile):
    quiesce, checks = profile.get("quiesce"), profile.get("checks")
    problems = _quiesce_problems(quiesce) if isinstance(quiesce, dict) else []
    return problems + (_checks_problems(checks) if isinstance(checks, list) else [])


def profile_problems(profile):
    """Every problem of a backup profile, each naming where it is, the key, and the nearest
    valid name; an empty list for a usable profile."""
    if not isinstance(profile, dict):
        return ["the profile must be a mapping (name, platform, components, ...), not %r" % type(profile).__name__]
    problems = _check_keys("profile", profile, PROFILE_KEYS)
    names = []
    for index, component in enumerate(profile.get("components") or [] if isinstance(profile.get("components"), list) else []):
        problems += component_problems(index, component, names)
        if isinstance(component, dict) and component.get("name"):
            names.append(component["name"])
    return problems + _section_problems(profile)


def _text(description):
    """One table cell from a documented description: the first paragraph, markup as Markdown."""
    if isinstance(description, list):
        description = description[0] if description else ""
    text = " ".join(str(description or "").split())
    text = re.sub(r"\b(?:C|O|M|V|RV|E)\(([^()]*(?:\([^()]*\)[^()]*)*)\)", r"`\1`", text)
    text = re.sub(r"\bI\(([^()]*)\)", r"*\1*", text)
    text = re.sub(r"\bL\(([^,()]*),[^()]*\)", r"\1", text)
    return text.replace("|", "\\|")


def _type_cell(entry):
    type_ = entry.get("type") or "str"
    if entry.get("elements"):
        type_ += " of " + entry["elements"]
    if entry.get("choices"):
        type_ += " (%s)" % ", ".join(str(c) for c in entry["choices"])
    return type_.replace("|", "\\|")


def _table(rows, with_modules=False):
    lines = ["| key | type | what it is |" + (" read by |" if with_modules else ""), "|---|---|---|" + ("---|" if with_modules else "")]
    for key, entry in rows.items():
        text = _text(entry.get("description"))
        if entry.get("only_with"):
            text = "(with `%s`) %s" % (entry["only_with"], text)
        cells = ["`%s`" % key, _type_cell(entry), text]
        if with_modules:
            cells.append(", ".join(entry.get("modules") or []) or "the role")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _plain(keys):
    return {key: {"type": type_, "description": text} for key, (type_, text) in keys.items()}


def reference_markdown():
    """docs/profile-reference.md, generated: every key of a profile, per component kind."""
    lines = [
        "# Profile reference",
        "",
        "<!-- Generated from plugins/plugin_utils/_profile_schema.py by scripts/profile-reference.py:",
        "     do not edit by hand (tests/unit/plugins/filter/test_profile_problems.py compares). -->",
        "",
        "Every key a backup profile (`backup_profile`, `restore_profile`) may hold. The backup and",
        "restore roles and `playbooks/plan.yml` validate the profile before anything runs: an",
        "unknown key is refused with the component, the key and the nearest valid name",
        "(`component maindb (postgresql): unknown key 'database' - did you mean 'databases'?`), a",
        "value of the wrong type or outside its choices with the key. Examples of whole profiles:",
        "`docs/profiles/`.",
        "",
        "A component's keys are the options of the modules the roles run for its kind (the",
        "module's documentation has the details), plus the keys the roles read themselves. In a",
        "restore, `restore_<option>` sets the restore module's option and wins over `<option>`;",
        "a plain key that is the backup module's own option stays with the backup (a",
        "`postgresql` component's `jobs` is the dump's, `restore_jobs` the restore's), while the",
        "connection serves both. What the roles set themselves (the session, the image, the",
        "passphrase from `restore_passphrase`) is no profile key.",
        "",
        "## The profile",
        "",
    ]
    lines += _table(_plain(PROFILE_KEYS))
    for kind in KINDS:
        required = ", ".join("`%s`" % key for key in ("name", "kind") + REQUIRED.get(kind, ()))
        lines += ["", "## Components of kind `%s`" % kind, "", "Required: %s." % required, ""]
        lines += _table(component_keys(kind), with_modules=True)
    lines += ["", "## `quiesce`", ""] + _table(_plain(QUIESCE_KEYS))
    lines += ["", "### `quiesce.services[]`", ""] + _table(_quiesce_service_keys())
    lines += ["", "## `checks[]`", "", "A check has a `name` and either `command` or `sql`.", ""] + _table(_plain(CHECK_KEYS))
    return "\n".join(lines) + "\n"


# Module options a role sets from one of its own variables (a profile key may still override).
ROLE_VARIABLES = {("postgresql_restore", "clean"): "restore_clean"}
_ADVICE = re.compile(r"\b([a-z][a-z0-9_]*)=(true|false|yes|no)\b")


def role_advice(message, kind, phase="backup", component=None):
    """A module's message in the words of the role that ran it: ``set clean=true`` becomes
    ``set restore_clean: true``, ``partial=true`` in a restore ``restore_partial: true on
    component search`` - the profile key or role variable that reaches the option, never one
    the role would drop."""
    restore = phase == "restore"
    uses = [u for u in USES.get(kind, ()) if bool(u.prefix == "restore_") == restore and not u.shared_only]
    where = " on component %s" % component if component else " on the component"

    def words(match):
        option, value = match.group(1), match.group(2)
        for use in uses:
            if (use.module, option) in ROLE_VARIABLES:
                return "%s: %s" % (ROLE_VARIABLES[(use.module, option)], value)
            keys = [key for key, (target, _spec) in sorted(_use_keys(use).items()) if target == option]
            if keys:
                # The restore_<option> form where there is one: a plain key may be the backup's.
                key = next((k for k in keys if use.prefix and k.startswith(use.prefix)), keys[0])
                return "%s: %s%s" % (key, value, where)
        return match.group(0)

    return _ADVICE.sub(words, str(message))
