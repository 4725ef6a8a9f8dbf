"""The ledger on its own: the accounting identity, flush marks, the keys of ``stats()``."""

from __future__ import annotations

import attrs
from hypothesis import given
from hypothesis import strategies as st

from llamalogger._pipeline.ledger import Ledger, Outcome

PARTS = ("written", "rejected", "dropped", "on_disk", "queued")


def adds_up(counts: dict[str, int]) -> bool:
    return counts["enqueued"] == sum(counts[part] for part in PARTS)


# What the pipeline does, step by step: a logging call queues events, one is refused at
# the call, the writer takes a batch, delivery settles part of what is in flight (written,
# rejected, dropped or put on disk), a replay moves events from disk to the table (or sets
# them aside as rejected), and an unexpected error is counted.
steps = st.lists(
    st.one_of(
        st.tuples(st.just("log"), st.integers(0, 50)),
        st.tuples(st.just("refuse"), st.just(0)),
        st.tuples(st.just("take"), st.integers(0, 50)),
        st.tuples(st.just("settle"), st.tuples(*[st.integers(0, 20)] * 4)),
        st.tuples(st.just("replay"), st.tuples(st.integers(0, 20), st.booleans())),
        st.tuples(st.just("error"), st.integers(0, 3)),
    ),
    max_size=60,
)


@given(steps)
def test_the_identity_holds_after_every_outcome_applied(script: list[tuple[str, object]]) -> None:
    """Whatever outcomes are applied, as long as each settles only events that were taken
    (and a replay only events that are on disk), enqueued == written + rejected + dropped
    + on_disk + queued after every step."""
    ledger = Ledger()
    queued = in_flight = on_disk = 0
    for kind, argument in script:
        if kind == "log":
            queued += argument  # type: ignore[operator]
        elif kind == "refuse":
            ledger.refuse()
        elif kind == "take":
            count = min(argument, queued)  # type: ignore[type-var]
            queued -= count
            in_flight += count
            ledger.take(count)
        elif kind == "settle":
            wanted = dict(zip(("written", "rejected", "dropped", "on_disk"), argument, strict=True))  # type: ignore[call-overload]
            placed: dict[str, int] = {}
            for name, count in wanted.items():  # no more than is in flight
                placed[name] = min(count, in_flight - sum(placed.values()))
            settled = sum(placed.values())
            ledger.settle(settled, Outcome(**placed, spilled=placed["on_disk"], batches=1))
            in_flight -= settled
            on_disk += placed["on_disk"]
        elif kind == "replay":
            count, stored = argument  # type: ignore[misc]
            count = min(count, on_disk)
            moved = {"written": count} if stored else {"rejected": count}
            ledger.apply(Outcome(on_disk=-count, replayed=count if stored else 0, **moved))
            on_disk -= count
        else:
            ledger.apply(Outcome(errors=1, retried=argument))  # type: ignore[arg-type]
        counts = ledger.snapshot(queued)
        assert adds_up(counts), (kind, counts)
        assert (counts["queued"], counts["queue_depth"], counts["on_disk"]) == (
            queued + in_flight,
            queued,
            on_disk,
        )


def test_a_flush_mark_is_reached_once_every_event_before_it_is_settled() -> None:
    ledger = Ledger()
    ledger.take(3)
    mark = ledger.flush_mark(queue_depth=2)  # 3 in a batch, 2 more queued
    ledger.settle(3, Outcome(written=3))
    assert not ledger.flushed(mark)
    ledger.take(2)
    assert not ledger.flushed(mark)
    ledger.settle(2, Outcome(on_disk=2))
    assert ledger.flushed(mark)


def test_stats_show_every_outcome_field_in_the_documented_order() -> None:
    """A new counter is one new field of Outcome: it shows in stats() by its name."""
    counts = Ledger().snapshot(0)
    assert list(counts) == [
        "enqueued",
        "written",
        "rejected",
        "dropped",
        "on_disk",
        "queued",
        "queue_depth",
        "retried",
        "sanitised",
        "batches",
        "spilled",
        "replayed",
        "errors",
        "jobs",
    ]
    assert {field.name for field in attrs.fields(Outcome)} <= set(counts)


def test_job_records_are_counted_in_jobs_when_taken_or_refused() -> None:
    """Job records are records: in every counter as events are, and also in ``jobs``."""
    ledger = Ledger()
    ledger.take(20, jobs=1)
    ledger.refuse(job=True)
    ledger.refuse()
    ledger.settle(20, Outcome(written=20))
    counts = ledger.snapshot(3)
    assert (counts["enqueued"], counts["jobs"], counts["written"], counts["dropped"]) == (
        25,
        2,
        20,
        2,
    )


def test_a_refused_event_is_enqueued_and_dropped() -> None:
    ledger = Ledger()
    ledger.refuse()
    counts = ledger.snapshot(0)
    assert (counts["enqueued"], counts["dropped"], counts["queued"]) == (1, 1, 0)
