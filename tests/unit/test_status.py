"""The status vocabulary: transition table and job status derived from counts."""

import itertools

import pytest

from jobs.status import (
    IllegalTransition,
    ItemStatus,
    JobStatus,
    check_item_transition,
    job_status_from_counts,
)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (ItemStatus.QUEUED, ItemStatus.RUNNING),
        (ItemStatus.RUNNING, ItemStatus.SUCCEEDED),
        (ItemStatus.RUNNING, ItemStatus.QUEUED),
        (ItemStatus.FAILED, ItemStatus.QUEUED),
        (ItemStatus.QUEUED, ItemStatus.CANCELED),
    ],
)
def test_legal_moves_pass(current: ItemStatus, target: ItemStatus) -> None:
    """Every move the pipeline makes is in the table."""
    check_item_transition(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (ItemStatus.SUCCEEDED, ItemStatus.QUEUED),
        (ItemStatus.SUCCEEDED, ItemStatus.RUNNING),
        (ItemStatus.CANCELED, ItemStatus.QUEUED),
        (ItemStatus.QUEUED, ItemStatus.SUCCEEDED),
        (ItemStatus.FAILED, ItemStatus.SUCCEEDED),
    ],
)
def test_illegal_moves_raise(current: ItemStatus, target: ItemStatus) -> None:
    """A succeeded item can never run again, and nothing skips `running`."""
    with pytest.raises(IllegalTransition):
        check_item_transition(current, target)


def test_terminal_item_states_have_no_way_out_but_retry() -> None:
    """Only `failed` may leave a terminal state (retry failed items)."""
    for status in (ItemStatus.SUCCEEDED, ItemStatus.CANCELED):
        for target in ItemStatus:
            with pytest.raises(IllegalTransition):
                check_item_transition(status, target)


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({"queued": 3}, JobStatus.QUEUED),
        ({"queued": 2, "running": 1}, JobStatus.RUNNING),
        ({"queued": 1, "succeeded": 1}, JobStatus.RUNNING),
        ({"succeeded": 3}, JobStatus.SUCCEEDED),
        ({"failed": 3}, JobStatus.FAILED),
        ({"succeeded": 2, "failed": 1}, JobStatus.COMPLETED_WITH_ERRORS),
        ({"succeeded": 2, "canceled": 1}, JobStatus.CANCELED),
    ],
)
def test_job_status_from_counts(counts: dict[str, int], expected: JobStatus) -> None:
    """A job's status follows from its item counts alone."""
    full = {k: counts.get(k, 0) for k in ("queued", "running", "succeeded", "failed", "canceled")}
    assert job_status_from_counts(total=sum(full.values()), **full) == expected


def test_every_count_combination_has_a_status() -> None:
    """No combination of counts falls through the derivation."""
    for combo in itertools.product(range(3), repeat=5):
        queued, running, succeeded, failed, canceled = combo
        if sum(combo) == 0:
            continue
        status = job_status_from_counts(
            total=sum(combo),
            queued=queued,
            running=running,
            succeeded=succeeded,
            failed=failed,
            canceled=canceled,
        )
        assert status in JobStatus


def test_every_error_code_is_listed_in_the_readme() -> None:
    """The README's error table names every member of the registry (and no code twice)."""
    from pathlib import Path

    from jobs.error_codes import ErrorCode

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    listed = [line.split("`")[1] for line in readme.splitlines() if line.startswith("| `")]
    codes = [c for c in listed if c in {e.value for e in ErrorCode}]
    assert sorted(codes) == sorted(e.value for e in ErrorCode)
