"""The worker's start-up heap is frozen out of the cyclic collector's sight."""

from __future__ import annotations

import gc
import weakref

from workers.runtime import freeze_start_up_heap


def test_freezing_hides_live_objects_from_full_collections_and_frees_garbage_first() -> None:
    """Objects alive at the freeze leave generation 2 (a full collection no longer walks
    them), while a garbage cycle made just before is collected, not frozen."""

    class Node:
        def __init__(self) -> None:
            self.other: Node | None = None

    alive = [{"n": n} for n in range(1000)]
    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle, unreachable once the names go
    cycle = weakref.ref(a)
    del a, b
    try:
        frozen = freeze_start_up_heap()
        assert frozen >= len(alive)
        assert not any(o is alive for o in gc.get_objects(generation=2))
        assert cycle() is None
    finally:
        gc.unfreeze()
    assert any(o is alive for o in gc.get_objects(generation=2))
