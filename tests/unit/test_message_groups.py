"""How a batch of ids is cut into broker messages (storage.publisher.message_groups)."""

from __future__ import annotations

import pytest

from storage.publisher import (
    IDS_PER_MESSAGE,
    SPREAD,
    TASK_PROCESS_ITEM,
    TASK_PROCESS_ITEMS,
    message_groups,
    task_call,
)


@pytest.mark.parametrize("count", [0, 1, 7, SPREAD, SPREAD * 3, 2000, 4096])
def test_every_id_travels_once_in_order(count: int) -> None:
    """Flattening the groups gives back exactly the ids published, in their order."""
    ids = list(range(100, 100 + count))
    groups = message_groups(ids)
    assert [item_id for group in groups for item_id in group] == ids
    assert all(1 <= len(group) <= IDS_PER_MESSAGE for group in groups)


def test_no_group_is_bigger_than_a_spread_of_what_follows_it() -> None:
    """Each group of several ids has at least SPREAD times its size queued behind it, so the
    last groups shrink and the last SPREAD ids go one per message."""
    groups = message_groups(list(range(2000)))
    behind = 2000
    for group in groups:
        behind -= len(group)
        assert len(group) == 1 or len(group) * SPREAD <= behind
    assert all(len(group) == 1 for group in groups[-SPREAD:])
    assert len(groups[0]) == IDS_PER_MESSAGE
    assert len(groups) < 2000 / 5  # the point: far fewer messages than items


def test_a_small_batch_is_all_single_messages() -> None:
    """A job no bigger than the spread keeps one message per item, so every thread can help."""
    assert message_groups([5, 6, 7]) == [[5], [6], [7]]


def test_one_id_runs_process_item_and_a_group_process_items() -> None:
    """A single id keeps the one-item task (old workers understand it); a group the new one."""
    assert task_call([9]) == (TASK_PROCESS_ITEM, [9])
    assert task_call([9, 10]) == (TASK_PROCESS_ITEMS, [[9, 10]])
