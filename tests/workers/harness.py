"""What the worker tests share: which brokers answer, and worker processes with bounded waits."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from llamalogger.schema import migrate

HERE = Path(__file__).resolve().parent
REDIS = "redis://127.0.0.1:6379/0"
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"


def answers(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port`` (within half a second).

    ``LLAMALOG_TEST_NO_BROKERS=1`` says no, to run the lanes a laptop without brokers runs.
    """
    if os.environ.get("LLAMALOG_TEST_NO_BROKERS") == "1":
        return False
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def run_id() -> str:
    """A name private to one test run: queues and key prefixes never meet another run's."""
    return f"llamalog-test-{uuid.uuid4().hex[:12]}"


@contextlib.contextmanager
def scratch_schema(dsn: str) -> Iterator[str]:
    """A freshly migrated schema, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as connection:
        migrate(connection, schema=name)
    try:
        yield name
    finally:
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
            )


def rows(dsn: str, schema: str) -> list[dict[str, object]]:
    """Every row of the schema's ``llama_log``, in insert order."""
    query = sql.SQL(
        "SELECT id, category::text AS category, level, message, job_id, parent_job_id,"
        " root_job_id, job_name, details FROM {}.llama_log ORDER BY id"
    ).format(sql.Identifier(schema))
    with psycopg.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.row_factory = dict_row
        return list(cursor.execute(query).fetchall())


class WorkerProcess:
    """A worker started as a separate process; its output goes to a log file."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        environment = {**os.environ, **env}
        environment["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(HERE), environment.get("PYTHONPATH")])
        )
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                [sys.executable, *argv],
                env=environment,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=HERE,
                start_new_session=True,  # its pool processes can be ended as one group
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self, timeout: float = 60.0) -> int:
        """Warm shutdown (SIGTERM), waiting up to ``timeout`` s; killed (group) after that."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"worker did not stop within {timeout} s:\n{self.output()}"
            ) from None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
