"""The writer behind PgBouncer in transaction pooling mode: its connection relies on no
prepared statement and no session state, so a replay after an outage finishes even though
the pooler hands the same few server connections to every logger in turn.

The outage is a cut network between the loggers and the pooler (a TCP proxy): the pooler's
own server connections stay open through it, as they do when an application server loses
its pooler for a moment, so whatever a logger left on them is still there afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fixtures.database import count_rows, run_counts
from fixtures.waiting import wait_until
from llamalogger import LlamaLogger

if TYPE_CHECKING:  # fixtures' types only
    from conftest import TcpProxy
    from fixtures.pgbouncer import Bouncer

LOGGERS = 4
# Spill files per logger during the outage: psycopg prepares a statement on its sixth use
# on a connection (its default prepare_threshold of 5), so more than five replays each.
ROUNDS = 30
EVENTS_PER_ROUND = 50


def test_spill_replay_finishes_behind_pgbouncer_in_transaction_mode(
    dsn: str,
    schema: str,
    pgbouncer: Callable[..., Bouncer],
    tcp_proxy: Callable[[str], TcpProxy],
    tmp_path: Path,
) -> None:
    """Four loggers spill through an outage in front of a transaction pool of two server
    connections; afterwards every logger replays its files and every event is stored
    exactly once."""
    bouncer = pgbouncer(dsn, pool_mode="transaction", pool_size=2)
    proxy = tcp_proxy(bouncer.dsn)
    loggers = [
        LlamaLogger(
            proxy.dsn_for(bouncer.dsn),
            schema=schema,
            spill_dir=tmp_path / f"spill-{number}",
            flush_interval=0.05,
        )
        for number in range(LOGGERS)
    ]
    try:
        for number, logger in enumerate(loggers):
            logger.created(("album", number), run="before", seq=number)
            assert logger.flush(timeout=10)
        proxy.cut()
        for round_ in range(ROUNDS):
            for number, logger in enumerate(loggers):
                for event in range(EVENTS_PER_ROUND):
                    seq = (round_ * LOGGERS + number) * EVENTS_PER_ROUND + event
                    logger.created(("track", seq), run="outage", seq=seq)
                assert logger.flush(timeout=10)  # a spill file of its own
        assert all(logger.stats()["spilled"] > 0 for logger in loggers)
        retried = [logger.stats()["retried"] for logger in loggers]
        proxy.restore()
        assert wait_until(lambda: all(logger.stats()["on_disk"] == 0 for logger in loggers), 60), [
            logger.stats() for logger in loggers
        ]
        # Every file went in at its first attempt after the outage (one attempt each may
        # have been under way when the network came back): none met a statement that
        # another logger had prepared on the same server connection, or that was missing.
        failed_replays = [
            logger.stats()["retried"] - before
            for logger, before in zip(loggers, retried, strict=True)
        ]
        assert max(failed_replays) <= 1, failed_replays
    finally:
        for logger in loggers:
            logger.close(timeout=5)
    outage_events = ROUNDS * LOGGERS * EVENTS_PER_ROUND
    assert run_counts(dsn, schema) == {
        "before": (LOGGERS, LOGGERS),
        "outage": (outage_events, outage_events),
    }
    assert count_rows(dsn, schema) == LOGGERS + outage_events
