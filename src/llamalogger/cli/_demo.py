"""The demo: a simulated album import, written through the real writer, then its job tree.

By default a small album (12 tracks, 3 artists) where one track's enrichment fails and one
track's lyrics are fetched on the second attempt, as a task queue retries a task: the point
of the job tree is to find those two. ``--tracks N`` makes it benchmark-sized.
"""

from __future__ import annotations

import asyncio
import random
import time
from concurrent.futures import ThreadPoolExecutor

import attrs
import psycopg

from .. import Category, LlamaLogger, bind_job, new_job_id
from .._conninfo import DEFAULT_SCHEMA
from ..queries import JobNode, job_tree

__all__ = ["DEFAULT_TRACKS", "DemoResult", "run_demo"]

DEFAULT_TRACKS = 12


class NoRecordingFound(LookupError):
    """The demo's one failure: a track whose recording cannot be matched."""


@attrs.frozen
class DemoResult:
    root_job_id: str
    #: The job that failed, and the job whose first attempt was retried.
    failed_job_id: str
    retried_job_id: str
    events: int  # stored in the import's tree
    seconds: float  # from the first log call until flush() returned (events and job records)
    flushed: bool
    tree: JobNode

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


@attrs.define
class _Marked:
    """The ids of the jobs the demo's summary points at, set as the import runs."""

    failed: str = ""
    retried: str = ""


def _fetch_lyrics_with_retry(logger: LlamaLogger, track: tuple[str, str]) -> str:
    """A task its queue runs twice under one job id, as an integration records it: the
    first attempt times out and is retried, the second succeeds."""
    job_id = new_job_id()
    for attempt in (1, 2):
        with logger.task_job("fetch-lyrics", job_id=job_id, attempt=attempt, entity=track):
            if attempt == 1:
                timeout = TimeoutError("lyrics service did not answer")
                logger.log(
                    Category.SKIPPED,
                    f"attempt {attempt} failed, retrying: TimeoutError: {timeout}",
                    level="warning",
                    entity=track,
                )
                logger.task_outcome("retried", error=timeout)
                continue
            logger.log(Category.ENRICHED, "lyrics added", entity=track)
    return job_id


def _simulate_import(logger: LlamaLogger, tracks: int, marked: _Marked) -> str:
    album = ("album", random.randrange(10**6, 10**7))
    artists = [("artist", random.randrange(10**5, 10**6)) for _ in range(3)]
    failing = tracks // 2  # the one track whose recording cannot be matched
    retried = 0  # the one track whose lyrics need a second attempt

    def track_events(number: int) -> None:
        track = ("track", f"{album[1]}-{number:04d}")
        logger.created(track, title=f"Track {number}", position=number)
        logger.linked(track, album)
        logger.linked(artists[number % len(artists)], track)
        with logger.job("enrich-track"):
            for source in ("musicbrainz", "discogs", "lyrics"):
                logger.log(Category.ENRICHED, f"{source} data added", entity=track)
            try:
                with logger.job("match-recording") as match:
                    if number == failing:
                        marked.failed = match.job_id
                        raise NoRecordingFound(f"no recording matches track {track[1]}")
                    logger.log(Category.MATCHED, "recording matched", entity=track, score=0.97)
            except NoRecordingFound:  # logged as FAILED by its job; the import goes on
                logger.log(Category.SKIPPED, "left unmatched", entity=track, level="warning")
        if number == retried:
            marked.retried = _fetch_lyrics_with_retry(logger, track)

    def import_track(number: int) -> None:
        with logger.job("import-track"):
            track_events(number)

    @logger.job("fetch-cover-art")
    async def fetch_cover_art(number: int) -> None:
        # A cover art service takes a moment to answer (the job's real duration shows it),
        # and meanwhile the other tasks run: their jobs must not mix.
        await asyncio.sleep(0.02)
        track = ("track", f"{album[1]}-{number:04d}")
        logger.log(Category.ENRICHED, "cover art found", entity=track)

    async def import_track_async(number: int) -> None:
        with logger.job("import-track"):
            track_events(number)
            await fetch_cover_art(number)

    async def import_half(numbers: range) -> None:
        await asyncio.gather(*(import_track_async(number) for number in numbers))

    with logger.job("import-album") as root:
        logger.created(album, title="A Simulated Album", tracks=tracks)
        for artist in artists:
            with logger.job("link-artist"):
                logger.created(artist)
                logger.linked(artist, album)
        half = tracks // 2
        # Threads do not inherit the job: bind_job carries it into the pool.
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(bind_job(import_track), range(half)))
        # asyncio tasks inherit it by themselves.
        asyncio.run(import_half(range(half, tracks)))
    return root.job_id


def run_demo(dsn: str, *, schema: str = DEFAULT_SCHEMA, tracks: int = DEFAULT_TRACKS) -> DemoResult:
    """Import one simulated album of ``tracks`` tracks and read its job tree back."""
    marked = _Marked()
    with LlamaLogger(dsn, schema=schema) as logger:
        started = time.perf_counter()
        root_job_id = _simulate_import(logger, tracks, marked)
        flushed = logger.flush(timeout=60)
        seconds = time.perf_counter() - started
    with psycopg.connect(dsn) as conn:
        tree = job_tree(conn, root_job_id, schema=schema)
    if tree is None:
        raise RuntimeError(f"the demo import {root_job_id} left no rows")
    events = sum(job.events for job in tree.walk())  # stored, job records not included
    return DemoResult(root_job_id, marked.failed, marked.retried, events, seconds, flushed, tree)
