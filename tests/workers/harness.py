"""What the worker tests share: which brokers answer, and worker processes with bounded waits."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

HERE = Path(__file__).resolve().parent
# A run can be given a Redis database and queue-name prefix of its own, so that parallel
# runs on one machine never meet: LLAMALOG_TEST_REDIS_URL, LLAMALOG_TEST_RUN_PREFIX.
REDIS = os.environ.get("LLAMALOG_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
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
    prefix = os.environ.get("LLAMALOG_TEST_RUN_PREFIX", "llamalog-test")
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# Job headers a hostile or confused publisher could send ("SELF": the task's own id). The
# first three are refused (one warning each: the task becomes a root, or keeps its queue's
# own parent); the last names the task itself, as a Celery retry does: it keeps its place.
HOSTILE = {
    "own-parent": {"llamalog-job-id": "H", "llamalog-parent-job-id": "H"},
    "root-without-parent": {"llamalog-job-id": "H", "llamalog-root-job-id": "R"},
    "long-id": {"llamalog-job-id": "x" * 101},
    "itself": {"llamalog-job-id": "SELF"},
}
REFUSED = ("own-parent", "root-without-parent", "long-id")


def hostile(key: str) -> tuple[str, dict[str, str]]:
    """A task id of its own and the hostile headers ``key`` names, for that task."""
    task_id = f"hostile-{key}-{uuid.uuid4().hex[:8]}"
    headers = {name: task_id if value == "SELF" else value for name, value in HOSTILE[key].items()}
    return task_id, headers


def assert_hostile_tasks_are_roots(
    rows: list[dict[str, Any]], ids: dict[str, Any], log: str
) -> None:
    """Each task sent with ``hostile(key)`` headers (its id in ``ids["hostile-<key>"]``) is
    a root with one row; the refused ones are warned about in ``log``; and no row of the
    run is its own parent."""
    assert all(row["parent_job_id"] != row["job_id"] for row in rows)
    for key in HOSTILE:
        task_id = ids[f"hostile-{key}"]
        places = [(r["parent_job_id"], r["root_job_id"]) for r in rows if r["job_id"] == task_id]
        assert places == [(None, task_id)], key
    warned = [key for key in REFUSED if f"{ids[f'hostile-{key}']!r} were refused" in log]
    assert warned == list(REFUSED), log[-3000:]


@attrs.frozen
class Outcome:
    """What a worker test's run stored, and the ids the test learnt while sending."""

    rows: list[dict[str, Any]]
    ids: dict[str, str]
    jobs: list[dict[str, Any]] = attrs.field(factory=list)  # the job records, in insert order
    log: str = ""  # the worker's whole output

    def tagged(self, tag: str) -> list[dict[str, Any]]:
        return [row for row in self.rows if (row["details"] or {}).get("tag") == tag]

    def of_job(self, job_id: str) -> list[dict[str, Any]]:
        return [row for row in self.rows if row["job_id"] == job_id]

    def attempts(self, job_id: str) -> list[tuple[int, str, str | None]]:
        return attempts(self.jobs, job_id)


def attempts(jobs: list[dict[str, Any]], job_id: str) -> list[tuple[int, str, str | None]]:
    """A job's records as (attempt, status, error type), by attempt."""
    return sorted(
        (row["attempt"], row["status"], row["error_type"])
        for row in jobs
        if row["job_id"] == job_id
    )


def assert_records_agree_with_events(
    jobs: list[dict[str, Any]], events: list[dict[str, Any]]
) -> None:
    """Every job record ends after it starts and names the parent and root its events carry."""
    for row in jobs:
        assert row["started_at"] <= row["ended_at"]
        places = {
            (e["parent_job_id"], e["root_job_id"]) for e in events if e["job_id"] == row["job_id"]
        }
        assert places <= {(row["parent_job_id"], row["root_job_id"])}


def assert_sent_trees_hang_together(outcome: Outcome, children: int) -> None:
    """The workload both queues send: an album task ("a") whose ``children`` artist tasks
    hang under it, and the same tree ("b", "nested") sent inside a plain job ("outer")."""
    for tag, key, root in (("a", "album", "album"), ("b", "nested", "outer")):
        album = outcome.ids[key]
        rows = outcome.tagged(tag)
        below = [row for row in rows if row["job_id"] != album]
        assert len({row["job_id"] for row in below}) == children
        assert {row["parent_job_id"] for row in below} == {album}
        assert {row["root_job_id"] for row in rows} == {outcome.ids[root]}
    nested = outcome.of_job(outcome.ids["nested"])
    assert {row["parent_job_id"] for row in nested} == {outcome.ids["outer"]}


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
