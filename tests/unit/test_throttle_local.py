"""The worker's in-process gate: its width, first-come order, passing a permit on, timeouts."""

from __future__ import annotations

import random
import threading
import time

from workers.throttle_local import LocalGate


def _queued(gate: LocalGate[str], count: int) -> None:
    deadline = time.monotonic() + 5
    while gate.waiting() < count and time.monotonic() < deadline:
        time.sleep(0.001)
    assert gate.waiting() == count


def test_a_full_gate_times_out_and_forgets_the_waiter() -> None:
    """With its one place taken, a second caller gets (False, None) after its timeout and
    is no longer queued, so a later leave frees the place instead of serving a ghost."""
    gate: LocalGate[str] = LocalGate(1)
    assert gate.enter(1) == (True, None)
    assert gate.enter(0.05) == (False, None)
    assert gate.waiting() == 0
    assert gate.pass_on("slot") is False  # nobody to take it: the holder keeps it
    gate.leave()
    assert gate.enter(0) == (True, None)


def test_waiters_are_served_first_come_and_a_passed_permit_reaches_the_first() -> None:
    """Three queued callers: `pass_on` hands the permit to the one that came first, `leave`
    gives the next one the place without a permit."""
    gate: LocalGate[str] = LocalGate(1)
    gate.enter(1)
    got: dict[int, tuple[bool, str | None]] = {}

    def wait(n: int) -> None:
        got[n] = gate.enter(5)

    threads = []
    for n in range(3):
        threads.append(threading.Thread(target=wait, args=(n,)))
        threads[-1].start()
        _queued(gate, n + 1)
    assert gate.pass_on("slot-A") is True
    threads[0].join(5)
    assert got == {0: (True, "slot-A")}
    gate.leave()
    threads[1].join(5)
    assert got[1] == (True, None)
    gate.leave()
    threads[2].join(5)
    assert got[2] == (True, None)


def test_under_contention_never_more_holders_than_places_and_every_place_returns() -> None:
    """12 threads with short timeouts on 3 places, holders passing on or leaving at random:
    never more than 3 hold at once, no call raises, and all 3 places are free at the end."""
    gate: LocalGate[int] = LocalGate(3)
    lock = threading.Lock()
    held = peak = served = 0
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        nonlocal held, peak, served
        rng = random.Random(seed)
        try:
            for _ in range(200):
                entered, _permit = gate.enter(rng.uniform(0, 0.002))
                if not entered:
                    continue
                with lock:
                    held += 1
                    peak = max(peak, held)
                    served += 1
                time.sleep(rng.uniform(0, 0.0005))
                with lock:
                    held -= 1
                if not (rng.random() < 0.5 and gate.pass_on(seed)):
                    gate.leave()
        except BaseException as exc:  # pragma: no cover - what the assertion reports
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert peak == 3
    assert served > 100
    assert gate.waiting() == 0
    assert [gate.enter(0)[0] for _ in range(4)] == [True, True, True, False]


def test_a_parked_permit_frees_the_place_goes_to_the_next_caller_and_ages_out() -> None:
    """With no waiter, `pass_on(park_at=...)` parks the permit and frees the place: the next
    caller to enter gets the newest parked permit; `unpark` hands back only those parked
    before its cutoff, oldest first."""
    gate: LocalGate[str] = LocalGate(2)
    gate.enter(1)
    gate.enter(1)
    assert gate.pass_on("old", park_at=1.0) is True
    assert gate.pass_on("new", park_at=2.0) is True
    assert gate.parked() == 2
    assert gate.enter(0) == (True, "new")
    assert gate.unpark(parked_before=0.5) == []
    assert gate.unpark(parked_before=1.5) == ["old"]
    assert gate.enter(0) == (True, None)  # the second place, with nothing parked
    assert gate.enter(0) == (False, None)  # both places held


def test_a_seeker_inside_is_handed_a_permit_before_a_waiter_outside_gets_the_place() -> None:
    """With one holder seeking a permit between Redis polls and one thread waiting outside
    the full gate, `pass_on` hands the permit to the seeker and the leaver's place (without
    a permit) to the waiter; a seek that nobody serves returns None."""
    gate: LocalGate[str] = LocalGate(2)
    gate.enter(1)  # the holder with a permit
    gate.enter(1)  # the seeker: inside, but Redis refused it
    assert gate.seek(0.01) is None
    sought: list[str | None] = []
    outside: list[tuple[bool, str | None]] = []
    seeker = threading.Thread(target=lambda: sought.append(gate.seek(5)))
    waiter = threading.Thread(target=lambda: outside.append(gate.enter(5)))
    seeker.start()
    waiter.start()
    deadline = time.monotonic() + 5
    while (gate.waiting() < 1 or gate.seeking() < 1) and time.monotonic() < deadline:
        time.sleep(0.001)
    assert gate.pass_on("slot") is True
    seeker.join(5)
    waiter.join(5)
    assert sought == ["slot"]
    assert outside == [(True, None)]
    assert gate.enter(0) == (False, None)  # seeker and waiter hold both places


def test_a_seeker_takes_a_parked_permit_at_once() -> None:
    """A permit parked while the seeker was between waits is taken by its next seek."""
    gate: LocalGate[str] = LocalGate(2)
    gate.enter(1)
    gate.enter(1)
    assert gate.pass_on("parked", park_at=1.0) is True
    assert gate.seek(0) == "parked"
    assert gate.parked() == 0
