"""``close()`` keeps within its timeout in spill mode, also when the writer is stuck in a
write over a stalled network: it waits for the writer only part of the time, cancels the
write, and puts what is left on disk a chunk at a time until the deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from llamalogger import LlamaLogger

if TYPE_CHECKING:  # fixtures' types only
    from conftest import TcpProxy

EXIT_TIMEOUT = 2.0
# Generous for a loaded 2-core machine: the writer used to wait 2 s more than asked
# (a 1 s cancel and a 1 s join after the whole timeout), plus the disk's time.
MARGIN = 1.0


@pytest.mark.timing
def test_close_keeps_within_exit_timeout_while_a_write_hangs(
    dsn: str, schema: str, tcp_proxy: Callable[[str], TcpProxy], tmp_path: Path
) -> None:
    """The network stalls while the writer writes; close(), with spilling on and
    exit_timeout=2, returns within 2 s and a margin, and every event is accounted for."""
    proxy = tcp_proxy(dsn)
    logger = LlamaLogger(
        proxy.dsn_for(dsn),
        schema=schema,
        spill_dir=tmp_path,
        exit_timeout=EXIT_TIMEOUT,
        flush_interval=0.05,
    )
    logger.created(("track", 0))
    assert logger.flush(timeout=10)
    proxy.hold()
    for number in range(2_000):
        logger.created(("track", number))
    started = time.monotonic()
    logger.close()
    took = time.monotonic() - started
    proxy.restore()
    stats = logger.stats()
    assert took < EXIT_TIMEOUT + MARGIN, f"close() took {took:.2f}s"
    assert stats["enqueued"] == stats["written"] + stats["on_disk"] + stats["dropped"], stats
