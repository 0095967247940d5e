"""Plugins for every test run: the fault matrix (tests/support/fault_matrix.py)."""

pytest_plugins = ["tests.support.fault_matrix"]
