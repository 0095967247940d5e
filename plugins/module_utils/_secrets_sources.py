# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""Where the credentials of a secrets bundle come from: PostgreSQL, files, a command, variables.

Every source yields entries ``{name, secret, username, host, notes, source, fields,
encoding}`` (docs/secrets-bundle-format.md). Values stay in memory: nothing here writes a
file, puts a value on a command line or in a message. Error messages name the source, the
entry and the field, never a value; a command's standard output (which holds secrets) is
never quoted, only its error output.
"""

from __future__ import annotations

import base64
import datetime
import glob
import grp
import json
import os
import pwd
import re
import traceback

from ansible_collections.lifeboat.backup.plugins.module_utils import _postgresql, _proc
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError

YAML_IMPORT_ERROR = None
try:
    import yaml

    HAS_YAML = True
except ImportError:  # pragma: no cover - reported with missing_required_lib when a YAML file is read
    HAS_YAML = False
    YAML_IMPORT_ERROR = traceback.format_exc()

SOURCE_TYPES = ("postgresql", "file", "command", "variables")
FILE_FORMATS = ("auto", "json", "yaml", "env", "raw")
# Field names accepted for each entry field, first match wins (PAM exports, vault CLIs, .env).
ALIASES = {
    "name": ("name", "title", "key", "id"),
    "secret": ("secret", "password", "value", "passwd", "token"),
    "username": ("username", "user", "login", "user_name"),
    "host": ("host", "hostname", "address", "server"),
    "notes": ("notes", "note", "description", "comment"),
}
_EXTENSIONS = {".json": "json", ".yml": "yaml", ".yaml": "yaml", ".env": "env"}


class SourceError(LifeboatError):
    """A source that cannot be read, or that yields something that is not a credential."""


def _text(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "base64:" + base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _pop(data, field):
    for alias in ALIASES[field]:
        if alias in data:
            return data.pop(alias)
    return None


def make_entry(source, name, fields):
    """One entry from a mapping of fields; the secret may be text or bytes (kept as base64)."""
    data = dict(fields)
    _pop(data, "name")
    secret = _pop(data, "secret")
    if secret is None:
        raise SourceError(
            "source %s: entry %r has no secret: give it a 'secret' field (or %s)" % (source, name, ", ".join(repr(a) for a in ALIASES["secret"][1:]))
        )
    entry = {"name": str(name), "source": source}
    if isinstance(secret, (bytes, bytearray, memoryview)):
        entry["secret"] = base64.b64encode(bytes(secret)).decode("ascii")
        entry["encoding"] = "base64"
    else:
        entry["secret"] = _text(secret)
    for field in ("username", "host", "notes"):
        value = _pop(data, field)
        if value is not None:
            entry[field] = _text(value)
    extra = {str(key): _text(value) for key, value in data.items() if value is not None}
    if extra:
        entry["fields"] = extra
    return entry


def entries_from_document(source, document, root=None):
    """Entries from parsed JSON/YAML (or variables): a list of entry mappings, a mapping of
    name -> secret, or a mapping of name -> entry mapping. ``root`` (``a.b.c``) selects a part."""
    document = select(source, document, root)
    if isinstance(document, list):
        entries = []
        for position, item in enumerate(document, 1):
            if not isinstance(item, dict):
                raise SourceError("source %s: item %d of the list is not a mapping of fields (name, secret, username, host, notes)" % (source, position))
            name = next((item[a] for a in ALIASES["name"] if item.get(a) not in (None, "")), None)
            if name is None:
                raise SourceError("source %s: item %d of the list has no name (a 'name' field)" % (source, position))
            entries.append(make_entry(source, name, item))
        return entries
    if isinstance(document, dict):
        entries = []
        for name, value in document.items():
            if isinstance(value, dict):
                entries.append(make_entry(source, name, value))
            elif isinstance(value, (list, tuple)) or value is None:
                raise SourceError("source %s: %r is neither a secret nor a mapping of fields" % (source, name))
            else:
                entries.append(make_entry(source, name, {"secret": value}))
        return entries
    raise SourceError("source %s: expected a list of entries or a mapping of names to secrets, found %s" % (source, type(document).__name__))


def select(source, document, root):
    for part in (root or "").split(".") if root else []:
        if not isinstance(document, dict) or part not in document:
            raise SourceError("source %s: root %r: no key %r there" % (source, root, part))
        document = document[part]
    return document


# ---- files --------------------------------------------------------------------------


def parse_env(source, text):
    """``KEY=value`` lines as docker/systemd/dotenv write them: comments, ``export``, quotes."""
    entries = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key or any(ch.isspace() for ch in key):
            raise SourceError("source %s: line %d is not KEY=value" % (source, lineno))
        entries[key] = _env_value(source, lineno, value.strip())
    return entries


def _env_value(source, lineno, value):
    if value[:1] in ("'", '"'):
        quote = value[0]
        end = value.find(quote, 1)
        while quote == '"' and end > 0 and value[end - 1] == "\\":
            end = value.find(quote, end + 1)
        if end < 0:
            raise SourceError("source %s: line %d: unterminated %s quote" % (source, lineno, quote))
        inner = value[1:end]
        if quote == '"':
            inner = inner.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
        return inner
    comment = value.find(" #")
    return value[:comment].rstrip() if comment >= 0 else value


def _read_bytes(source, path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise SourceError("source %s: cannot read %s: %s" % (source, path, exc.strerror or exc)) from None


def _file_format(source, path, wanted):
    if wanted != "auto":
        return wanted
    fmt = _EXTENSIONS.get(os.path.splitext(path)[1].lower())
    if fmt is None and os.path.basename(path).startswith(".env"):
        fmt = "env"
    if fmt is None:
        raise SourceError("source %s: cannot tell the format of %s from its name: set format (json, yaml, env or raw)" % (source, path))
    return fmt


def _decode(source, path, data):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SourceError("source %s: %s is not UTF-8 text; use format: raw to keep the whole file" % (source, path)) from None


def _structured(source, path, fmt, data, root):
    text = _decode(source, path, data)
    if fmt == "env":
        return entries_from_document(source, parse_env(source, text), root)
    if fmt == "yaml":
        if not HAS_YAML:
            raise SourceError("source %s: reading YAML needs the PyYAML library on this node (python3-yaml); or use JSON" % source)
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = " at line %d" % (mark.line + 1) if mark else ""
            raise SourceError("source %s: %s is not valid YAML%s" % (source, path, where)) from None
    else:
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise SourceError("source %s: %s is not valid JSON (line %d column %d)" % (source, path, exc.lineno, exc.colno)) from None
    return entries_from_document(source, document, root)


def _whole_file(source, path, data, name):
    info = os.stat(path)
    fields = {"path": path, "mode": "%04o" % (info.st_mode & 0o7777)}
    try:
        fields["owner"] = pwd.getpwuid(info.st_uid).pw_name
        fields["group"] = grp.getgrgid(info.st_gid).gr_name
    except KeyError:
        fields["owner"], fields["group"] = str(info.st_uid), str(info.st_gid)
    try:
        secret = data.decode("utf-8")
    except UnicodeDecodeError:
        secret = data
    return make_entry(source, name or path, dict(fields, secret=secret))


def read_files(source, spec):
    """Entries from the files matching ``spec['path']`` (a path or a glob)."""
    paths = sorted(glob.glob(spec["path"])) if glob.has_magic(spec["path"]) else [spec["path"]]
    paths = [p for p in paths if not os.path.isdir(p)]
    if not paths:
        raise SourceError("source %s: no file matches %s" % (source, spec["path"]))
    if spec.get("entry") and len(paths) > 1:
        raise SourceError("source %s: entry names one entry, but %s matches %d files" % (source, spec["path"], len(paths)))
    entries = []
    for path in paths:
        fmt = _file_format(source, path, spec.get("format") or "auto")
        data = _read_bytes(source, path)
        if fmt == "raw":
            entries.append(_whole_file(source, path, data, spec.get("entry")))
        else:
            entries += _structured(source, path, fmt, data, spec.get("root"))
    return entries


# ---- a command -----------------------------------------------------------------------


class _Buffer:
    def __init__(self, limit):
        self.data = bytearray()
        self.limit = limit

    def write(self, chunk):
        self.data += chunk
        if len(self.data) > self.limit:
            raise SourceError("the output is larger than %d bytes" % self.limit)
        return len(chunk)


def run_command(source, spec):
    """Entries from the JSON a command prints (a secret manager's CLI); argv holds no secret,
    credentials the command needs come through ``environment``."""
    argv = [str(a) for a in spec["argv"]]
    out = _Buffer(spec.get("max_output") or 64 * 1024 * 1024)
    try:
        _proc.stream_from(argv, out, env=spec.get("environment"), timeout=spec.get("timeout") or 120, cwd=spec.get("chdir"))
    except _proc.CommandError as exc:
        lines = (exc.stderr or "").strip().splitlines()[-3:]
        detail = ("exited %d" % exc.rc if exc.rc is not None else str(exc).split(":", maxsplit=1)[0]) + (": %s" % " / ".join(lines) if lines else "")
        raise SourceError("source %s: command %s failed (%s)" % (source, os.path.basename(argv[0]), detail)) from None
    except SourceError as exc:
        raise SourceError("source %s: command %s: %s" % (source, os.path.basename(argv[0]), exc)) from None
    try:
        document = json.loads(bytes(out.data).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        where = " (line %d column %d)" % (exc.lineno, exc.colno) if hasattr(exc, "lineno") else ""
        raise SourceError("source %s: command %s did not print JSON%s" % (source, os.path.basename(argv[0]), where)) from None
    return entries_from_document(source, document, spec.get("root"))


# ---- PostgreSQL ------------------------------------------------------------------------


_QUOTED = re.compile(r'"[^"]*"')


def query_error_text(exc):
    """The server's message, without the values it quotes back for data errors (SQLSTATE
    class 22: "invalid input syntax for type integer: ..." would show a secret)."""
    text = " ".join(str(exc).split())
    state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None) or ""
    if state.startswith("22") or "invalid input" in text:
        text = _QUOTED.sub('"(value hidden)"', text.split(" LINE ", maxsplit=1)[0])
    return text


def _row_entry(source, columns, row, position):
    data = dict(zip(columns, row))
    name = next((data[a] for a in ALIASES["name"] if data.get(a) not in (None, "")), None)
    if name is None:
        raise SourceError("source %s: row %d has no name (NULL or empty 'name' column)" % (source, position))
    if _pop(dict(data), "secret") is None:
        raise SourceError("source %s: row %d (%s) has a NULL secret" % (source, position, name))
    return make_entry(source, name, {k: v for k, v in data.items() if v is not None})


def _check_columns(source, columns):
    lowered = [c.lower() for c in columns]
    if not set(lowered) & set(ALIASES["name"]) or not set(lowered) & set(ALIASES["secret"]):
        raise SourceError(
            "source %s: the query must return a 'name' column and a 'secret' (or 'password') column; it returned: %s" % (source, ", ".join(columns) or "none")
        )


def query_postgresql(source, spec):
    """Entries from the rows of a read-only query (name, secret, username, host, notes, more)."""
    if not _postgresql.HAS_PSYCOPG:
        raise SourceError("source %s: reading PostgreSQL needs psycopg (python3-psycopg) or psycopg2 on this node" % source)
    try:
        conn = _postgresql.connect(spec, spec.get("login_db"))
    except _postgresql.PgError as exc:
        raise SourceError("source %s: %s" % (source, exc)) from None
    try:
        _postgresql.execute(conn, "SET statement_timeout = %d" % int(1000 * (spec.get("timeout") or 120)))
        _postgresql.execute(conn, "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        cursor = conn.cursor()
        try:
            cursor.execute(spec["query"])
            if cursor.description is None:
                raise SourceError("source %s: the query returns no rows (is it a SELECT?)" % source)
            columns = [d[0] for d in cursor.description]
            rows = cursor.fetchall()
        finally:
            cursor.close()
    except (_postgresql.PgError, _postgresql.DRIVER.Error) as exc:
        raise SourceError("source %s: the query failed on %s: %s" % (source, _postgresql.where(spec), query_error_text(exc))) from None
    finally:
        conn.close()
    _check_columns(source, columns)
    columns = [c.lower() for c in columns]
    return [_row_entry(source, columns, row, position) for position, row in enumerate(rows, 1)]


# ---- all sources -----------------------------------------------------------------------


def _origin(kind, spec):
    if kind == "postgresql":
        return "postgresql %s database %s" % (_postgresql.where(spec), spec.get("login_db"))
    if kind == "file":
        return spec["path"]
    if kind == "command":
        return "command %s" % os.path.basename(str(spec["argv"][0]))
    return "Ansible variables"


def collect(sources):
    """[(summary, entries)] for every source, in order. Raises SourceError at the first
    source that fails or yields nothing (unless it allows it): a bundle never silently
    misses the credentials of a source."""
    readers = {"postgresql": query_postgresql, "file": read_files, "command": run_command}
    names = set()
    collected = []
    for source in sources:
        name = source["name"]
        if name in names:
            raise SourceError("sources: the name %r is used twice; each source needs its own name" % name)
        names.add(name)
        kind = next(k for k in SOURCE_TYPES if source.get(k) is not None)
        spec = source[kind]
        entries = entries_from_document(name, spec) if kind == "variables" else readers[kind](name, spec)
        if not entries and not source.get("allow_empty"):
            raise SourceError("source %s (%s) yielded no credential; if that is expected set allow_empty: true on it" % (name, _origin(kind, spec)))
        collected.append(({"name": name, "type": kind, "origin": _origin(kind, spec), "entries": len(entries)}, entries))
    return collected
