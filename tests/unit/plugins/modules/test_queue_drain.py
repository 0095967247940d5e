"""queue_drain: what it refuses before it connects, and the missing library."""

from __future__ import annotations

from tests.support.modules import COLLECTIONS, run_module


def test_refuses_nothing_to_do():
    result = run_module("queue_drain", port=1)
    assert result.failed and "nothing to do" in result["msg"]


def test_wait_needs_queues():
    result = run_module("queue_drain", purge=["x"], wait=True, port=1)
    assert result.failed and "wait=true needs the keys to wait for in queues" in result["msg"]


def test_client_key_needs_a_client_cert():
    result = run_module("queue_drain", queues=["x"], client_key="/k.pem", port=1)
    assert result.failed and "client_cert" in result["msg"]


def test_missing_redis_library_is_reported(tmp_path):
    # A stand-in package that fails to import, ahead of the real one (the managed node without redis-py).
    fake = tmp_path / "redis"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('No module named redis')\n")
    result = run_module("queue_drain", queues=["x"], port=1, env={"PYTHONPATH": f"{tmp_path}:{COLLECTIONS}"})
    assert result.failed
    assert "Failed to import the required Python library (redis)" in result["msg"]


def test_password_is_not_returned(tmp_path):
    result = run_module("queue_drain", queues=["x"], port=1, password="s3cret-value", connect_timeout=1)
    assert result.failed and "s3cret-value" not in result.stdout
