"""Helpers inside the postgresql_* modules: member names, database selection, pg_dump
arguments, the streaming tar check of base backups, the globals prefix of a pg_dumpall script."""

from __future__ import annotations

import io
import tarfile

import pytest

from ansible_collections.lifeboat.backup.plugins.modules import postgresql_basebackup, postgresql_dump, postgresql_restore


def test_member_stems_are_safe_and_distinct():
    assert postgresql_dump.member_stem("app") == "db-app"
    spaced, dashed, accented = (postgresql_dump.member_stem(n) for n in ("app data", "app-data", "données_é"))
    assert len({spaced, dashed, accented}) == 3
    assert spaced.startswith("db-app-data-") and " " not in spaced and "/" not in postgresql_dump.member_stem("a/b")


def test_select_databases():
    available = [
        {"name": "app", "allow_connections": True, "is_template": False},
        {"name": "postgres", "allow_connections": True, "is_template": False},
        {"name": "template1", "allow_connections": True, "is_template": True},
        {"name": "frozen", "allow_connections": False, "is_template": False},
    ]
    assert postgresql_dump.select_databases(available, [], []) == (["app", "postgres"], [])
    assert postgresql_dump.select_databases(available, [], ["postgres"]) == (["app"], [])
    assert postgresql_dump.select_databases(available, ["app", "nope"], []) == (["app", "nope"], ["nope"])


def test_exclusion_args_leave_audit_rows_out_unless_included():
    params = {"exclude_tables": ["tmp_*"], "exclude_table_data": ["cache"], "audit_tables": ["public.audit_log"], "lock_wait_timeout": 30}
    args = postgresql_dump.exclusion_args(params, audit_included=False)
    assert args == ["--exclude-table=tmp_*", "--exclude-table-data=cache", "--exclude-table-data=public.audit_log", "--lock-wait-timeout=30s"]
    assert "--exclude-table-data=public.audit_log" not in postgresql_dump.exclusion_args(params, audit_included=True)


def make_tar(files):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def feed(scanner, data, step):
    for start in range(0, len(data), step):
        scanner.write(data[start : start + step])
    return scanner


@pytest.mark.parametrize("step", [1, 511, 512, 4096, 1 << 20])
def test_tar_scanner_reads_names_in_any_chunking(step):
    data = make_tar({"PG_VERSION": b"15\n", "./global/pg_control": b"x" * 8192, "pg_wal/000000010000000000000002": b"w" * 1000})
    scanner = feed(postgresql_basebackup.TarScanner(), data, step)
    assert scanner.error is None and scanner.complete
    assert scanner.names == ["PG_VERSION", "global/pg_control", "pg_wal/000000010000000000000002"]


def test_tar_scanner_detects_truncation_and_corruption():
    data = make_tar({"PG_VERSION": b"15\n", "backup_label": b"label"})
    assert not feed(postgresql_basebackup.TarScanner(), data[:1024], 100).complete
    corrupt = bytearray(data)
    corrupt[10] ^= 0x01  # inside the first header's name
    scanner = feed(postgresql_basebackup.TarScanner(), bytes(corrupt), 4096)
    assert "checksum" in scanner.error


def test_prefix_filter_rewrites_only_the_globals_part():
    script = b"CREATE ROLE alice;\nCREATE ROLE bob;\n\\connect template1\nCREATE ROLE notglobal;\n" + b"x" * 3_000_000
    source = io.BytesIO(script)
    filtered = postgresql_restore.PrefixFilter(source, lambda text: text.replace("CREATE ROLE bob;\n", ""))
    out = b""
    while True:
        chunk = filtered.read(65536)
        if not chunk:
            break
        out += chunk
    assert out == script.replace(b"CREATE ROLE bob;\n", b"", 1)
    head, rest = postgresql_restore.split_prefix(io.BytesIO(b"no marker at all"), postgresql_restore.PrefixFilter.MARKER, 1000)
    assert (head, rest) == (b"no marker at all", b"")
    with pytest.raises(postgresql_restore.RestoreError, match="larger than"):
        postgresql_restore.split_prefix(io.BytesIO(b"y" * 5000), postgresql_restore.PrefixFilter.MARKER, 1000)


def _table(name, size, columns=("id", "body")):
    return {"oid": hash(name) & 0xFFFF, "schema": "public", "table": name, "size": size, "columns": list(columns)}


def test_parallel_dump_plan_splits_the_big_table_into_block_ranges():
    """#15.3: on PostgreSQL 14+ a table above its share becomes contiguous block ranges
    covering the whole table (open at both ends); older servers get one stream per table."""
    mib = 1024 * 1024
    tables = [_table("big", 95 * mib), _table("small", 5 * mib)]
    streams = postgresql_dump.plan_streams(tables, 2, 150000, 8192)
    big = sorted((s["range"] for s in streams if s["table"] == "big"), key=lambda r: -1 if r[0] is None else r[0])
    assert len(big) == 8 and big[0][0] is None and big[-1][1] is None
    assert all(a[1] == b[0] for a, b in zip(big, big[1:])), big
    assert [s["range"] for s in streams if s["table"] == "small"] == [[None, None]]
    assert [s["number"] for s in streams] == list(range(1, len(streams) + 1))
    assert streams[0]["size"] >= streams[-1]["size"]
    old = postgresql_dump.plan_streams(tables, 2, 130000, 8192)
    assert [s["range"] for s in old] == [[None, None], [None, None]]


def test_copy_of_a_stream_names_its_columns_and_block_range():
    stream = dict(_table('we"ird', 0, ["id", "Body"]), range=[None, None])
    assert postgresql_dump.copy_out_sql(stream) == 'COPY "public"."we""ird" ("id", "Body") TO STDOUT'
    stream["range"] = [128, 256]
    assert postgresql_dump.copy_out_sql(stream) == (
        'COPY (SELECT "id", "Body" FROM ONLY "public"."we""ird" WHERE ctid >= \'(128,0)\'::tid AND ctid < \'(256,0)\'::tid) TO STDOUT'
    )
    assert postgresql_dump.pattern_quote('we"ird*') == '"we""ird*"'
