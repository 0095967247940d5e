"""Pure helpers of the PostgreSQL component: versions, tool choice, environment, TOC
parsing, globals filtering and SQL rendering. No server here (see tests/integration)."""

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.lifeboat.backup.plugins.module_utils import _postgresql as pg

PARAMS = {
    "login_host": "db.example",
    "port": 5433,
    "login_unix_socket": None,
    "login_user": "backup",
    "login_password": "s3cr:et\\pw",
    "login_db": "postgres",
    "ssl_mode": "verify-full",
    "ca_cert": "/etc/ssl/ca.pem",
    "ssl_cert": None,
    "ssl_key": None,
    "connect_timeout": 7,
    "client_bin_dir": None,
}


# ---- versions and tools --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "num"),
    [("15.18 (Debian 15.18-0+deb12u1)", 150018), ("9.6.24", 90624), ("17beta1", 170000), ("16", 160000), ("junk", None)],
)
def test_version_num(text, num):
    assert pg.version_num(text) == num


def test_major_versions_compare_across_the_old_scheme():
    assert pg.major_key(150018) == pg.major_key(150002) > pg.major_key(140011) > pg.major_key(90624)
    assert (pg.major_text(150018), pg.major_text(90624)) == ("15", "9.6")
    assert (pg.version_text(150018), pg.version_text(90624)) == ("15.18", "9.6.24")


def fake_tools(tmp_path, name, version, tools=("pg_dump", "pg_restore", "pg_dumpall")):
    """A directory of fake client tools that only answer --version (a unit-level fake)."""
    directory = tmp_path / name
    directory.mkdir()
    for tool in tools:
        path = directory / tool
        path.write_text('#!/bin/sh\necho "%s (PostgreSQL) %s"\n' % (tool, version))
        path.chmod(0o755)
    return str(directory)


def test_choose_tools_prefers_the_same_major_then_the_nearest_newer(tmp_path):
    v14 = fake_tools(tmp_path, "14", "14.11")
    v15 = fake_tools(tmp_path, "15", "15.18")
    v17 = fake_tools(tmp_path, "17", "17.2")
    v16 = fake_tools(tmp_path, "16", "16.6")
    candidates = [(v17, 170002, "17.2"), (v16, 160006, "16.6"), (v15, 150018, "15.18"), (v14, 140011, "14.11")]
    assert pg.choose_tools(150002, candidates, ["pg_dump"], "a dump").dir == v15
    assert pg.choose_tools(130000, candidates, ["pg_dump"], "a dump").dir == v14
    # No 15 installed: the oldest newer one.
    assert pg.choose_tools(150002, [c for c in candidates if c[0] != v15], ["pg_dump"], "a dump").dir == v16


def test_only_older_tools_are_refused_with_the_numbers_and_the_fix(tmp_path):
    v14 = fake_tools(tmp_path, "14", "14.11")
    with pytest.raises(pg.ToolError) as info:
        pg.choose_tools(160004, [(v14, 140011, "14.11")], ["pg_dump"], "a dump of this server")
    text = str(info.value)
    assert "older than the server" in text
    assert "16.4" in text and "14.11" in text and v14 in text
    assert "postgresql-client-16" in text and "client_bin_dir" in text


def test_a_directory_missing_one_of_the_tools_is_not_chosen(tmp_path):
    partial = fake_tools(tmp_path, "partial", "15.18", tools=("pg_dump",))
    with pytest.raises(pg.ToolError, match="not found"):
        pg.choose_tools(150018, [(partial, 150018, "15.18")], ["pg_dump", "pg_restore"], "a dump")


def test_find_tools_probes_client_bin_dir_only(tmp_path):
    old = fake_tools(tmp_path, "old", "14.11")
    with pytest.raises(pg.ToolError, match="older than the server"):
        pg.find_tools(150018, ["pg_dump", "pg_restore", "pg_dumpall"], bin_dir=old)
    good = fake_tools(tmp_path, "good", "15.2")
    tools = pg.find_tools(150018, ["pg_dump", "pg_restore", "pg_dumpall"], bin_dir=good)
    assert (tools.dir, tools.version) == (good, 150002)
    assert tools.path("pg_restore") == os.path.join(good, "pg_restore")


def test_find_tools_reports_a_broken_tool(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "pg_dump").write_text("#!/bin/sh\necho oops >&2\nexit 3\n")
    (broken / "pg_dump").chmod(0o755)
    with pytest.raises(pg.ToolError, match="did not report a version"):
        pg.find_tools(150018, ["pg_dump"], bin_dir=str(broken))
    with pytest.raises(pg.ToolError, match="no pg_dump there|not an executable"):
        pg.find_tools(150018, ["pg_dump"], bin_dir=str(tmp_path / "nowhere"))


# ---- connection and environment ------------------------------------------------------------


def test_connect_kwargs_pass_the_password_as_a_value():
    kwargs = pg.connect_kwargs(PARAMS, "app")
    assert kwargs["password"] == PARAMS["login_password"]
    assert kwargs["dbname"] == "app" and kwargs["host"] == "db.example" and kwargs["sslrootcert"] == "/etc/ssl/ca.pem"
    socket = pg.connect_kwargs(dict(PARAMS, login_host=None, login_unix_socket="/run/pg", login_password=None))
    assert socket["host"] == "/run/pg" and "password" not in socket and socket["dbname"] == "postgres"


def test_password_file_is_private_escaped_and_removed(tmp_path):
    with pg.password_file(PARAMS["login_password"], str(tmp_path)) as path:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
        with open(path) as handle:
            assert handle.read() == "*:*:*:*:s3cr\\:et\\\\pw\n"
    assert not os.path.exists(path) and not os.path.exists(os.path.dirname(path))
    with pg.password_file(None) as none:
        assert none is None


def test_client_env_uses_the_passfile_and_drops_an_inherited_pgpassword():
    env = pg.client_env(PARAMS, "app", passfile="/tmp/x/pgpass")
    assert env["PGPASSFILE"] == "/tmp/x/pgpass"
    assert env["PGPASSWORD"] is None  # unset in the child (see _proc._start)
    assert PARAMS["login_password"] not in env.values()
    assert (env["PGHOST"], env["PGPORT"], env["PGUSER"], env["PGDATABASE"], env["PGSSLMODE"]) == ("db.example", "5433", "backup", "app", "verify-full")
    # A password a passfile cannot hold still goes by environment, never argv.
    assert pg.client_env(dict(PARAMS, login_password="a\nb"))["PGPASSWORD"] == "a\nb"


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ('FATAL: password authentication failed for user "x"', "login_password"),
        ("Connection refused Is the server running", "is the server running"),
        ("timeout expired", "connect_timeout"),
        ('no pg_hba.conf entry for host "1.2.3.4"', "pg_hba.conf"),
    ],
)
def test_connection_errors_get_a_hint(text, hint):
    assert hint in pg.explain_connect_error(text)


def test_error_lines_ignore_warnings():
    stderr = "pg_dump: warning: there are circular foreign-key constraints\npg_dump: error: query failed: ERROR:  permission denied\n"
    assert pg.error_lines(stderr) == ["pg_dump: error: query failed: ERROR:  permission denied"]
    assert pg.error_lines("pg_dump: warning: only a warning") == []


# ---- pg_restore --list ----------------------------------------------------------------------

LISTING = """;
; Archive created at 2026-11-22 20:09:12 UTC
;     Format: CUSTOM
;
215; 1259 16386 TABLE public a postgres
3347; 0 16386 TABLE DATA public a postgres
3348; 0 16394 TABLE DATA public my table with spaces app owner
3349; 2613 16397 BLOB - 16397 postgres
3350; 0 0 BLOBS - BLOBS
3360; 0 0 SEQUENCE SET public a_id_seq postgres
3361; 0 16500 MATERIALIZED VIEW DATA public mv postgres
"""


def test_parse_toc_identifies_entries_by_oid():
    entries = pg.parse_toc(LISTING)
    data = [e for e in entries if e["desc"] == "TABLE DATA"]
    assert [e["oid"] for e in data] == [16386, 16394]
    assert pg.toc_summary(entries) == {"TABLE": 1, "TABLE DATA": 2, "BLOB": 1, "BLOBS": 1, "SEQUENCE SET": 1, "MATERIALIZED VIEW DATA": 1}


# ---- globals --------------------------------------------------------------------------------

GLOBALS = """--
-- PostgreSQL database cluster dump
--

\\restrict abc123

SET default_transaction_read_only = off;
SET standard_conforming_strings = on;

CREATE ROLE alice;
ALTER ROLE alice WITH NOSUPERUSER LOGIN PASSWORD 'SCRAM-SHA-256$4096:x;y';
COMMENT ON ROLE alice IS 'multi
line; comment with ''quotes''';
CREATE ROLE "app ""x"" owner";
ALTER ROLE "app ""x"" owner" WITH LOGIN;
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER LOGIN PASSWORD 'SCRAM-SHA-256$4096:old';
ALTER ROLE postgres SET work_mem TO '8MB';
CREATE TABLESPACE fast OWNER postgres LOCATION '/srv/fast';
GRANT CREATE ON TABLESPACE fast TO alice;
GRANT readers TO alice GRANTED BY postgres;

\\unrestrict abc123

--
-- PostgreSQL database cluster dump complete
--
"""


def test_split_sql_keeps_literals_identifiers_and_meta_commands():
    items = pg.split_sql(GLOBALS)
    assert items[0] == ("meta", "\\restrict abc123")
    assert items[-1] == ("meta", "\\unrestrict abc123")
    sql = [text for kind, text in items if kind == "sql"]
    assert "COMMENT ON ROLE alice IS 'multi\nline; comment with ''quotes'''" in sql
    assert "ALTER ROLE alice WITH NOSUPERUSER LOGIN PASSWORD 'SCRAM-SHA-256$4096:x;y'" in sql
    assert 'CREATE ROLE "app ""x"" owner"' in sql
    assert len(sql) == 13
    assert pg.split_sql(pg.render_sql(items)) == items


def test_classify_global():
    assert pg.classify_global('CREATE ROLE "app ""x"" owner"') == ("create_role", 'app "x" owner')
    assert pg.classify_global("ALTER ROLE alice WITH LOGIN") == ("alter_role_with", "alice")
    assert pg.classify_global("ALTER ROLE alice IN DATABASE app SET work_mem TO '1MB'") == ("role_setting", "alice")
    assert pg.classify_global("GRANT CREATE ON TABLESPACE fast TO alice") == ("tablespace_other", "fast")
    assert pg.classify_global("GRANT readers TO alice GRANTED BY postgres") == ("other", None)


def test_plan_globals_missing_creates_only_what_is_absent():
    plan = pg.plan_globals(pg.split_sql(GLOBALS), ["postgres", "alice"], ["pg_default", "pg_global", "fast"], "postgres", "missing")
    kinds = [(kind, name) for kind, name, _sql in plan["statements"]]
    assert plan["created_roles"] == ['app "x" owner'] and plan["kept_roles"] == ["alice", "postgres"]
    assert ("alter_role_with", "alice") not in kinds and ("role_other", "alice") not in kinds
    assert ("alter_role_with", "postgres") not in kinds and ("role_setting", "postgres") not in kinds
    assert ("create_tablespace", "fast") not in kinds and ("tablespace_other", "fast") not in kinds
    assert ("other", None) in kinds  # memberships and SETs always run
    assert plan["kept_tablespaces"] == ["fast"] and plan["created_tablespaces"] == []


def test_plan_globals_all_resets_existing_roles_but_never_the_login_role():
    plan = pg.plan_globals(pg.split_sql(GLOBALS), ["postgres", "alice"], [], "postgres", "all")
    kinds = [(kind, name) for kind, name, _sql in plan["statements"]]
    assert ("create_role", "alice") not in kinds  # would fail: it exists
    assert ("alter_role_with", "alice") in kinds  # its password is reset to the image's
    assert ("alter_role_with", "postgres") not in kinds  # we are logged in as it
    assert ("role_setting", "postgres") in kinds
    assert plan["created_tablespaces"] == ["fast"]


# ---- SQL rendering --------------------------------------------------------------------------


def test_quoting():
    assert pg.quote_ident('we"ird name') == '"we""ird name"'
    assert pg.quote_literal("it's") == "'it''s'"
    with pytest.raises(pg.PgError):
        pg.quote_literal("nul\x00")
    assert pg.conninfo_dbname("a'b\\c=d") == "dbname='a\\'b\\\\c=d'"


def test_list_settings_are_split_like_pg_dump_does():
    assert pg.split_guc_list('public, "$user", "we""ird, name"') == ["public", "$user", 'we"ird, name']
    assert pg.setting_sql('DATABASE "x"', 'search_path=public, "$user"') == "ALTER DATABASE \"x\" SET \"search_path\" TO 'public', '$user'"
    assert pg.setting_sql('DATABASE "x"', "work_mem=8MB") == 'ALTER DATABASE "x" SET "work_mem" TO \'8MB\''


def test_database_properties_for_a_renamed_database():
    props = {
        "owner": "app",
        "encoding": "UTF8",
        "collate": "C.UTF-8",
        "ctype": "C.UTF-8",
        "locale_provider": "libc",
        "connection_limit": 20,
        "acl": [{"grantee": "", "privilege": "CONNECT", "grantable": False}, {"grantee": "alice", "privilege": "CREATE", "grantable": True}],
        "settings": ["work_mem=8MB"],
        "role_settings": {"alice": ["statement_timeout=5s"]},
        "comment": "the app's data",
    }
    create = pg.create_database_sql("app copy", props, 150018)
    assert create == (
        "CREATE DATABASE \"app copy\" WITH TEMPLATE = template0 ENCODING = 'UTF8' LC_COLLATE = 'C.UTF-8' LC_CTYPE = 'C.UTF-8' "
        'OWNER = "app" CONNECTION LIMIT = 20'
    )
    assert "OWNER" not in pg.create_database_sql("x", props, 150018, owner_exists=False)
    statements = pg.database_properties_sql("app copy", props)
    assert statements == [
        'REVOKE ALL ON DATABASE "app copy" FROM PUBLIC',
        'GRANT CONNECT ON DATABASE "app copy" TO PUBLIC',
        'GRANT CREATE ON DATABASE "app copy" TO "alice" WITH GRANT OPTION',
        'ALTER DATABASE "app copy" SET "work_mem" TO \'8MB\'',
        'ALTER ROLE "alice" IN DATABASE "app copy" SET "statement_timeout" TO \'5s\'',
        "COMMENT ON DATABASE \"app copy\" IS 'the app''s data'",
    ]
    # Default privileges (acl null) are left alone.
    assert pg.database_properties_sql("x", {"acl": None}) == []


def test_space_problem_gives_the_numbers(tmp_path):
    assert pg.space_problem(str(tmp_path), 1, "a dump") is None
    text = pg.space_problem(str(tmp_path), 1 << 60, "a dump")
    assert "not enough free space for a dump" in text and str(tmp_path) in text and "1024.0 PiB" not in text and "needed" in text
    assert pg.format_size(1536) == "1.5 KiB" and pg.format_size(12) == "12 B"
