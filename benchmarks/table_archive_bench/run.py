"""Table-archive benchmark: table_archive vs the native pipeline, on the same table in one run.

    python benchmarks/table_archive_bench/run.py [--rows 1000000] [--rss-rows 1000000,5000000] [--rounds 2] [--small]

A private PostgreSQL 15 (the test harness's) holds a template of the transaction manager's
raw_data table (about 300 bytes a row: ids, a message id, a timestamp in epoch ms, a
hex payload, a digest) and its init_table. Before each timed run the table is loaded afresh
from the template (same rows, same physical order, vacuumed), then:

1. the native pipeline - ``psql -c "COPY (SELECT * FROM raw_data WHERE recordid <= N) TO
   STDOUT" | zstd -3 -T0 | age -r R > out && sync out``, then ``psql -c "DELETE FROM
   raw_data WHERE recordid <= N"`` (no init records, no signature, no chain, no read-back);
2. ``table_archive`` on the same rows (in batches of 100 000 rows, to one local archive
   location, age recipient), the module process timed from start to end - the ratio;
3. ``table_archive`` again with init_table as a child table (its rows move too), for the
   cost of linked tables.

The paths alternate for ``--rounds`` rounds; each path's best time counts (the machine is
shared). Then the verifiers' rates (table_archive_verify at level checksum and full, and the
offline verifier) in rows per second, and the module's peak RSS (GNU time) archiving
``--rss-rows`` rows: memory must stay flat from 1 to 5 million rows. No other tool archives
tables into a signed chain (issue #16), so there is no peer tool to compare with.
``--small`` is what CI runs: 20 000 rows, one round, correctness only - its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness.servers import PostgresServer  # noqa: E402
from tests.support.modules import module_env, run_module  # noqa: E402

TEMPLATE = """
CREATE TABLE template_raw AS
SELECT i / 100 AS sessionid, (i %% 10)::int AS logconnectionid, i::bigint AS recordid, ('msg-' || i)::varchar(120) AS msgid,
       'PAY'::varchar(120) AS doctype, (i %% 2)::int AS input,
       (extract(epoch FROM now() - interval '400 days') * 1000)::bigint + i * 10 AS "timestamp",
       repeat(md5(i::text), 6) AS rawdata, sha256(i::text::bytea) AS digestofrecord
FROM generate_series(1, %d) i;
CREATE TABLE template_init AS
SELECT sessionid, min("timestamp") AS "timestamp", 10 AS n_connections, sha256(sessionid::text::bytea) AS sigdata, 'CN=TC ' || sessionid AS servercertissuerdn
FROM template_raw GROUP BY sessionid;
"""

LOAD = """
DROP TABLE IF EXISTS raw_data, init_table;
DROP SCHEMA IF EXISTS lifeboat CASCADE;
CREATE TABLE raw_data AS SELECT * FROM template_raw WHERE recordid <= %(rows)d ORDER BY recordid;
ALTER TABLE raw_data ADD PRIMARY KEY (recordid);
CREATE INDEX ON raw_data (sessionid);
CREATE TABLE init_table AS SELECT * FROM template_init WHERE sessionid <= %(rows)d / 100;
ALTER TABLE init_table ADD PRIMARY KEY (sessionid);
VACUUM ANALYZE raw_data;
VACUUM ANALYZE init_table;
CHECKPOINT;
"""


def psql(server, sql, db="bench"):
    return server.psql(sql, dbname=db)


def load(server, rows):
    psql(server, LOAD % {"rows": rows})


def native(server, rows, recipient, work):
    out = work / "native.sql.zst.age"
    env = dict(os.environ, **server.env("bench"))
    started = time.monotonic()
    copy = 'psql -X -q -v ON_ERROR_STOP=1 -c "COPY (SELECT * FROM raw_data WHERE recordid <= %d) TO STDOUT" | zstd -3 -T0 -q | age -r %s > %s && sync %s' % (
        rows,
        recipient,
        out,
        out,
    )
    subprocess.run(["bash", "-o", "pipefail", "-c", copy], env=env, check=True)
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", "DELETE FROM raw_data WHERE recordid <= %d" % rows], env=env, check=True)
    seconds = time.monotonic() - started
    print("    native %s rows: %.1f s" % ("{:,}".format(rows), seconds), flush=True)
    return seconds, out.stat().st_size


def module_args(server, work, recipient, pem, rows, children=True):
    location = work / "archive"
    shutil.rmtree(location, ignore_errors=True)
    location.mkdir(parents=True)
    return {
        "login_host": server.host,
        "port": server.port,
        "login_password": server.password,
        "login_db": "bench",
        "targets": [{"name": "bench", "type": "local", "path": str(location)}],
        "signing_key": pem,
        "recipients": [recipient],
        "spool_dir": str(work),
        "tables": [
            {
                "name": "public.raw_data",
                "time_column": "timestamp",
                "time_unit": "epoch_ms",
                "older_than": "30 days",
                "batch_rows": 100_000,
                "children": [{"name": "public.init_table", "link": ["sessionid"]}] if children else [],
            }
        ],
    }


def archive(server, rows, recipient, pem, work, children=True):
    """(seconds, stored bytes, peak RSS KiB, module arguments) of one table_archive run over every row."""
    args = module_args(server, work, recipient, pem, rows, children)
    report = work / "rss.txt"
    started = time.monotonic()
    result = run_module("table_archive", prefix=["/usr/bin/time", "-f", "%U %S %M", "-o", str(report)], **args)
    seconds = time.monotonic() - started
    if result.failed or result["rows"] != rows:
        raise SystemExit("table_archive failed or moved the wrong number of rows: %s" % json.dumps(result)[:3000])
    stored = sum(s["stored_bytes"] for s in result["tables"][0]["segments"])
    user, system, peak = report.read_text().split()[-3:]
    print(
        "    table_archive %s rows%s: %.1f s, CPU user %s s + system %s s" % ("{:,}".format(rows), " with children" if children else "", seconds, user, system),
        flush=True,
    )
    return seconds, stored, int(peak), args


def verifiers(server, args, identity_file, rows):
    """Rows per second of table_archive_verify (checksum and full) and of the offline verifier."""
    rates = {}
    verify_args = {k: v for k, v in args.items() if k not in ("signing_key", "recipients", "spool_dir")}
    for level in ("checksum", "full"):
        extra = {"identity_file": str(identity_file)} if level == "full" else {}
        started = time.monotonic()
        result = run_module("table_archive_verify", level=level, **verify_args, **extra)
        seconds = time.monotonic() - started
        if not result.get("valid"):
            raise SystemExit("the archive does not verify at level %s: %s" % (level, result.get("msg")))
        rates["table_archive_verify " + level] = rows / seconds
    location = args["targets"][0]["path"]
    for label, extra in (("offline verifier", []), ("offline verifier --identity (age, zstd)", ["--identity", str(identity_file)])):
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, str(ROOT / "plugins" / "module_utils" / "_table_segment.py"), *extra, location], capture_output=True, text=True, check=False
        )
        seconds = time.monotonic() - started
        if proc.returncode != 0:
            raise SystemExit("the offline verifier failed: %s %s" % (proc.stdout[-2000:], proc.stderr[-2000:]))
        rates[label] = rows / seconds
    return rates


def keys(work):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    sys.path.insert(0, str(ROOT / ".build" / "collections"))
    from ansible_collections.lifeboat.backup.plugins.module_utils import _age

    pem = Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    identity, recipient = _age.generate_identity()
    identity_file = work / "identity.txt"
    identity_file.write_text(identity + "\n")
    return pem, recipient, identity_file


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows archived in the timed runs")
    parser.add_argument("--rss-rows", default="1000000,5000000", help="row counts for the peak-RSS comparison")
    parser.add_argument("--rounds", type=int, default=2, help="rounds; the best time of each path counts")
    parser.add_argument("--small", action="store_true", help="CI mode: 20 000 rows, one round, correctness only")
    args = parser.parse_args()
    if args.small:
        args.rows, args.rss_rows, args.rounds = 20_000, "10000,20000", 1
    rss_rows = [int(r) for r in args.rss_rows.split(",")]
    os.environ.update(module_env())
    work = Path(tempfile.mkdtemp(prefix="lifeboat-table-bench-"))
    try:
        run(args, rss_rows, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args, rss_rows, work):
    pem, recipient, identity_file = keys(work)
    with PostgresServer(settings={"shared_buffers": "256MB", "max_wal_size": "4GB"}) as server:
        server.psql("CREATE DATABASE bench")
        psql(server, TEMPLATE % max([args.rows] + rss_rows))
        best = {}
        for _round in range(args.rounds):
            load(server, args.rows)
            seconds, size = native(server, args.rows, recipient, work)
            best["native"] = min(best.get("native", seconds), seconds)
            for children in (False, True):
                load(server, args.rows)
                mseconds, stored, _rss, module_run = archive(server, args.rows, recipient, pem, work, children)
                best[children] = min(best.get(children, mseconds), mseconds)
                left = psql(server, "SELECT count(*) FROM raw_data")
                if left != "0":
                    raise SystemExit("table_archive left %s rows" % left)
        rates = verifiers(server, module_run, identity_file, args.rows)
        rss = []
        for rows in rss_rows:
            load(server, rows)
            rss.append((rows, archive(server, rows, recipient, pem, work)[2]))
    report(args, best, size, stored, rates, rss)


def report(args, best, native_size, stored, rates, rss):
    rows = args.rows
    native_seconds, module_seconds = best["native"], best[False]
    print(
        "table archive benchmark%s: %s rows of raw_data (+ init records), %d round(s), best of each"
        % (" (--small: numbers mean nothing)" if args.small else "", "{:,}".format(rows), args.rounds)
    )
    print("  native COPY | zstd -3 -T0 | age + DELETE   %7.1f s  %9.0f rows/s  %6.1f MB out" % (native_seconds, rows / native_seconds, native_size / 1e6))
    print("  table_archive (chained, signed, read back)  %7.1f s  %9.0f rows/s  %6.1f MB out" % (module_seconds, rows / module_seconds, stored / 1e6))
    print("  table_archive with init_table as a child    %7.1f s  %9.0f rows/s" % (best[True], rows / best[True]))
    print("  ratio to native: %.2fx   (target >= 0.7x; no peer tool archives into a signed chain)" % (native_seconds / module_seconds))
    for label, rate in rates.items():
        print("  %-42s %9.0f rows/s" % (label, rate))
    print("  table_archive peak RSS: %s   (target < 150 MB, flat)" % ", ".join("%s rows: %.1f MB" % ("{:,}".format(r), kib / 1024) for r, kib in rss))


if __name__ == "__main__":
    main()
