"""Plugins and fixtures for every test run (unit and integration): the fault matrix
(tests/support/fault_matrix.py), and no module process left behind."""

import pytest

from tests.support.modules import stop_left_processes

pytest_plugins = ["tests.support.fault_matrix"]


@pytest.fixture(scope="session", autouse=True)
def no_processes_left():
    """Tests that start a session and never seal it (the killed-controller faults, the
    modules' own failure tests) leave its keeper holding the lock for the lease, an hour:
    stop them when the tests end."""
    yield
    stop_left_processes()
