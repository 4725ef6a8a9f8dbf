"""The background writer pipeline (private): caller -> queue -> delivery -> PostgreSQL or disk.

``LlamaLogger`` wires one thing: a sink (``postgres_sink``, or any ``Sink``) and
``Settings`` go to ``open_writer``. Inside, the parts have one job each:

- ``intake``: the bounded queue callers put into (the hot path, backpressure, drops),
  handing batches to the writer;
- ``writer``: the thread, batching, ``flush`` and ``close``; steps the backlog;
- ``ledger``: the counters and their identity (``stats()``);
- ``delivery``: one batch to the sink: retries, bisection of a refused batch, dead letters;
- ``backlog``: spill mode: batches to disk, their replay in order, files of others;
- ``retry``: the schedule both of those share; ``spill``: the files on disk;
- ``sanitise``: making any event storable; ``sink``: the ``Sink`` protocol and the COPY sink;
- ``connect_options``: the writer's connection options, the user's checked against them;
- ``write_size``: how many rows a write may hold while a limit of the server's cuts it short;
- ``progress``: the server's own word on the sink's write in progress (slow, or hung?);
- ``process``: exit and fork hooks; ``diagnostics``: rate-limited reports;
- ``settings``: the one frozen ``Settings``, with every default.
"""

from __future__ import annotations

from typing import Any

from psycopg_pool import ConnectionPool

from .connect_options import OWNED as OWNED_CONNECT_OPTIONS
from .connect_options import checked_connect_options
from .diagnostics import diagnostics
from .process import deliver_all
from .settings import DEFAULT, FullPolicy, Settings, Spill
from .sink import BatchSink, Sink
from .spill import SpillDir, default_spill_root, target_dirname
from .writer import Writer

__all__ = [
    "DEFAULT",
    "OWNED_CONNECT_OPTIONS",
    "BatchSink",
    "FullPolicy",
    "Settings",
    "Sink",
    "Spill",
    "Writer",
    "checked_connect_options",
    "default_spill_root",
    "deliver_all",
    "diagnostics",
    "open_writer",
    "postgres_sink",
    "sink_label",
]


def postgres_sink(
    *,
    dsn: str | None,
    pool: ConnectionPool[Any] | None,
    schema: str,
    connect_options: dict[str, Any] | None = None,
) -> BatchSink:
    """The COPY sink into ``{schema}.llama_log``: through a connection of its own to
    ``dsn`` (with ``connect_options``, checked by ``checked_connect_options``), or borrowed
    from ``pool`` (exactly one of them). Connects to nothing yet."""
    return BatchSink(conninfo=dsn, pool=pool, schema=schema, connect_options=connect_options)


def sink_label(sink: Sink) -> str:
    """Where ``sink`` writes, for a repr: never a password."""
    return sink.label if isinstance(sink, BatchSink) else f"<{type(sink).__name__}>"


def open_writer(sink: Sink, settings: Settings) -> Writer:
    """A running writer into ``sink``, with the spill directory ``settings`` ask for."""
    return Writer(sink, settings, _open_spill(sink, settings))


def _open_spill(sink: Sink, settings: Settings) -> SpillDir | None:
    choice = settings.spill_dir
    if choice is Spill.OFF:
        return None
    target = sink.target()
    path = default_spill_root() / target_dirname(target) if choice is Spill.DEFAULT else choice
    try:
        return SpillDir(path, target, settings.spill_max_bytes)
    except OSError as exc:
        diagnostics.warning(
            "llamalogger cannot use %s for spill files (%s): during an outage events are "
            "kept in memory only, up to queue_size",
            path,
            exc,
        )
        return None
