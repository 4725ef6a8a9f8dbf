"""The suite's set-up: fixtures come from the plugins in ``tests/fixtures/`` (see there).

Every integration test runs on every PostgreSQL it is given, each in a schema of its own.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

pytest_plugins = ["fixtures.database", "fixtures.restartable", "fixtures.pgbouncer"]


def pytest_configure(config: pytest.Config) -> None:
    # Spilling is on by default, into the per-user state directory: the suite (and the
    # processes it starts) must not fill the home directory of whoever runs it.
    os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="llamalog-test-state-")


def pytest_unconfigure(config: pytest.Config) -> None:
    # What the run spilled there is the run's own: nothing of it is wanted afterwards.
    shutil.rmtree(os.environ.get("XDG_STATE_HOME", ""), ignore_errors=True)
