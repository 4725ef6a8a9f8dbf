"""The demo: a simulated album import, written through the real writer, then its job tree."""

from __future__ import annotations

import asyncio
import random
import time
from concurrent.futures import ThreadPoolExecutor

import attrs
import psycopg

from .. import Category, LlamaLogger, bind_job
from .._conninfo import DEFAULT_SCHEMA
from ..queries import JobNode, job_tree

__all__ = ["DemoResult", "run_demo"]


@attrs.frozen
class DemoResult:
    root_job_id: str
    events: int
    seconds: float  # from the first log call until flush() returned
    flushed: bool
    tree: JobNode

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def _simulate_import(logger: LlamaLogger, tracks: int) -> str:
    album = ("album", random.randrange(10**6, 10**7))
    artists = [("artist", random.randrange(10**5, 10**6)) for _ in range(3)]

    def track_events(number: int) -> None:
        track = ("track", f"{album[1]}-{number:04d}")
        logger.created(track, title=f"Track {number}", position=number)
        logger.linked(track, album)
        logger.linked(artists[number % len(artists)], track)
        with logger.job("enrich-track"):
            for source in ("musicbrainz", "discogs", "lyrics"):
                logger.log(Category.ENRICHED, f"{source} data added", entity=track)
            with logger.job("match-recording"):
                logger.log(Category.MATCHED, "recording matched", entity=track, score=0.97)

    def import_track(number: int) -> None:
        with logger.job("import-track"):
            track_events(number)

    @logger.job("fetch-cover-art")
    async def fetch_cover_art(number: int) -> None:
        await asyncio.sleep(0)  # lets the other tasks run: their jobs must not mix
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


def run_demo(dsn: str, *, schema: str = DEFAULT_SCHEMA, tracks: int = 2000) -> DemoResult:
    """Import one simulated album of ``tracks`` tracks and read its job tree back."""
    with LlamaLogger(dsn, schema=schema) as logger:
        started = time.perf_counter()
        root_job_id = _simulate_import(logger, tracks)
        flushed = logger.flush(timeout=60)
        seconds = time.perf_counter() - started
        events = logger.stats()["written"]
    with psycopg.connect(dsn) as conn:
        tree = job_tree(conn, root_job_id, schema=schema)
    if tree is None:
        raise RuntimeError(f"the demo import {root_job_id} left no rows")
    return DemoResult(root_job_id, events, seconds, flushed, tree)
