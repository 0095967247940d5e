"""The progress record a long module writes (and where archives, dumps, restores,
verification, transfers and snapshots feed it), and the line the controller prints."""

from __future__ import annotations

import json
import os

import pytest
from ansible.errors import AnsibleError

from ansible_collections.lifeboat.backup.plugins.module_utils import _elasticsearch as es
from ansible_collections.lifeboat.backup.plugins.module_utils import _image, _progress, _storage
from ansible_collections.lifeboat.backup.plugins.modules import elasticsearch_snapshot
from ansible_collections.lifeboat.backup.plugins.plugin_utils._progress import duration_text, interval_of, parse_record, progress_line, rate_of, size_text
from tests.support.images import make_image


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_record_written_atomically_at_most_once_a_second(tmp_path):
    path = tmp_path / "progress.json"
    clock = Clock()
    reporter = _progress.Reporter(str(path), clock=clock, monotonic=clock)
    reporter.phase("writing", item="postgresql/appdb.dump")
    first = json.loads(path.read_text())
    assert first["phase"] == "writing" and first["item"] == "postgresql/appdb.dump" and first["bytes"] == 0 and first["version"] == 1
    clock.now += 0.5
    reporter.advance(4096)
    assert json.loads(path.read_text())["bytes"] == 0  # not yet: less than a second
    clock.now += 0.6
    reporter.advance(4096)
    record = json.loads(path.read_text())
    assert record["bytes"] == 8192 and record["item_bytes"] == 8192 and record["updated"] == clock.now
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o644)
    assert [p.name for p in tmp_path.iterdir()] == ["progress.json"]  # no temporary left


def test_item_done_counts_resumed_transfers_and_shards(tmp_path):
    path = tmp_path / "progress.json"
    clock = Clock()
    reporter = _progress.Reporter(str(path), clock=clock, monotonic=clock)
    reporter.phase("uploading", item="x.zip", total=300)
    reporter.item_done(100, 300)
    reporter.item_done(250, 300)
    reporter.write(force=True)
    record = json.loads(path.read_text())
    assert (record["bytes"], record["item_bytes"], record["item_total"]) == (250, 250, 300)
    reporter.shards(3, 10, 1000, 5000)
    reporter.write(force=True)
    record = json.loads(path.read_text())
    assert (record["shards_done"], record["shards_total"], record["bytes"], record["item_total"]) == (3, 10, 1000, 5000)


def test_without_a_path_nothing_is_written_and_a_bad_path_is_given_up(tmp_path):
    idle = _progress.Reporter(None)
    idle.phase("writing")
    idle.advance(10)
    assert not idle.active and idle.record["bytes"] == 0
    gone = _progress.Reporter(str(tmp_path / "missing" / "progress.json"))
    gone.phase("writing")  # the directory does not exist: reporting stops, nothing raised
    assert not gone.active
    gone.advance(10)


def test_reporter_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setattr(_progress, "_REPORTER", None)
    monkeypatch.setenv(_progress.ENVIRONMENT, str(tmp_path / "p.json"))
    assert _progress.reporter() is _progress.reporter() and _progress.reporter().path == str(tmp_path / "p.json")
    monkeypatch.setattr(_progress, "_REPORTER", None)


def test_sizes_and_durations():
    assert size_text(0) == "0 B" and size_text(1023) == "1023 B" and size_text(1536) == "1.5 KiB"
    assert size_text(3 * 1024**3 + 1) == "3.0 GiB"
    assert duration_text(7) == "7s" and duration_text(125) == "2m 05s" and duration_text(3725) == "1h 02m"


def test_line_with_rate_total_and_time_left():
    mib = 1024**2
    record = {"version": 1, "started": 100.0, "updated": 110.0, "phase": "writing", "item": "postgresql/appdb.dump"}
    record.update(bytes=10 * mib, item_bytes=10 * mib, item_total=40 * mib)
    line = progress_line("lifeboat.backup.postgresql_dump on db1", record, elapsed=12)
    expected = "10.0 MiB done at 1.0 MiB/s; writing postgresql/appdb.dump, 10.0 MiB of 40.0 MiB (25%), about 30s left; 12s elapsed"
    assert line == "lifeboat.backup.postgresql_dump on db1: " + expected
    later = dict(record, updated=112.0, bytes=14 * mib, item_bytes=14 * mib)
    assert rate_of(later, record) == 2 * mib  # since the previous reading
    assert "2.0 MiB/s" in progress_line("x", later, record)
    assert "postgresql/appdb.dump" not in progress_line("x", record, show_item=False)  # no_log


def test_line_of_a_snapshot_counts_shards():
    record = {"version": 1, "started": 0.0, "updated": 60.0, "phase": "snapshot", "item": "nightly", "bytes": 0, "shards_done": 3, "shards_total": 12}
    assert progress_line("s", record) == "s: 0 B done; snapshot nightly, 3 of 12 shards, about 3m 00s left"


def test_a_run_of_another_module_or_a_torn_record_is_not_used():
    assert parse_record("{") is None and parse_record('{"version": 2}') is None and parse_record("[]") is None
    assert parse_record('{"version": 1, "bytes": 5}')["bytes"] == 5
    record = {"started": 1.0, "updated": 3.0, "bytes": 10}
    assert rate_of(record, {"started": 2.0, "updated": 2.5, "bytes": 8}) == 5.0  # another start: the average


def test_interval_values():
    assert interval_of(None, "progress_interval") is None and interval_of("", "v") is None
    assert interval_of("15", "lifeboat_progress_interval") == 15 and interval_of(0, "progress_interval") == 0
    with pytest.raises(AnsibleError, match="progress_interval must be 0 .off. or more seconds"):
        interval_of(-1, "progress_interval")
    with pytest.raises(AnsibleError, match="lifeboat_progress_interval must be a whole number of seconds"):
        interval_of("soon", "lifeboat_progress_interval")


@pytest.fixture
def recorded(monkeypatch, tmp_path):
    """The module process's reporter, writing to a file of the test; returns a reader of it."""
    path = tmp_path / "progress.json"
    reporter = _progress.Reporter(str(path))
    monkeypatch.setattr(_progress, "_REPORTER", reporter)

    def read():
        reporter.write(force=True)
        return json.loads(path.read_text())

    return read


def test_archives_and_dumps_count_the_bytes_of_each_member_written(recorded, tmp_path):
    make_image(str(tmp_path), payload=3 * 1024 * 1024)
    record = recorded()
    assert record["bytes"] >= 3 * 1024 * 1024  # the data member, then the manifest
    assert record["phase"] == "writing" and record["item"] == "manifest.json"


def test_restores_and_verification_count_what_they_read_of_the_total(recorded, tmp_path):
    image = _image.Image(make_image(str(tmp_path), payload=2 * 1024 * 1024 + 3))
    with image.open_member("data/blob.bin") as member:
        member.read(1024 * 1024)
        record = recorded()
        assert (record["phase"], record["item"], record["item_bytes"], record["item_total"]) == ("reading", "data/blob.bin", 1024 * 1024, 2 * 1024 * 1024 + 3)
    before = record["bytes"]
    results, error = _image.verify_image(image, "checksum")
    record = recorded()
    assert error is None and record["phase"] == "verifying" and record["bytes"] > before


def test_transfers_count_the_upload_of_the_image(recorded, tmp_path):
    (tmp_path / "node").mkdir()
    image = make_image(str(tmp_path / "node"), payload=1024 * 1024)
    (tmp_path / "target").mkdir()
    backend = _storage.open_target({"type": "local", "path": str(tmp_path / "target")})
    try:
        _storage.push_image(backend, image)
    finally:
        backend.close()
    record = recorded()
    assert record["phase"] == "uploading" and record["item"] == os.path.basename(image)
    assert record["item_bytes"] == record["item_total"] == os.path.getsize(image)


class _Reply:
    def __init__(self, data):
        self.status = 200
        self.data = data


class _SnapshotCluster:
    """A cluster whose snapshot is a quarter done (shards and bytes) when asked."""

    def request(self, method, path, params=None, ok=()):
        if path.endswith("/_status"):
            stats = {"processed": {"size_in_bytes": 300}, "total": {"size_in_bytes": 1200}}
            return _Reply({"snapshots": [{"state": "STARTED", "shards_stats": {"done": 3, "failed": 0, "total": 12}, "stats": stats}]})
        return _Reply({"snapshots": [{"snapshot": "nightly", "state": "SUCCESS"}]})


def test_snapshots_report_shards_and_bytes_of_the_total(recorded):
    samples = []
    elasticsearch_snapshot.wait_for(_SnapshotCluster(), "repo", "nightly", es.Poller(0), samples)
    record = recorded()
    assert (record["phase"], record["item"], record["shards_done"], record["shards_total"]) == ("snapshot", "nightly", 3, 12)
    assert (record["bytes"], record["item_total"]) == (300, 1200) and samples[0]["shards_done"] == 3
