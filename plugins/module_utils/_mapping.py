# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""Migration mappings (docs/migration.md): the environment-specific values of an image (host
names, addresses, host:port pairs, the node, cluster, database and index names, paths, service
accounts, certificate subjects), each with where it occurs, and their replacement in
restored configuration files.

A value is found in the manifest (node, search cluster names, databases, indices) and in the text of the
configuration members (host names of three labels or more, IPv4 addresses, hosts of URLs,
absolute paths outside the system's own directories, the accounts of URLs and of
``user``/``owner``/``account``-like settings, distinguished names, the subjects of PEM
certificates, and occurrences of the manifest's names). Loopback addresses and
``localhost`` are not environment-specific and are left out; nor are ``root``/``nobody``."""

from __future__ import annotations

import json
import os
import re
import tarfile
import tempfile

from ansible_collections.lifeboat.backup.plugins.module_utils import _tree
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError

try:
    from cryptography import x509
except ImportError:  # the modules require cryptography through missing_required_lib (_age)
    x509 = None

HOST_RE = re.compile(r"(?<![\w.@/-])((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.){2,}[a-z]{2,63})(?![\w-]|\.\w)", re.I)
IPV4_RE = re.compile(r"(?<![\w.])((?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3})(?![\w]|\.\d)")
URL_RE = re.compile(r"\b[a-z][a-z0-9+.-]*://(?:[^@/\s'\"]*@)?([a-z0-9](?:[a-z0-9.-]*[a-z0-9])?)(?::(\d{1,5}))?", re.I)
# Absolute paths of two components or more, not inside a URL (no word, ':' or '/' before).
PATH_RE = re.compile(r"(?<![\w.:/~$@%-])(/[\w.@+-]+(?:/[\w.@+-]+)+)/?")
# The account of a URL (scheme://account[:password]@host) and of account-like settings.
USERINFO_RE = re.compile(r"\b[a-z][a-z0-9+.-]*://([a-z_][\w.-]{0,63})(?::[^@/\s'\"]*)?@", re.I)
ACCOUNT_RE = re.compile(
    r"(?<![\w-])((?:[\w-]*[_-])?(?:user|username|owner|run_as|runas|service_account|serviceaccount|account|principal))"
    r"([\"']?\s*[=:]\s*[\"']?)([a-z_][\w.@-]{0,63})(?![\w.@-])",
    re.I,
)
# Distinguished names: two attributes or more (OpenSSL's /C=../CN=.. or RFC 4514's CN=..,O=..), or a CN alone.
_RDN = r"(?:CN|OU|O|L|ST|C|DC|UID|emailAddress)=[^,/+\n\"'=]*[^,/+\n\"'=\s]"
SUBJECT_RE = re.compile(r"(?<![\w=])(%s(?:\s*[,/+]\s*%s)+|CN=[^,/+\n\"'=]*[^,/+\n\"'=\s])" % (_RDN, _RDN))
PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----"
NOT_SPECIFIC = ("localhost", "0.0.0.0", "::1")  # nosec - names, not a bind
NOT_SPECIFIC_ACCOUNTS = ("root", "nobody", "none", "null", "true", "false", "yes", "no")
SYSTEM_PATHS = ("/usr/", "/bin/", "/sbin/", "/lib/", "/lib64/", "/proc/", "/sys/", "/dev/", "/tmp/", "/run/")
FILE_SUFFIXES = (".py", ".conf", ".yml", ".yaml", ".json", ".xml", ".ini", ".cfg", ".sh", ".txt", ".html", ".js", ".md", ".log", ".pem", ".crt")
KINDS = ("node", "cluster", "database", "index", "host", "address", "endpoint", "path", "account", "subject")


# The options of a scan, shared by mapping_template and mapping_apply (doc fragment lifeboat.backup._mapping).
SCAN_SPEC = dict(
    components=dict(type="list", elements="str", default=[]),
    max_file_bytes=dict(type="int", default=1048576),
)


class MappingError(LifeboatError):
    """A mapping that cannot be used; the message lists what is wrong."""


def _not_specific(value):
    return value.lower() in NOT_SPECIFIC or value.startswith("127.")


def _looks_like_file(value):
    return value.lower().endswith(FILE_SUFFIXES)


class Found:
    """Values in order of discovery, each with its kind and occurrences."""

    def __init__(self):
        self.values = {}

    def add(self, kind, value, where):
        if not value or _not_specific(value):
            return
        entry = self.values.setdefault(value, {"kind": kind, "source": value, "occurs": []})
        if where not in entry["occurs"]:
            entry["occurs"].append(where)

    def as_list(self):
        order = {kind: number for number, kind in enumerate(KINDS)}
        return sorted(self.values.values(), key=lambda e: (order.get(e["kind"], 99), e["source"]))


def component_names(manifest):
    """{component: (kind of name, [names])}: the databases (PostgreSQL, Neo4j) and indices
    (Elasticsearch/OpenSearch, dot-names left out) each component of the manifest holds."""
    names = {}
    for name, component in sorted((manifest.get("components") or {}).items()):
        details = component.get("details") or {}
        databases = [d.get("name") if isinstance(d, dict) else d for d in details.get("databases") or []]
        indices = details.get("indices") or (details.get("snapshot") or {}).get("indices") or []
        indices = [i.get("name") if isinstance(i, dict) else i for i in (indices if isinstance(indices, list) else sorted(indices))]
        if databases:
            names[name] = ("database", [d for d in databases if d])
        elif indices:
            names[name] = ("index", [i for i in indices if i and not i.startswith(".")])
    return names


def manifest_values(manifest, found):
    """The node, cluster, database and index names the manifest records."""
    found.add("node", manifest.get("node"), "manifest: node")
    for name, component in sorted((manifest.get("components") or {}).items()):
        found.add("cluster", (component.get("details") or {}).get("cluster_name"), "manifest: component %s, cluster_name" % name)
    for name, (kind, values) in component_names(manifest).items():
        for value in values:
            found.add(kind, value, "manifest: component %s, %s" % (name, "databases" if kind == "database" else "indices"))


def renames(manifest, replacements):
    """{component: {name: new name}} of the databases and indices the mapping renames; refuses,
    before anything is restored, what the component's restore cannot do."""
    found = {}
    problems = []
    components = manifest.get("components") or {}
    for name, (_kind, values) in component_names(manifest).items():
        renamed = {value: replacements[value] for value in values if value in replacements}
        if not renamed:
            continue
        details = components[name].get("details") or {}
        if components[name].get("kind") == "neo4j" and details.get("method", "files") == "files":
            problems.append(
                "component %s (Neo4j, method=files) restores its whole data directory under its own names, but the mapping renames %s: "
                "keep them (keep: true), or restore from an image taken with method=dump" % (name, ", ".join(sorted(renamed)))
            )
        elif components[name].get("kind") == "neo4j" and "system" in renamed:
            problems.append("component %s: Neo4j's system database keeps its name (keep: true)" % name)
        found[name] = renamed
    if problems:
        raise MappingError("the mapping renames what cannot be renamed: %s; nothing was restored" % "; ".join(problems))
    return found


def _word(value):
    return re.compile(r"(?<![\w-])" + re.escape(value) + r"(?![\w-]|\.\w)")


def text_values(component, path, text, named, found):
    """The values in one text file; ``named`` are the manifest's names looked for as words."""
    in_pem = False
    for number, line in enumerate(text.splitlines(), 1):
        # PEM blocks (certificates, keys) are base64: nothing to find in their lines.
        if line.startswith("-----BEGIN ") or in_pem:
            in_pem = not line.startswith("-----END ")
            continue
        where = "%s: %s line %d" % (component, path, number)
        for match in URL_RE.finditer(line):
            host, port = match.group(1), match.group(2)
            if not _looks_like_file(host):
                found.add("address" if IPV4_RE.fullmatch(host) else "host", host, where)
                if port and not _not_specific(host):
                    found.add("endpoint", "%s:%s" % (host, port), where)
        for match in IPV4_RE.finditer(line):
            found.add("address", match.group(1), where)
        for match in HOST_RE.finditer(line):
            if not _looks_like_file(match.group(1)):
                found.add("host", match.group(1), where)
        other_values(line, where, found)
        for value, pattern in named:
            if pattern.search(line):
                found.add(found.values[value]["kind"], value, where)


def other_values(line, where, found):
    """Paths, accounts and distinguished names in one line of text."""
    for match in PATH_RE.finditer(line):
        if not match.group(1).startswith(SYSTEM_PATHS):
            found.add("path", match.group(1), where)
    accounts = [m.group(1) for m in USERINFO_RE.finditer(line)] + [m.group(3) for m in ACCOUNT_RE.finditer(line)]
    for account in accounts:
        if account.lower() not in NOT_SPECIFIC_ACCOUNTS:
            found.add("account", account, where)
    for match in SUBJECT_RE.finditer(line):
        found.add("subject", match.group(1), where)


def certificate_values(component, path, text, found):
    """The subjects of the PEM certificates of a file, and the DNS names they are for."""
    if PEM_CERTIFICATE not in text or x509 is None:
        return
    for subject, names in certificate_subjects(text.encode("utf-8")):
        where = "%s: %s certificate" % (component, path)
        found.add("subject", subject, where)
        for name in names:
            found.add("host", name, where)


def certificate_subjects(data):
    """[(RFC 4514 subject, [DNS names of its subjectAltName])] of the PEM certificates in ``data``."""
    subjects = []
    for block in re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", data, re.S):
        try:
            certificate = x509.load_pem_x509_certificate(block)
        except ValueError:
            continue
        try:
            names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        except x509.ExtensionNotFound:
            names = []
        subjects.append((certificate.subject.rfc4514_string(), names))
    return subjects


def is_text(data):
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def config_values(image, component, details, found, max_bytes):
    """Scan the text files of a configuration component's archive."""
    named = [(value, _word(value)) for value, entry in found.values.items() if entry["kind"] in ("node", "cluster", "database", "index")]
    with image.open_member(details["data_member"]) as member:
        with tarfile.open(fileobj=member, mode="r|", errorlevel=2) as tar:
            for info in _tree.read_entries(tar):
                if not info.isreg() or info.size > max_bytes:
                    continue
                text = is_text(tar.extractfile(info).read())
                if text is not None:
                    text_values(component, "/" + info.name, text, named, found)
                    certificate_values(component, "/" + info.name, text, found)
        member.read()  # to the end: the member checks its SHA-256


def template_text(values, image_path, manifest):
    """The template file: YAML (JSON strings are YAML scalars), commented."""
    platform = manifest.get("platform") or {}
    lines = [
        "# lifeboat.backup migration mapping of %s" % os.path.basename(image_path),
        "# node %s, platform %s %s, backup id %s." % (manifest.get("node"), platform.get("name"), platform.get("version"), manifest.get("backup_id")),
        "# Fill in every target with the other environment's value, or set keep: true for a value",
        "# that is not specific to this environment. A restore given this file (restore_mapping)",
        "# refuses it while any value has neither (docs/migration.md).",
        "values:",
    ]
    for entry in values:
        lines += [
            "  - kind: %s" % entry["kind"],
            "    source: %s" % json.dumps(entry["source"]),
            '    target: ""',
            "    keep: false",
            "    occurs:",
        ]
        lines += ["      - %s" % json.dumps(where) for where in entry["occurs"]]
    return "\n".join(lines) + "\n"


def check(mapping, found):
    """{source: target} to apply; MappingError listing every value left unmapped. Values the
    operator added by hand (paths, accounts...) are checked and applied like the found ones."""
    given = {}
    for number, entry in enumerate(mapping.get("values") or [], 1):
        if not isinstance(entry, dict) or not entry.get("source"):
            raise MappingError("mapping: values entry #%d has no source" % number)
        given[str(entry["source"])] = entry
    wanted = dict(found.values)
    for value, entry in given.items():
        wanted.setdefault(value, {"kind": entry.get("kind") or "value", "source": value, "occurs": ["the mapping (added by hand)"]})
    left = []
    replacements = {}
    for value, entry in wanted.items():
        mapped = given.get(value) or {}
        target = str(mapped.get("target") or "")
        if _kept(mapped):
            continue
        if not target and _decided(_holding_directory(value, given)):
            continue  # a path under a directory the mapping maps or keeps: that entry covers it
        if not target or target == value:
            left.append("%s %s (%s)" % (entry["kind"], value, "; ".join(entry["occurs"][:3])))
            continue
        replacements[value] = target
    if left:
        raise MappingError(
            "the mapping leaves %d value(s) of the source environment: %s. Give each a target, or keep: true when it is not "
            "specific to the environment; nothing was restored" % (len(left), ", ".join(left))
        )
    return replacements


def _kept(entry):
    return str((entry or {}).get("keep", False)).lower() in ("true", "yes", "1")


def _decided(entry):
    return bool(entry) and (_kept(entry) or str(entry.get("target") or "") not in ("", str(entry.get("source"))))


def _holding_directory(value, given):
    """The mapping's entry of the nearest directory holding the path ``value`` (None if none)."""
    if not value.startswith("/"):
        return None
    for source in sorted(given, key=len, reverse=True):
        if source.startswith("/") and source != value and value.startswith(source.rstrip("/") + "/"):
            return given[source]
    return None


def _replace_group(pattern, group, text, replacements, counts):
    """``text`` with ``group`` of each match of ``pattern`` replaced when it is a mapped value."""

    def substitute(match):
        value = match.group(group)
        if value not in replacements:
            return match.group(0)
        counts[value] = counts.get(value, 0) + 1
        start, end = match.start(group) - match.start(), match.end(group) - match.start()
        return match.group(0)[:start] + replacements[value] + match.group(0)[end:]

    return pattern.sub(substitute, text)


def replace_text(text, replacements, accounts=()):
    """(text, {source: count}): the values replaced in one pass (the longest value first, whole
    words only; a replacement is never replaced again); an account only where it is one (the
    account of a URL, the value of an account-like setting), as its name may be a common word."""
    counts = {}
    in_context = {k: v for k, v in replacements.items() if k in accounts}
    text = _replace_group(USERINFO_RE, 1, text, in_context, counts)
    text = _replace_group(ACCOUNT_RE, 3, text, in_context, counts)
    words = sorted((k for k in replacements if k not in accounts), key=len, reverse=True)
    if words:
        pattern = re.compile(r"(?<![\w-])(%s)(?![\w-]|\.\w)" % "|".join(re.escape(word) for word in words))
        text = _replace_group(pattern, 1, text, replacements, counts)
    return text, counts


def accounts_of(mapping, found):
    """The values that are accounts: found as such, or added to the mapping as kind account."""
    given = [e for e in mapping.get("values") or [] if isinstance(e, dict) and e.get("kind") == "account"]
    return {v for v, e in found.values.items() if e["kind"] == "account"} | {str(e.get("source")) for e in given}


def certificates_left(path, replacements):
    """[(subject, target)] of the PEM certificates of ``path`` whose subject the mapping replaces:
    a certificate cannot be rewritten, the other environment's must be put in its place."""
    if x509 is None or os.path.getsize(path) > 1048576:
        return []
    with open(path, "rb") as handle:
        data = handle.read()
    if PEM_CERTIFICATE.encode() not in data:
        return []
    return [(subject, replacements[subject]) for subject, _names in certificate_subjects(data) if subject in replacements]


def rewrite_file(path, replacements, dry_run=False, accounts=()):
    """Replace the values in one text file (atomically, mode and owner kept); [(source, target, count)]."""
    with open(path, "rb") as handle:
        data = handle.read()
    text = is_text(data)
    if text is None:
        return []
    text, counts = replace_text(text, replacements, accounts)
    made = [(source, replacements[source], count) for source, count in sorted(counts.items())]
    if made and not dry_run:
        info = os.lstat(path)
        descriptor, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".lifeboat-mapping-")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(text.encode("utf-8"))
            os.chmod(temporary, info.st_mode & 0o7777)
            if os.geteuid() == 0:
                os.chown(temporary, info.st_uid, info.st_gid)
            os.replace(temporary, path)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise
    return made


def config_components(manifest, wanted):
    """Names of the configuration components to scan; MappingError naming an unknown one."""
    available = sorted(n for n, c in (manifest.get("components") or {}).items() if c.get("kind") == "config" and c.get("status") == "success")
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise MappingError("components: %s not among the configuration components of the image (%s)" % (", ".join(unknown), ", ".join(available) or "none"))
    return list(wanted) or available


def scan(image, components, max_bytes):
    """Found: the environment-specific values of the image."""
    found = Found()
    manifest_values(image.manifest, found)
    for name in config_components(image.manifest, components):
        config_values(image, name, image.manifest["components"][name].get("details") or {}, found, max_bytes)
    return found
