# -*- coding: utf-8 -*-
# Copyright: (c) 2026, lifeboat.backup contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE module_utils of lifeboat.backup: not a public API, may change without notice.
"""PostgreSQL plumbing shared by the postgresql_* modules.

- Connection options (doc fragment ``lifeboat.backup._postgresql``) and a psycopg
  connection: psycopg 3 first, psycopg2 as a fallback, imported guarded. Modules call
  ``require_driver`` before anything touches the driver.
- The client tools (pg_dump, pg_restore, ...) matching the server's major version, and
  their environment: the password goes in a 0600 passfile (PGPASSFILE), never in argv.
- Pure helpers the modules and the unit tests share: version numbers, ``pg_restore
  --list`` parsing, splitting and filtering ``pg_dumpall --globals-only`` output, SQL
  quoting, database property statements for a renamed database.
"""

from __future__ import annotations

import contextlib
import copy
import glob
import os
import re
import shutil
import subprocess
import tempfile
import traceback

from ansible_collections.lifeboat.backup.plugins.module_utils import _proc
from ansible_collections.lifeboat.backup.plugins.module_utils._errors import LifeboatError

DRIVER = None
DRIVER_NAME = None
PSYCOPG_IMPORT_ERROR = None
try:
    import psycopg as DRIVER

    DRIVER_NAME = "psycopg"
except ImportError:
    try:
        import psycopg2 as DRIVER

        DRIVER_NAME = "psycopg2"
    except ImportError:
        PSYCOPG_IMPORT_ERROR = traceback.format_exc()
HAS_PSYCOPG = DRIVER is not None

APPLICATION_NAME = "lifeboat.backup"
SQL_MEDIA = "application/sql"
SSL_MODES = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
TOOL_DIRS_GLOBS = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/usr/local/pgsql/bin", "/opt/homebrew/opt/postgresql@*/bin")
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")
# GUCs whose values are lists of quoted elements (pg_dump's variable_is_guc_list_quote).
LIST_QUOTE_GUCS = frozenset(
    ["local_preload_libraries", "search_path", "session_preload_libraries", "shared_preload_libraries", "temp_tablespaces", "unix_socket_directories"]
)


class PgError(LifeboatError):
    """A PostgreSQL-side problem; the message says what failed and what to do."""


# Options every postgresql_* module takes, defined once beside their doc fragment
# (plugins/doc_fragments/_postgresql.py); modules pass it in LifeboatModule(specs=[...]).
CONNECTION_SPEC = dict(
    login_host=dict(type="str", aliases=["host"]),
    port=dict(type="int", default=5432, aliases=["login_port"]),
    login_unix_socket=dict(type="path", aliases=["unix_socket"]),
    login_user=dict(type="str", default="postgres", aliases=["user"]),
    login_password=dict(type="str", no_log=True, aliases=["password"]),
    login_db=dict(type="str", default="postgres"),
    ssl_mode=dict(type="str", default="prefer", choices=SSL_MODES),
    ca_cert=dict(type="path", aliases=["ssl_rootcert"]),
    ssl_cert=dict(type="path"),
    ssl_key=dict(type="path", no_log=False),
    connect_timeout=dict(type="int", default=10),
    client_bin_dir=dict(type="path"),
)


def connection_argument_spec():
    """A copy of CONNECTION_SPEC, for an argument spec built by hand."""
    return copy.deepcopy(CONNECTION_SPEC)


CONNECTION_MUTUALLY_EXCLUSIVE = [("login_host", "login_unix_socket")]


def require_driver():
    """Raise MissingLibraryError unless psycopg (3) or psycopg2 can be imported."""
    if not HAS_PSYCOPG:
        from ansible_collections.lifeboat.backup.plugins.module_utils._module import missing_library

        raise missing_library("psycopg (or psycopg2)", PSYCOPG_IMPORT_ERROR)


def where(params):
    """Human description of the server a module talks to (for messages)."""
    host = params.get("login_unix_socket") or params.get("login_host") or "the default unix socket"
    return "%s port %s as %s" % (host, params.get("port"), params.get("login_user"))


def connect_kwargs(params, dbname=None):
    """Keyword arguments for psycopg/psycopg2 ``connect``; the password is passed as a value, never in a DSN string."""
    kwargs = {
        "dbname": dbname or params["login_db"],
        "user": params["login_user"],
        "port": params["port"],
        "sslmode": params["ssl_mode"],
        "connect_timeout": params["connect_timeout"],
        "application_name": APPLICATION_NAME,
    }
    host = params.get("login_unix_socket") or params.get("login_host")
    if host:
        kwargs["host"] = host
    if params.get("login_password") is not None:
        kwargs["password"] = params["login_password"]
    for option, key in (("ca_cert", "sslrootcert"), ("ssl_cert", "sslcert"), ("ssl_key", "sslkey")):
        if params.get(option):
            kwargs[key] = params[option]
    return kwargs


def explain_connect_error(text):
    """A hint for the usual connection failures."""
    lowered = text.lower()
    if "password authentication failed" in lowered:
        return "check login_user and login_password"
    if "no password supplied" in lowered or "fe_sendauth" in lowered:
        return "the server asks for a password: set login_password"
    if "connection refused" in lowered or "no such file or directory" in lowered:
        return "is the server running and listening there? check login_host / login_unix_socket and port"
    if "timeout expired" in lowered:
        return "no answer within connect_timeout seconds: check the address, the port and firewalls"
    if "pg_hba.conf" in lowered:
        return "the server's pg_hba.conf has no entry allowing this connection"
    if "does not exist" in lowered and "database" in lowered:
        return "check login_db"
    return None


def connect(params, dbname=None):
    """An autocommit connection with standard_conforming_strings on. Raises PgError."""
    try:
        conn = DRIVER.connect(**connect_kwargs(params, dbname))
    except DRIVER.Error as exc:
        text = " ".join(str(exc).split())
        hint = explain_connect_error(text)
        raise PgError(
            "cannot connect to PostgreSQL at %s (database %s): %s%s" % (where(params), dbname or params["login_db"], text, "; %s" % hint if hint else "")
        ) from None
    conn.autocommit = True
    try:
        execute(conn, "SET standard_conforming_strings = on")
    except PgError:
        conn.close()
        raise
    return conn


def execute(conn, sql, args=None):
    """Run one statement; rows as a list of tuples (empty for statements without rows)."""
    try:
        cursor = conn.cursor()  # raises too when the connection is gone
    except DRIVER.Error as exc:
        raise PgError(" ".join(str(exc).split())) from None
    try:
        cursor.execute(sql, args) if args is not None else cursor.execute(sql)
        if cursor.description is None:
            return []
        return cursor.fetchall()
    except DRIVER.Error as exc:
        raise PgError(" ".join(str(exc).split())) from None
    finally:
        cursor.close()


def scalar(conn, sql, args=None):
    rows = execute(conn, sql, args)
    return rows[0][0] if rows else None


# ---- COPY, with either driver --------------------------------------------------------------


COPY_BLOCK_ROWS = 4096


class _LineSplitter:
    """psycopg2's copy_expert writes what it receives: hand it on in lists of lines."""

    def __init__(self, on_rows):
        self.on_rows = on_rows
        self.pending = b""
        self.rows = 0

    def write(self, data):
        data = self.pending + bytes(data)
        end = data.rfind(b"\n") + 1
        self.pending = data[end:]
        if end:
            lines = data[:end].split(b"\n")[:-1]
            self.rows += len(lines)
            self.on_rows([line + b"\n" for line in lines])
        return len(data)


def copy_out(conn, sql, on_rows):
    """Run ``COPY (...) TO STDOUT``; ``on_rows(rows)`` receives the rows in lists of up to
    COPY_BLOCK_ROWS, each its COPY text line, newline included. Returns the row count.
    Raises PgError (the statement's own transaction state is the caller's to handle)."""
    if DRIVER_NAME != "psycopg":
        cursor = conn.cursor()
        splitter = _LineSplitter(on_rows)
        try:
            cursor.copy_expert(sql, splitter)
        except DRIVER.Error as exc:
            raise PgError(" ".join(str(exc).split())) from None
        finally:
            cursor.close()
        if splitter.pending:
            raise PgError("COPY output ended in the middle of a row")
        return splitter.rows
    try:
        return _copy_out_libpq(conn, sql, on_rows)
    except DRIVER.Error as exc:
        raise PgError(" ".join(str(exc).split())) from None


def _copy_out_libpq(conn, sql, on_rows):
    # libpq's blocking PQgetCopyData, row after row, without psycopg's generator per row:
    # about three times less CPU per row than iterating over cursor.copy().
    from psycopg import pq

    pgconn = conn.pgconn
    pgconn.send_query(sql.encode("utf-8"))
    while pgconn.flush():
        pass
    result = pgconn.get_result()
    if result is None or result.status != pq.ExecStatus.COPY_OUT:
        _drain_results(pgconn)
        raise PgError(_pq_message(result, pgconn))
    get = pgconn.get_copy_data
    rows = []
    count = 0
    while True:
        size, data = get(0)
        if size < 0:
            break
        rows.append(data)
        if len(rows) >= COPY_BLOCK_ROWS:
            count += len(rows)
            on_rows(rows)
            rows = []
    if rows:
        count += len(rows)
        on_rows(rows)
    result = pgconn.get_result()
    status = result.status if result is not None else None
    message = _pq_message(result, pgconn)
    _drain_results(pgconn)
    if status != pq.ExecStatus.COMMAND_OK:
        raise PgError(message)
    return count


def _drain_results(pgconn):
    while pgconn.get_result() is not None:
        pass


def _pq_message(result, pgconn):
    raw = (result.error_message if result is not None else b"") or pgconn.error_message or b"the server ended the COPY without a result"
    return " ".join(raw.decode("utf-8", "replace").split())


class CopyIn:
    """``COPY ... FROM STDIN`` fed by ``write(bytes)``; ``close()`` ends it (raises PgError).
    psycopg2 pulls from a file object: a thread runs its copy_expert over a bounded queue,
    so memory stays flat and nothing is written to disk."""

    def __init__(self, conn, sql):
        self._cursor = conn.cursor()
        self._copy = None
        self._thread = None
        try:
            if DRIVER_NAME == "psycopg":
                self._context = self._cursor.copy(sql)
                self._copy = self._context.__enter__()
            else:
                self._start_thread(sql)
        except DRIVER.Error as exc:
            self._cursor.close()
            raise PgError(" ".join(str(exc).split())) from None

    def _start_thread(self, sql):
        import queue
        import threading

        self._queue = queue.Queue(maxsize=16)
        self._error = []
        reader = _QueueReader(self._queue)

        def run():
            try:
                self._cursor.copy_expert(sql, reader)
            except Exception as exc:  # noqa: BLE001 - handed to close()
                self._error.append(exc)
                reader.drain()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def write(self, data):
        try:
            if self._copy is not None:
                self._copy.write(data)
            elif not self._error:
                self._queue.put(bytes(data))
        except DRIVER.Error as exc:
            raise PgError(" ".join(str(exc).split())) from None

    def close(self):
        try:
            if self._copy is not None:
                self._context.__exit__(None, None, None)
            else:
                self._queue.put(b"")
                self._thread.join()
                if self._error:
                    raise self._error[0]
        except DRIVER.Error as exc:
            raise PgError(" ".join(str(exc).split())) from None
        finally:
            self._cursor.close()


class _QueueReader:
    """A file object over a queue of byte strings; b"" ends it."""

    def __init__(self, source):
        self.source = source
        self.buffer = b""
        self.done = False

    def read(self, size=-1):
        while not self.done and (size < 0 or len(self.buffer) < size):
            chunk = self.source.get()
            if not chunk:
                self.done = True
                break
            self.buffer += chunk
        if size < 0:
            size = len(self.buffer)
        out, self.buffer = self.buffer[:size], self.buffer[size:]
        return out

    readline = read

    def drain(self):
        while not self.done:
            if not self.source.get():
                self.done = True


# ---- versions -----------------------------------------------------------------------------


def version_num(text):
    """'15.18 (Debian ...)' -> 150018; '9.6.24' -> 90624; '17beta1' -> 170000. None if unparsable."""
    match = re.search(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", text or "")
    if not match:
        return None
    major = int(match.group(1))
    if major >= 10:
        return major * 10000 + int(match.group(2) or 0)
    return major * 10000 + int(match.group(2) or 0) * 100 + int(match.group(3) or 0)


def major_key(num):
    """Comparable major version: 150018 -> 1500, 90624 -> 906."""
    return (num // 10000) * 100 if num >= 100000 else num // 100


def major_text(num):
    return str(num // 10000) if num >= 100000 else "%d.%d" % (num // 10000, (num // 100) % 100)


def version_text(num):
    """150018 -> '15.18', 90624 -> '9.6.24'."""
    if num >= 100000:
        return "%d.%d" % (num // 10000, num % 10000)
    return "%d.%d.%d" % (num // 10000, (num // 100) % 100, num % 100)


def server_version(conn):
    """(server_version_num, server_version text)."""
    rows = execute(conn, "SELECT current_setting('server_version_num')::int, current_setting('server_version')")
    return rows[0][0], rows[0][1]


# ---- client tools --------------------------------------------------------------------------


class ToolError(LifeboatError):
    """The client tools cannot be used; the message says what to install or set."""


class ClientTools:
    def __init__(self, directory, version, version_text):
        self.dir = directory
        self.version = version
        self.version_text = version_text

    def path(self, tool):
        return os.path.join(self.dir, tool)

    def describe(self):
        return {"dir": self.dir, "version": self.version_text, "version_num": self.version}


def _is_tool(path):
    return os.path.isfile(path) and os.access(path, os.X_OK)


def candidate_dirs(tool, bin_dir=None, path_env=None):
    """Directories holding ``tool``, best first: ``bin_dir`` alone when given, else the
    versioned install directories (newest first), then PATH."""
    if bin_dir:
        return [bin_dir]
    found = []
    versioned = []
    for pattern in TOOL_DIRS_GLOBS:
        for directory in glob.glob(pattern):
            number = version_num(os.path.basename(os.path.dirname(directory)).replace("pgsql-", "").replace("postgresql@", ""))
            versioned.append((number or 0, directory))
    for _number, directory in sorted(versioned, reverse=True):
        if _is_tool(os.path.join(directory, tool)):
            found.append(directory)
    for directory in (path_env if path_env is not None else os.environ.get("PATH", "")).split(os.pathsep):
        if directory and directory not in found and _is_tool(os.path.join(directory, tool)):
            found.append(directory)
    return found


def probe_version(path, timeout=30):
    """Run ``<tool> --version``; return (version_num, text) or raise ToolError."""
    try:
        proc = _proc.run([path, "--version"], capture_output=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolError("cannot run %s --version: %s" % (path, getattr(exc, "strerror", None) or exc)) from None
    text = proc.stdout.decode("utf-8", "replace").strip()
    match = re.search(r"\(PostgreSQL\)\s*(\S+)", text)
    number = version_num(match.group(1) if match else text)
    if proc.returncode != 0 or number is None:
        raise ToolError("%s --version did not report a version (exit %d): %s" % (path, proc.returncode, text or proc.stderr.decode("utf-8", "replace").strip()))
    return number, text


def choose_tools(server_num, candidates, tools, purpose):
    """Pick the tool directory for a server: the same major version if present, else the
    oldest newer one. ``candidates``: [(dir, version_num, version_text)] best first.
    Raises ToolError when only older tools exist (they cannot handle a newer server)."""
    wanted = major_key(server_num)
    complete = [c for c in candidates if all(_is_tool(os.path.join(c[0], t)) for t in tools)]
    for directory, number, text in complete:
        if major_key(number) == wanted:
            return ClientTools(directory, number, text)
    newer = sorted((c for c in complete if major_key(c[1]) > wanted), key=lambda c: c[1])
    if newer:
        return ClientTools(*newer[0])
    server = major_text(server_num)
    if complete:
        best = max(complete, key=lambda c: c[1])
        raise ToolError(
            "the PostgreSQL client tools are older than the server: the server runs PostgreSQL %s, the newest %s found is %s (in %s), "
            "and %s needs client tools of major version %s or later. Install postgresql-client-%s (Debian/Ubuntu; postgresql%s on RHEL) "
            "or set client_bin_dir to the bin directory of PostgreSQL %s or later"
            % (version_text(server_num), tools[0], version_text(best[1]), best[0], purpose, server, server, server.replace(".", ""), server)
        )
    looked = ", ".join(sorted({c[0] for c in candidates})) or "none"
    raise ToolError(
        "%s not found (looked in: %s). Install the PostgreSQL %s client tools (Debian/Ubuntu: postgresql-client-%s) or set client_bin_dir"
        % (" and ".join(tools), looked, server, server)
    )


def find_tools(server_num, tools, bin_dir=None, purpose="the backup"):
    """ClientTools for ``tools`` (all in one directory) matching the server, or raise ToolError."""
    candidates = []
    problems = []
    for directory in candidate_dirs(tools[0], bin_dir):
        path = os.path.join(directory, tools[0])
        if not _is_tool(path):
            problems.append("%s is not an executable file" % path)
            continue
        try:
            number, text = probe_version(path)
        except ToolError as exc:
            problems.append(str(exc))
            continue
        candidates.append((directory, number, text))
    if not candidates and problems:
        raise ToolError("%s%s" % ("client_bin_dir %s: " % bin_dir if bin_dir else "", "; ".join(problems)))
    if bin_dir:
        missing = [t for t in tools if not _is_tool(os.path.join(bin_dir, t))]
        if missing:
            raise ToolError("client_bin_dir %s has no %s" % (bin_dir, ", ".join(missing)))
    return choose_tools(server_num, candidates, tools, purpose)


# ---- the tools' environment ------------------------------------------------------------------


def pgpass_escape(text):
    return text.replace("\\", "\\\\").replace(":", "\\:")


@contextlib.contextmanager
def password_file(password, directory=None):
    """A 0600 passfile in a private 0700 directory for the duration of the block; yields
    its path (None without a password). Removed afterwards, whatever happens."""
    if password is None or "\n" in password or "\r" in password:
        yield None
        return
    private = tempfile.mkdtemp(prefix="lifeboat-pg-", dir=directory)
    try:
        path = os.path.join(private, "pgpass")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("*:*:*:*:%s\n" % pgpass_escape(password))
        yield path
    finally:
        shutil.rmtree(private, ignore_errors=True)


def client_env(params, dbname=None, passfile=None, application=None):
    """libpq environment for a client tool. The password reaches it through ``passfile``
    (PGPASSFILE; an inherited PGPASSWORD is removed so it cannot win). A password a
    passfile cannot hold (a line break) falls back to PGPASSWORD, still never argv."""
    env = {
        "PGPORT": str(params["port"]),
        "PGUSER": params["login_user"],
        "PGDATABASE": dbname or params["login_db"],
        "PGSSLMODE": params["ssl_mode"],
        "PGCONNECT_TIMEOUT": str(params["connect_timeout"]),
        "PGAPPNAME": application or APPLICATION_NAME,
        "LC_MESSAGES": "C",  # error messages are parsed and quoted; keep them in English
    }
    host = params.get("login_unix_socket") or params.get("login_host")
    if host:
        env["PGHOST"] = host
    for option, key in (("ca_cert", "PGSSLROOTCERT"), ("ssl_cert", "PGSSLCERT"), ("ssl_key", "PGSSLKEY")):
        if params.get(option):
            env[key] = params[option]
    if passfile:
        env["PGPASSFILE"] = passfile
        env["PGPASSWORD"] = None
    elif params.get("login_password") is not None:
        env["PGPASSWORD"] = params["login_password"]
    return env


_ERROR_LINE = re.compile(r"(^|\s)(error|fatal|panic):", re.IGNORECASE)


def error_lines(stderr):
    """Lines of a client tool's stderr that report an error (warnings and notices are not)."""
    return [line for line in (stderr or "").splitlines() if _ERROR_LINE.search(line)]


def conninfo_dbname(name):
    """``--dbname`` value naming a database safely: a bare name containing '=' would be
    parsed as a connection string. Host, port, user and password still come from the
    environment (client_env)."""
    return "dbname='%s'" % name.replace("\\", "\\\\").replace("'", "\\'")


# Files pg_dump --format=directory writes (with --compress=0).
DIRECTORY_FILE = re.compile(r"^(?:\d+\.dat|toc\.dat|blobs(?:_\d+)?\.toc|blob_\d+\.dat)$")


# ---- pg_restore --list -----------------------------------------------------------------------

_TOC_LINE = re.compile(r"^(\d+); (\d+) (\d+) (.+)$")
TOC_DESCS = sorted(
    [
        "ACCESS METHOD",
        "ACL",
        "AGGREGATE",
        "BLOB",
        "BLOB METADATA",
        "BLOBS",
        "CAST",
        "CHECK CONSTRAINT",
        "COLLATION",
        "COMMENT",
        "CONSTRAINT",
        "CONVERSION",
        "DATABASE",
        "DATABASE PROPERTIES",
        "DEFAULT",
        "DEFAULT ACL",
        "DOMAIN",
        "ENCODING",
        "EVENT TRIGGER",
        "EXTENSION",
        "FK CONSTRAINT",
        "FOREIGN DATA WRAPPER",
        "FOREIGN TABLE",
        "FUNCTION",
        "INDEX",
        "INDEX ATTACH",
        "LARGE OBJECT",
        "MATERIALIZED VIEW",
        "MATERIALIZED VIEW DATA",
        "OPERATOR",
        "OPERATOR CLASS",
        "OPERATOR FAMILY",
        "POLICY",
        "PROCEDURAL LANGUAGE",
        "PROCEDURE",
        "PUBLICATION",
        "PUBLICATION TABLE",
        "PUBLICATION TABLES IN SCHEMA",
        "ROW SECURITY",
        "RULE",
        "SCHEMA",
        "SEARCHPATH",
        "SECURITY LABEL",
        "SEQUENCE",
        "SEQUENCE OWNED BY",
        "SEQUENCE SET",
        "SERVER",
        "SHELL TYPE",
        "STATISTICS",
        "STDSTRINGS",
        "SUBSCRIPTION",
        "SUBSCRIPTION TABLE",
        "TABLE",
        "TABLE ATTACH",
        "TABLE DATA",
        "TEXT SEARCH CONFIGURATION",
        "TEXT SEARCH DICTIONARY",
        "TEXT SEARCH PARSER",
        "TEXT SEARCH TEMPLATE",
        "TRANSFORM",
        "TRIGGER",
        "TYPE",
        "USER MAPPING",
        "VIEW",
    ],
    key=len,
    reverse=True,
)


def parse_toc(text):
    """Entries of ``pg_restore --list`` output as dicts: id, tableoid, oid, desc.

    Names are printed unquoted (ambiguous with spaces), so entries are identified by
    the catalog OID: for TABLE DATA the OID is the table's pg_class OID.
    """
    entries = []
    for line in (text or "").splitlines():
        match = _TOC_LINE.match(line)
        if not match:
            continue
        rest = match.group(4)
        desc = next((d for d in TOC_DESCS if rest == d or rest.startswith(d + " ")), rest.split(" ", 1)[0])
        entries.append({"id": int(match.group(1)), "tableoid": int(match.group(2)), "oid": int(match.group(3)), "desc": desc})
    return entries


def toc_summary(entries):
    counts = {}
    for entry in entries:
        counts[entry["desc"]] = counts.get(entry["desc"], 0) + 1
    return counts


# ---- SQL text -----------------------------------------------------------------------------------


def quote_ident(name):
    return '"%s"' % name.replace('"', '""')


def quote_literal(text):
    """A string literal for standard_conforming_strings = on (set by ``connect``)."""
    if "\x00" in text:
        raise PgError("a value contains a NUL character, which PostgreSQL cannot store")
    return "'%s'" % text.replace("'", "''")


def split_guc_list(value):
    """Split a list-valued setting as stored (``public, "$user"``) into its elements."""
    items = []
    i = 0
    n = len(value)
    while i < n:
        while i < n and value[i] in " \t\n":
            i += 1
        if i >= n:
            break
        if value[i] == '"':
            i += 1
            item = []
            while i < n:
                if value[i] == '"':
                    if i + 1 < n and value[i + 1] == '"':
                        item.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                item.append(value[i])
                i += 1
            items.append("".join(item))
            while i < n and value[i] != ",":
                i += 1
        else:
            end = value.find(",", i)
            end = n if end < 0 else end
            items.append(value[i:end].strip())
            i = end
        i += 1
    return items


def setting_sql(target, config):
    """``ALTER <target> SET name TO value`` for a stored ``name=value`` (pg_db_role_setting)."""
    name, _sep, value = config.partition("=")
    rendered = quote_literal(value)
    if name.lower() in LIST_QUOTE_GUCS:
        rendered = ", ".join(quote_literal(v) for v in split_guc_list(value)) or "''"
    return "ALTER %s SET %s TO %s" % (target, quote_ident(name), rendered)


def database_properties_sql(name, props):
    """Statements that give database ``name`` the recorded properties of the dumped one:
    ACL, settings (also per role), comment. Used when restoring under another name,
    where ``pg_restore --create`` (which would do it) cannot be used."""
    target = quote_ident(name)
    statements = []
    acl = props.get("acl")
    if acl is not None:
        statements.append("REVOKE ALL ON DATABASE %s FROM PUBLIC" % target)
        for grant in acl:
            grantee = "PUBLIC" if not grant["grantee"] else quote_ident(grant["grantee"])
            statements.append("GRANT %s ON DATABASE %s TO %s%s" % (grant["privilege"], target, grantee, " WITH GRANT OPTION" if grant.get("grantable") else ""))
    for config in props.get("settings") or []:
        statements.append(setting_sql("DATABASE %s" % target, config))
    for role, configs in sorted((props.get("role_settings") or {}).items()):
        for config in configs:
            statements.append(setting_sql("ROLE %s IN DATABASE %s" % (quote_ident(role), target), config))
    if props.get("comment"):
        statements.append("COMMENT ON DATABASE %s IS %s" % (target, quote_literal(props["comment"])))
    return statements


# ---- pg_dumpall --globals-only -------------------------------------------------------------------


def _line_end(text, i):
    """Index just past the line holding position ``i``."""
    end = text.find("\n", i)
    return len(text) if end < 0 else end + 1


def _quoted_end(text, i):
    """Index just past the '...' literal or "..." identifier opening at ``i`` (a doubled
    quote inside is an escaped one)."""
    quote = text[i]
    j = i + 1
    n = len(text)
    while j < n:
        if text[j] == quote:
            if j + 1 < n and text[j + 1] == quote:
                j += 2
                continue
            break
        j += 1
    return j + 1


def _skip_between(text, i, items):
    """Between statements: the index of the next statement's first character, past blanks
    and comments; psql meta-commands met on the way are appended to ``items``."""
    n = len(text)
    while i < n:
        if text[i] in " \t\r\n":
            i += 1
        elif text.startswith("--", i):
            i = _line_end(text, i)
        elif text[i] == "\\":
            end = text.find("\n", i)
            end = n if end < 0 else end
            items.append(("meta", text[i:end].rstrip()))
            i = end + 1
        else:
            break
    return i


def split_sql(text):
    """Split pg_dump(all) SQL into ("sql", statement) and ("meta", psql line) items.

    Knows what pg_dumpall writes: '...' literals (standard_conforming_strings on) and
    "..." identifiers may hold ';' and line breaks; ``--`` comments are dropped; a line
    starting with a backslash between statements is a psql meta-command. Not for COPY
    data (globals have none).
    """
    items = []
    current = []
    i, n = 0, len(text)
    while i < n:
        if not "".join(current).strip():
            current = []
            i = _skip_between(text, i, items)
            if i >= n:
                break
        c = text[i]
        if c in ("'", '"'):
            j = _quoted_end(text, i)
            current.append(text[i:j])
            i = j
        elif text.startswith("--", i):
            i = _line_end(text, i)
            current.append("\n")
        elif c == ";":
            statement = "".join(current).strip()
            if statement:
                items.append(("sql", statement))
            current = []
            i += 1
        else:
            current.append(c)
            i += 1
    tail = "".join(current).strip()
    if tail:
        items.append(("sql", tail))
    return items


_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_GLOBAL_PATTERNS = [
    ("create_role", re.compile(r"^CREATE ROLE (%s)$" % _IDENT)),
    ("alter_role_with", re.compile(r"^ALTER ROLE (%s) WITH\b" % _IDENT)),
    ("role_setting", re.compile(r"^ALTER ROLE (%s) (?:IN DATABASE %s )?(?:SET|RESET)\b" % (_IDENT, _IDENT))),
    ("role_other", re.compile(r"^(?:COMMENT ON ROLE|SECURITY LABEL FOR %s ON ROLE|SECURITY LABEL ON ROLE) (%s)" % (_IDENT, _IDENT))),
    ("create_tablespace", re.compile(r"^CREATE TABLESPACE (%s)" % _IDENT)),
    (
        "tablespace_other",
        re.compile(
            r"^(?:ALTER TABLESPACE|COMMENT ON TABLESPACE|SECURITY LABEL (?:FOR %s )?ON TABLESPACE|(?:GRANT|REVOKE) .+? ON TABLESPACE) (%s)" % (_IDENT, _IDENT)
        ),
    ),
]


def unquote_ident(text):
    if text.startswith('"'):
        return text[1:-1].replace('""', '"')
    return text


def classify_global(statement):
    """(kind, object name) of a pg_dumpall --globals-only statement; kind 'other' if unknown."""
    for kind, pattern in _GLOBAL_PATTERNS:
        match = pattern.match(statement)
        if match:
            return kind, unquote_ident(match.group(1))
    return "other", None


def plan_globals(items, existing_roles, existing_tablespaces, login_user, mode):
    """Decide which globals statements to run on the target.

    ``mode``: 'missing' creates roles and tablespaces absent from the target and leaves
    existing ones exactly as they are; 'all' also resets attributes, passwords and
    settings of existing roles. The role we are logged in as is never altered (its
    password changing mid-restore would lock the restore out). Memberships are
    additive and always applied. psql meta-commands (\\restrict) are dropped: the
    statements run through the driver, not psql.

    Returns dict(statements=[(kind, name, sql)], created_roles, kept_roles,
    created_tablespaces, kept_tablespaces).
    """
    plan = {"statements": [], "created_roles": [], "kept_roles": [], "created_tablespaces": [], "kept_tablespaces": []}
    existing_roles = set(existing_roles)
    existing_tablespaces = set(existing_tablespaces)
    for item_kind, text in items:
        if item_kind != "sql":
            continue
        kind, name = classify_global(text)
        if kind == "create_role":
            if name in existing_roles:
                if name not in plan["kept_roles"]:
                    plan["kept_roles"].append(name)
                continue
            plan["created_roles"].append(name)
        elif kind in ("alter_role_with", "role_setting", "role_other"):
            if name in existing_roles and (mode == "missing" or (kind == "alter_role_with" and name == login_user)):
                continue
        elif kind == "create_tablespace":
            if name in existing_tablespaces:
                plan["kept_tablespaces"].append(name)
                continue
            plan["created_tablespaces"].append(name)
        elif kind == "tablespace_other" and name in existing_tablespaces:
            continue
        plan["statements"].append((kind, name, text))
    return plan


def render_sql(items):
    """Inverse of split_sql (comments dropped)."""
    out = []
    for kind, text in items:
        out.append(text + ("\n" if kind == "meta" else ";\n"))
    return "".join(out)


# ---- inspection ----------------------------------------------------------------------------------

EMPTY_CHECK_SQL = """
SELECT
  (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)') AS relations,
  (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')) AS routines,
  (SELECT count(*) FROM pg_namespace
     WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'public') AND nspname !~ '^pg_(toast|temp_|toast_temp_)') AS schemas,
  (SELECT count(*) FROM pg_largeobject_metadata) AS large_objects,
  (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql') AS extensions,
  (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND t.typtype IN ('e', 'd', 'r', 'm')) AS types,
  (SELECT count(*) FROM pg_event_trigger) AS event_triggers,
  (SELECT count(*) FROM pg_foreign_server) AS foreign_servers,
  (SELECT count(*) FROM pg_publication) AS publications,
  (SELECT count(*) FROM pg_default_acl) AS default_privileges
"""


def user_objects(conn):
    """Counts of user objects in the connected database; all zero means empty."""
    row = execute(conn, EMPTY_CHECK_SQL)[0]
    names = (
        "relations",
        "routines",
        "schemas",
        "large_objects",
        "extensions",
        "types",
        "event_triggers",
        "foreign_servers",
        "publications",
        "default_privileges",
    )
    counts = dict(zip(names, (int(v) for v in row)))
    return {k: v for k, v in counts.items() if v}


def current_lsn(conn):
    """(lsn, in_recovery): the insert LSN on a primary, the replay LSN on a standby."""
    row = execute(conn, "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text")[0]
    return row[1], bool(row[0])


def database_props_sql(version):
    """Per-database properties recorded at dump time (for restores under another name)."""
    locale = ", d.datlocprovider::text, d.daticulocale" if version >= 150000 else ", 'c', NULL"
    if version >= 170000:
        locale = ", d.datlocprovider::text, d.datlocale"
    return (
        "SELECT d.datname, pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, d.datconnlimit%s, "
        "d.datacl IS NULL, shobj_description(d.oid, 'pg_database'), "
        "(SELECT array_agg(ARRAY[coalesce(r.rolname, ''), a.privilege_type, a.is_grantable::text]) "
        "   FROM aclexplode(d.datacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee), "
        "(SELECT s.setconfig FROM pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole = 0), "
        "(SELECT array_agg(ARRAY[r.rolname, c]) FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole, unnest(s.setconfig) c "
        "   WHERE s.setdatabase = d.oid) "
        "FROM pg_database d WHERE d.datname = %%s" % locale
    )


def database_props(conn, version, name):
    rows = execute(conn, database_props_sql(version), (name,))
    if not rows:
        return None
    row = rows[0]
    role_settings = {}
    for role, config in row[12] or []:
        role_settings.setdefault(role, []).append(config)
    return {
        "owner": row[1],
        "encoding": row[2],
        "collate": row[3],
        "ctype": row[4],
        "connection_limit": row[5],
        "locale_provider": {"c": "libc", "i": "icu", "b": "builtin"}.get(row[6], row[6]),
        "icu_locale": row[7],
        "acl": None if row[8] else [{"grantee": g, "privilege": p, "grantable": v == "true"} for g, p, v in (row[10] or [])],
        "comment": row[9],
        "settings": list(row[11] or []),
        "role_settings": role_settings,
    }


def create_database_sql(name, props, server_num, owner_exists=True):
    """CREATE DATABASE with the dumped database's encoding, locale and owner."""
    parts = ["CREATE DATABASE %s WITH TEMPLATE = template0" % quote_ident(name)]
    if props.get("encoding"):
        parts.append("ENCODING = %s" % quote_literal(props["encoding"]))
    if props.get("locale_provider") == "icu" and server_num >= 150000:
        parts.append("LOCALE_PROVIDER = icu")
        if props.get("icu_locale"):
            parts.append("ICU_LOCALE = %s" % quote_literal(props["icu_locale"]))
    if props.get("collate"):
        parts.append("LC_COLLATE = %s" % quote_literal(props["collate"]))
    if props.get("ctype"):
        parts.append("LC_CTYPE = %s" % quote_literal(props["ctype"]))
    if props.get("owner") and owner_exists:
        parts.append("OWNER = %s" % quote_ident(props["owner"]))
    if props.get("connection_limit") not in (None, -1):
        parts.append("CONNECTION LIMIT = %d" % props["connection_limit"])
    return " ".join(parts)


def format_size(num):
    value = float(num)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return ("%d %s" % (value, unit)) if unit == "B" else ("%.1f %s" % (value, unit))
        value /= 1024
    return "%d B" % num


def free_bytes(path):
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def space_problem(path, needed, what):
    """None when ``path`` has ``needed`` bytes free, else a message with the numbers."""
    free = free_bytes(path)
    if free >= needed:
        return None
    return "not enough free space for %s: %s free on %s, about %s needed. Free some space, choose another destination, or adjust space_factor" % (
        what,
        format_size(free),
        path,
        format_size(needed),
    )
