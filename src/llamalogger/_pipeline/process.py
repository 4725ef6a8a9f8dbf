"""Process life: delivering every live writer at the end of a task or of the process, and
resetting them in a forked child.

Writers register themselves here; this module knows them only through ``ProcessBound``,
so it imports nothing of the writer. A process often holds more than one logger (a
module-level one in the task module, another held by a task-queue integration): the end
of a task delivers all of them, side by side under one deadline.
"""

from __future__ import annotations

import atexit
import os
import time
import weakref
from typing import Protocol

__all__ = ["ProcessBound", "deliver_all", "register", "unregister"]


class ProcessBound(Protocol):
    """What the process hooks need of a writer."""

    block_timeout: float
    exit_timeout: float

    def flush(self, timeout: float | None = None) -> bool: ...

    def cancel_write(self) -> None: ...

    def report_undelivered(self, waited: float) -> None: ...

    def close(self, timeout: float | None = None) -> bool: ...

    def after_fork_in_child(self) -> None: ...


# Weak: a logger that its owner dropped without close() must still be collectable.
_live: weakref.WeakSet[ProcessBound] = weakref.WeakSet()
_installed = False


def register(writer: ProcessBound) -> None:
    """Close ``writer`` at interpreter exit and reset it in forked children."""
    _install()
    _live.add(writer)


def unregister(writer: ProcessBound) -> None:
    _live.discard(writer)


def _wake_all(writers: list[ProcessBound]) -> float:
    """Ask every writer to write what it holds now; they work side by side from here, so
    waiting for them one after the other costs the slowest one's time, not the sum.
    Returns the moment they were asked."""
    start = time.monotonic()
    for writer in writers:
        writer.flush(0)  # marks what is queued and wakes the writer thread; never waits
    return start


def _wait(writer: ProcessBound, until: float) -> bool:
    return writer.flush(max(0.0, until - time.monotonic()))


def deliver_all() -> bool:
    """Every live writer of this process delivers what it holds, or puts it on disk.

    Bounded as one writer's end of task is: each gets its ``block_timeout`` from one
    common start; one still waiting then has its hanging write cancelled (so that its
    batch can go to disk) and gets ``exit_timeout`` more, again from one common moment.
    A writer still not done then reports what it leaves undelivered. True if all are done.
    """
    writers = list(_live)
    if not writers:
        return True
    start = _wake_all(writers)
    pending = [w for w in writers if not _wait(w, start + w.block_timeout)]
    if not pending:
        return True
    for writer in pending:
        writer.cancel_write()  # a write that hangs: let the writer put its batch on disk
    second = time.monotonic()
    left = [w for w in pending if not _wait(w, second + w.exit_timeout)]
    for writer in left:
        writer.report_undelivered(time.monotonic() - start)
    return not left


def _close_all() -> None:
    writers = list(_live)
    start = _wake_all(writers)
    for writer in writers:
        # One deadline for all: a writer woken at `start` has been writing (or retrying)
        # while the ones before it were closed, so each gets only what is left of its
        # own exit_timeout.
        writer.close(max(0.0, start + writer.exit_timeout - time.monotonic()))


def _after_fork_in_child() -> None:
    for writer in list(_live):
        writer.after_fork_in_child()


class _Anchor:
    """The multiprocessing after-fork registration needs a weak-referable object."""


_anchor = _Anchor()


def _arm_multiprocessing_exit(_anchor: object) -> None:
    # multiprocessing children end with os._exit, skipping atexit; they do run the
    # finalizers registered after their start, so closing the writers goes there.
    import multiprocessing.util

    multiprocessing.util.Finalize(None, _close_all, exitpriority=100)


def _install() -> None:
    global _installed  # noqa: PLW0603 - one process-wide registration
    if _installed:
        return
    _installed = True
    atexit.register(_close_all)
    os.register_at_fork(after_in_child=_after_fork_in_child)
    import multiprocessing.util

    multiprocessing.util.register_after_fork(_anchor, _arm_multiprocessing_exit)
