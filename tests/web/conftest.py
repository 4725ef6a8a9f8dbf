"""A run with one of each shape the web view draws, and the view serving it.

The import is written by the real ``LlamaLogger``. What the logger would refuse or cut
(a 1 MB message, details 300 levels deep) and an unfinished job (events, no record: its
process was killed) are inserted with parameterised SQL, as another writer could.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import attrs
import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from fixtures.database import migrated_schema
from llamalogger import Category, LlamaLogger, new_job_id

starlette = pytest.importorskip("starlette", reason="the web extra is not installed")

from starlette.testclient import TestClient  # noqa: E402

from llamalogger.web import create_app  # noqa: E402

# Strings that would run script if any reached the page as markup or as a link.
PWN = "window.__pwned=1"
HOSTILE_NAME = f'<script>{PWN}</script><img src=x onerror="{PWN}">'
HOSTILE_JOB_ID = f'"><img src=x onerror="{PWN}">'
HOSTILE_TYPE = f"javascript:{PWN}"
HOSTILE_ENTITY_ID = f'"><svg onload="{PWN}">'
HOSTILE_MESSAGE = f'<script>{PWN}</script>"><img src=x onerror="{PWN}"> javascript:{PWN}'
BIG_MESSAGE = "<b>" + "x" * 1_000_000 + "</b>"
DEPTH = 300


@attrs.frozen
class Album:
    root: str
    artist: str
    track: str
    failed: str  # enrich-track: left by a ValueError
    retried: str  # fetch-lyrics: attempt 1 retried, attempt 2 succeeded
    unfinished: str  # transcode: events only
    hostile: str  # HOSTILE_JOB_ID named HOSTILE_NAME
    other_root: str  # nightly-sync, later than the album


def tree_jobs(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The jobs of a tree payload (``/api/tree``, the export) by id, one dict per job with
    its columns and its parent's id; checks that every column has a value per job and that
    each parent comes before its children (what the page relies on)."""
    columns = data["jobs"]
    count = len(columns["id"])
    assert {len(values) for values in columns.values()} == {count}
    jobs: dict[str, dict[str, Any]] = {}
    for row in range(count):
        job = {name: values[row] for name, values in columns.items()}
        parent = job["parent"]
        assert (parent == -1) == (row == 0)
        assert parent < row
        job["parent_id"] = None if row == 0 else columns["id"][parent]
        jobs[job["id"]] = job
    return jobs


# The failing step runs as code of a relative file name: its traceback, which the docs'
# screenshot shows, names no directory of the machine the tests ran on.
_FAILING_STEP = compile(
    """with logger.job("enrich-track", entity=("track", "9")) as failed:
    logger.log(Category.ENRICHED, "tempo found", entity=("track", "9"))
    raise ValueError("no key for track 9")
""",
    "catalogue/enrich.py",
    "exec",
)


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"bottom": HOSTILE_MESSAGE}
    for _ in range(levels):
        value = {"down": value}
    return value


def _insert_event(conn: psycopg.Connection[Any], schema: str, **values: Any) -> None:
    query = sql.SQL("INSERT INTO {}.llama_log ({}) VALUES ({})").format(
        sql.Identifier(schema),
        sql.SQL(", ").join(map(sql.Identifier, values)),
        sql.SQL(", ").join(sql.Placeholder() * len(values)),
    )
    conn.execute(query, list(values.values()))


def write_album(dsn: str, schema: str) -> Album:
    with LlamaLogger(dsn, schema=schema) as logger:
        with logger.job("import-album", entity=("album", "1")) as root:
            logger.created(("album", "1"))
            with logger.job("link-artist") as artist:
                logger.linked(("artist", "7"), ("album", "1"))
            with logger.job("import-track") as track:
                logger.created(("track", "9"))
                step = {"logger": logger, "Category": Category}
                with contextlib.suppress(ValueError):
                    exec(_FAILING_STEP, step)
                failed = step["failed"]
            retried = new_job_id()
            for attempt in (1, 2):
                with logger.task_job("fetch-lyrics", job_id=retried, attempt=attempt):
                    logger.log(Category.ENRICHED, f"attempt {attempt}", entity=("track", "9"))
                    if attempt == 1:
                        logger.task_outcome("retried", error=TimeoutError("slow"))
            with logger.job(HOSTILE_NAME, job_id=HOSTILE_JOB_ID):
                logger.log(
                    Category.UPDATED, HOSTILE_MESSAGE, entity=(HOSTILE_TYPE, HOSTILE_ENTITY_ID)
                )
                logger.linked((HOSTILE_TYPE, HOSTILE_ENTITY_ID), ("album", "1"))
        time.sleep(0.01)  # the second run starts later: newest first is a real order
        with logger.job("nightly-sync") as other:
            logger.created(("artist", "8"))
        assert logger.flush(timeout=30)
    unfinished = new_job_id()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for message, details in (
            ("transcoding started", None),
            (BIG_MESSAGE, Jsonb(_deep(DEPTH), dumps=json.dumps)),
        ):
            _insert_event(
                conn, schema, category="UPDATED", message=message, job_id=unfinished,
                parent_job_id=root.job_id, root_job_id=root.job_id, job_name="transcode",
                entity_type="track", entity_id="9", details=details,
            )  # fmt: skip
    return Album(
        root=root.job_id,
        artist=artist.job_id,
        track=track.job_id,
        failed=failed.job_id,
        retried=retried,
        unfinished=unfinished,
        hostile=HOSTILE_JOB_ID,
        other_root=other.job_id,
    )


@pytest.fixture(scope="module")
def album_schema(dsn: str) -> Iterator[tuple[str, Album]]:
    """A schema holding the album, shared by a module's tests (they only read)."""
    with migrated_schema(dsn, "web") as name:
        yield name, write_album(dsn, name)


@pytest.fixture(scope="module")
def album(album_schema: tuple[str, Album]) -> Album:
    return album_schema[1]


@pytest.fixture(scope="module")
def client(dsn: str, album_schema: tuple[str, Album]) -> Iterator[TestClient]:
    app = create_app(dsn, schema=album_schema[0])
    with TestClient(app, base_url="http://127.0.0.1") as test_client:
        yield test_client


@attrs.frozen
class Served:
    url: str
    schema: str
    album: Album


@pytest.fixture(scope="module")
def served(dsn: str, album_schema: tuple[str, Album]) -> Iterator[Served]:
    """The app under uvicorn in a thread, on a free port of 127.0.0.1."""
    uvicorn = pytest.importorskip("uvicorn")
    app = create_app(dsn, schema=album_schema[0])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        assert thread.is_alive(), "uvicorn stopped"
        time.sleep(0.05)
    try:
        yield Served(f"http://127.0.0.1:{port}", album_schema[0], album_schema[1])
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()
