"""What the Celery integration costs per task, what a SIGKILLed task loses, and whether
recycled pool processes lose anything.

    python benchmarks/bench_celery.py [--dsn DSN] [--tasks 2000] [--rounds 3] [--kill-runs 3]
        [--recycled 1000] [--only overhead|kills|recycled]

Overhead: the same real ``celery worker`` (Redis broker, or kombu's filesystem transport
when Redis does not answer) runs the same empty task with and without ``instrument()``,
rounds alternating. A round publishes a ``stamp`` task, N empty tasks and a second
``stamp``; with one worker process (solo, or prefork with one child) tasks run in order,
so (second stamp - first stamp) / N is the worker's time per task. Nothing is logged by
the task: the difference is the integration alone (its job, and in prefork its wait for
the task's events).

Kills: a prefork task logs at a steady rate and is ended either by SIGKILL (what the OOM
killer or ``kill -9`` do) or by its hard ``time_limit`` (billiard sends SIGTERM, then
SIGKILL 0.1 s later if the process still lives); the rows that reached the table are
counted against the events logged, which the task records in a shared file as it goes.

Recycled: a prefork pool of 4 with ``--max-tasks-per-child=1`` (every task in a fresh
process that ends with ``os._exit``) runs N tasks that log one event each; the benchmark
waits for each result in turn and reads that task's row at once (issue 18's "179 of 180":
Celery stores a result before ``task_postrun``), then counts every event and job record
once the worker has stopped. ``tests/integration/test_celery_recycled.py`` does the same
with 200 tasks.

This module is also the Celery app the worker imports (``-A bench_celery``).
"""

from __future__ import annotations

import argparse
import mmap
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _support import scratch_schema
from celery import Celery

from llamalogger import LlamaLogger
from llamalogger.integrations.celery import instrument

HERE = Path(__file__).resolve().parent
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")  # a database of its own


def _configure(app: Celery, broker: str, backend: str, queue: str, folder: str) -> None:
    transport: dict[str, Any] = {"global_keyprefix": f"{queue}:"}
    if broker.startswith("filesystem"):
        transport = {
            "data_folder_in": folder,
            "data_folder_out": folder,
            "control_folder": os.path.join(folder, "control"),
        }
    app.conf.update(
        broker_url=broker,
        result_backend=backend,
        broker_transport_options=transport,
        result_backend_transport_options={"global_keyprefix": f"{queue}:"},
        task_default_queue=queue,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )


app = Celery("bench_celery")
if "BENCH_BROKER" in os.environ:  # inside the worker
    _configure(
        app,
        os.environ["BENCH_BROKER"],
        os.environ["BENCH_BACKEND"],
        os.environ["BENCH_QUEUE"],
        os.environ["BENCH_FOLDER"],
    )
    if os.environ["BENCH_INSTRUMENT"] == "1":
        llama = instrument(
            app,
            lambda: LlamaLogger(os.environ["LLAMALOG_DSN"], schema=os.environ["LLAMALOG_SCHEMA"]),
        )


@app.task(ignore_result=True)
def empty() -> None:
    """The bare task."""


@app.task
def stamp() -> float:
    return time.time()


@app.task
def logged(run: str) -> None:
    """One event, in the task's job."""
    llama.logger.created(("track", 1), run=run)


@app.task(bind=True)
def steady(self: Any, rate: int, counter: str, run: str) -> None:
    """Logs ``rate`` events a second until its hard time limit kills it."""
    logger = llama.logger
    with open(counter, "r+b") as file, mmap.mmap(file.fileno(), 16) as shared:
        shared[8:16] = struct.pack("q", os.getpid())
        started = time.perf_counter()
        for number in range(10**9):
            delay = started + number / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            logger.created(("track", number), run=run)
            shared[:8] = struct.pack("q", number + 1)


def _worker(
    pool: list[str], instrumented: bool, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    environment = {**os.environ, **env, "BENCH_INSTRUMENT": "1" if instrumented else "0"}
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(HERE), os.environ.get("PYTHONPATH")])
    )
    queue = env["BENCH_QUEUE"]
    argv = [sys.executable, "-m", "celery", "-A", "bench_celery", "worker", "-Q", queue,
            "-n", f"{queue}@%h", "--without-gossip", "--without-mingle",
            "--without-heartbeat", "-l", os.environ.get("BENCH_LOG", "WARNING"), *pool]  # fmt: skip
    with log.open("ab") as output:
        return subprocess.Popen(
            argv, env=environment, stdout=output, stderr=subprocess.STDOUT, cwd=HERE
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def _per_task_us(client: Celery, tasks: int) -> float:
    first = client.send_task("bench_celery.stamp")
    for _ in range(tasks):
        client.send_task("bench_celery.empty")
    last = client.send_task("bench_celery.stamp")
    return (last.get(timeout=300) - first.get(timeout=300)) / tasks * 1e6


def overhead(env: dict[str, str], client: Celery, args: argparse.Namespace, log: Path) -> None:
    for label, pool in (("solo", ["-P", "solo"]), ("prefork -c 1", ["-P", "prefork", "-c", "1"])):
        results: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.rounds):
            for instrumented in (False, True):
                worker = _worker(pool, instrumented, env, log)
                try:
                    _per_task_us(client, 200)  # warm-up: imports, connections, the pool
                    results[instrumented].append(_per_task_us(client, args.tasks))
                finally:
                    _stop(worker)
        bare, with_it = (statistics.median(results[key]) for key in (False, True))
        best = min(results[True]) - min(results[False])
        print(f"{label:13} bare {bare:7.0f} us/task (runs {_span(results[False])}), "
              f"instrumented {with_it:7.0f} us/task (runs {_span(results[True])}): "
              f"{with_it - bare:+.0f} us/task; best runs {best:+.0f} us/task")  # fmt: skip


def in_process(dsn: str, schema: str, calls: int, rounds: int) -> None:
    """The handlers alone: ``Task.apply()`` (the worker's tracer, no broker) in this process.

    Two apps, one instrumented, rounds alternating; the bare app's tasks still pass the
    integration's handlers (signals are global), which return at once for another app.
    """
    bare_app = Celery("bench-bare", set_as_current=False)
    instrumented_app = Celery("bench-instrumented", set_as_current=False)

    @bare_app.task
    def bare() -> None:
        """Nothing."""

    @instrumented_app.task
    def instrumented() -> None:
        """Nothing."""

    def per_call_us(task: Any) -> float:
        started = time.perf_counter()
        for _ in range(calls):
            task.apply()
        return (time.perf_counter() - started) / calls * 1e6

    with LlamaLogger(dsn, schema=schema) as logger:
        instrument(instrumented_app, logger)
        per_call_us(bare), per_call_us(instrumented)  # warm-up
        before, after = [], []
        for _ in range(rounds):
            before.append(per_call_us(bare))
            after.append(per_call_us(instrumented))
    b, a = statistics.median(before), statistics.median(after)
    print(
        f"in one process, Task.apply(): bare {b:.1f} us/call (runs {_span(before, 1)}), "
        f"instrumented {a:.1f} us/call (runs {_span(after, 1)}): +{a - b:.1f} us/call; "
        f"best runs {min(before):.1f} vs {min(after):.1f}: +{min(after) - min(before):.1f} us/call"
    )


def _span(values: list[float], digits: int = 0) -> str:
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


def _wait_for_death(pid: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.01)
    raise RuntimeError(f"process {pid} still alive 30 s after its time limit")


def _read(counter: str) -> tuple[int, int]:
    """(events logged so far, pid of the process logging them)."""
    with open(counter, "rb") as file:
        logged, pid = struct.unpack("qq", file.read(16))
    return logged, pid


def _stored(env: dict[str, str], run: str) -> int:
    import psycopg
    from psycopg import sql

    with psycopg.connect(env["LLAMALOG_DSN"]) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.llama_log WHERE details->>'run' = %s").format(
                sql.Identifier(env["LLAMALOG_SCHEMA"])
            ),
            (run,),
        ).fetchone()
    return int(row[0]) if row else 0


def one_kill(env: dict[str, str], client: Celery, rate: int, how: str, after: float) -> int:
    """Events lost when the task is ended ``how`` after about ``after`` seconds."""
    run = uuid.uuid4().hex
    with tempfile.NamedTemporaryFile(delete=False) as counter:
        counter.write(b"\0" * 16)
    options = {"time_limit": after} if how == "time limit" else {}
    result = client.send_task("bench_celery.steady", (rate, counter.name, run), **options)
    if how == "SIGKILL":
        deadline = time.monotonic() + 120
        while _read(counter.name)[0] < rate * after:  # a benchmark may poll; tests may not
            if time.monotonic() > deadline:
                raise RuntimeError("the task did not start")
            time.sleep(0.005)
        os.kill(_read(counter.name)[1], signal.SIGKILL)
    # TimeLimitExceeded or WorkerLostError: the point of the exercise.
    result.get(timeout=120, propagate=False)
    # Celery stores a time limit's result before it ends the process: wait for the death.
    _wait_for_death(_read(counter.name)[1])
    logged = _read(counter.name)[0]
    os.unlink(counter.name)
    return logged - _stored(env, run)


def kill_window(env: dict[str, str], client: Celery, args: argparse.Namespace, log: Path) -> None:
    worker = _worker(["-P", "prefork", "-c", "1"], True, env, log)
    try:
        for how in ("SIGKILL", "time limit"):
            lost = [
                one_kill(env, client, args.rate, how, 1.5 + run * 0.25)
                for run in range(args.kill_runs)
            ]
            windows = [count / args.rate * 1000 for count in lost]
            print(f"  {how:10}: lost {lost} events = median {statistics.median(windows):.0f} ms, "
                  f"max {max(windows):.0f} ms of events")  # fmt: skip
    finally:
        _stop(worker)


def recycled(env: dict[str, str], client: Celery, args: argparse.Namespace, log: Path) -> None:
    import psycopg
    from psycopg import sql

    run = uuid.uuid4().hex
    schema = sql.Identifier(env["LLAMALOG_SCHEMA"])
    of_job = sql.SQL("SELECT count(*) FROM {}.llama_log WHERE job_id = %s").format(schema)
    started = time.perf_counter()
    worker = _worker(["-P", "prefork", "-c", "4", "--max-tasks-per-child=1"], True, env, log)
    late = 0
    try:
        sent = [client.send_task("bench_celery.logged", (run,)) for _ in range(args.recycled)]
        with psycopg.connect(env["LLAMALOG_DSN"], autocommit=True) as conn:
            for result in sent:
                result.get(timeout=300)
                row = conn.execute(of_job, (result.id,)).fetchone()
                late += not row or row[0] != 1
    finally:
        _stop(worker)
    seconds = time.perf_counter() - started
    stored = _stored(env, run)
    with psycopg.connect(env["LLAMALOG_DSN"]) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.llama_job WHERE job_id = ANY(%s)").format(schema),
            ([result.id for result in sent],),
        ).fetchone()
    jobs = row[0] if row else 0
    print(f"  {args.recycled} tasks in {seconds:.0f} s: {late} read before their event was "
          f"stored; after the worker stopped: {stored} events and {jobs} job records of "
          f"{args.recycled}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn")
    parser.add_argument("--tasks", type=int, default=2000, help="empty tasks per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=int, default=2000, help="events/s of the killed task")
    parser.add_argument("--kill-runs", type=int, default=3)
    parser.add_argument("--recycled", type=int, default=1000, help="tasks on recycled processes")
    parser.add_argument("--only", choices=("overhead", "kills", "recycled"))
    args = parser.parse_args()
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
        broker = backend = REDIS
    except OSError:
        broker, backend = "filesystem://", ""
    queue = f"bench-celery-{uuid.uuid4().hex[:8]}"
    with (
        tempfile.TemporaryDirectory() as folder,
        scratch_schema(args.dsn) as (dsn, schema, version),
    ):
        if not backend:
            backend = f"file://{folder}/results"
            os.mkdir(f"{folder}/results")
        env = {"LLAMALOG_DSN": dsn, "LLAMALOG_SCHEMA": schema, "BENCH_BROKER": broker,
               "BENCH_BACKEND": backend, "BENCH_QUEUE": queue, "BENCH_FOLDER": folder}  # fmt: skip
        client = Celery("bench-client", set_as_current=False)
        _configure(client, broker, backend, queue, folder)
        log = Path(folder) / "worker.log"
        print(f"PostgreSQL {version}, broker {broker.split(':')[0]}, "
              f"{args.tasks} empty tasks per round, {args.rounds} rounds, medians")  # fmt: skip
        if args.only in (None, "overhead"):
            in_process(dsn, schema, 2000, 15)
            overhead(env, client, args, log)
        if args.only in (None, "kills"):
            print(f"a prefork task logging {args.rate:,} events/s, ended by SIGKILL (as "
                  f"the OOM killer does) or by its hard time_limit, {args.kill_runs} runs "
                  "each")  # fmt: skip
            kill_window(env, client, args, log)
        if args.only in (None, "recycled") and args.recycled:
            print("prefork -c 4 --max-tasks-per-child=1, one event per task, each task's row "
                  "read as its result arrives")  # fmt: skip
            recycled(env, client, args, log)
    print("command: .venv/bin/python benchmarks/bench_celery.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
