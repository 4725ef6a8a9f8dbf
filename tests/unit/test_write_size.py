"""``WriteSize``: whole batches until a limit of the server's cancels a write, then half
the cancelled size, doubling again after writes at the cap fit."""

from __future__ import annotations

from llamalogger._pipeline.write_size import WriteSize


def test_a_batch_is_one_write_until_a_write_is_cancelled() -> None:
    size = WriteSize()
    batch = list(range(10))
    assert size.parts(batch) == [batch]
    assert size.too_big(10) == 5
    assert size.parts(batch) == [batch[:5], batch[5:]]
    assert size.parts(list(range(11))) == [list(range(5)), list(range(5, 10)), [10]]


def test_the_cap_halves_down_to_one_row_and_grows_back_while_writes_fit() -> None:
    size = WriteSize()
    assert [size.too_big(rows) for rows in (4, 2, 1)] == [2, 1, 1]
    for _ in range(15):
        size.fitted(1)
    assert size.most == 1
    size.fitted(1)  # the sixteenth write at the cap
    assert size.most == 2
    size.fitted(1)  # smaller than the cap: says nothing about it
    assert size.most == 2
