"""Process life: closing every live writer at exit, and resetting them in a forked child.

Writers register themselves here; this module knows them only through ``ProcessBound``,
so it imports nothing of the writer.
"""

from __future__ import annotations

import atexit
import os
import weakref
from typing import Protocol

__all__ = ["ProcessBound", "register", "unregister"]


class ProcessBound(Protocol):
    """What the process hooks need of a writer."""

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


def _close_all() -> None:
    for writer in list(_live):
        writer.close()


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
