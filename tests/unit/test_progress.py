"""ProgressDisplay: a redrawn bar on a terminal, a plain line per 10 % elsewhere."""

from __future__ import annotations

import io

from llamalogger.schema import ProgressDisplay


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_without_a_terminal_one_line_per_tenth_with_rate_and_eta() -> None:
    """A log gets ten short lines for a whole run, whatever the number of batches."""
    out = io.StringIO()
    clock = FakeClock()
    show = ProgressDisplay(out, terminal=False, clock=clock)
    for done in range(0, 1001, 25):
        clock.now = 100.0 + done / 100  # 100 rows/s
        show("0002 backfill", done, 1000)
    lines = out.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[0] == "0002 backfill: 10% (100/1,000 rows, 100 rows/s, ETA 0:00:09)"
    assert lines[-1] == "0002 backfill: 100% (1,000/1,000 rows, 100 rows/s, ETA 0:00:00)"


def test_on_a_terminal_the_bar_is_redrawn_in_place_and_ends_with_a_newline() -> None:
    out = io.StringIO()
    clock = FakeClock()
    show = ProgressDisplay(out, terminal=True, clock=clock)
    show("backfill", 0, 200)
    clock.now += 1
    show("backfill", 50, 200)
    clock.now += 1
    show("backfill", 200, 200)
    text = out.getvalue()
    assert text.count("\r") == 3
    assert text.endswith("\n")
    assert text.count("\n") == 1
    assert "[########......................]  25% 50/200 rows 50 rows/s ETA 0:00:03" in text
    assert "100% 200/200 rows 100 rows/s ETA 0:00:00" in text


def test_a_new_label_starts_its_own_count() -> None:
    """Each step gets its own rate and its own ten lines."""
    out = io.StringIO()
    show = ProgressDisplay(out, terminal=False, clock=FakeClock())
    show("0002 backfill", 10, 10)
    show("0004 backfill_late_rows", 10, 10)
    assert [line.split(":")[0] for line in out.getvalue().splitlines()] == [
        "0002 backfill",
        "0004 backfill_late_rows",
    ]
