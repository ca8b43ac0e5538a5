"""OutboxCursor: every committed event id handed out exactly once, even when transactions
commit out of id order or roll back."""

from __future__ import annotations

import pytest

from runnerhub.live.outbox import MAX_HOLES, OutboxCursor


def test_in_order_ids_are_handed_out_once() -> None:
    c = OutboxCursor(start_after=10)
    assert c.accept([11, 12, 13], now=0) == [11, 12, 13]
    assert c.read_after == 13
    assert c.accept([11, 12, 13], now=1) == []


def test_ids_at_or_below_the_start_are_history() -> None:
    c = OutboxCursor(start_after=10)
    assert c.accept([9, 10, 11], now=0) == [11]


def test_a_late_commit_fills_its_hole_and_is_handed_out() -> None:
    c = OutboxCursor(start_after=0)
    assert c.accept([1, 3], now=0) == [1, 3]
    assert c.holes == 1
    assert c.read_after == 1  # keep reading from the hole
    assert c.accept([3, 2], now=1) == [2]  # 3 again: not repeated
    assert c.holes == 0
    assert c.read_after == 3


def test_a_rolled_back_id_is_given_up_after_the_wait() -> None:
    c = OutboxCursor(start_after=0, gap_wait_s=5)
    c.accept([1, 3, 4], now=0)
    assert c.accept([3, 4], now=4.9) == []
    assert c.read_after == 1
    assert c.accept([3, 4], now=5.1) == []
    assert c.holes == 0
    assert c.read_after == 4
    # Had it committed after all, it is no longer looked for (a live view, not a ledger).
    assert c.accept([5], now=6) == [5]


def test_a_huge_jump_remembers_only_the_newest_holes() -> None:
    c = OutboxCursor(start_after=0)
    c.accept([MAX_HOLES * 3], now=0)
    assert c.holes == MAX_HOLES
    assert c.read_after == MAX_HOLES * 2 - 1


def test_a_negative_wait_is_refused() -> None:
    with pytest.raises(ValueError, match="gap_wait_s"):
        OutboxCursor(0, gap_wait_s=-1)
