"""Spilling onto a real disk that fills up: a small tmpfs, mounted by the test (it needs root,
as CI has; elsewhere it is skipped with the reason)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamalogger import LlamaLogger

# Nothing listens here (a port of the range kept for private clusters): the database is away.
_NOBODY = "postgresql://postgres@127.0.0.1:5522/nobody"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            subprocess.run(["umount", "-l", str(mount)], check=False, timeout=30)


def test_a_full_spill_disk_drops_counted_and_keeps_no_partial_file(small_disk: Path) -> None:
    """The disk fills during an outage: what does not fit is dropped and counted, what fits
    waits on disk, and no half-written file holds space; once the files are replayed (here:
    removed, as a replay does), the next outage spills again."""
    spill = small_disk / "spill"
    first = LlamaLogger(_NOBODY, spill_dir=spill, batch_size=500, flush_interval=0.05)
    try:
        for number in range(5000):  # about 1 MiB of spill files: four times the disk
            first.created(("track", number), title="x" * 100)
        assert first.flush(timeout=30)
        stats = first.stats()
        assert stats["dropped"] > 0, stats
        assert stats["on_disk"] > 0, stats
        assert stats["on_disk"] + stats["dropped"] == stats["enqueued"], stats
        assert not list(spill.glob("*.partial"))
    finally:
        first.close(timeout=0.5)
    for path in spill.glob("*.jsonl"):
        path.unlink()
    second = LlamaLogger(_NOBODY, spill_dir=spill, flush_interval=0.05)
    try:
        for number in range(50):
            second.created(("track", f"again-{number}"))
        assert second.flush(timeout=30)
        assert (second.stats()["on_disk"], second.stats()["dropped"]) == (50, 0)
    finally:
        second.close(timeout=0.5)
